//! German given names and their short forms: Hans and Johannes, Sepp and Josef, Kathi and
//! Katharina, Uli and Ulrich are one name written two ways, so "Hans Müller" and "Johannes
//! Müller" can be one person. The first-name comparison gives such a pair a level of its own
//! ("nickname"), whose weight `train()` learns like any other level's.
//!
//! **Source.** Curated by hand for customer_unify (2026) from common German usage: the short
//! forms (Kurzformen) and pet forms (Koseformen) of the given names frequent in German customer
//! data, the spelling variants that are the same name (Stefan / Stephan, Christoph / Christof)
//! and the Low German and Bavarian forms (Dörte for Dorothea, Sepp for Josef). It is not copied
//! from a published list. To extend it, the German Wiktionary (de.wiktionary.org) lists
//! "Kurzformen" and "Koseformen" on the page of each given name. Names are written as
//! `transliterate_de` writes them lower-cased (ä → ae, ö → oe, ü → ue, ß → ss).
//!
//! A short form may belong to several names (Alex: Alexander and Alexandra; Chris: Christian,
//! Christoph, Christine): two names are forms of one name when they share a group. Names that
//! are their own names as well (Lisa, Lena, Sandra, Jan) are in a group all the same: a pair with
//! nothing else in common is not made a match by this level alone, its learned weight is one
//! term among the others.

use std::collections::HashMap;
use std::sync::OnceLock;

