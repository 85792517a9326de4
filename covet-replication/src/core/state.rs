use serde::Serialize;

/// What a node is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Takes writes.
    Primary,
    /// A hot standby: reads only.
    Replica,
}

/// Health of a node as the health loop sees it.
///
/// Only `Healthy` and `Degraded` replicas take reads. The primary takes writes in every state
/// but `Draining`: a write has nowhere else to go, and the error tells the caller the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeState {
    /// Answering checks within `health.degraded_latency`.
    Healthy,
    /// Answering, but slower than `health.degraded_latency`: used when no healthy node is left.
    Degraded,
    /// A replica whose replication lag is above its `max_lag`.
    Lagging,
    /// Failing checks, fewer than `health.failure_threshold` in a row; or in the wrong role.
    Unhealthy,
    /// `health.failure_threshold` failed checks in a row; back after `success_threshold` successes.
    Down,
    /// Being removed: takes no new queries, in-flight ones finish.
    Draining,
    /// A former primary cut off by a failover: never routed to; made read-only if it comes
    /// back as a primary, readmitted if it comes back as a standby of the cluster.
    Fenced,
}

impl NodeState {
    pub(crate) const ALL: [NodeState; 7] = [
        NodeState::Healthy,
        NodeState::Degraded,
        NodeState::Lagging,
        NodeState::Unhealthy,
        NodeState::Down,
        NodeState::Draining,
        NodeState::Fenced,
    ];

    /// Whether a replica in this state may serve reads.
    pub fn serves_reads(self) -> bool {
        matches!(self, NodeState::Healthy | NodeState::Degraded)
    }

    pub(crate) fn as_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> NodeState {
        Self::ALL.get(usize::from(v)).copied().unwrap_or(NodeState::Down)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            NodeState::Healthy => "healthy",
            NodeState::Degraded => "degraded",
            NodeState::Lagging => "lagging",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Fenced => "fenced",
        };
        f.write_str(s)
    }
}
