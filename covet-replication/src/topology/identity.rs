use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Which cluster and which history the primary is on, as the health loop last saw it.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    system_id: AtomicU64,
    timeline: AtomicU32,
    /// The primary's `synchronous_standby_names`: how many standbys confirm a commit (0:
    /// asynchronous) among how many listed (0: `*`, any standby).
    sync_k: AtomicU32,
    sync_n: AtomicU32,
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
        let (k, n) = parse_sync_names(names).map_or((0, 0), |(k, n)| (k, n.unwrap_or(0)));
        self.sync_k.store(u32::try_from(k).unwrap_or(u32::MAX), Relaxed);
        self.sync_n.store(u32::try_from(n).unwrap_or(u32::MAX), Relaxed);
    }

    /// How many of `standbys` must answer before a failover can be sure to elect one with every
    /// commit the primary acknowledged: with `k` of `n` confirming each commit, any `n - k + 1`
    /// of them include one that confirmed it. `None` when the primary replicated asynchronously.
    pub fn standbys_needed(&self, standbys: usize) -> Option<usize> {
        let k = self.sync_k.load(Relaxed) as usize;
        if k == 0 {
            return None;
        }
        let n = match self.sync_n.load(Relaxed) as usize {
            0 => standbys,
            n => n,
        };
        Some((n.saturating_sub(k) + 1).min(n.max(1)))
    }

    /// `(system_id, timeline)`, zeros while unknown.
    pub fn get(&self) -> (u64, u32) {
        (self.system_id.load(Relaxed), self.timeline.load(Relaxed))
    }
}

/// `(num_sync, listed)` of a `synchronous_standby_names` value (`listed` is `None` for `*`);
/// `None` when it is empty. Forms: `ANY k (a, b)`, `[FIRST] k (a, b)`, `a, b` (first 1).
fn parse_sync_names(value: &str) -> Option<(usize, Option<usize>)> {
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
        Some(open) if rest[..open].trim().chars().all(|c| c.is_ascii_digit()) && !rest[..open].trim().is_empty() => {
            let k = rest[..open].trim().parse().unwrap_or(1);
            (k, rest[open + 1..].trim_end().trim_end_matches(')'))
        }
        _ => (1, rest),
    };
    let mut names = 0;
    let mut any = false;
    let mut quoted = false;
    let mut current = String::new();
    for c in list.chars().chain([',']) {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                let name = current.trim();
                if name == "*" {
                    any = true;
                } else if !name.is_empty() {
                    names += 1;
                }
                current.clear();
            }
            c => current.push(c),
        }
    }
    Some((k, (!any).then_some(names)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synchronous_standby_names_forms() {
        assert_eq!(parse_sync_names(""), None);
        assert_eq!(parse_sync_names("ANY 1 (replica1, replica2)"), Some((1, Some(2))));
        assert_eq!(parse_sync_names("any 2 (a,b,c)"), Some((2, Some(3))));
        assert_eq!(parse_sync_names("FIRST 1 (a, \"b,c\")"), Some((1, Some(2))));
        assert_eq!(parse_sync_names("2 (a, b, c)"), Some((2, Some(3))));
        assert_eq!(parse_sync_names("a, b"), Some((1, Some(2))));
        assert_eq!(parse_sync_names("*"), Some((1, None)));
        assert_eq!(parse_sync_names("ANY 1 (*)"), Some((1, None)));
    }

    #[test]
    fn standbys_needed_covers_every_acknowledged_commit() {
        let id = Identity::default();
        assert_eq!(id.standbys_needed(2), None);
        id.observe_synchronous("ANY 1 (replica1, replica2)");
        assert_eq!(id.standbys_needed(2), Some(2));
        id.observe_synchronous("ANY 2 (a, b, c)");
        assert_eq!(id.standbys_needed(3), Some(2));
        id.observe_synchronous("FIRST 1 (a)");
        assert_eq!(id.standbys_needed(3), Some(1));
        id.observe_synchronous("*");
        assert_eq!(id.standbys_needed(3), Some(3));
        id.observe_synchronous("");
        assert_eq!(id.standbys_needed(3), None);
    }
}