/// (full name, its short forms and variants). Each row is one group.
const GROUPS: &[(&str, &[&str])] = &[
    // Male names.
    (
        "johannes",
        &["hans", "hannes", "johann", "hansi", "jo", "jens"],
    ),
    (
        "josef",
        &[
            "sepp", "seppl", "seppi", "joseph", "jupp", "josi", "joschi", "pepi", "peppi",
        ],
    ),
    ("ulrich", &["uli", "ulli", "ueli"]),
    (
        "nikolaus",
        &["klaus", "claus", "niko", "nico", "niklas", "nick", "klaas"],
    ),
    ("jakob", &["jockel", "jaki", "kobi", "jacob"]),
    ("joachim", &["achim", "jochen", "jo"]),
    ("wilhelm", &["willi", "willy", "wim", "helm"]),
    (
        "friedrich",
        &["fritz", "fritzi", "friedel", "fred", "frieder"],
    ),
    ("heinrich", &["heinz", "heiner", "hein", "heini", "henner"]),
    ("bernhard", &["bernd", "berni", "bernie"]),
    ("rudolf", &["rudi", "ruedi", "rudolph"]),
    ("reinhard", &["reini", "reinhardt"]),
    ("gerhard", &["gerd", "gert", "gerdi", "gerhardt"]),
    ("eberhard", &["ebi", "hardy"]),
    (
        "matthias",
        &[
            "matze", "matthes", "hias", "hiasl", "matti", "mathias", "thies", "theis",
        ],
    ),
    ("sebastian", &["basti", "bastian", "wastl"]),
    (
        "alexander",
        &["alex", "sascha", "xander", "xandi", "alexandr"],
    ),
    ("christian", &["chris", "krischan", "christl"]),
    (
        "christoph",
        &["chris", "christof", "stoffel", "christopher"],
    ),
    ("michael", &["michi", "micha", "michel", "mike"]),
    ("andreas", &["andi", "andy", "anderl"]),
    ("thomas", &["tom", "tommy", "tommi", "thomy"]),
    ("tobias", &["tobi", "toby"]),
    ("florian", &["flo", "flori"]),
    ("maximilian", &["max", "maxi", "maxl"]),
    ("dominik", &["domi", "dominic", "dominique"]),
    ("daniel", &["dani", "danny"]),
    ("stefan", &["stephan", "steffen", "steff", "steve"]),
    ("markus", &["marcus", "mark", "marc"]),
    ("philipp", &["phil", "philip", "phillip"]),
    ("wolfgang", &["wolf", "wolfi", "wolle"]),
    ("dietrich", &["dieter", "dirk", "didi"]),
    ("georg", &["schorsch", "schorschi", "george"]),
    ("karl", &["kalle", "carl", "charly", "karli"]),
    ("karl-heinz", &["kalle", "karlheinz", "kh", "charly"]),
    ("hans-peter", &["hanspeter", "hape", "hp"]),
    ("hans-juergen", &["hansjuergen", "hajo"]),
    ("lukas", &["lucas", "luke", "luki"]),
    ("leonhard", &["leo", "leon", "lenny"]),
    ("leopold", &["poldi", "leo"]),
    ("benjamin", &["ben", "benni", "benny"]),
    ("timotheus", &["tim", "timo", "timmy", "timmi"]),
    ("anton", &["toni", "tony", "antonius"]),
    ("konstantin", &["konsti", "kosta", "tino"]),
    ("valentin", &["vali", "valle", "tino"]),
    ("vinzenz", &["vinz", "enzo"]),
    ("raphael", &["rafael", "rafi"]),
    ("ludwig", &["lutz", "luggi", "wiggerl", "lou"]),
    ("manfred", &["manni", "fred"]),
    ("hermann", &["manni", "herrmann"]),
    ("norbert", &["nobbi", "berti"]),
    ("herbert", &["herbie", "berti"]),
    ("siegfried", &["siggi", "sigi"]),
    ("adolf", &["adi", "dolf"]),
    ("walter", &["walti", "walther"]),
    ("peter", &["pit", "piet", "pete"]),
    ("paul", &["paule"]),
    ("mustafa", &["musti"]),
    ("mehmet", &["memo"]),
    ("oliver", &["olli", "olly"]),
    ("patrick", &["patte", "pat"]),
    ("robert", &["robbi", "bob", "rob"]),
    ("richard", &["richie", "rich"]),
    ("werner", &["wernie"]),
    ("juergen", &["juegi"]),
    // Female names.
    (
        "katharina",
        &[
            "kathi",
            "kati",
            "katja",
            "kathrin",
            "katrin",
            "kaethe",
            "kathy",
            "katy",
            "katinka",
            "katharine",
            "catharina",
            "katarina",
            "trine",
        ],
    ),
    (
        "elisabeth",
        &[
            "lisa", "liesel", "liesl", "lise", "elsa", "else", "elli", "betty", "sissi", "sisi",
            "lisbeth", "elisa", "ilse", "elsbeth",
        ],
    ),
    (
        "margarete",
        &[
            "grete",
            "greta",
            "gretel",
            "gretl",
            "margot",
            "marga",
            "maggie",
            "rita",
            "margarethe",
            "margareta",
            "meta",
        ],
    ),
    ("barbara", &["baerbel", "babs", "babette", "barbi"]),
    ("gabriele", &["gabi", "gaby", "gabriela"]),
    ("cornelia", &["conny", "nele", "cora"]),
    (
        "theresa",
        &["resi", "reserl", "tessa", "theres", "therese", "thea"],
    ),
    (
        "susanne",
        &["susi", "sanne", "suse", "susan", "susann", "susanna"],
    ),
    ("stefanie", &["steffi", "stephanie", "steffie"]),
    (
        "christine",
        &["tine", "tina", "christina", "christa", "chris", "chrissi"],
    ),
    ("franziska", &["franzi", "fanny", "ziska"]),
    ("johanna", &["hanna", "hannah", "hanne", "johanne", "jo"]),
    (
        "magdalena",
        &["lena", "leni", "magda", "madeleine", "malene"],
    ),
    ("andrea", &["andi", "andy"]),
    ("daniela", &["dani", "ela"]),
    (
        "alexandra",
        &["alex", "sandra", "sascha", "alexa", "xandra"],
    ),
    ("nicole", &["nici", "nicky", "niki"]),
    ("claudia", &["claudi"]),
    ("angelika", &["geli", "angie", "angelica"]),
    ("veronika", &["vroni", "veronica"]),
    (
        "dorothea",
        &["doro", "dora", "thea", "dorle", "doerte", "dorothee"],
    ),
    ("friederike", &["frieda", "rike", "frederike", "friedel"]),
    ("ulrike", &["ulli", "uli", "rike"]),
    ("charlotte", &["lotte", "lotti", "charly"]),
    ("juliane", &["jule", "julchen"]),
    ("julia", &["jule", "julchen", "juli"]),
    ("sabine", &["bine", "biene"]),
    ("monika", &["moni", "monica"]),
    ("renate", &["reni"]),
    ("ingeborg", &["inge", "inga"]),
    ("gisela", &["gisi", "gila"]),
    ("ursula", &["uschi", "ulla", "ursel"]),
    ("brigitte", &["gitte", "biggi"]),
    (
        "maria",
        &["marie", "mia", "mareike", "mimi", "mitzi", "ria", "maike"],
    ),
    ("sophie", &["sophia", "sofie", "sofia"]),
    ("petra", &["petrina"]),
    ("heike", &["heiki"]),
    ("annemarie", &["anne", "annemie"]),
    ("anna", &["anni", "anne", "annie", "aenne"]),
    ("eva", &["evi", "evchen"]),
    ("emma", &["emmi", "emmy"]),
];

