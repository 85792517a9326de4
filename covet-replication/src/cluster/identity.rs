use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::core::lock;

/// Which cluster and which history the primary is on, as the health loop last saw it.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    system_id: AtomicU64,
    timeline: AtomicU32,
    /// The primary's `synchronous_standby_names`, as given and as parsed (`None`: asynchronous).
    sync: Mutex<(String, Option<SyncRule>)>,
}

impl Identity {
    pub fn observe(&self, system_id: u64, timeline: Option<u32>) {
        if system_id != 0 {
            self.system_id.store(system_id, Relaxed);
        }
        if let Some(t) = timeline {
            self.timeline.store(t, Relaxed);
        }
    }

    /// Records the primary's `synchronous_standby_names`.
    pub fn observe_synchronous(&self, names: &str) {
        let mut sync = lock(&self.sync);
        if sync.0 != names {
            *sync = (names.to_owned(), SyncRule::parse(names));
        }
    }

    /// How the primary confirmed commits, as last seen; `None` when asynchronously.
    pub fn sync_rule(&self) -> Option<SyncRule> {
        lock(&self.sync).1.clone()
    }

    /// `(system_id, timeline)`, zeros while unknown.
    pub fn get(&self) -> (u64, u32) {
        (self.system_id.load(Relaxed), self.timeline.load(Relaxed))
    }
}

/// A `synchronous_standby_names` value: each commit is confirmed by `k` of the standbys it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncRule {
    k: usize,
    /// The names, lowercase (the server compares them case-insensitively, quoted or not);
    /// `None` for `*`, which any standby matches.
    names: Option<Vec<String>>,
}

/// Why a failover cannot be sure to keep every acknowledged commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncShortfall {
    /// How many of the named standbys must answer.
    pub needed: usize,
    /// The named standbys (ids for `*`) that did not.
    pub missing: Vec<String>,
}

