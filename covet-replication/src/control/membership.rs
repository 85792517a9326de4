//! Membership: replicas added and removed at run time. Only the control plane changes node
//! states and the topology; `ReplicaManager` hands these requests to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Control;
use crate::cluster::{NodeState, Role, Topology};
use crate::config::NodeConfig;
use crate::error::Error;

impl Control {
    /// See `ReplicaManager::add_replica`.
    pub fn add_replica(&self, config: NodeConfig) -> Result<(), Error> {
        let topology = self.cluster.topology.load_full();
        if topology.find(&config.id).is_some() {
            return Err(Error::DuplicateNode { id: config.id });
        }
        // Validate against the nodes there are now, not the ones configured at start.
        let mut full = self.cluster.config.clone();
        full.primary = topology.primary.config.clone();
        full.replicas = topology
            .replicas
            .iter()
            .map(|r| r.config.clone())
            .chain([config.clone()])
            .collect();
        full.validate()?;
        // Down until checked: a new node must prove itself before it takes reads.
        let node = self.cluster.new_node(&config, Role::Replica, NodeState::Down);
        self.cluster.topology.rcu(|t| {
            let mut t = Topology::clone(t);
            t.replicas.push(Arc::clone(&node));
            t
        });
        tracing::info!(target: "covet::topology", node = %node.id, "replica added");
        Ok(())
    }

    /// See `ReplicaManager::remove_replica`.
    pub async fn remove_replica(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let topology = self.cluster.topology.load_full();
        let node = topology
            .find(id)
            .cloned()
            .ok_or_else(|| Error::UnknownNode { id: id.into() })?;
        if node.role() == Role::Primary {
            return Err(Error::CannotRemove {
                id: node.id.clone(),
                reason: "it is the primary",
            });
        }
        node.set_state(NodeState::Draining);
        self.cluster.topology.rcu(|t| {
            let mut t = Topology::clone(t);
            t.replicas.retain(|r| !Arc::ptr_eq(r, &node));
            t
        });
        tracing::info!(target: "covet::topology", node = %node.id, "replica draining");
        let started = Instant::now();
        let mut result = Ok(());
        loop {
            let in_flight = node.in_flight.load(std::sync::atomic::Ordering::Acquire);
            if in_flight == 0 {
                break;
            }
            if started.elapsed() >= timeout {
                result = Err(Error::DrainTimeout {
                    node: node.id.clone(),
                    in_flight,
                    waited: timeout,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.pool.close().await;
        self.health.forget(&node.id).await;
        self.lag_monitor.forget(node.id.as_str());
        tracing::info!(target: "covet::topology", node = %node.id, "replica removed");
        result
    }
}
