//! The contact-field cleaners: IMMUTABLE, STRICT, PARALLEL SAFE; NULL for what cannot be parsed.

use crate::normalize::{
    address, contact, date, display, email, name, phone, phonetic, salutation, translit,
};
use pgrx::prelude::*;
use pgrx::PgTupleDesc;

extension_sql!(
    r#"
COMMENT ON SCHEMA unify IS 'customer_unify: normalize, match, unify and segment customer records';
-- The result of unify.split_street().
CREATE TYPE unify.street_parts AS (street text, house_number text);
-- The result of unify.split_full_name().
CREATE TYPE unify.name_parts AS (first_name text, last_name text, salutation text, title text);
-- The result of unify._clean_contact(): a staged row's cleaned values (issue 27).
CREATE TYPE unify._contact AS (first_name text, last_name text, email text, email_key text,
    phone text, mobile text, street text, house_number text, postcode text, city text, country text,
    birth_date date, last_name_phonetic text, salutation text, title text);
"#,
    name = "bootstrap_types",
    bootstrap
);

/// Canonical e-mail address, or NULL when the value is not a valid address.
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_email(value: &str) -> Option<String> {
    email::normalize_email(value)
}

/// E-mail key with provider aliases folded (googlemail → gmail, dots and +tags where ignored).
#[pg_extern(immutable, strict, parallel_safe)]
fn email_match_key(value: &str) -> Option<String> {
    email::email_match_key(value)
}

/// Phone number in E.164, or NULL when not a valid number (or the region is unknown).
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_phone(value: &str, default_region: default!(&str, "'DE'")) -> Option<String> {
    phone::normalize_phone(value, phone::parse_region(default_region)?)
}

/// Kind of line of a valid phone number: mobile, fixed_line, toll_free, voip, ...
#[pg_extern(immutable, strict, parallel_safe)]
fn phone_kind(value: &str, default_region: default!(&str, "'DE'")) -> Option<&'static str> {
    phone::phone_kind(value, phone::parse_region(default_region)?)
}

/// Comparable person name: NFKC, lowercased, without salutations and titles.
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_name(value: &str) -> Option<String> {
    name::normalize_name(value)
}

/// ä→ae, ö→oe, ü→ue, ß→ss, other diacritics dropped.
#[pg_extern(immutable, strict, parallel_safe)]
fn transliterate_de(value: &str) -> String {
    translit::transliterate_de(value)
}

/// An empty row of the function's composite result type. The planner already resolved that type:
/// taking its OID from the call avoids a by-name catalog lookup per row (which cost 3x the
/// parsing); a call without an expression (DirectFunctionCall) falls back to the name.
fn composite_result(
    fcinfo: pg_sys::FunctionCallInfo,
    type_name: &str,
) -> Option<PgHeapTuple<'static, pgrx::AllocatedByRust>> {
    let result_type = unsafe { pg_sys::get_fn_expr_rettype((*fcinfo).flinfo) };
    let row = if result_type == pg_sys::InvalidOid {
        PgHeapTuple::new_composite_type(type_name)
    } else {
        PgHeapTuple::new_composite_type_by_oid(result_type)
    };
    row.ok()
}

