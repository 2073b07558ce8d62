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
        &["sepp", "seppl", "seppi", "joseph", "jupp", "josi", "joschi"],
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
        &["matze", "matthes", "hias", "hiasl", "matti", "mathias"],
    ),
    ("sebastian", &["basti", "bastian", "wastl"]),
    ("alexander", &["alex", "sascha", "xander", "alexandr"]),
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
    ("wolfgang", &["wolf", "wolfi"]),
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
        ],
    ),
    (
        "elisabeth",
        &[
            "lisa", "liesel", "liesl", "lise", "elsa", "else", "elli", "betty", "sissi", "sisi",
            "lisbeth", "elisa", "ilse",
        ],
    ),
    (
        "margarete",
        &[
            "grete",
            "greta",
            "gretel",
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

/// Like [`same_given_name`], but a name the table does not hold may be one typo (one insertion,
/// deletion, substitution or swap of neighbours) from a name it holds: "Diidi" for Didi, "Mchi"
/// for Michi. Names of four letters or more only, so short names do not turn into any name. Not
/// a comparison level: only for judging whether two holders of one e-mail or phone can be one
/// person.
pub fn same_given_name_allowing_a_typo(a: &str, b: &str) -> bool {
    if same_given_name(a, b) {
        return true;
    }
    let idx = index();
    let groups = |n: &str| -> Vec<u16> {
        if let Some(g) = idx.get(n) {
            return g.to_vec();
        }
        if n.chars().count() < 4 {
            return Vec::new();
        }
        let mut found: Vec<u16> = idx
            .iter()
            .filter(|(name, _)| crate::compare::similarity::within_one_edit(n, name))
            .flat_map(|(_, g)| g.iter().copied())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    };
    let (x, y) = (groups(a), groups(b));
    x.iter().any(|g| y.contains(g))
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

/// How many groups (full names) the table holds: for the documentation and the tests.
pub fn group_count() -> usize {
    GROUPS.len()
}

#[cfg(test)]
mod tests {
    use super::*;
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
