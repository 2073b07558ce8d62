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

// Every cleaner sync applies to a staged row, in one call (issue 27): declared here, made by
// `clean_contact_wrapper` (as pgrx declared it when it was a #[pg_extern]).
extension_sql!(
    r#"
CREATE FUNCTION unify."_clean_contact"("salutation" TEXT, "title" TEXT, "first_name" TEXT,
    "last_name" TEXT, "full_name" TEXT, "email" TEXT, "phone" TEXT, "mobile" TEXT, "street" TEXT,
    "house_number" TEXT, "street_line" TEXT, "postcode" TEXT, "city" TEXT, "country" TEXT,
    "birth_date" TEXT) RETURNS unify._contact
IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'clean_contact_wrapper';
"#,
    name = "clean_contact",
    requires = ["bootstrap_types"]
);

#[no_mangle]
#[doc(hidden)]
pub extern "C" fn pg_finfo_clean_contact_wrapper() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

/// A text argument in place: read where it lies unless compressed or stored apart (then
/// detoasted); None for NULL.
///
/// # Safety
/// `arg` is an argument of type text of the current call.
unsafe fn text_arg<'a>(arg: &pg_sys::NullableDatum) -> Option<&'a str> {
    if arg.isnull {
        return None;
    }
    unsafe {
        let mut text = arg.value.cast_mut_ptr::<pg_sys::varlena>();
        if !(pgrx::varlena::varatt_is_4b_u(text)
            || (pgrx::varlena::varatt_is_1b(text) && !pgrx::varlena::varatt_is_1b_e(text)))
        {
            text = pg_sys::pg_detoast_datum_packed(text);
        }
        match std::str::from_utf8(pgrx::varlena::varlena_to_byte_slice(text)) {
            Ok(s) => Some(s),
            Err(_) => super::errors::raise(
                pgrx::PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
                "unify._clean_contact: a value is not valid UTF-8".to_string(),
                None,
                "The cleaners read text in a UTF-8 database.",
                "_clean_contact",
            ),
        }
    }
}

/// `unify._clean_contact(15 text fields) → unify._contact`: every cleaner `unify.sync` applies
/// to a staged row, in one call (issue 27): the values `unify.normalize_name`,
/// `split_full_name`, `normalize_email`, `email_match_key`, `normalize_country`,
/// `normalize_phone`, `split_street`, `normalize_street`, `normalize_postcode`,
/// `transliterate_de`, `normalize_date`, `cologne_phonetic`, `normalize_salutation` and
/// `normalize_title` give, combined as `unify._normalized_query` combined them (see
/// `crate::normalize::contact`). Internal; the public cleaners stay. Written against the fmgr
/// interface (issue 27: pgrx's conversions, a guarded call into PostgreSQL per argument and
/// per result, cost a fifth of the call): the arguments are read in place, the text results
/// written into one allocation, the row formed at once.
///
/// # Safety
/// Called by PostgreSQL's function manager with the 15 text arguments declared above.
#[no_mangle]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn clean_contact_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    unsafe {
        let args = (*fcinfo).args.as_slice(15);
        let raw = contact::RawContact {
            salutation: text_arg(&args[0]),
            title: text_arg(&args[1]),
            first_name: text_arg(&args[2]),
            last_name: text_arg(&args[3]),
            full_name: text_arg(&args[4]),
            email: text_arg(&args[5]),
            phone: text_arg(&args[6]),
            mobile: text_arg(&args[7]),
            street: text_arg(&args[8]),
            house_number: text_arg(&args[9]),
            street_line: text_arg(&args[10]),
            postcode: text_arg(&args[11]),
            city: text_arg(&args[12]),
            country: text_arg(&args[13]),
            birth_date: text_arg(&args[14]),
        };
        let clean = contact::clean_contact(&raw);
        let Some(tupdesc) = contact_tupdesc(fcinfo) else {
            (*fcinfo).isnull = true;
            return pg_sys::Datum::from(0usize);
        };
        // unify._contact's attributes in order; the 12th (birth_date) is a date.
        let texts: [Option<&str>; 15] = [
            clean.first_name.as_deref(),
            clean.last_name.as_deref(),
            clean.email.as_deref(),
            clean.email_key.as_deref(),
            clean.phone.as_deref(),
            clean.mobile.as_deref(),
            clean.street.as_deref(),
            clean.house_number.as_deref(),
            clean.postcode.as_deref(),
            clean.city.as_deref(),
            clean.country.as_deref(),
            None,
            clean.last_name_phonetic.as_deref(),
            clean.salutation,
            clean.title.as_deref(),
        ];
        // Each text as a varlena with a 4-byte header at a MAXALIGNed offset of one buffer.
        let padded = |len: usize| (pg_sys::VARHDRSZ + len).next_multiple_of(8);
        let bytes: usize = texts.iter().flatten().map(|t| padded(t.len())).sum();
        let buffer = pg_sys::palloc(bytes.max(8)) as *mut u8;
        let mut values = [pg_sys::Datum::from(0usize); 15];
        let mut nulls = [true; 15];
        let mut offset = 0;
        for (i, text) in texts.iter().enumerate() {
            if let Some(text) = text {
                let at = buffer.add(offset);
                pgrx::varlena::set_varsize_4b(at.cast(), (pg_sys::VARHDRSZ + text.len()) as i32);
                std::ptr::copy_nonoverlapping(text.as_ptr(), at.add(pg_sys::VARHDRSZ), text.len());
                values[i] = pg_sys::Datum::from(at);
                nulls[i] = false;
                offset += padded(text.len());
            }
        }
        // A date of parse_date (1900 to 2100) is in the range of `date`: its day number, as
        // make_date would give it.
        if let Some(ymd) = clean.birth_date {
            values[11] = pg_sys::Datum::from(date::pg_days(ymd));
            nulls[11] = false;
        }
        let tuple =
            pg_sys::heap_form_tuple(tupdesc.as_ptr(), values.as_mut_ptr(), nulls.as_mut_ptr());
        // HeapTupleGetDatum: the row holds no value stored apart.
        pg_sys::Datum::from((*tuple).t_data)
    }
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