/// Street line split into street and house number.
#[pg_extern(immutable, strict, parallel_safe)]
fn split_street(
    value: &str,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<pgrx::composite_type!('static, "unify.street_parts")> {
    let parts = address::split_street(value)?;
    let mut row = composite_result(fcinfo, "unify.street_parts")?;
    row.set_by_name("street", parts.street).ok()?;
    row.set_by_name("house_number", parts.house_number).ok()?;
    Some(row)
}

/// Full name split into normalized first and last name (`MÜLLER, Hans`, `Dr. Hans von der Heide`),
/// with the salutation and academic title written in front of the name (`Herr Dr. Hans Meier`).
#[pg_extern(immutable, strict, parallel_safe)]
fn split_full_name(
    value: &str,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<pgrx::composite_type!('static, "unify.name_parts")> {
    let (first, last) = name::split_full_name(value);
    let salutation = salutation::salutation_in_name(value);
    let title = salutation::title_in_name(value);
    if first.is_none() && last.is_none() && salutation.is_none() && title.is_none() {
        return None;
    }
    let mut row = composite_result(fcinfo, "unify.name_parts")?;
    row.set_by_name("first_name", first).ok()?;
    row.set_by_name("last_name", last).ok()?;
    row.set_by_name("salutation", salutation).ok()?;
    row.set_by_name("title", title).ok()?;
    Some(row)
}

/// The salutation of a salutation field: Herr, Frau, divers or Familie (`Hr.`, `Mrs`, `m`/`w`/`d`).
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_salutation(value: &str) -> Option<&'static str> {
    salutation::normalize_salutation(value)
}

/// The academic title of a title field, tidied (`PROF. DR. MED.` → `Prof. Dr. med.`).
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_title(value: &str) -> Option<String> {
    salutation::normalize_title(value)
}

/// A name as written, tidied for display (`MÜLLER` → `Müller`, `VON DER HEIDE` → `von der Heide`).
#[pg_extern(immutable, strict, parallel_safe)]
fn display_name(value: &str) -> Option<String> {
    display::display_name(value)
}

/// The salutation line of a letter: `Sehr geehrte Frau Dr. Müller`, `Guten Tag Kim Schulz`.
#[pg_extern(immutable, parallel_safe)]
fn letter_salutation(
    salutation: Option<&str>,
    title: Option<&str>,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> String {
    salutation::letter_salutation(salutation, title, first_name, last_name)
}

/// A date written as `1980-05-17`, `17.05.1980`, `17.5.80`, `19800517` or `17/05/1980`.
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_date(value: &str) -> Option<pgrx::datum::Date> {
    let (y, m, d) = date::parse_date(value)?;
    pgrx::datum::Date::new(y, m as u8, d as u8).ok()
}

/// ISO 3166 alpha-2 code of a country written as code or common DACH name (`Deutschland` → `DE`).
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_country(value: &str) -> Option<String> {
    address::country_code(value)
}

/// Canonical street key (`hauptstrasse 12a`) under which spellings of one address agree.
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_street(value: &str) -> Option<String> {
    address::normalize_street(value)
}

/// Canonical postcode for a country (DE five digits with leading zeros, AT/CH four, ...).
#[pg_extern(immutable, strict, parallel_safe)]
fn normalize_postcode(value: &str, country: default!(&str, "'DE'")) -> Option<String> {
    address::normalize_postcode(value, country)
}

/// Kölner Phonetik code.
#[pg_extern(immutable, strict, parallel_safe)]
fn cologne_phonetic(value: &str) -> Option<String> {
    phonetic::cologne_phonetic(value)
}

/// Primary Double Metaphone code.
#[pg_extern(immutable, strict, parallel_safe)]
fn double_metaphone(value: &str) -> Option<String> {
    phonetic::double_metaphone(value)
}

/// Alternate Double Metaphone code.
#[pg_extern(immutable, strict, parallel_safe)]
fn double_metaphone_alt(value: &str) -> Option<String> {
    phonetic::double_metaphone_alt(value)
}

/// The tuple descriptor of `unify._contact`, made once per call site (kept in `fn_extra`, in the
/// function's memory context), so that each row is formed from all its values at once
/// (`PgHeapTuple::set_by_name` copies the row for every field it sets).
fn contact_tupdesc(fcinfo: pg_sys::FunctionCallInfo) -> Option<PgTupleDesc<'static>> {
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if flinfo.is_null() {
            return PgTupleDesc::for_composite_type("unify._contact");
        }
        if (*flinfo).fn_extra.is_null() {
            let mut type_oid = pg_sys::get_fn_expr_rettype(flinfo);
            if type_oid == pg_sys::InvalidOid {
                type_oid = PgTupleDesc::for_composite_type("unify._contact")?.oid();
            }
            let old = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
            let tupdesc = pg_sys::lookup_rowtype_tupdesc_copy(type_oid, -1);
            pg_sys::MemoryContextSwitchTo(old);
            (*flinfo).fn_extra = tupdesc.cast();
        }
        Some(PgTupleDesc::from_pg_unchecked((*flinfo).fn_extra.cast()))
    }
}

