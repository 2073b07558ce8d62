//! crmgen: deterministic German CRM sample data for customer_unify's demo, tests and benchmarks.
//!
//! Writes SQL (CREATE TABLE + COPY) to stdout: four source tables as a company has them (web
//! shop, CRM, POS loyalty, newsletter), each with its own column names and formats, an orders
//! table, and `truth` (source, key, true person, household, the variations applied).
//!
//! The hard cases of issue 25 are in every data set: short forms of first names (Hans for
//! Johannes, some not in customer_unify's table), initials, married and double names, titles
//! and sen./jun. written into name fields, fathers and sons (mothers and daughters) of one name,
//! twins with alike names and often without birth dates, e-mail-only sign-ups, a work and a
//! pre-marriage e-mail beside the personal one, mistyped birth dates. The truth table tags each
//! record with the variations it carries, so quality can be read by kind of difference.
//!
//! `--layout alt` writes the same people and records into other tables (other names and
//! formats, "Nachname, Vorname" with titles and sen./jun. in the CRM's one name field), for
//! measuring on a layout the project was not tuned to (benches/alt_sources.sql registers it).
//!
//! `--population national` gives the same people the postcodes and surnames of a whole country
//! (a long tail of surnames, 150 postcodes a city) instead of 42 postcodes and 127 surnames:
//! at millions of rows those few fill every block, which no real customer base does.
//!
//!     crmgen --rows 1000 --seed 42 [--schema public] [--layout demo|alt] [--population cities|national] | psql demo

mod lists;
mod rng;

use lists::*;
use rng::Rng;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};

#[derive(Clone)]
struct Address {
    street: String,
    number: String,
    postcode: String,
    city: &'static str,
    area: &'static str,
}

#[derive(Clone)]
struct Person {
    id: u64,
    household: u64,
    female: bool,
    first: String,
    last: String,
    /// Name before marriage, used by records older than the marriage.
    maiden: Option<String>,
    birth: (i32, u32, u32),
    email: String,
    alt_email: Option<String>,
    mobile: Option<String>,
    landline: Option<String>,
    address: Address,
    /// Address before a move, used by older records.
    old_address: Option<Address>,
    tags: Vec<&'static str>,
    /// An academic title some sources write into the name field.
    title: Option<&'static str>,
    /// "sen." or "jun." for a father and a son (a mother and a daughter) of one name.
    generation: Option<&'static str>,
    /// The last name is a double name taken at marriage (birth name, partner's name): records
    /// write it whole or one part.
    double_name: Option<(String, String)>,
    /// The address used before the marriage, on older records.
    maiden_email: Option<String>,
    /// A work address, on some records.
    work_email: Option<String>,
}

fn translit(s: &str) -> String {
    s.replace('ä', "ae")
        .replace('ö', "oe")
        .replace('ü', "ue")
        .replace('ß', "ss")
        .replace('Ä', "Ae")
        .replace('Ö', "Oe")
        .replace('Ü', "Ue")
        .replace('ı', "i")
        .replace('ś', "s")
        .replace('ą', "a")
        .replace('ć', "c")
        .replace('ş', "s")
        .replace('ë', "e")
}

fn email_local(rng: &mut Rng, first: &str, last: &str, year: i32) -> String {
    let f = translit(&first.to_lowercase()).replace(' ', "");
    let l = translit(&last.to_lowercase()).replace(' ', "");
    let fi = &f[..1];
    match rng.range(0, 6) {
        0 | 1 => format!("{f}.{l}"),
        2 => format!("{fi}.{l}"),
        3 => format!("{f}{l}"),
        4 => format!("{l}.{f}"),
        5 => format!("{f}.{l}{}", year % 100),
        _ => format!("{fi}{l}{}", rng.range(1, 99)),
    }
}

/// A personal address nobody else holds yet.
fn fresh_email(
    rng: &mut Rng,
    taken: &mut std::collections::HashSet<String>,
    first: &str,
    last: &str,
    year: i32,
) -> String {
    let local = email_local(rng, first, last, year);
    let provider = rng.pick(MAIL_PROVIDERS);
    claim_mailbox(rng, taken, &local, provider)
}

/// `local@provider`, or, as a provider does when that mailbox is taken, `local<n>@provider`;
/// the address's mailbox is taken from then on.
/// A household's shared mailbox, named as families name theirs: `familie.mueller@`, but also
/// as a couple (`anna.und.thomas.mueller@`) or as one person's would look (`mueller75@`), so a
/// matcher cannot tell it by its name alone. Chosen by the last name, not drawn from the
/// generator's random stream, so every other value of a seed stays as it was.
fn family_mailbox_local(last: &str, members: &[Person]) -> String {
    let pick = last
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619))
        % 5;
    let first = |i: usize| {
        translit(&members[i.min(members.len() - 1)].first.to_lowercase()).replace(' ', "")
    };
    match pick {
        0 | 1 => format!("familie.{last}"),
        2 => format!("{}.und.{}.{last}", first(0), first(1)),
        3 => format!("{last}.{}", first(0).chars().next().unwrap_or('x')),
        _ => format!("{last}{:02}", members[0].birth.0 % 100),
    }
}

fn claim_mailbox(
    rng: &mut Rng,
    taken: &mut std::collections::HashSet<String>,
    local: &str,
    provider: &str,
) -> String {
    let mut email = format!("{local}@{provider}");
    let mut boxed = mailbox(&email);
    while taken.contains(&boxed) {
        email = format!("{local}{}@{provider}", rng.range(1, 9999));
        boxed = mailbox(&email);
    }
    taken.insert(boxed);
    email
}

/// The mailbox an address delivers to, as the provider sees it: Gmail ignores dots in the local
/// part and googlemail.com is gmail.com, so `karin.walter@` and `karinwalter@` are one mailbox
/// and a provider never hands the second to another Karin Walter.
fn mailbox(email: &str) -> String {
    let email = email.to_lowercase();
    match email.split_once('@') {
        Some((local, "gmail.com" | "googlemail.com")) => {
            format!("{}@gmail.com", local.replace('.', ""))
        }
        _ => email,
    }
}

/// `national`: the stream of `--population national` (None: the cities' one postcode each).
fn new_address(rng: &mut Rng, national: Option<&mut Rng>) -> Address {
    let stem = rng.pick(STREET_STEMS);
    let street = if stem.ends_with("straße") || stem.starts_with("Am ") && rng.chance(0.5) {
        stem.to_string()
    } else {
        let kind = rng.pick(STREET_KINDS);
        if stem.ends_with(' ') {
            // "Berliner Allee": a separate word is capitalized.
            let mut c = kind.chars();
            format!("{stem}{}{}", c.next().unwrap().to_uppercase(), c.as_str())
        } else {
            format!("{stem}{kind}")
        }
    };
    let mut number = rng.range(1, 180).to_string();
    if rng.chance(0.12) {
        number.push(*rng.pick(&['a', 'b', 'c']));
    }
    let (postcode, city, area) = *rng.pick(PLACES);
    let postcode = match national {
        // A city's delivery areas: up to 150 postcodes upwards of the listed one (Germany has
        // some 8,200; these 42 cities get 6,300).
        Some(n) => format!(
            "{:05}",
            postcode.parse::<u32>().unwrap() + n.range(0, 149) as u32
        ),
        None => postcode.to_string(),
    };
    Address {
        street,
        number,
        postcode,
        city,
        area,
    }
}