/// What `unify._raw_values` keeps per call site, in `fn_extra` (allocated in the function's
/// memory context, freed with it): the row type it was made for, a copy of its descriptor, the
/// fields to keep in the order jsonb keeps their keys, and the arrays a row is deformed into.
#[repr(C)]
struct RawPlan {
    type_id: pg_sys::Oid,
    typmod: i32,
    tupdesc: pg_sys::TupleDesc,
    /// Attribute indexes of the fields kept (not dropped, not source_key), in key order.
    order: *mut u16,
    kept: usize,
    values: *mut pg_sys::Datum,
    nulls: *mut bool,
}

/// The plan of the row type `type_id`/`typmod`, made in `context`.
///
/// # Safety
/// `context` is a valid memory context; called inside a guarded function.
unsafe fn raw_plan(
    type_id: pg_sys::Oid,
    typmod: i32,
    context: pg_sys::MemoryContext,
) -> *mut RawPlan {
    unsafe {
        let old = pg_sys::MemoryContextSwitchTo(context);
        let tupdesc = pg_sys::lookup_rowtype_tupdesc_copy(type_id, typmod);
        let natts = (*tupdesc).natts as usize;
        let attrs = (*tupdesc).attrs.as_slice(natts);
        let mut order: Vec<u16> = (0..natts as u16)
            .filter(|&i| {
                let attr = &attrs[i as usize];
                !attr.attisdropped
                    && std::ffi::CStr::from_ptr(attr.attname.data.as_ptr()).to_bytes()
                        != b"source_key"
            })
            .collect();
        let name =
            |i: u16| std::ffi::CStr::from_ptr(attrs[i as usize].attname.data.as_ptr()).to_bytes();
        order.sort_by(|&a, &b| crate::jsonb_object::key_order(name(a), name(b)));
        let plan = pg_sys::palloc(std::mem::size_of::<RawPlan>()) as *mut RawPlan;
        let order_copy = pg_sys::palloc(order.len().max(1) * 2) as *mut u16;
        std::ptr::copy_nonoverlapping(order.as_ptr(), order_copy, order.len());
        plan.write(RawPlan {
            type_id,
            typmod,
            tupdesc,
            order: order_copy,
            kept: order.len(),
            values: pg_sys::palloc(natts.max(1) * std::mem::size_of::<pg_sys::Datum>()).cast(),
            nulls: pg_sys::palloc(natts.max(1)).cast(),
        });
        pg_sys::MemoryContextSwitchTo(old);
        plan
    }
}

