use super::PgError;
use crate::core::Lsn;
use crate::core::NodeId;

/// Why a failover or switchover did not happen, or stopped.
///
/// Everything up to the promotion is a check that changes nothing; a failure after it says what
/// had been done (the event in [`FailoverManager::history`](crate::failover::FailoverManager::history) has
/// every step).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FailoverError {
    /// Another failover or switchover is running.
    #[error("a failover is already in progress")]
    InProgress,
    /// The primary answers as a primary: a failover would make two. Use a switchover.
    #[error("primary {node} is up and accepting writes; use a switchover to change primaries")]
    PrimaryAlive {
        /// The primary.
        node: NodeId,
    },
    /// Standbys still receive WAL from the primary: it is alive, only cut off from this process.
    #[error("standbys {witnesses:?} are still streaming from the primary; not failing over")]
    PrimaryStillStreaming {
        /// The standbys that are.
        witnesses: Vec<NodeId>,
    },
    /// Under synchronous replication too few of the standbys that `synchronous_standby_names`
    /// names answered to be sure one of them has every acknowledged commit (with `k` of `n`
    /// named confirming, `n - k + 1` of those must answer; a standby outside the list counts
    /// for nothing). An automatic failover waits; a manual
    /// [`failover`](crate::failover::FailoverManager::failover) is the operator's call.
    #[error(
        "synchronous replication: {needed} standbys must answer, {missing:?} did not (they may hold the last acknowledged commits)"
    )]
    SynchronousStandbyMissing {
        /// The names (in `synchronous_standby_names`) of the standbys that did not answer; for
        /// `*`, the ids of ours that did not.
        missing: Vec<String>,
        /// How many must answer.
        needed: usize,
    },
    /// Another process promoted a standby while this one prepared to: it is adopted by the
    /// health loop instead.
    #[error("{node} was promoted elsewhere meanwhile")]
    PromotedElsewhere {
        /// The standby.
        node: NodeId,
    },
    /// Too few standbys answered to decide safely.
    #[error("{answered} standbys answered, failover.min_replicas is {required}")]
    NotEnoughReplicas {
        /// Standbys that answered the survey.
        answered: usize,
        /// `failover.min_replicas`.
        required: usize,
    },
    /// No standby may be promoted.
    #[error("no standby can be promoted: {}", reasons.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join("; "))]
    NoCandidate {
        /// Each standby and why it was passed over.
        reasons: Vec<(NodeId, String)>,
    },
    /// The requested target is not a standby of this cluster, or cannot be promoted.
    #[error("cannot promote {node}: {reason}")]
    TargetNotEligible {
        /// The target.
        node: String,
        /// Why.
        reason: String,
    },
    /// Promoting the best candidate would lose more WAL than `failover.max_data_loss_bytes`.
    #[error("promoting {node} would lose {bytes} bytes of WAL (failover.max_data_loss_bytes = {limit})")]
    DataLoss {
        /// The candidate.
        node: NodeId,
        /// WAL the primary had that the candidate did not receive, as far as known.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A switchover's target did not replay the old primary's last write in time; the old
    /// primary was unfenced and stays the primary.
    #[error("{node} replayed up to {replayed}, needed {needed} within failover.catchup_timeout")]
    CatchUp {
        /// The target.
        node: NodeId,
        /// The old primary's position after fencing.
        needed: Lsn,
        /// What the target had replayed.
        replayed: Lsn,
    },
    /// `failover.mode = supervised`: the failover is proposed and waits for an operator.
    #[error(
        "failover.mode = supervised: would promote {node}; waiting up to {timeout:?} for approval \
         (FailoverManager::approve, or `covet failover` from another process)"
    )]
    AwaitingApproval {
        /// The standby it would promote.
        node: NodeId,
        /// How long the proposal stands.
        timeout: std::time::Duration,
    },
    /// `approve` with no failover proposed.
    #[error("no failover is waiting for approval")]
    NothingToApprove,
    /// This process follows the primary another manager chooses: it promotes, fences and
    /// repoints nothing.
    #[error("this process follows the primary another manager chooses ({reason}); use that manager")]
    Following {
        /// `failover.mode = follow`, or the promotion made elsewhere that was seen.
        reason: String,
    },
    /// `coordinated`: the fleet's consent (this process holding its etcd lease, the promotion
    /// recorded under it) could not be had, so nothing was promoted.
    #[error("not coordinated through etcd: {source}")]
    Coordination {
        /// Why: not the lease holder, etcd unreachable.
        #[source]
        source: crate::error::HaError,
    },
    /// `coordinated`: another lease holder began promoting `node` and the promotion may have
    /// happened; only that node may become primary until `until`.
    #[error("a promotion of {node} begun by {by} may have happened: only {node} may be promoted (for {left:?} more)")]
    PromotionUnderWay {
        /// The node it was promoting.
        node: String,
        /// The instance that began it.
        by: String,
        /// How long the record of it stands.
        left: std::time::Duration,
    },
    /// A step failed on a node.
    #[error("{step} on {node} failed: {source}")]
    Step {
        /// The step.
        step: &'static str,
        /// The node.
        node: NodeId,
        /// What failed.
        #[source]
        source: PgError,
    },
}
