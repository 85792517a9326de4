//! Routing one statement: gather what the decision needs (catalog lookups, a session's open
//! transactions, the write gate), let [`decide`] choose, and do what it asks in between.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::classify::QueryKind;
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::core::Lsn;
use crate::data::Plane;
use crate::data::session::SessionState;
use crate::error::Error;

use super::decide::{Decision, Facts, Route, SessionView, decide};
use super::select::{Candidate, FastRand};
use super::{RouteReason, Target};

impl Candidate for Arc<Node> {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn state(&self) -> NodeState {
        Node::routing_state(self)
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
        self.in_flight.load(Relaxed)
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
    fn staleness(&self) -> Duration {
        Node::staleness(self)
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
    /// A replica did not catch up with the session in time: the primary.
    pub consistency_fallback: bool,
    pub session: Option<&'a SessionState>,
}

/// Decides where `kind` runs.
///
/// # Errors
/// As [`decide`].
pub(crate) async fn route(m: &Plane, kind: &QueryKind, c: Constraints<'_>) -> Result<Route, Error> {
    if let Some(s) = c.session.filter(|s| s.is_settling()) {
        s.wait_settled(m.cluster.config.health.timeout).await;
    }
    if let Some(s) = c.session.filter(|s| s.has_untracked()) {
        crate::data::session::settle_untracked(s, &m.cluster.primary().pool).await;
    }
    let route = route_once(m, kind, c).await?;
    if route.role != Role::Primary {
        return Ok(route);
    }
    // During a failover, what needs the primary waits for the new one.
    if m.cluster.gate.holding() {
        m.cluster.gate.wait(m.cluster.config.failover.hold_writes).await;
        return route_once(m, kind, c).await;
    }
    // Nothing is sent to a primary health cannot reach: it waits for it to answer again or
    // for a new one, and fails having sent nothing.
    if route.node.state() == NodeState::Down {
        if m.cluster.primary_when_reachable().await.is_none() {
            return Err(Error::PrimaryUnreachable {
                node: route.node.id.clone(),
                waited: m.cluster.config.failover.hold_writes,
            });
        }
        return route_once(m, kind, c).await;
    }
    Ok(route)
}

async fn route_once(m: &Plane, kind: &QueryKind, c: Constraints<'_>) -> Result<Route, Error> {
    let topology = m.cluster.topology.load();
    let replica_safe = m
        .catalog
        .replica_safe(kind, &topology.primary.pool, &m.classifier)
        .await;
    let learned = replica_safe && m.catalog.rests_on_learned(kind);
    // Leaving a replica unsticks the session, so the second decision stays.
    for _ in 0..2 {
        let facts = Facts {
            topology: &topology,
            kind,
            replica_safe,
            learned,
            target: c.target,
            exclude: c.exclude,
            force_primary: c.force_primary,
            consistency_fallback: c.consistency_fallback,
            session: c.session.map(SessionView::of),
            config: &m.cluster.config,
        };
        match decide(&facts, &mut FastRand)? {
            Decision::Go(route) => return Ok(route),
            Decision::LeaveSticky => {
                let Some(s) = c.session else { break };
                if !leave_sticky(m, &topology, s).await {
                    break;
                }
            }
        }
    }
    // Without the position the guarantee cannot be kept on a replica.
    Ok(Route::to(&topology, &topology.primary, RouteReason::Consistency))
}

/// Moves a monotonic session off its replica: whatever that replica had replayed, the next
/// one must have too, so the floor rises to the primary's position now (a rare round trip, for
/// an exact guarantee). False if that position could not be read.
async fn leave_sticky(m: &Plane, topology: &Topology, s: &SessionState) -> bool {
    m.consistency.switches.fetch_add(1, Relaxed);
    match crate::pg::primary_lsn(&topology.primary.pool).await {
        Ok(lsn) => {
            s.raise_floor(lsn);
            s.unstick();
            true
        }
        Err(_) => false,
    }
}

/// Whether a failure of a statement sent on `route` may be retried on another node.
pub(crate) fn may_retry_elsewhere(route: &Route) -> bool {
    // A statement that may have run on the primary is never repeated.
    route.role == Role::Replica
}