/// `unify._raw_values(record)`: see its SQL comment above. Written against the fmgr interface,
/// the jsonb laid out by [`crate::jsonb_object`] as PostgreSQL's builder lays it out (issue 27:
/// the builder, `pushJsonbValue` per key and value, cost about 1 µs per row of a first sync);
/// the row type's fields in key order are worked out once per call site (`fn_extra`).
///
/// # Safety
/// Called by PostgreSQL's function manager with one non-NULL composite argument (STRICT).
#[no_mangle]
#[doc(hidden)]
#[pg_guard]
pub unsafe extern "C-unwind" fn raw_values_wrapper(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    use crate::jsonb_object::{encode, encoded_len, Value};
    unsafe {
        let mut row =
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).cast_mut_ptr::<pg_sys::varlena>();
        if !pgrx::varlena::varatt_is_4b_u(row) {
            row = pg_sys::pg_detoast_datum(row);
        }
        let row = row as pg_sys::HeapTupleHeader;
        let type_id = (*row).t_choice.t_datum.datum_typeid;
        let typmod = (*row).t_choice.t_datum.datum_typmod;
        let flinfo = (*fcinfo).flinfo;
        let plan = if flinfo.is_null() {
            raw_plan(type_id, typmod, pg_sys::CurrentMemoryContext)
        } else {
            let kept = (*flinfo).fn_extra as *mut RawPlan;
            if kept.is_null() || (*kept).type_id != type_id || (*kept).typmod != typmod {
                (*flinfo).fn_extra = raw_plan(type_id, typmod, (*flinfo).fn_mcxt).cast();
            }
            (*flinfo).fn_extra as *mut RawPlan
        };
        let plan = &*plan;
        let tupdesc = plan.tupdesc;
        let natts = (*tupdesc).natts as usize;
        let mut tuple = pg_sys::HeapTupleData {
            t_len: pgrx::varsize(row.cast()) as u32,
            t_data: row,
            ..Default::default()
        };
        pg_sys::heap_deform_tuple(&mut tuple, tupdesc, plan.values, plan.nulls);
        let values = std::slice::from_raw_parts(plan.values, natts);
        let nulls = std::slice::from_raw_parts(plan.nulls, natts);
        let attrs = (*tupdesc).attrs.as_slice(natts);

        // (key, value) of every field to keep, in key order.
        let mut pairs: Vec<(&[u8], Value<'_>)> = Vec::with_capacity(plan.kept);
        for &i in std::slice::from_raw_parts(plan.order, plan.kept) {
            let i = i as usize;
            if nulls[i] {
                continue;
            }
            let attr = &attrs[i];
            let key = std::ffi::CStr::from_ptr(attr.attname.data.as_ptr()).to_bytes();
            let value = match attr.atttypid {
                pg_sys::TEXTOID => {
                    let mut text = values[i].cast_mut_ptr::<pg_sys::varlena>();
                    // Compressed or stored apart: detoasted; short and plain ones are read in place.
                    if !(pgrx::varlena::varatt_is_4b_u(text)
                        || (pgrx::varlena::varatt_is_1b(text)
                            && !pgrx::varlena::varatt_is_1b_e(text)))
                    {
                        text = pg_sys::pg_detoast_datum_packed(text);
                    }
                    Value::String(pgrx::varlena::varlena_to_byte_slice(text))
                }
                pg_sys::BOOLOID => Value::Bool(values[i].value() != 0),
                pg_sys::TIMESTAMPTZOID => {
                    let iso = pg_sys::JsonEncodeDateTime(
                        std::ptr::null_mut(),
                        values[i],
                        pg_sys::TIMESTAMPTZOID,
                        std::ptr::null(),
                    );
                    Value::String(std::ffi::CStr::from_ptr(iso).to_bytes())
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
            };
            pairs.push((key, value));
        }
        let Some(len) = encoded_len(&pairs) else {
            // PostgreSQL's own refusal (convertJsonbObject).
            super::errors::raise(
                pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "total size of jsonb object elements exceeds the maximum of {} bytes",
                    crate::jsonb_object::MAX_DATA_BYTES
                ),
                None,
                "A staged row's values make its raw jsonb; shorten the mapped values.",
                "_raw_values",
            )
        };
        let datum = pg_sys::palloc(len) as *mut u8;
        encode(&pairs, std::slice::from_raw_parts_mut(datum, len), |out| {
            pgrx::varlena::set_varsize_4b(out.as_mut_ptr().cast(), out.len() as i32)
        });
        pg_sys::Datum::from(datum)
    }
}
