//! [`ReplicaManager`]: the nodes, their pools and the loops that watch them.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::cluster::{Node, NodeId, NodeState, Role};
use crate::config::NodeConfig;
use crate::control::Control;
use crate::control::lag::LagStats;
use crate::error::Error;

/// Owns one sqlx pool per node and the health loop; adds and removes replicas at run time.
///
/// Obtained from [`ReplicatedPool::manager`](crate::ReplicatedPool::manager); cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaManager {
    pub(crate) control: Arc<Control>,
}

impl ReplicaManager {
    /// Every node, primary first.
    pub fn nodes(&self) -> Vec<NodeReport> {
        let topology = self.control.cluster.topology.load();
        topology.nodes().map(|n| NodeReport::of(n, &self.control)).collect()
    }

    /// One node by id.
    pub fn node(&self, id: &str) -> Option<NodeReport> {
        let topology = self.control.cluster.topology.load();
        topology.find(id).map(|n| NodeReport::of(n, &self.control))
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

/// One node: from [`ReplicaManager::nodes`], and in a
/// [`ClusterStatus`](crate::status::ClusterStatus).
/// Durations serialize as human-readable strings (`"1ms 200us"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NodeReport {
    /// The node's id.
    pub id: NodeId,
    /// `host:port/database`.
    pub address: String,
    /// Primary or replica.
    pub role: Role,
    /// Health state.
    pub state: NodeState,
    /// Region label.
    pub region: Option<String>,
    /// Datacenter label.
    pub datacenter: Option<String>,
    /// Replay (replica) or current (primary) WAL position at the last check.
    pub lsn: crate::core::Lsn,
    /// Replication lag in bytes at the last check (0 for the primary).
    pub lag_bytes: u64,
    /// Replication lag in time at the last check (0 for the primary).
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// Lag statistics over the configured window (replicas).
    pub lag_stats: Option<LagStats>,
    /// Average query latency (from having a connection to the last row).
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Average health-check round trip.
    #[serde(with = "humantime_serde")]
    pub rtt: Duration,
    /// Queries running now.
    pub in_flight: u32,
    /// Pool connections open.
    pub pool_size: u32,
    /// Pool connections idle.
    pub pool_idle: usize,
    /// Pool connections in use.
    pub pool_in_use: usize,
    /// Pool maximum.
    pub pool_max: u32,
    /// A standby's `wal_retrieve_retry_interval` (None for the primary, or before a check).
    #[serde(with = "humantime_serde")]
    pub wal_retrieve_retry_interval: Option<Duration>,
}

impl NodeReport {
    pub(crate) fn of(n: &Node, control: &Control) -> Self {
        let (lag_bytes, lag) = n.lag();
        let size = n.pool.size();
        let idle = n.pool.num_idle();
        NodeReport {
            id: n.id.clone(),
            address: n.config.server_address(),
            role: n.role(),
            state: n.state(),
            region: n.config.region.clone(),
            datacenter: n.config.datacenter.clone(),
            lsn: n.replay_lsn(),
            lag_bytes,
            lag,
            lag_stats: control.lag_monitor.stats(n.id.as_str()),
            latency: n.latency(),
            rtt: n.rtt(),
            in_flight: n.in_flight.load(std::sync::atomic::Ordering::Relaxed),
            pool_size: size,
            pool_idle: idle,
            pool_in_use: (size as usize).saturating_sub(idle),
            pool_max: n.config.pool.max_connections,
            wal_retrieve_retry_interval: match n.retrieve_retry_ms.load(std::sync::atomic::Ordering::Relaxed) {
                0 => None,
                ms if n.role() == Role::Replica => Some(Duration::from_millis(u64::from(ms))),
                _ => None,
            },
        }
    }
}
