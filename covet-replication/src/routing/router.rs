//! The routing decision for one statement.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Hint, QueryKind};
use crate::config::ReadPreference;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::manager::ManagerInner;
use crate::topology::{Node, NodeId, NodeState, Role};

use super::select::{Candidate, FastRand, NoNode, Pick, ReadRequest, select};
use super::{RouteReason, Target};

/// Where a statement goes, and why.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub node: Arc<Node>,
    pub reason: RouteReason,
}

impl Candidate for Arc<Node> {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn state(&self) -> NodeState {
        Node::state(self)
    }
    fn region(&self) -> Option<&str> {
        self.config.region.as_deref()
    }
    fn datacenter(&self) -> Option<&str> {
        self.config.datacenter.as_deref()
    }
    fn weight(&self) -> u32 {
        Node::weight(self)
    }
    fn in_flight(&self) -> u32 {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn latency(&self) -> Duration {
        Node::latency(self)
    }
    fn rtt(&self) -> Duration {
        Node::rtt(self)
    }
    fn replay_lsn(&self) -> Lsn {
        Node::replay_lsn(self)
    }
    fn lag(&self) -> Duration {
        Node::lag(self).1
    }
}

/// What the caller adds to a statement's classification.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Constraints<'a> {
    pub target: Option<&'a Target>,
    /// Nodes that already failed this statement.
    pub exclude: &'a [NodeId],
    /// Run on the primary whatever the statement is (a standby refused it as a write).
    pub force_primary: bool,
}

/// Decides where `kind` runs.
///
/// # Errors
/// [`Error::WriteOnReplica`] when a statement that needs the primary is targeted at a replica;
/// [`Error::NoEligibleReplica`], [`Error::UnknownNode`], [`Error::NodeUnavailable`].
pub(crate) async fn route(m: &ManagerInner, kind: &QueryKind, c: Constraints<'_>) -> Result<Route, Error> {
    let topology = m.topology.load();
    let primary = || Arc::clone(&topology.primary);
    if c.force_primary {
        return Ok(Route {
            node: primary(),
            reason: RouteReason::Retry,
        });
    }
    let safe = m.functions.replica_safe(kind, &topology.primary.pool).await;
    if !safe {
        if let Some(t @ (Target::Replica | Target::Node(_))) = c.target
            && !matches!(t, Target::Node(id) if *id == topology.primary.id.as_str())
        {
            return Err(Error::WriteOnReplica {
                reason: kind.reason().to_string(),
                target: t.to_string(),
            });
        }
        let reason = if kind.hint() == Some(Hint::Primary) {
            RouteReason::Hint
        } else {
            RouteReason::Write
        };
        return Ok(Route {
            node: primary(),
            reason,
        });
    }
    let routing = &m.config.routing;
    let mut req = ReadRequest {
        preferred_region: routing.preferred_region.as_deref(),
        preferred_datacenter: routing.preferred_datacenter.as_deref(),
        exclude: c.exclude,
        ..ReadRequest::default()
    };
    let mut reason = if c.exclude.is_empty() {
        RouteReason::ReadPreference
    } else {
        RouteReason::Retry
    };
    if kind.hint() == Some(Hint::Replica) {
        req.preference = Some(ReadPreference::ReplicaPreferred);
        reason = RouteReason::Hint;
    }
    match c.target {
        None => {}
        Some(Target::Primary) => {
            return Ok(Route {
                node: primary(),
                reason: RouteReason::Override,
            });
        }
        Some(Target::Node(id)) => {
            let node = topology.find(id).ok_or_else(|| Error::UnknownNode { id: id.clone() })?;
            return match node.state() {
                s @ (NodeState::Down | NodeState::Draining) => Err(Error::NodeUnavailable {
                    id: node.id.clone(),
                    state: s,
                }),
                _ => Ok(Route {
                    node: Arc::clone(node),
                    reason: RouteReason::Override,
                }),
            };
        }
        Some(Target::Replica) => req.preference = Some(ReadPreference::Replica),
        Some(Target::Region(r)) => req.region = Some(r),
        Some(Target::Preference(p)) => req.preference = Some(*p),
    }
    if c.target.is_some() {
        reason = RouteReason::Override;
    }
    let default = routing.read_preference;
    match select(&topology.primary, &topology.replicas, &req, default, &mut FastRand) {
        Ok(Pick::Primary) => Ok(Route {
            node: primary(),
            reason,
        }),
        Ok(Pick::Replica(i)) => Ok(Route {
            node: Arc::clone(&topology.replicas[i]),
            reason,
        }),
        Ok(Pick::FallbackPrimary) => Ok(Route {
            node: primary(),
            reason: RouteReason::Fallback,
        }),
        Err(NoNode::NoEligibleReplica) => Err(Error::NoEligibleReplica {
            preference: req.preference.unwrap_or(default),
            region: req.region.map(str::to_owned),
        }),
    }
}

/// Whether a failure on `node` may be retried on another node.
pub(crate) fn may_retry_elsewhere(node: &Node) -> bool {
    // A statement that may have run on the primary is never repeated.
    node.role() == Role::Replica
}
