//! Who is in the cluster: nodes, their roles and states, and the snapshot the router reads.

mod identity;
mod node;

pub use crate::core::{NodeId, NodeState, Role};
pub(crate) use identity::{Identity, SyncShortfall};
pub(crate) use node::{InFlight, Node};

use std::sync::Arc;

/// The nodes a query can be routed to, swapped atomically when replicas are added or removed
/// (readers hold a snapshot, so a query in flight keeps its node).
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub primary: Arc<Node>,
    pub replicas: Vec<Arc<Node>>,
}

impl Topology {
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    pub fn find(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes().find(|n| n.id.as_str() == id)
    }
}
