//! [`ReplicaManager`]: the nodes, their pools and the loops that watch them.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::config::NodeConfig;
use crate::control::Control;
use crate::error::Error;
use crate::status::NodeReport;

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