/// Given names common in Germany that the table holds no short forms of: only to know such a
/// word as a given name ([`is_given_name`]: "Sarah" in "Weiss Sarah" is the given name written
/// first, "Jan" typed on a record is a name, not a typo of one), never to make two names one.
/// Curated with the table (same source and spelling) from the names frequent among people
/// living in Germany, born between the 1930s and the 2010s, the names of families from Turkey,
/// Poland and elsewhere among them. Names that are also frequent German family names (Frank,
/// Simon, Martin, Günther, Ludwig, Otto, Arnold, Lorenz, Ernst) are left out: such a word says
/// nothing of which field holds the given name.
const OTHER_GIVEN_NAMES: &[&str] = &[
    // Male.
    "albert",
    "alfons",
    "alfred",
    "alois",
    "andre",
    "armin",
    "arne",
    "arno",
    "artur",
    "axel",
    "benedikt",
    "berthold",
    "bjoern",
    "boris",
    "burkhard",
    "carsten",
    "cornelius",
    "damian",
    "david",
    "denis",
    "dennis",
    "detlef",
    "dietmar",
    "dimitri",
    "egon",
    "elias",
    "emil",
    "erich",
    "erik",
    "erwin",
    "eugen",
    "fabian",
    "falk",
    "felix",
    "ferdinand",
    "finn",
    "gerrit",
    "gottfried",
    "guenter",
    "gustav",
    "harald",
    "hartmut",
    "helge",
    "helmut",
    "hendrik",
    "henning",
    "henrik",
    "holger",
    "horst",
    "hubert",
    "hugo",
    "igor",
    "ingo",
    "ivan",
    "jan",
    "janik",
    "jannik",
    "jasper",
    "joerg",
    "jonas",
    "jonathan",
    "julian",
    "julius",
    "justus",
    "kai",
    "karsten",
    "kevin",
    "kilian",
    "konrad",
    "kurt",
    "lars",
    "lennart",
    "levin",
    "linus",
    "lothar",
    "louis",
    "luca",
    "luis",
    "malte",
    "manuel",
    "marcel",
    "mario",
    "marius",
    "marko",
    "marvin",
    "mats",
    "milan",
    "mirko",
    "moritz",
    "nils",
    "noah",
    "olaf",
    "ole",
    "oskar",
    "pascal",
    "rainer",
    "ralf",
    "ralph",
    "rene",
    "robin",
    "roland",
    "rolf",
    "roman",
    "ruediger",
    "samuel",
    "sandro",
    "sergej",
    "soeren",
    "sven",
    "theo",
    "thilo",
    "thorsten",
    "till",
    "tilo",
    "torsten",
    "udo",
    "uwe",
    "viktor",
    "vincent",
    "volker",
    "waldemar",
    "wilfried",
    "yannick",
    // Male, of the families from Turkey, Poland, the former Yugoslavia and the Arab world.
    "ahmad",
    "ahmed",
    "ahmet",
    "ali",
    "andrzej",
    "burak",
    "can",
    "cem",
    "dariusz",
    "deniz",
    "emre",
    "fatih",
    "hakan",
    "hasan",
    "hueseyin",
    "ibrahim",
    "jakub",
    "kemal",
    "krzysztof",
    "marek",
    "mohamed",
    "mohammed",
    "murat",
    "omar",
    "osman",
    "pawel",
    "piotr",
    "serkan",
    "tomasz",
    "wojciech",
    "yusuf",
    "zoran",
    // Female.
    "adelheid",
    "agnes",
    "alina",
    "amelie",
    "angela",
    "anita",
    "anja",
    "anke",
    "annette",
    "anne-kathrin",
    "anna-lena",
    "antje",
    "astrid",
    "beate",
    "berta",
    "bettina",
    "bianca",
    "birgit",
    "carina",
    "carla",
    "carmen",
    "caroline",
    "chiara",
    "clara",
    "dagmar",
    "diana",
    "doris",
    "edith",
    "elena",
    "elfriede",
    "elke",
    "ella",
    "emilia",
    "erika",
    "eva-maria",
    "frauke",
    "gertrud",
    "gudrun",
    "hannelore",
    "hedwig",
    "heidi",
    "heidrun",
    "helena",
    "helene",
    "helga",
    "henriette",
    "hildegard",
    "ida",
    "ilona",
    "imke",
    "ina",
    "ines",
    "ingrid",
    "irene",
    "iris",
    "irmgard",
    "isabel",
    "isabell",
    "isabella",
    "jacqueline",
    "jana",
    "janina",
    "jasmin",
    "jennifer",
    "jessica",
    "josephine",
    "jutta",
    "karin",
    "kerstin",
    "kim",
    "kira",
    "klara",
    "lara",
    "larissa",
    "laura",
    "lea",
    "leonie",
    "lilli",
    "lina",
    "linda",
    "luisa",
    "luise",
    "lydia",
    "maja",
    "manuela",
    "mara",
    "marianne",
    "marie-luise",
    "marina",
    "marion",
    "marlene",
    "marta",
    "martha",
    "martina",
    "melanie",
    "merle",
    "michaela",
    "miriam",
    "nadine",
    "nadja",
    "natalie",
    "nathalie",
    "nina",
    "nora",
    "olga",
    "paula",
    "pauline",
    "rebecca",
    "regina",
    "rosa",
    "rosemarie",
    "ruth",
    "sabrina",
    "sara",
    "sarah",
    "silke",
    "silvia",
    "simone",
    "sina",
    "sonja",
    "svenja",
    "svetlana",
    "swantje",
    "tanja",
    "tatjana",
    "ute",
    "vanessa",
    "vera",
    "viktoria",
    "waltraud",
    "wiebke",
    "yvonne",
    // Female, of the families from Turkey, Poland and elsewhere.
    "agnieszka",
    "ayse",
    "elif",
    "emine",
    "esra",
    "fatma",
    "hatice",
    "joanna",
    "juelide",
    "katarzyna",
    "malgorzata",
    "selin",
    "zeynep",
    "zoe",
];

