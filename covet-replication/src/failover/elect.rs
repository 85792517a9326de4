//! Election: which standby becomes the primary. A pure function of what the survey found.

use crate::lsn::Lsn;
use crate::topology::NodeId;

/// A standby as the survey found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: NodeId,
    /// WAL received and flushed to its disk: what it will have once promoted.
    pub received: Lsn,
    /// WAL replayed: what promotion still has to replay is `received - replayed`.
    pub replayed: Lsn,
    pub region: Option<String>,
    /// Why it may not be promoted, if it may not.
    pub ineligible: Option<String>,
}

/// The candidate to promote: the one that received the most WAL (it loses the fewest
/// transactions; with synchronous replication it has every acknowledged commit), then one in
/// `preferred_region`, then the one with the least left to replay, then the lowest id.
///
/// Once the primary is gone the standbys' positions no longer move, so every manager that runs
/// this on the same cluster elects the same node.
///
/// # Errors
/// Every candidate with the reason it was passed over, when none is eligible.
pub(crate) fn elect<'a>(
    candidates: &'a [Candidate],
    preferred_region: Option<&str>,
) -> Result<&'a Candidate, Vec<(NodeId, String)>> {
    candidates
        .iter()
        .filter(|c| c.ineligible.is_none())
        .max_by(|a, b| {
            let in_region = |c: &Candidate| preferred_region.is_some() && c.region.as_deref() == preferred_region;
            a.received
                .cmp(&b.received)
                .then(in_region(a).cmp(&in_region(b)))
                .then(a.replayed.cmp(&b.replayed))
                .then(b.id.cmp(&a.id))
        })
        .ok_or_else(|| {
            candidates
                .iter()
                .map(|c| (c.id.clone(), c.ineligible.clone().unwrap_or_default()))
                .collect()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, received: u64, replayed: u64, region: &str) -> Candidate {
        Candidate {
            id: NodeId::from(id),
            received: Lsn(received),
            replayed: Lsn(replayed),
            region: Some(region.into()),
            ineligible: None,
        }
    }

    fn winner(cands: &[Candidate], region: Option<&str>) -> String {
        elect(cands, region).unwrap().id.to_string()
    }

    #[test]
    fn most_wal_received_wins_over_region_and_replay() {
        let cands = [c("a", 100, 100, "eu"), c("b", 200, 50, "us")];
        assert_eq!(winner(&cands, Some("eu")), "b");
    }

    #[test]
    fn ties_go_to_the_preferred_region_then_replay_then_lowest_id() {
        let cands = [c("a", 100, 90, "us"), c("b", 100, 80, "eu"), c("c", 100, 95, "us")];
        assert_eq!(winner(&cands, Some("eu")), "b");
        assert_eq!(winner(&cands, None), "c");
        let tied = [c("z", 100, 100, "us"), c("m", 100, 100, "us")];
        assert_eq!(winner(&tied, None), "m");
        // Order of the input does not matter.
        let mut rev = cands.clone();
        rev.reverse();
        assert_eq!(winner(&rev, Some("eu")), "b");
    }

    #[test]
    fn ineligible_candidates_are_passed_over_and_reported() {
        let mut best = c("a", 500, 500, "eu");
        best.ineligible = Some("excluded by failover.exclude".into());
        let cands = [best.clone(), c("b", 100, 100, "eu")];
        assert_eq!(winner(&cands, None), "b");
        let err = elect(std::slice::from_ref(&best), None).unwrap_err();
        assert_eq!(err, [(NodeId::from("a"), "excluded by failover.exclude".to_owned())]);
        assert!(elect(&[], None).unwrap_err().is_empty());
    }
}