fn new_mobile(rng: &mut Rng) -> String {
    let prefix = rng.pick(MOBILE_PREFIXES);
    let len = if matches!(
        *prefix,
        "151" | "152" | "157" | "176" | "177" | "178" | "179"
    ) {
        8
    } else {
        7
    };
    let mut s = prefix.to_string();
    s.push(char::from(b'1' + rng.range(0, 8) as u8));
    for _ in 1..len {
        s.push(char::from(b'0' + rng.range(0, 9) as u8));
    }
    s
}

fn new_landline(rng: &mut Rng, area: &str) -> String {
    let len = match area.len() {
        2 => 7,
        3 => 6,
        _ => 5,
    };
    let mut s = area.to_string();
    s.push(char::from(b'2' + rng.range(0, 7) as u8));
    for _ in 1..len {
        s.push(char::from(b'0' + rng.range(0, 9) as u8));
    }
    s
}

fn birth(rng: &mut Rng, year_lo: i32, year_hi: i32) -> (i32, u32, u32) {
    (
        rng.range(year_lo as i64, year_hi as i64) as i32,
        rng.range(1, 12) as u32,
        rng.range(1, 28) as u32,
    )
}

struct World {
    rng: Rng,
    next_person: u64,
    next_household: u64,
    /// Every personal address handed out: a mailbox belongs to one person (family mailboxes
    /// are shared on purpose, in `household`), so a taken name gets a number as at a provider.
    emails_taken: std::collections::HashSet<String>,
    /// Draws for the hard cases of issue 25 (short forms, double names, sen./jun., twins'
    /// names, work e-mails, …): a stream of their own, so that the records, keys and orders
    /// the other draws make stay what they were for a seed.
    hard: Rng,
    /// Draws for the line items of the orders (issue 26): their own stream too, so that adding
    /// them changed nothing else a seed makes.
    basket: Rng,
    /// `--population national`: postcodes and surnames of a whole country, drawn from a stream
    /// of their own (the rest of a seed's draws then differ only where they depend on a name).
    national: Option<Rng>,
}

impl World {
    /// A surname: one of the common ones, or with `--population national` four times in five
    /// one of the long tail (a compound of the kind German surnames are made of), as in a
    /// country where the 100 commonest names are about a fifth of the people. The common-list
    /// draw is made either way, so the default population's data stay byte for byte the same.
    fn surname(&mut self) -> String {
        let common = self.rng.pick(LAST_NAMES).to_string();
        match &mut self.national {
            Some(n) => {
                if n.chance(0.8) {
                    format!("{}{}", n.pick(SURNAME_STEMS), n.pick(SURNAME_ENDINGS))
                } else {
                    common
                }
            }
            None => common,
        }
    }

    fn person(
        &mut self,
        household: u64,
        female: bool,
        last: &str,
        address: &Address,
        birth: (i32, u32, u32),
    ) -> Person {
        let rng = &mut self.rng;
        let first = if female {
            rng.pick(FEMALE_FIRST)
        } else {
            rng.pick(MALE_FIRST)
        }
        .to_string();
        let taken = &mut self.emails_taken;
        let email = fresh_email(rng, taken, &first, last, birth.0);
        let alt_email = rng
            .chance(0.1)
            .then(|| fresh_email(rng, taken, &first, last, birth.0));
        let mobile = rng.chance(0.75).then(|| new_mobile(rng));
        self.next_person += 1;
        Person {
            id: self.next_person,
            household,
            female,
            first,
            last: last.to_string(),
            maiden: None,
            birth,
            email,
            alt_email,
            mobile,
            landline: None,
            address: address.clone(),
            old_address: None,
            tags: Vec::new(),
            title: None,
            generation: None,
            double_name: None,
            maiden_email: None,
            work_email: None,
        }
    }

    /// One household: a single, a couple, or a family; twins and father/son of the same name
    /// included. Members share address, often a landline, sometimes one e-mail.
    fn household(&mut self) -> Vec<Person> {
        self.next_household += 1;
        let hh = self.next_household;
        let address = new_address(&mut self.rng, self.national.as_mut());
        let last = self.surname();
        let roll = self.rng.f64();
        let mut members = Vec::new();
        let adult = birth(&mut self.rng, 1945, 2000);
        let first_female = self.rng.chance(0.5);
        members.push(self.person(hh, first_female, &last, &address, adult));
        if roll >= 0.6 {
            // Partner, usually with the same last name; some took it at marriage.
            let partner_birth = birth(&mut self.rng, adult.0 - 4, adult.0 + 4);
            let same_name = self.rng.chance(0.75);
            let partner_last = if same_name {
                last.clone()
            } else {
                self.surname()
            };
            let mut partner =
                self.person(hh, !first_female, &partner_last, &address, partner_birth);
            if same_name && self.rng.chance(0.3) {
                let female_is_partner = partner.female;
                let maiden = self.surname();
                let who = if female_is_partner {
                    &mut partner
                } else {
                    &mut members[0]
                };
                if maiden != who.last {
                    who.maiden = Some(maiden);
                    who.tags.push("married");
                }
            }
            members.push(partner);
        }
        if roll >= 0.85 && adult.0 < 1985 {
            // Grown-up children living at home: twins sometimes, a son named after his father.
            let kids = self.rng.range(1, 2);
            let kid_birth = birth(&mut self.rng, adult.0 + 22, (adult.0 + 35).min(2008));
            let twins = kids == 2 && self.rng.chance(0.3);
            for k in 0..kids {
                let b = if twins || k == 0 {
                    kid_birth
                } else {
                    birth(&mut self.rng, kid_birth.0 + 1, kid_birth.0 + 6)
                };
                let female = self.rng.chance(0.5);
                let mut kid = self.person(hh, female, &last, &address, b);
                if twins {
                    kid.tags.push("twin");
                }
                members.push(kid);
            }
            let father = members
                .iter()
                .position(|m| !m.female && m.last == last && m.birth.0 < kid_birth.0 - 15);
            let son = members
                .iter()
                .rposition(|m| !m.female && m.birth.0 >= kid_birth.0);
            if let (Some(f), Some(s)) = (father, son) {
                if self.rng.chance(0.25) || self.hard.chance(0.4) {
                    members[s].first = members[f].first.clone();
                    members[s].tags.push("junior");
                    members[f].tags.push("senior");
                    members[s].generation = Some("jun.");
                    members[f].generation = Some("sen.");
                }
            }
            // Twins with alike names: Lena and Lea, Max and Moritz.
            let n = members.len();
            if twins
                && members[n - 2..].iter().all(|k| k.generation.is_none())
                && self.hard.chance(0.6)
            {
                let (a, a_female, b, b_female) = *self.hard.pick(TWIN_NAMES);
                for (k, (name, female)) in [(a, a_female), (b, b_female)].into_iter().enumerate() {
                    let kid = &mut members[n - 2 + k];
                    kid.first = name.to_string();
                    kid.female = female;
                    kid.email = fresh_email(
                        &mut self.hard,
                        &mut self.emails_taken,
                        name,
                        &last,
                        kid_birth.0,
                    );
                    kid.tags.push("alike_twins");
                }
            }
        }
        self.hard_cases(&mut members, &last);
        if members.len() > 1 {
            let landline = self
                .rng
                .chance(0.6)
                .then(|| new_landline(&mut self.rng, address.area));
            let family_mail = self.rng.chance(0.15).then(|| {
                let l = translit(&last.to_lowercase()).replace(' ', "");
                let provider = self.rng.pick(MAIL_PROVIDERS);
                let local = family_mailbox_local(&l, &members);
                claim_mailbox(&mut self.rng, &mut self.emails_taken, &local, provider)
            });
            for m in &mut members {
                m.tags.push("family");
                m.landline = landline.clone();
                if let Some(mail) = &family_mail {
                    if self.rng.chance(0.7) {
                        m.email = mail.clone();
                        m.tags.push("shared_email");
                    }
                }
            }
        } else if self.rng.chance(0.3) {
            members[0].landline = Some(new_landline(&mut self.rng, address.area));
        }
        if self.rng.chance(0.15) {
            // The household moved: older records keep the previous address.
            let old = new_address(&mut self.rng, self.national.as_mut());
            for m in &mut members {
                m.old_address = Some(old.clone());
                m.tags.push("moved");
            }
        }
        members
    }
}