/// Every cleaner `unify.sync` applies to a staged row, in one call (issue 27): the values
/// `unify.normalize_name`, `split_full_name`, `normalize_email`, `email_match_key`,
/// `normalize_country`, `normalize_phone`, `split_street`, `normalize_street`,
/// `normalize_postcode`, `transliterate_de`, `normalize_date`, `cologne_phonetic`,
/// `normalize_salutation` and `normalize_title` give, combined as `unify._normalized_query`
/// combined them (see `crate::normalize::contact`). Internal; the public cleaners stay.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, name = "_clean_contact")]
fn clean_contact(
    salutation: Option<&str>,
    title: Option<&str>,
    first_name: Option<&str>,
    last_name: Option<&str>,
    full_name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
    mobile: Option<&str>,
    street: Option<&str>,
    house_number: Option<&str>,
    street_line: Option<&str>,
    postcode: Option<&str>,
    city: Option<&str>,
    country: Option<&str>,
    birth_date: Option<&str>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Option<pgrx::composite_type!('static, "unify._contact")> {
    let clean = contact::clean_contact(&contact::RawContact {
        salutation,
        title,
        first_name,
        last_name,
        full_name,
        email,
        phone,
        mobile,
        street,
        house_number,
        street_line,
        postcode,
        city,
        country,
        birth_date,
    });
    let birth_date = clean
        .birth_date
        .and_then(|(y, m, d)| pgrx::datum::Date::new(y, m as u8, d as u8).ok());
    let values = [
        clean.first_name.into_datum(),
        clean.last_name.into_datum(),
        clean.email.into_datum(),
        clean.email_key.into_datum(),
        clean.phone.into_datum(),
        clean.mobile.into_datum(),
        clean.street.into_datum(),
        clean.house_number.into_datum(),
        clean.postcode.into_datum(),
        clean.city.into_datum(),
        clean.country.into_datum(),
        birth_date.into_datum(),
        clean.last_name_phonetic.into_datum(),
        clean.salutation.into_datum(),
        clean.title.into_datum(),
    ];
    // SAFETY: the values are in the order and of the types of unify._contact's attributes.
    unsafe { PgHeapTuple::from_datums(contact_tupdesc(fcinfo)?, values).ok() }
}

// The raw values of a staged row (issue 27): declared here, made by `raw_values_wrapper`.
extension_sql!(
    r#"
-- The raw values of a staged row of pg_temp.unify_source_rows, as sync stores them in
-- unify.records.raw: every field but source_key that is not NULL, with its value as
-- to_jsonb gives it (text: a string; boolean; timestamptz: a string in ISO 8601 in the
-- session's time zone, hence STABLE). The same jsonb as
-- jsonb_strip_nulls(to_jsonb(row) - 'source_key'), made in one pass (issue 27: building it
-- from jsonb_object, jsonb_build_object, || and jsonb_strip_nulls was a fifth of a first load).
CREATE FUNCTION unify._raw_values(staged record) RETURNS jsonb
STABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'raw_values_wrapper';
"#,
    name = "raw_values",
    requires = ["bootstrap_types"]
);

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_raw_values_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// `unify._raw_values(record)`: see its SQL comment above. Written against the fmgr interface
/// (pgrx has no jsonb made by PostgreSQL's own builder): one `pushJsonbValue` object of the
/// row's non-NULL fields, keys pushed in the order jsonb keeps them (shorter first, then
/// bytewise), so the final sort finds them in order.
///
/// # Safety
/// Called by PostgreSQL's function manager with one non-NULL composite argument (STRICT).
#[no_mangle]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn raw_values_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        let row = pg_sys::pg_detoast_datum(
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>(),
        ) as pg_sys::HeapTupleHeader;
        let type_id = (*row).t_choice.t_datum.datum_typeid;
        let typmod = (*row).t_choice.t_datum.datum_typmod;
        let tupdesc = pg_sys::lookup_rowtype_tupdesc(type_id, typmod);
        let natts = (*tupdesc).natts as usize;
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::varsize(row.cast()) as u32,
            t_data: row,
            ..Default::default()
        };
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![true; natts];
        pg_sys::heap_deform_tuple(&mut tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());

        // (key, value) of every field to keep.
        let mut pairs: Vec<(&[u8], pg_sys::JsonbValue)> = Vec::with_capacity(natts);
        let attrs = (*tupdesc).attrs.as_slice(natts);
        for (i, attr) in attrs.iter().enumerate() {
            if attr.attisdropped || nulls[i] {
                continue;
            }
            let key = std::ffi::CStr::from_ptr(attr.attname.data.as_ptr()).to_bytes();
            if key == b"source_key" {
                continue;
            }
            let mut value: pg_sys::JsonbValue = std::mem::zeroed();
            match attr.atttypid {
                pg_sys::TEXTOID => {
                    let text = pg_sys::pg_detoast_datum_packed(values[i].cast_mut_ptr());
                    let bytes = pgrx::varlena::varlena_to_byte_slice(text);
                    value.type_ = pg_sys::jbvType::jbvString;
                    value.val.string.len = bytes.len() as i32;
                    value.val.string.val = bytes.as_ptr() as *mut std::ffi::c_char;
                }
                pg_sys::BOOLOID => {
                    value.type_ = pg_sys::jbvType::jbvBool;
                    value.val.boolean = values[i].value() != 0;
                }
                pg_sys::TIMESTAMPTZOID => {
                    let iso = pg_sys::JsonEncodeDateTime(
                        std::ptr::null_mut(),
                        values[i],
                        pg_sys::TIMESTAMPTZOID,
                        std::ptr::null(),
                    );
                    value.type_ = pg_sys::jbvType::jbvString;
                    value.val.string.len = std::ffi::CStr::from_ptr(iso).to_bytes().len() as i32;
                    value.val.string.val = iso;
                }
                other => super::errors::raise(
                    pgrx::PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!(
                        "unify._raw_values: field {} of type {} is not a staged type (text, boolean, timestamptz)",
                        String::from_utf8_lossy(key),
                        other.to_u32()
                    ),
                    None,
                    "It reads rows of pg_temp.unify_source_rows, whose columns unify._canonical_field_types() lists.",
                    "_raw_values",
                ),
            }
            pairs.push((key, value));
        }
        pairs.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));

        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
            std::ptr::null_mut(),
        );
        for (key, value) in pairs.iter_mut() {
            let mut key_value: pg_sys::JsonbValue = std::mem::zeroed();
            key_value.type_ = pg_sys::jbvType::jbvString;
            key_value.val.string.len = key.len() as i32;
            key_value.val.string.val = key.as_ptr() as *mut std::ffi::c_char;
            pg_sys::pushJsonbValue(
                &mut state,
                pg_sys::JsonbIteratorToken::WJB_KEY,
                &mut key_value,
            );
            pg_sys::pushJsonbValue(&mut state, pg_sys::JsonbIteratorToken::WJB_VALUE, value);
        }
        let object = pg_sys::pushJsonbValue(
            &mut state,
            pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
            std::ptr::null_mut(),
        );
        let jsonb = pg_sys::JsonbValueToJsonb(object);
        // ReleaseTupleDesc: only a reference-counted descriptor is counted down.
        if (*tupdesc).tdrefcount >= 0 {
            pg_sys::DecrTupleDescRefCount(tupdesc);
        }
        pg_sys::Datum::from(jsonb)
    }
}