/// Name → the groups it belongs to (at most a few).
fn index() -> &'static HashMap<&'static str, Vec<u16>> {
    static INDEX: OnceLock<HashMap<&'static str, Vec<u16>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<u16>> = HashMap::new();
        for (group, (full, short)) in GROUPS.iter().enumerate() {
            for name in std::iter::once(full).chain(short.iter()) {
                let groups = map.entry(name).or_default();
                if !groups.contains(&(group as u16)) {
                    groups.push(group as u16);
                }
            }
        }
        map
    })
}

/// Whether two transliterated, lower-case given names (as `MatchRecord` derives them) are two
/// forms of one name: a name and its short form (Johannes / Hans), two short forms of one name
/// (Hansi / Hannes), or two spellings (Stefan / Stephan). False for equal names (those agree
/// exactly) and for names the table does not hold.
pub fn same_given_name(a: &str, b: &str) -> bool {
    if a == b || a.is_empty() || b.is_empty() {
        return false;
    }
    let idx = index();
    match (idx.get(a), idx.get(b)) {
        (Some(x), Some(y)) => x.iter().any(|g| y.contains(g)),
        _ => false,
    }
}

/// The groups of a transliterated, lower-case given name (none for a name the table does not
/// hold): looked up once per record (`MatchRecord::prepare`), so that comparing two records'
/// names is [`groups_share_one`] rather than two hash lookups per pair.
pub fn groups(name: &str) -> &'static [u16] {
    index().get(name).map_or(&[], Vec::as_slice)
}

/// [`same_given_name`] of two different names, from their [`groups`].
pub fn groups_share_one(x: &[u16], y: &[u16]) -> bool {
    x.iter().any(|g| y.contains(g))
}

/// Like [`same_given_name`], but a name the table does not hold may be one typo (one insertion,
/// deletion, substitution or swap of neighbours) from a name it holds: "Diidi" for Didi, "Mchi"
/// for Michi. Names of four letters or more only, so short names do not turn into any name. Not
/// a comparison level: only for judging whether two holders of one e-mail or phone can be one
/// person.
pub fn same_given_name_allowing_a_typo(a: &str, b: &str) -> bool {
    if same_given_name(a, b) {
        return true;
    }
    let (x, y) = (groups_allowing_a_typo(a), groups_allowing_a_typo(b));
    x.iter().any(|g| y.contains(g))
}