impl SyncRule {
    /// Forms: `ANY k (a, b)`, `[FIRST] k (a, b)`, `a, b` (first 1), `*`, names in double quotes;
    /// `None` when empty (asynchronous).
    pub fn parse(value: &str) -> Option<SyncRule> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        let upper = value.to_ascii_uppercase();
        let rest = ["ANY ", "FIRST "]
            .iter()
            .find(|kw| upper.starts_with(*kw))
            .map_or(value, |kw| value[kw.len()..].trim_start());
        let (k, list) = match rest.find('(') {
            Some(open)
                if !rest[..open].trim().is_empty() && rest[..open].trim().chars().all(|c| c.is_ascii_digit()) =>
            {
                let k = rest[..open].trim().parse().unwrap_or(1);
                (k, rest[open + 1..].trim_end().trim_end_matches(')'))
            }
            _ => (1, rest),
        };
        let mut names = Vec::new();
        let mut any = false;
        let mut quoted = false;
        let mut current = String::new();
        for c in list.chars().chain([',']) {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    let name = current.trim().to_lowercase();
                    if name == "*" {
                        any = true;
                    } else if !name.is_empty() && !names.contains(&name) {
                        names.push(name);
                    }
                    current.clear();
                }
                c => current.push(c),
            }
        }
        Some(SyncRule {
            k,
            names: (!any).then_some(names),
        })
    }

    /// Whether the standbys that answered include one that confirmed every acknowledged commit.
    /// Only a named standby can have confirmed one, and with `k` of `n` named confirming each,
    /// any `n - k + 1` of them include one that did. `standbys`: `(id, name it replicates
    /// under, answered)` for every standby of the configuration; a name unknown (not readable)
    /// matches nothing.
    pub fn shortfall(&self, standbys: &[(&str, Option<&str>, bool)]) -> Option<SyncShortfall> {
        let (listed, heard): (Vec<String>, Vec<String>) = match &self.names {
            // `*`: any standby may have confirmed; those of ours are all we can ask.
            None => (
                standbys.iter().map(|(id, _, _)| (*id).to_owned()).collect(),
                standbys
                    .iter()
                    .filter(|s| s.2)
                    .map(|(id, _, _)| (*id).to_owned())
                    .collect(),
            ),
            Some(names) => (
                names.clone(),
                names
                    .iter()
                    .filter(|name| {
                        standbys
                            .iter()
                            .any(|(_, n, answered)| *answered && n.is_some_and(|n| n.eq_ignore_ascii_case(name)))
                    })
                    .cloned()
                    .collect(),
            ),
        };
        let n = listed.len();
        let needed = (n.saturating_sub(self.k) + 1).min(n.max(1));
        (heard.len() < needed).then(|| SyncShortfall {
            needed,
            missing: listed.into_iter().filter(|l| !heard.contains(l)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(k: usize, names: Option<&[&str]>) -> Option<SyncRule> {
        Some(SyncRule {
            k,
            names: names.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
        })
    }

    #[test]
    fn synchronous_standby_names_forms() {
        assert_eq!(SyncRule::parse(""), None);
        assert_eq!(SyncRule::parse("  "), None);
        assert_eq!(
            SyncRule::parse("ANY 1 (replica1, replica2)"),
            rule(1, Some(&["replica1", "replica2"]))
        );
        assert_eq!(SyncRule::parse("any 2 (a,b,c)"), rule(2, Some(&["a", "b", "c"])));
        assert_eq!(SyncRule::parse("FIRST 1 (a, \"B,c\")"), rule(1, Some(&["a", "b,c"])));
        assert_eq!(SyncRule::parse("2 (a, b, c)"), rule(2, Some(&["a", "b", "c"])));
        assert_eq!(SyncRule::parse("a, b"), rule(1, Some(&["a", "b"])));
        assert_eq!(SyncRule::parse("N1, n1"), rule(1, Some(&["n1"])));
        assert_eq!(SyncRule::parse("*"), rule(1, None));
        assert_eq!(SyncRule::parse("ANY 1 (*)"), rule(1, None));
        assert_eq!(SyncRule::parse("FIRST 1 (n1, *)"), rule(1, None));
    }

    /// Every form against standbys inside and outside the list. `(setting, standbys as (id,
    /// name, answered), expected (needed, missing) or None to go ahead)`.
    #[test]
    fn only_named_standbys_count_toward_a_safe_failover() {
        type Case = (
            &'static str,
            &'static [(&'static str, Option<&'static str>, bool)],
            Option<(usize, &'static [&'static str])>,
        );
        let cases: &[Case] = &[
            // The reported loss: FIRST 1 (n1), n1 gone with the primary, n2 (unlisted) answers.
            (
                "FIRST 1 (n1)",
                &[("a", Some("n1"), false), ("b", Some("n2"), true)],
                Some((1, &["n1"])),
            ),
            (
                "FIRST 1 (n1)",
                &[("a", Some("n1"), true), ("b", Some("n2"), false)],
                None,
            ),
            (
                "n1",
                &[("a", Some("n1"), false), ("b", Some("n2"), true)],
                Some((1, &["n1"])),
            ),
            // A bare list is FIRST 1: n1 confirmed while it was connected, n2 only after.
            (
                "n1, n2",
                &[("a", Some("n1"), false), ("b", Some("n2"), true)],
                Some((2, &["n1"])),
            ),
            ("n1, n2", &[("a", Some("n1"), true), ("b", Some("n2"), true)], None),
            // ANY 1 (a, b) with a third, unlisted standby that answers.
            (
                "ANY 1 (a, b)",
                &[("x", Some("a"), false), ("y", Some("b"), true), ("z", Some("c"), true)],
                Some((2, &["a"])),
            ),
            (
                "ANY 1 (a, b)",
                &[("x", Some("a"), true), ("y", Some("b"), true), ("z", Some("c"), false)],
                None,
            ),
            (
                "ANY 2 (a, b, c)",
                &[("x", Some("a"), true), ("y", Some("b"), true), ("z", Some("c"), false)],
                None,
            ),
            (
                "ANY 2 (a, b, c)",
                &[("x", Some("a"), true), ("y", Some("b"), false), ("z", Some("c"), false)],
                Some((2, &["b", "c"])),
            ),
            (
                "FIRST 2 (a, b, c)",
                &[("x", Some("a"), false), ("y", Some("b"), true), ("z", Some("c"), true)],
                None,
            ),
            // Names match case-insensitively, quoted or not; an unreadable name matches nothing.
            ("FIRST 1 (\"Replica1\")", &[("x", Some("replica1"), true)], None),
            ("FIRST 1 (replica1)", &[("x", Some("REPLICA1"), true)], None),
            ("FIRST 1 (replica1)", &[("x", None, true)], Some((1, &["replica1"]))),
            // A name no standby of ours has: it may be a standby we do not know of.
            ("ANY 1 (a, ghost)", &[("x", Some("a"), true)], Some((2, &["ghost"]))),
            // `*`: any standby; all of ours but k - 1 must answer.
            (
                "*",
                &[("x", Some("a"), true), ("y", Some("b"), false)],
                Some((2, &["y"])),
            ),
            ("ANY 1 (*)", &[("x", Some("a"), true), ("y", None, true)], None),
            (
                "FIRST 2 (*)",
                &[("x", Some("a"), true), ("y", Some("b"), false), ("z", Some("c"), true)],
                None,
            ),
        ];
        for (setting, standbys, expected) in cases {
            let got = SyncRule::parse(setting).unwrap().shortfall(standbys);
            let expected = expected.map(|(needed, missing)| SyncShortfall {
                needed,
                missing: missing.iter().map(|s| (*s).to_owned()).collect(),
            });
            assert_eq!(got, expected, "{setting} with {standbys:?}");
        }
    }

    #[test]
    fn identity_keeps_the_last_setting() {
        let id = Identity::default();
        assert_eq!(id.sync_rule(), None);
        id.observe_synchronous("ANY 1 (a, b)");
        assert_eq!(id.sync_rule(), SyncRule::parse("ANY 1 (a, b)"));
        id.observe_synchronous("");
        assert_eq!(id.sync_rule(), None);
    }
}
