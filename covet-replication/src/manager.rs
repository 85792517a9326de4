//! [`ReplicaManager`]: the nodes, their pools and the loops that watch them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::cluster::{Node, NodeId, NodeState, Role};
use crate::config::NodeConfig;
use crate::control::Control;
use crate::error::Error;

/// Owns one sqlx pool per node and the health loop; adds and removes replicas at run time.
///
/// Obtained from [`ReplicatedPool::manager`](crate::ReplicatedPool::manager); cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaManager {
    pub(crate) control: Arc<Control>,
}

/// A node as the manager sees it now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Primary or replica.
    pub role: Role,
    /// Health state.
    pub state: NodeState,
    /// Region label.
    pub region: Option<String>,
    /// Replay (replica) or current (primary) WAL position at the last check.
    pub lsn: crate::Lsn,
    /// Replication lag in bytes at the last check (0 for the primary).
    pub lag_bytes: u64,
    /// Replication lag in time at the last check (0 for the primary).
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// Queries running on it now.
    pub in_flight: u32,
    /// Average health-check round trip.
    #[serde(with = "humantime_serde")]
    pub rtt: Duration,
    /// Average query latency (from having a connection to the last row).
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
}

impl ReplicaManager {
    /// Every node, primary first.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.control
            .cluster
            .topology
            .load()
            .nodes()
            .map(|n| status_of(n))
            .collect()
    }

    /// One node by id.
    pub fn node(&self, id: &str) -> Option<NodeStatus> {
        self.control.cluster.topology.load().find(id).map(|n| status_of(n))
    }

    /// Runs one health round now (the loop keeps its own schedule). Failover acts on what it
    /// finds on its own task, as on every round: this never runs a failover itself.
    pub async fn check_now(&self) {
        crate::control::health::round(&self.control).await;
    }

    /// The sqlx pool of a node, for work that must bypass routing.
    pub fn pool(&self, id: &str) -> Option<PgPool> {
        self.control.cluster.topology.load().find(id).map(|n| n.pool.clone())
    }

    /// Adds a replica at run time. It takes reads once a health check has seen it healthy.
    ///
    /// # Errors
    /// [`Error::DuplicateNode`] if its id is taken; [`Error::Config`] if it is invalid.
    pub async fn add_replica(&self, config: NodeConfig) -> Result<(), Error> {
        self.control.add_replica(config)
    }

    /// Removes a replica: it takes no new queries, in-flight ones finish (up to `timeout`),
    /// then its pool closes.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::CannotRemove`] for the primary, or
    /// [`Error::DrainTimeout`] if queries were still running after `timeout` (the pool is
    /// closed anyway, which waits for their connections).
    pub async fn remove_replica(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        self.control.remove_replica(id, timeout).await
    }
}

fn status_of(n: &Node) -> NodeStatus {
    let (lag_bytes, lag) = n.lag();
    NodeStatus {
        id: n.id.clone(),
        role: n.role(),
        state: n.state(),
        region: n.config.region.clone(),
        lsn: n.replay_lsn(),
        lag_bytes,
        lag,
        in_flight: n.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        rtt: n.rtt(),
        latency: n.latency(),
    }
}