/// Every name of the groups `name` belongs to, or, for a name of four letters or more the table
/// does not hold, of the groups of the names one typo away (as [`forms`], "bien" giving
/// `sabine`, `bine`, … through "bine"). Only for judging whether two holders of one value can be
/// one person.
pub fn forms_allowing_a_typo(name: &str) -> impl Iterator<Item = &'static str> {
    groups_allowing_a_typo(name)
        .into_iter()
        .flat_map(group_names)
}

/// The groups of `name`, or, for a name of four letters or more the table does not hold, of
/// the names one typo away. Through an index of every name with one letter deleted (symmetric
/// deletion), so a lookup costs a few hash probes, not a pass over the table.
fn groups_allowing_a_typo(name: &str) -> Vec<u16> {
    let idx = index();
    if let Some(g) = idx.get(name) {
        return g.clone();
    }
    if name.chars().count() < 4 {
        return Vec::new();
    }
    let deletions = deletion_index();
    let mut found: Vec<u16> = std::iter::once(name.to_string())
        .chain(one_deleted(name))
        .filter_map(|v| deletions.get(v.as_str()))
        .flatten()
        .filter(|t| crate::compare::similarity::within_one_edit(name, t))
        .flat_map(|t| idx[t].iter().copied())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// `name` with each one of its letters left out.
fn one_deleted(name: &str) -> impl Iterator<Item = String> + '_ {
    name.char_indices()
        .map(move |(i, c)| format!("{}{}", &name[..i], &name[i + c.len_utf8()..]))
}

/// Every name of the table and every form of it with one letter deleted, to the names.
fn deletion_index() -> &'static HashMap<String, Vec<&'static str>> {
    static INDEX: OnceLock<HashMap<String, Vec<&'static str>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut map: HashMap<String, Vec<&'static str>> = HashMap::new();
        for name in index().keys() {
            for v in std::iter::once(name.to_string()).chain(one_deleted(name)) {
                let names = map.entry(v).or_default();
                if !names.contains(name) {
                    names.push(name);
                }
            }
        }
        map
    })
}

/// The full names of the groups `name` (transliterated, lower case) belongs to: `joachim`, `johanna`
/// and `johannes` for `jo`; nothing for a name the table does not hold. A blocking key, so that
/// Hans and Johannes of one last name and postcode meet although their initials differ.
pub fn name_groups(name: &str) -> impl Iterator<Item = &'static str> {
    index()
        .get(name)
        .into_iter()
        .flatten()
        .map(|g| GROUPS[*g as usize].0)
}

/// Whether the table holds `name` (transliterated, lower case) as a given name or a form of one.
pub fn is_listed(name: &str) -> bool {
    index().contains_key(name)
}

/// Whether `name` (transliterated, lower case) is a given name this module knows: one of the
/// table ([`is_listed`]) or another common given name (`OTHER_GIVEN_NAMES`).
pub fn is_given_name(name: &str) -> bool {
    static OTHER: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    is_listed(name)
        || OTHER
            .get_or_init(|| OTHER_GIVEN_NAMES.iter().copied().collect())
            .contains(name)
}

/// Every name of the groups `name` belongs to, full names and short forms (`name` among
/// them): `dorothea`, `doro`, `thea`, … for `thea`; nothing for a name the table does not hold.
pub fn forms(name: &str) -> impl Iterator<Item = &'static str> {
    index()
        .get(name)
        .into_iter()
        .flatten()
        .flat_map(|g| group_names(*g))
}

/// The full name and the short forms of one group.
fn group_names(group: u16) -> impl Iterator<Item = &'static str> {
    let (full, short) = GROUPS[group as usize];
    std::iter::once(full).chain(short.iter().copied())
}

