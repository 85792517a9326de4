//! Election: which standby becomes the primary. A pure function of what the survey found.

use crate::cluster::NodeId;
use crate::core::Lsn;

/// A standby as the survey found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: NodeId,
    /// WAL received and flushed to its disk: what it will have once promoted.
    pub received: Lsn,
    /// WAL replayed: what promotion still has to replay is `received - replayed`.
    pub replayed: Lsn,
    /// Why it may not be promoted, if it may not.
    pub ineligible: Option<String>,
}

/// The candidate to promote: the one that received the most WAL (it loses the fewest
/// transactions; with synchronous replication it has every acknowledged commit), then the
/// lowest id.
///
/// Only what is the same for every observer decides: once the primary is gone the received
/// positions stop moving, so every manager that runs this on the same cluster elects the same
/// node (a preferred region, or the replay position, which still moves, could split them).
///
/// # Errors
/// Every candidate with the reason it was passed over, when none is eligible.
pub(crate) fn elect(candidates: &[Candidate]) -> Result<&Candidate, Vec<(NodeId, String)>> {
    candidates
        .iter()
        .filter(|c| c.ineligible.is_none())
        .max_by(|a, b| a.received.cmp(&b.received).then(b.id.cmp(&a.id)))
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

    fn c(id: &str, received: u64, replayed: u64) -> Candidate {
        Candidate {
            id: NodeId::from(id),
            received: Lsn(received),
            replayed: Lsn(replayed),
            ineligible: None,
        }
    }

    fn winner(cands: &[Candidate]) -> String {
        elect(cands).unwrap().id.to_string()
    }

    #[test]
    fn most_wal_received_wins_whatever_was_replayed() {
        assert_eq!(winner(&[c("a", 100, 100), c("b", 200, 50)]), "b");
    }

    #[test]
    fn ties_go_to_the_lowest_id_in_any_order() {
        let cands = [c("z", 100, 100), c("m", 100, 90), c("q", 100, 95)];
        assert_eq!(winner(&cands), "m");
        let mut rev = cands.clone();
        rev.reverse();
        assert_eq!(winner(&rev), "m");
    }

    #[test]
    fn ineligible_candidates_are_passed_over_and_reported() {
        let mut best = c("a", 500, 500);
        best.ineligible = Some("excluded by failover.exclude".into());
        let cands = [best.clone(), c("b", 100, 100)];
        assert_eq!(winner(&cands), "b");
        let err = elect(std::slice::from_ref(&best)).unwrap_err();
        assert_eq!(err, [(NodeId::from("a"), "excluded by failover.exclude".to_owned())]);
        assert!(elect(&[]).unwrap_err().is_empty());
    }
}