impl World {
    /// The hard cases drawn per person from `hard`: titles, double names, a maiden e-mail, a
    /// work e-mail.
    fn hard_cases(&mut self, members: &mut [Person], last: &str) {
        for m in members.iter_mut() {
            let h = &mut self.hard;
            if m.birth.0 < 1985 && h.chance(0.07) {
                m.title = Some(*h.pick(TITLES));
            }
            if let Some(maiden) = m.maiden.clone() {
                if h.chance(0.35) {
                    // Birth name and married name joined: Schmidt-Weber.
                    m.double_name = Some((maiden.clone(), m.last.clone()));
                    m.last = format!("{maiden}-{}", m.last);
                    m.tags.push("double_name");
                }
                if h.chance(0.5) {
                    let taken = &mut self.emails_taken;
                    m.maiden_email = Some(fresh_email(h, taken, &m.first, &maiden, m.birth.0));
                }
            }
            if h.chance(0.2) {
                let f = translit(&m.first.to_lowercase()).replace(' ', "");
                let l = translit(&m.last.to_lowercase()).replace(' ', "");
                let domain = h.pick(WORK_DOMAINS);
                m.work_email = Some(claim_mailbox(
                    h,
                    &mut self.emails_taken,
                    &format!("{f}.{l}"),
                    domain,
                ));
            }
        }
        // A mother and a daughter of one name, now and then.
        let mother = members
            .iter()
            .position(|m| m.female && m.last == last && m.generation.is_none());
        let daughter = members
            .iter()
            .rposition(|m| m.female && m.generation.is_none());
        if let (Some(mo), Some(d)) = (mother, daughter) {
            if mo != d && members[d].birth.0 > members[mo].birth.0 + 15 && self.hard.chance(0.2) {
                members[d].first = members[mo].first.clone();
                members[d].tags.push("junior");
                members[mo].tags.push("senior");
            }
        }
    }
}

/// A short form of `first` as its holder writes it, if the name has one.
fn nickname(rng: &mut Rng, first: &str) -> Option<&'static str> {
    NICKNAMES
        .iter()
        .find(|(full, _)| *full == first)
        .map(|(_, short)| *rng.pick(short))
}

/// A birth date typed wrong: a digit off, or day and month exchanged.
fn birth_typo(rng: &mut Rng, (y, m, d): (i32, u32, u32)) -> (i32, u32, u32) {
    match rng.range(0, 3) {
        0 if d <= 12 && d != m => (y, d, m),
        // Days stay at most 28: the shop's column is a date.
        1 => (y, m, if d > 14 { d - 10 } else { d + 10 }),
        2 => (y + if y % 10 == 9 { -1 } else { 1 }, m, d),
        _ => (y, if m == 12 { 11 } else { m + 1 }, d),
    }
}

/// A typing error away from the first letter: swap, drop, double or replace one character.
fn typo(rng: &mut Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 4 {
        return s.to_string();
    }
    let i = rng.range(1, c.len() as i64 - 2) as usize;
    match rng.range(0, 3) {
        0 => c.swap(i, i + 1),
        1 => {
            c.remove(i);
        }
        2 => c.insert(i, c[i]),
        _ => c[i] = *rng.pick(&['e', 'n', 'r', 'i', 's', 't', 'a']),
    }
    c.into_iter().collect()
}

/// One rendering of a name as some clerk or customer typed it.
fn render_name(rng: &mut Rng, s: &str, tags: &mut Vec<&'static str>) -> String {
    let mut out = s.to_string();
    let has_special = out.chars().any(|c| "äöüßÄÖÜ".contains(c));
    if has_special && rng.chance(0.25) {
        out = if rng.chance(0.8) {
            translit(&out)
        } else {
            out.replace('ä', "a")
                .replace('ö', "o")
                .replace('ü', "u")
                .replace('ß', "ss")
        };
        tags.push("translit");
    }
    if rng.chance(0.04) {
        out = typo(rng, &out);
        tags.push("typo");
    }
    if rng.chance(0.05) {
        out = out.to_uppercase();
        tags.push("case");
    } else if rng.chance(0.03) {
        out = out.to_lowercase();
        tags.push("case");
    }
    out
}