/// How many groups (full names) the table holds: for the documentation and the tests.
pub fn group_count() -> usize {
    GROUPS.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_form_with_one_typo_is_still_the_name() {
        // One letter doubled, left out, swapped or wrong.
        assert!(same_given_name_allowing_a_typo("diidi", "dieter"));
        assert!(same_given_name_allowing_a_typo("mchi", "michael"));
        assert!(same_given_name_allowing_a_typo("hasni", "johannes"));
        assert!(!same_given_name_allowing_a_typo("uil", "ulrich"));
        assert!(!same_given_name_allowing_a_typo("petra", "hans"));
        // Equal to a scan of the whole table with within_one_edit.
        for probe in ["diidi", "sebbastian", "kathrni", "xyzzy", "mchi", "joesf"] {
            let scanned: Vec<u16> = {
                let mut v: Vec<u16> = index()
                    .iter()
                    .filter(|(t, _)| crate::compare::similarity::within_one_edit(probe, t))
                    .flat_map(|(_, g)| g.iter().copied())
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            assert_eq!(groups_allowing_a_typo(probe), scanned, "{probe}");
        }
    }
    use crate::normalize::translit::transliterate_de;

    fn same(a: &str, b: &str) -> bool {
        same_given_name(
            &transliterate_de(&a.to_lowercase()),
            &transliterate_de(&b.to_lowercase()),
        )
    }

    #[test]
    fn the_findings_of_issue_25_are_one_name() {
        assert!(same("Hans", "Johannes"));
        assert!(same("Johannes", "Hans"));
        assert!(same("Sepp", "Josef"));
        assert!(same("Kathi", "Katharina"));
        assert!(same("Uli", "Ulrich"));
        // Two short forms of one name, and spellings.
        assert!(same("Hannes", "Hans"));
        assert!(same("Stefan", "Stephan"));
        assert!(same("Bärbel", "Barbara"));
        assert!(same("Dörte", "Dorothea"));
        assert!(same("Käthe", "Katharina"));
    }

    #[test]
    fn different_names_and_equal_names_are_not_nicknames() {
        assert!(!same("Hans", "Peter"));
        assert!(!same("Katharina", "Katharina"));
        assert!(!same("Christian", "Christine"));
        assert!(!same("Anna", "Hans"));
        assert!(!same("", "Hans"));
        assert!(!same("Zwerschke", "Hans"));
    }

    #[test]
    fn a_short_form_of_several_names_joins_each() {
        assert!(same("Alex", "Alexander"));
        assert!(same("Alex", "Alexandra"));
        assert!(same("Chris", "Christoph"));
        assert!(same("Chris", "Christine"));
        // …without making those names one another's.
        assert!(!same("Alexander", "Alexandra"));
        assert!(!same("Christoph", "Christine"));
        let mut groups: Vec<&str> = name_groups("jo").collect();
        groups.sort_unstable();
        assert_eq!(groups, ["joachim", "johanna", "johannes"]);
        assert_eq!(name_groups("hans").collect::<Vec<_>>(), ["johannes"]);
        assert_eq!(name_groups("johannes").collect::<Vec<_>>(), ["johannes"]);
        assert_eq!(name_groups("zwerschke").count(), 0);
    }

    #[test]
    fn other_given_names_are_names_but_join_none() {
        for n in [
            "sarah",
            "jan",
            "uwe",
            "laura",
            "anne-kathrin",
            "hans",
            "dieter",
        ] {
            assert!(is_given_name(n), "{n}");
        }
        // A typo is no name, nor is a family name.
        for n in [
            "dii",
            "hns",
            "ged",
            "johanan",
            "ktaehe",
            "mueller",
            "frank",
            "zwerschke",
        ] {
            assert!(!is_given_name(n), "{n}");
        }
        assert!(!same_given_name("sarah", "sara"));
        let mut thea: Vec<&str> = forms("thea").collect();
        thea.sort_unstable();
        assert!(thea.contains(&"dorothea") && thea.contains(&"doro") && thea.contains(&"thea"));
        assert_eq!(forms("sarah").count(), 0);
        let mut seen = std::collections::HashSet::new();
        for name in OTHER_GIVEN_NAMES {
            assert!(seen.insert(*name), "{name} twice");
            assert!(!is_listed(name), "{name} is in the table already");
            assert_eq!(transliterate_de(name), *name, "{name}: not transliterated");
            assert_eq!(name.to_lowercase(), *name, "{name}: not lower case");
            assert!(!name.contains(' '), "{name}: a space");
        }
    }

    #[test]
    fn the_table_is_written_as_the_matcher_reads_names() {
        let mut seen = std::collections::HashSet::new();
        for (full, short) in GROUPS {
            assert!(seen.insert(*full), "{full} is a group twice");
            for name in std::iter::once(full).chain(short.iter()) {
                assert_eq!(transliterate_de(name), *name, "{name}: not transliterated");
                assert_eq!(name.to_lowercase(), *name, "{name}: not lower case");
                assert!(!name.contains(' '), "{name}: a space");
                assert_ne!(name, &"", "empty name in {full}");
            }
            assert!(!short.contains(full), "{full} lists itself");
        }
        assert!(group_count() > 100);
    }
}