fn render_email(rng: &mut Rng, p: &Person, tags: &mut Vec<&'static str>) -> String {
    let mut email = match &p.alt_email {
        Some(alt) if rng.chance(0.4) => {
            tags.push("other_email");
            alt.clone()
        }
        _ => p.email.clone(),
    };
    if email.ends_with("@gmail.com") && rng.chance(0.3) {
        email = email.replace("@gmail.com", "@googlemail.com");
        tags.push("email_alias");
    }
    if rng.chance(0.03) {
        let at = email.find('@').unwrap();
        email = format!("{}{}", typo(rng, &email[..at]), &email[at..]);
        tags.push("typo");
    }
    if rng.chance(0.15) {
        // Capitalized as people type it: Hans.Mueller@Web.de
        email = email
            .split('.')
            .map(|part| {
                let mut c = part.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(".");
        tags.push("case");
    }
    email
}

fn render_phone(rng: &mut Rng, national: &str) -> String {
    let (area, sub) = if national.starts_with('1') {
        national.split_at(3)
    } else {
        let cut = PLACES
            .iter()
            .map(|p| p.2)
            .find(|a| national.starts_with(*a))
            .map_or(2, str::len);
        national.split_at(cut)
    };
    let spaced = |s: &str| {
        s.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match rng.range(0, 9) {
        0 => format!("+49 {area} {sub}"),
        1 => format!("+49 (0){area} {sub}"),
        2 => format!("0049 {area} {sub}"),
        3 => format!("0{area} {sub}"),
        4 => format!("0{area}/{sub}"),
        5 => format!("0{area}-{sub}"),
        6 => format!("(0{area}) {}", spaced(sub)),
        7 => format!("+49{area}{sub}"),
        8 => format!("0{area}{sub}"),
        _ => format!("+49 (0) {area} / {sub}"),
    }
}

fn render_street(rng: &mut Rng, street: &str, tags: &mut Vec<&'static str>) -> String {
    let mut s = street.to_string();
    if s.ends_with("straße") {
        let variant = rng.range(0, 5);
        s = match variant {
            0 => s.replace("straße", "str."),
            1 => s.replace("straße", "strasse"),
            2 => s.replace("straße", "str"),
            _ => s,
        };
        if variant <= 2 {
            tags.push("street_abbrev");
        }
    }
    if rng.chance(0.02) {
        s = typo(rng, &s);
        tags.push("typo");
    }
    s
}

fn render_number(rng: &mut Rng, n: &str) -> String {
    if n.ends_with(|c: char| c.is_ascii_alphabetic()) {
        let (d, l) = n.split_at(n.len() - 1);
        match rng.range(0, 2) {
            0 => format!("{d} {l}"),
            1 => format!("{d}{}", l.to_uppercase()),
            _ => n.to_string(),
        }
    } else {
        n.to_string()
    }
}

/// COPY text format field.
fn field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn row(out: &mut String, fields: &[Option<&str>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        field(out, *f);
    }
    out.push('\n');
}

struct Tables {
    shop: String,
    crm: String,
    pos: String,
    newsletter: String,
    orders: String,
    order_items: String,
    truth: String,
    rows: usize,
}

fn date(d: (i32, u32, u32)) -> String {
    format!("{:04}-{:02}-{:02}", d.0, d.1, d.2)
}

/// (year, month, day) of a day number counted from 1970-01-01.
fn day_to_date(day: i64) -> (i32, u32, u32) {
    // Civil-from-days (Howard Hinnant), days since 1970-01-01.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    ((if m <= 2 { y + 1 } else { y }) as i32, m, d)
}

const DAY_2019: i64 = 17_897; // 2019-01-01
const DAY_2023: i64 = 19_358; // 2023-01-01
const DAY_LAST: i64 = 20_757; // 2026-10-31

/// German date as some systems write it: `17.05.1980`.
fn german_date(iso: &str) -> String {
    let (y, rest) = iso.split_at(4);
    format!("{}.{}.{y}", &rest[4..6], &rest[1..3])
}

fn generate(seed: u64, target_rows: usize, alt: bool, national: bool) -> Tables {
    let mut w = World {
        rng: Rng::new(seed),
        next_person: 0,
        next_household: 0,
        emails_taken: Default::default(),
        hard: Rng::new(seed ^ 0x6973_7375_6532_3500),
        basket: Rng::new(seed ^ 0x6261_736b_6574_7300),
        national: national.then(|| Rng::new(seed ^ 0x6e61_7469_6f6e_616c)),
    };
    let mut t = Tables {
        shop: String::new(),
        crm: String::new(),
        pos: String::new(),
        newsletter: String::new(),
        orders: String::new(),
        order_items: String::new(),
        truth: String::new(),
        rows: 0,
    };
    let (mut shop_id, mut crm_id, mut pos_id, mut nl_id, mut order_id) =
        (100_000u64, 0u64, 9_000_000_000u64, 0u64, 5_000_000u64);
    'outer: loop {
        for p in w.household() {
            let rng = &mut w.rng;
            let hard = &mut w.hard;
            // Which systems know this person, and how often.
            let mut plan: Vec<&str> = Vec::new();
            for (source, p_in, p_dup) in [
                ("shop", 0.6, 0.07),
                ("crm", 0.45, 0.05),
                ("pos", 0.3, 0.03),
                ("newsletter", 0.35, 0.08),
            ] {
                if rng.chance(p_in) {
                    plan.push(source);
                    if rng.chance(p_dup) {
                        plan.push(source);
                    }
                }
            }
            if plan.is_empty() {
                plan.push("shop");
            }
            let mut commerce_keys: Vec<(&str, String)> = Vec::new();
            let mut seen: Vec<&str> = Vec::new();
            for source in plan {
                if t.rows >= target_rows {
                    break 'outer;
                }
                t.rows += 1;
                let mut tags: Vec<&'static str> = p
                    .tags
                    .iter()
                    .copied()
                    .filter(|t| !matches!(*t, "moved" | "married"))
                    .collect();
                if seen.contains(&source) {
                    tags.push("dup_in_source");
                }
                seen.push(source);
                let updated = rng.range(DAY_2019, DAY_LAST);
                // Older records may predate a move or a marriage.
                let old_record = rng.chance(0.5);
                let addr = match (&p.old_address, old_record) {
                    (Some(old), true) => {
                        tags.push("moved");
                        old.clone()
                    }
                    _ => p.address.clone(),
                };
                let last_base = match (&p.maiden, old_record, &p.double_name) {
                    (Some(m), true, _) => {
                        tags.push("married");
                        m.clone()
                    }
                    // A double name written whole, or one of its parts.
                    (_, _, Some((birth_name, married))) => match hard.range(0, 9) {
                        0..=4 => p.last.clone(),
                        5..=7 => married.clone(),
                        _ => birth_name.clone(),
                    },
                    _ => p.last.clone(),
                };
                // A short form (Hans for Johannes), or an initial only.
                let first_base = match nickname(hard, &p.first) {
                    Some(short) if hard.chance(0.2) => {
                        tags.push("nickname");
                        short.to_string()
                    }
                    _ if hard.chance(0.02) => {
                        tags.push("initial");
                        format!("{}.", p.first.chars().next().unwrap_or('X'))
                    }
                    _ => p.first.clone(),
                };
                let mut first = render_name(rng, &first_base, &mut tags);
                let mut last = render_name(rng, &last_base, &mut tags);
                if rng.chance(0.03) {
                    std::mem::swap(&mut first, &mut last);
                    tags.push("swapped");
                }
                let mut email = render_email(rng, &p, &mut tags);
                // Another address of the person's: the one from before the marriage, or work.
                match (&p.maiden_email, &p.work_email) {
                    (Some(m), _) if old_record && hard.chance(0.6) => {
                        email = m.clone();
                        tags.push("other_email");
                    }
                    (_, Some(w)) if hard.chance(0.3) => {
                        email = w.clone();
                        tags.push("other_email");
                        tags.push("work_email");
                    }
                    _ => {}
                }
                // sen./jun. and titles written into the name fields.
                let generation = p.generation.filter(|_| hard.chance(0.5));
                let title = p.title.filter(|_| hard.chance(0.4));
                if generation.is_some() {
                    tags.push("generation");
                }
                if title.is_some() {
                    tags.push("title");
                }
                // A birth date typed wrong; twins' records often without one.
                let birth_date = if hard.chance(0.04) {
                    tags.push("birth_typo");
                    birth_typo(hard, p.birth)
                } else {
                    p.birth
                };
                let no_birth = p.tags.contains(&"twin") && hard.chance(0.5);
                let phone_national = match (&p.mobile, &p.landline) {
                    (Some(m), Some(l)) => Some(if rng.chance(0.6) {
                        m.clone()
                    } else {
                        l.clone()
                    }),
                    (Some(m), None) => Some(m.clone()),
                    (None, Some(l)) => Some(l.clone()),
                    (None, None) => None,
                };
                let phone = phone_national.as_ref().map(|n| render_phone(rng, n));
                let street = render_street(rng, &addr.street, &mut tags);
                let number = render_number(rng, &addr.number);
                let ts = format!(
                    "{} {:02}:{:02}:{:02}+01",
                    date(day_to_date(updated)),
                    rng.range(7, 21),
                    rng.range(0, 59),
                    rng.range(0, 59)
                );
                let birth_s = date(birth_date);
                let missing = |rng: &mut Rng, pr: f64| rng.chance(pr);
                let mut key: String;
                match source {
                    "shop" => {
                        shop_id += 1;
                        key = shop_id.to_string();
                        let zip = if addr.postcode.starts_with('0') && rng.chance(0.3) {
                            tags.push("postcode_zero");
                            addr.postcode[1..].to_string()
                        } else {
                            addr.postcode.to_string()
                        };
                        let line = format!("{street} {number}");
                        let phone_v = if missing(rng, 0.35) {
                            None
                        } else {
                            phone.as_deref()
                        };
                        let birthday = if missing(rng, 0.6) {
                            None
                        } else {
                            Some(birth_s.as_str())
                        };
                        let created = date(day_to_date(updated - rng.range(0, 700)));
                        let first = match title {
                            Some(t) => format!("{t} {first}"),
                            None => first.clone(),
                        };
                        let last = match generation {
                            Some(g) => format!("{last} {g}"),
                            None => last.clone(),
                        };
                        let birthday = birthday.filter(|_| !no_birth);
                        if alt {
                            // Another shop system: one name field, postcode and city in one.
                            key = format!("WS-{shop_id}");
                            // The draws the other layout makes for columns this one lacks: the
                            // same people and records in both layouts.
                            rng.chance(0.4);
                            let name = format!("{first} {last}");
                            let plz_ort = format!("{zip} {}", addr.city);
                            let geb = birthday.map(german_date);
                            row(
                                &mut t.shop,
                                &[
                                    Some(&key),
                                    Some(&email),
                                    Some(if p.female { "Frau" } else { "Herr" }),
                                    Some(&name),
                                    phone_v,
                                    Some(&line),
                                    Some(&plz_ort),
                                    geb.as_deref(),
                                    Some(&ts),
                                ],
                            );
                        } else {
                            row(
                                &mut t.shop,
                                &[
                                    Some(&key),
                                    Some(&email),
                                    Some(&first),
                                    Some(&last),
                                    phone_v,
                                    Some(&line),
                                    Some(&zip),
                                    Some(addr.city),
                                    Some("DE"),
                                    birthday,
                                    Some(if rng.chance(0.4) { "t" } else { "f" }),
                                    Some(&created),
                                    Some(&ts),
                                ],
                            );
                        }
                        commerce_keys.push(("shop", key.clone()));
                    }
                    "crm" => {
                        crm_id += 1;
                        key = format!("K-{crm_id:07}");
                        let anrede = if p.female { "Frau" } else { "Herr" };
                        let titel = if rng.chance(0.05) {
                            Some(*rng.pick(&["Dr.", "Prof. Dr.", "Dipl.-Ing."]))
                        } else {
                            None
                        };
                        let titel = p.title.or(titel);
                        let plz = if rng.chance(0.05) {
                            format!("D-{}", addr.postcode)
                        } else {
                            addr.postcode.to_string()
                        };
                        let geb = if missing(rng, 0.3) || no_birth {
                            None
                        } else {
                            Some(format!(
                                "{:02}.{:02}.{}",
                                birth_date.2, birth_date.1, birth_date.0
                            ))
                        };
                        // The CRM writes sen./jun. after the last name: "Müller sen.".
                        let last = match generation {
                            Some(g) => format!("{last} {g}"),
                            None => last.clone(),
                        };
                        let landline = p
                            .landline
                            .as_ref()
                            .filter(|_| !missing(rng, 0.3))
                            .map(|l| render_phone(rng, l));
                        let mobile = p
                            .mobile
                            .as_ref()
                            .filter(|_| !missing(rng, 0.4))
                            .map(|m| render_phone(rng, m));
                        let e = if missing(rng, 0.15) {
                            None
                        } else {
                            Some(email.as_str())
                        };
                        if alt {
                            // "Nachname, Vorname" in one field, titles and sen./jun. inside,
                            // the address in one line.
                            key = crm_id.to_string();
                            rng.chance(0.5);
                            let tt = titel.map(|t| format!("{t} ")).unwrap_or_default();
                            let name = format!("{last}, {tt}{first}");
                            let anschrift = format!("{street} {number}, {plz} {}", addr.city);
                            let geb_iso = geb
                                .as_deref()
                                .map(|g| format!("{}-{}-{}", &g[6..], &g[3..5], &g[..2]));
                            row(
                                &mut t.crm,
                                &[
                                    Some(&key),
                                    Some(&name),
                                    e,
                                    landline.as_deref(),
                                    mobile.as_deref(),
                                    Some(&anschrift),
                                    geb_iso.as_deref(),
                                    Some(&ts[..19]),
                                ],
                            );
                        } else {
                            row(
                                &mut t.crm,
                                &[
                                    Some(&key),
                                    Some(anrede),
                                    titel,
                                    Some(&first),
                                    Some(&last),
                                    e,
                                    landline.as_deref(),
                                    mobile.as_deref(),
                                    Some(&street),
                                    Some(&number),
                                    Some(&plz),
                                    Some(addr.city),
                                    Some("Deutschland"),
                                    geb.as_deref(),
                                    Some(if rng.chance(0.5) { "t" } else { "f" }),
                                    Some(&ts[..19]),
                                ],
                            );
                        }
                    }
                    "pos" => {
                        pos_id += 1;
                        key = pos_id.to_string();
                        let full = if rng.chance(0.4) {
                            let g = generation.map(|g| format!(" {g}")).unwrap_or_default();
                            format!("{}{g}, {}", last.to_uppercase(), first)
                        } else {
                            let g = generation.map(|g| format!(" {g}")).unwrap_or_default();
                            let tt = title.map(|t| format!("{t} ")).unwrap_or_default();
                            format!("{tt}{first} {last}{g}")
                        };
                        let e = if missing(rng, 0.6) {
                            None
                        } else {
                            Some(email.as_str())
                        };
                        let b = if missing(rng, 0.5) || no_birth {
                            None
                        } else {
                            Some(birth_s.as_str())
                        };
                        let since = date(day_to_date(updated - rng.range(0, 1000)));
                        if alt {
                            // A till system: last and first name apart (often in capitals),
                            // no street, the birth date as digits.
                            key = format!("KK-{pos_id}");
                            rng.pick(STORES);
                            let nachname = match generation {
                                Some(g) => format!("{} {g}", last.to_uppercase()),
                                None => last.to_uppercase(),
                            };
                            let geb = b.map(|d| d.replace('-', ""));
                            row(
                                &mut t.pos,
                                &[
                                    Some(&key),
                                    Some(&nachname),
                                    Some(&first),
                                    Some(&addr.postcode),
                                    Some(addr.city),
                                    phone.as_deref(),
                                    e,
                                    geb.as_deref(),
                                    Some(&ts),
                                ],
                            );
                        } else {
                            row(
                                &mut t.pos,
                                &[
                                    Some(&key),
                                    Some(&full),
                                    phone.as_deref(),
                                    Some(&addr.postcode),
                                    Some(addr.city),
                                    b,
                                    e,
                                    Some(*rng.pick(STORES)),
                                    Some(&since),
                                    Some(&ts),
                                ],
                            );
                        }
                        commerce_keys.push(("pos", key.clone()));
                    }
                    _ => {
                        nl_id += 1;
                        key = nl_id.to_string();
                        let name = if missing(rng, 0.5) {
                            tags.push("email_only");
                            None
                        } else {
                            Some(first.as_str())
                        };
                        let unsub = if rng.chance(0.1) {
                            Some(date(
                                day_to_date(updated + rng.range(1, 200)).min((2026, 10, 31)),
                            ))
                        } else {
                            None
                        };
                        let confirmed = if rng.chance(0.8) { "t" } else { "f" };
                        if alt {
                            key = format!("NL{nl_id:06}");
                            row(
                                &mut t.newsletter,
                                &[Some(&key), Some(&email), name, Some(&ts), Some(confirmed)],
                            );
                        } else {
                            row(
                                &mut t.newsletter,
                                &[
                                    Some(&key),
                                    Some(&email),
                                    name,
                                    Some(&ts),
                                    Some(confirmed),
                                    unsub.as_deref(),
                                ],
                            );
                        }
                    }
                }
                let mut tag_list = String::from("{");
                tags.sort_unstable();
                tags.dedup();
                tag_list.push_str(&tags.join(","));
                tag_list.push('}');
                row(
                    &mut t.truth,
                    &[
                        Some(match (alt, source) {
                            (true, "shop") => "webshop",
                            (true, "pos") => "kasse",
                            _ => source,
                        }),
                        Some(&key),
                        Some(&p.id.to_string()),
                        Some(&p.household.to_string()),
                        Some(&tag_list),
                    ],
                );
            }
            // Purchases: many buy once, some often, some drop out; a few returns.
            if !commerce_keys.is_empty() {
                let taste = Taste::draw(&mut w.basket);
                let mut bought: Vec<usize> = Vec::new();
                let rng = &mut w.rng;
                let n = if rng.chance(0.45) {
                    1
                } else {
                    1 + (-(rng.f64().max(1e-9)).ln() * 4.0) as usize
                };
                let mut day = rng.range(DAY_2023, DAY_LAST - 30);
                let spend = (3.6 + 0.6 * rng.normal()).exp();
                for _ in 0..n {
                    if day > DAY_LAST {
                        break;
                    }
                    order_id += 1;
                    let (channel, key) = rng.pick(&commerce_keys);
                    let amount = (spend * (0.25 * rng.normal()).exp()).max(1.0);
                    let status = if rng.chance(0.05) {
                        "returned"
                    } else if rng.chance(0.02) {
                        "cancelled"
                    } else {
                        "completed"
                    };
                    let mut line = String::new();
                    let _ = write!(line, "{amount:.2}");
                    row(
                        &mut t.orders,
                        &[
                            Some(&order_id.to_string()),
                            Some(channel),
                            Some(key),
                            Some(&date(day_to_date(day))),
                            Some(&line),
                            Some("EUR"),
                            Some(status),
                        ],
                    );
                    basket_lines(
                        &mut t.order_items,
                        &mut w.basket,
                        &taste,
                        &mut bought,
                        order_id,
                        amount,
                    );
                    day += 1 + (-(rng.f64().max(1e-9)).ln() * 70.0) as i64;
                    if rng.chance(0.12) {
                        break;
                    }
                }
            }
        }
    }
    t
}

/// What a customer buys: a main category, a second one, and now and then anything.
struct Taste {
    main: usize,
    second: usize,
}

fn categories() -> Vec<&'static str> {
    let mut c: Vec<&str> = PRODUCTS.iter().map(|p| p.2).collect();
    c.dedup();
    c
}

impl Taste {
    fn draw(rng: &mut Rng) -> Taste {
        let n = categories().len();
        // Some categories are more popular than others (weights 1/(rank+1)).
        let pick = |rng: &mut Rng| -> usize {
            let total: f64 = (0..n).map(|i| 1.0 / (i as f64 + 1.0)).sum();
            let mut x = rng.f64() * total;
            for i in 0..n {
                x -= 1.0 / (i as f64 + 1.0);
                if x < 0.0 {
                    return i;
                }
            }
            n - 1
        };
        let main = pick(rng);
        let mut second = pick(rng);
        if second == main {
            second = (main + 1 + rng.range(0, n as i64 - 2) as usize) % n;
        }
        Taste { main, second }
    }
}

/// The line items of one order: 1-3 products, mostly of the customer's categories; a starter
/// (machine, pan, bed) once, refills (beans, oil, food) again and again. The order's amount is
/// split over the lines by list price and quantity, so the lines sum to it exactly.
fn basket_lines(
    out: &mut String,
    rng: &mut Rng,
    taste: &Taste,
    bought: &mut Vec<usize>,
    order_id: u64,
    amount: f64,
) {
    let cats = categories();
    let lines = if rng.chance(0.5) {
        1
    } else if rng.chance(0.6) {
        2
    } else {
        3
    };
    let mut chosen: Vec<(usize, u32)> = Vec::new();
    for _ in 0..lines * 3 {
        if chosen.len() == lines {
            break;
        }
        let r = rng.f64();
        let cat = if r < 0.65 {
            taste.main
        } else if r < 0.9 {
            taste.second
        } else {
            rng.range(0, cats.len() as i64 - 1) as usize
        };
        let in_cat: Vec<usize> = (0..PRODUCTS.len())
            .filter(|&i| PRODUCTS[i].2 == cats[cat])
            .collect();
        let (starters, refills) = in_cat.split_at(STARTERS_PER_CATEGORY.min(in_cat.len()));
        let open_starters: Vec<usize> = starters
            .iter()
            .copied()
            .filter(|i| !bought.contains(i))
            .collect();
        let product = if !open_starters.is_empty() && (refills.is_empty() || rng.chance(0.35)) {
            *rng.pick(&open_starters)
        } else if !refills.is_empty() {
            // The first refill of a category sells most (weights 1/(rank+1)^1.2).
            let w: Vec<f64> = (0..refills.len())
                .map(|k| 1.0 / (k as f64 + 1.0).powf(1.2))
                .collect();
            let mut x = rng.f64() * w.iter().sum::<f64>();
            let mut k = 0;
            while k + 1 < w.len() && x >= w[k] {
                x -= w[k];
                k += 1;
            }
            refills[k]
        } else {
            continue;
        };
        if chosen.iter().any(|c| c.0 == product) {
            continue;
        }
        let quantity = if starters.contains(&product) {
            1
        } else {
            1 + (rng.chance(0.35) as u32) + (rng.chance(0.15) as u32)
        };
        chosen.push((product, quantity));
        bought.push(product);
    }
    let weights: Vec<f64> = chosen
        .iter()
        .map(|&(p, q)| PRODUCTS[p].3 * q as f64)
        .collect();
    let total_cents = (amount * 100.0).round() as i64;
    let weight_sum: f64 = weights.iter().sum();
    let mut given = 0i64;
    for (n, (&(p, q), w)) in chosen.iter().zip(&weights).enumerate() {
        let cents = if n + 1 == chosen.len() {
            total_cents - given
        } else {
            (total_cents as f64 * w / weight_sum).floor() as i64
        };
        given += cents;
        let (sku, name, category, _) = PRODUCTS[p];
        row(
            out,
            &[
                Some(&order_id.to_string()),
                Some(&(n + 1).to_string()),
                Some(sku),
                Some(name),
                Some(category),
                Some(&q.to_string()),
                Some(&format!("{}.{:02}", cents / 100, cents % 100)),
            ],
        );
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: crmgen [--rows N (default 1000)] [--seed S (default 42)] [--schema NAME (default public)] [--layout demo|alt] [--population cities|national]");
        eprintln!("  --layout alt: the same kind of people in other source tables (webshop_kunden, crm_kontakte with \"Nachname, Vorname\", kasse_karten, newsletter_abos); register them with benches/alt_sources.sql");
        eprintln!("  --population national: the same people with the postcodes and surnames of a whole country (6,300 postcodes, a long tail of surnames) instead of 42 city postcodes and 127 surnames, so that blocks do not fill up as the rows grow (benches/scale.sh)");
        return Ok(());
    }
    let rows: usize = arg("--rows").map_or(1000, |v| v.parse().expect("--rows takes a number"));
    let seed: u64 = arg("--seed").map_or(42, |v| v.parse().expect("--seed takes a number"));
    let schema = arg("--schema").unwrap_or_else(|| "public".to_string());
    assert!(
        schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "--schema takes a plain identifier"
    );
    let alt = match arg("--layout").as_deref() {
        None | Some("demo") => false,
        Some("alt") => true,
        Some(other) => panic!("--layout takes demo or alt, not {other}"),
    };
    let national = match arg("--population").as_deref() {
        None | Some("cities") => false,
        Some("national") => true,
        Some(other) => panic!("--population takes cities or national, not {other}"),
    };
    let t = generate(seed, rows, alt, national);
    let mut out = BufWriter::with_capacity(1 << 20, io::stdout().lock());
    let layout = if alt { " --layout alt" } else { "" };
    let population = if national {
        " --population national"
    } else {
        ""
    };
    writeln!(out, "-- crmgen --rows {rows} --seed {seed}{layout}{population}\nSET client_min_messages = warning;\nBEGIN;\nCREATE SCHEMA IF NOT EXISTS {schema};\nSET LOCAL search_path = {schema};")?;
    if alt {
        writeln!(out, "DROP TABLE IF EXISTS webshop_kunden, crm_kontakte, kasse_karten, newsletter_abos, orders, order_items, truth CASCADE;")?;
    } else {
        writeln!(out, "DROP TABLE IF EXISTS shop_customers, crm_contacts, pos_loyalty_members, newsletter_signups, orders, order_items, truth CASCADE;")?;
    }
    let alt_tables: [(&str, &str, &str, &String); 4] = [
        ("webshop_kunden", "kd_nr text PRIMARY KEY, mail text, anrede text, name text, tel text, strasse_hnr text, plz_ort text, geb_datum text, geaendert timestamptz",
         "kd_nr, mail, anrede, name, tel, strasse_hnr, plz_ort, geb_datum, geaendert", &t.shop),
        ("crm_kontakte", "id bigint PRIMARY KEY, name text, email text, festnetz text, handy text, anschrift text, geburtstag date, stand timestamp",
         "id, name, email, festnetz, handy, anschrift, geburtstag, stand", &t.crm),
        ("kasse_karten", "karte text PRIMARY KEY, nachname text, vorname text, plz text, ort text, telefon text, email text, geb text, aktualisiert timestamptz",
         "karte, nachname, vorname, plz, ort, telefon, email, geb, aktualisiert", &t.pos),
        ("newsletter_abos", "abo_id text PRIMARY KEY, adresse text NOT NULL, vorname text, angemeldet timestamptz, bestaetigt boolean",
         "abo_id, adresse, vorname, angemeldet, bestaetigt", &t.newsletter),
    ];
    let demo_tables: [(&str, &str, &str, &String); 4] = [
        ("shop_customers", "customer_id bigint PRIMARY KEY, email text, first_name text, last_name text, phone text, street text, zip text, city text, country text, birthday date, newsletter boolean, created_at date, updated_at timestamptz",
         "customer_id, email, first_name, last_name, phone, street, zip, city, country, birthday, newsletter, created_at, updated_at", &t.shop),
        ("crm_contacts", "kontakt_nr text PRIMARY KEY, anrede text, titel text, vorname text, nachname text, e_mail text, telefon text, mobil text, strasse text, hausnummer text, plz text, ort text, land text, geburtsdatum text, email_optin boolean, geaendert_am timestamp",
         "kontakt_nr, anrede, titel, vorname, nachname, e_mail, telefon, mobil, strasse, hausnummer, plz, ort, land, geburtsdatum, email_optin, geaendert_am", &t.crm),
        ("pos_loyalty_members", "card_no bigint PRIMARY KEY, full_name text, phone text, postcode text, city text, birth_date date, email text, home_store text, member_since date, updated_at timestamptz",
         "card_no, full_name, phone, postcode, city, birth_date, email, home_store, member_since, updated_at", &t.pos),
        ("newsletter_signups", "signup_id bigint PRIMARY KEY, email text NOT NULL, first_name text, signed_up_at timestamptz, double_opt_in boolean, unsubscribed_at date",
         "signup_id, email, first_name, signed_up_at, double_opt_in, unsubscribed_at", &t.newsletter),
    ];
    let common: [(&str, &str, &str, &String); 3] = [
        ("orders", "order_id bigint PRIMARY KEY, channel text NOT NULL, customer_ref text NOT NULL, ordered_at date NOT NULL, amount numeric(10,2) NOT NULL, currency text NOT NULL, status text NOT NULL",
         "order_id, channel, customer_ref, ordered_at, amount, currency, status", &t.orders),
        ("order_items", "order_id bigint NOT NULL REFERENCES orders, line_no int NOT NULL, sku text NOT NULL, product_name text NOT NULL, category text NOT NULL, quantity int NOT NULL, line_amount numeric(10,2) NOT NULL, PRIMARY KEY (order_id, line_no)",
         "order_id, line_no, sku, product_name, category, quantity, line_amount", &t.order_items),
        ("truth", "source text NOT NULL, source_key text NOT NULL, person_id bigint NOT NULL, household_id bigint NOT NULL, variations text[] NOT NULL, PRIMARY KEY (source, source_key)",
         "source, source_key, person_id, household_id, variations", &t.truth),
    ];
    let sources = if alt { alt_tables } else { demo_tables };
    for (name, columns, list, data) in sources.into_iter().chain(common) {
        writeln!(
            out,
            "CREATE TABLE {name} ({columns});\nCOPY {name} ({list}) FROM stdin;"
        )?;
        out.write_all(data.as_bytes())?;
        writeln!(out, "\\.")?;
    }
    writeln!(out, "COMMENT ON TABLE truth IS 'crmgen ground truth: which source row belongs to which person; for scoring only';")?;
    writeln!(out, "COMMIT;\nANALYZE;")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> usize {
        s.lines().count()
    }

    #[test]
    fn same_seed_same_data_and_exact_row_count() {
        let a = generate(7, 3000, false, false);
        let b = generate(7, 3000, false, false);
        assert_eq!(a.truth, b.truth);
        assert_eq!(a.orders, b.orders);
        assert_eq!(a.rows, 3000);
        assert_eq!(
            lines(&a.shop) + lines(&a.crm) + lines(&a.pos) + lines(&a.newsletter),
            3000
        );
        assert_eq!(lines(&a.truth), 3000);
        assert_ne!(generate(8, 3000, false, false).truth, a.truth);
    }

    #[test]
    fn a_national_population_has_many_more_surnames_and_postcodes() {
        // shop_customers: last_name is the 4th column, zip the 7th (see demo_tables).
        let distinct = |t: &Tables, col: usize| {
            t.shop
                .lines()
                .filter_map(|l| l.split('\t').nth(col))
                .map(str::to_lowercase)
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        let cities = generate(7, 20_000, false, false);
        let national = generate(7, 20_000, false, true);
        assert_eq!(national.rows, 20_000);
        assert_eq!(lines(&national.truth), 20_000);
        assert!(distinct(&cities, 3) < 1_000, "{}", distinct(&cities, 3));
        assert!(
            distinct(&national, 3) > 3 * distinct(&cities, 3),
            "{}",
            distinct(&national, 3)
        );
        assert!(distinct(&cities, 6) < 100, "{}", distinct(&cities, 6));
        assert!(distinct(&national, 6) > 2_000, "{}", distinct(&national, 6));
    }

    #[test]
    fn hard_cases_are_present() {
        let t = generate(1, 20_000, false, false);
        for tag in [
            "typo",
            "translit",
            "swapped",
            "moved",
            "married",
            "family",
            "twin",
            "junior",
            "senior",
            "shared_email",
            "dup_in_source",
            "email_alias",
            "nickname",
            "initial",
            "double_name",
            "generation",
            "title",
            "birth_typo",
            "alike_twins",
            "other_email",
            "work_email",
            "email_only",
        ] {
            assert!(t.truth.contains(tag), "no record tagged {tag}");
        }
        assert!(t.orders.contains("returned"));
    }

    #[test]
    fn the_other_layout_holds_the_same_people() {
        let demo = generate(7, 3000, false, false);
        let alt = generate(7, 3000, true, false);
        let persons = |t: &Tables| -> Vec<String> {
            t.truth
                .lines()
                .map(|l| l.split('\t').skip(2).collect::<Vec<_>>().join("\t"))
                .collect()
        };
        assert_eq!(persons(&demo), persons(&alt));
        assert_eq!(alt.rows, 3000);
        assert!(alt.truth.starts_with("webshop\tWS-") || alt.truth.contains("\nwebshop\tWS-"));
        assert!(alt.truth.contains("\nkasse\tKK-"));
        // "Nachname, Vorname" in the CRM's one name field.
        assert!(alt
            .crm
            .lines()
            .all(|l| l.split('\t').nth(1).unwrap().contains(", ")));
    }

    #[test]
    fn a_mailbox_is_handed_out_once_as_the_provider_sees_it() {
        assert_eq!(
            mailbox("Karin.Walter@googlemail.com"),
            "karinwalter@gmail.com"
        );
        assert_eq!(mailbox("karin.walter@web.de"), "karin.walter@web.de");
        let mut rng = Rng::new(3);
        let mut taken = std::collections::HashSet::new();
        let boxes: std::collections::HashSet<String> = (0..5_000)
            .map(|_| mailbox(&fresh_email(&mut rng, &mut taken, "Karin", "Walter", 1970)))
            .collect();
        assert_eq!(boxes.len(), 5_000);
    }

    #[test]
    fn every_order_has_line_items_summing_to_its_amount() {
        let t = generate(11, 5000, false, false);
        let mut lines: std::collections::HashMap<&str, (i64, usize)> = Default::default();
        for l in t.order_items.lines() {
            let f: Vec<&str> = l.split('\t').collect();
            let cents = (f[6].parse::<f64>().unwrap() * 100.0).round() as i64;
            assert!(cents >= 0, "{l}");
            assert!(
                PRODUCTS
                    .iter()
                    .any(|p| p.0 == f[2] && p.1 == f[3] && p.2 == f[4]),
                "{l}"
            );
            let e = lines.entry(f[0]).or_default();
            e.0 += cents;
            e.1 += 1;
        }
        let orders: Vec<&str> = t.orders.lines().collect();
        assert_eq!(lines.len(), orders.len());
        for o in orders {
            let f: Vec<&str> = o.split('\t').collect();
            let cents = (f[4].parse::<f64>().unwrap() * 100.0).round() as i64;
            let (sum, n) = lines[f[0]];
            assert_eq!(sum, cents, "order {}", f[0]);
            assert!((1..=3).contains(&n));
        }
        // Several categories and both kinds of product are sold.
        for sku in ["KF-100", "KF-200", "HA-200", "BU-120"] {
            assert!(t.order_items.contains(sku), "{sku} never sold");
        }
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(day_to_date(0), (1970, 1, 1));
        assert_eq!(day_to_date(DAY_2019), (2019, 1, 1));
        assert_eq!(day_to_date(DAY_2023), (2023, 1, 1));
        assert_eq!(day_to_date(DAY_LAST), (2026, 10, 31));
    }
}
