//! The routing decision for one statement.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Hint, QueryKind};
use crate::cluster::{Node, NodeId, NodeState, Role};
use crate::config::Consistency;
use crate::config::ReadPreference;
use crate::core::Lsn;
use crate::data::Plane;
use crate::data::session::SessionState;
use crate::error::Error;

use super::select::{Candidate, FastRand, NoNode, Pick, ReadRequest, select};
use super::{RouteReason, Target};

/// Where a statement goes, and why.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub node: Arc<Node>,
    /// The node's role when routed (a failover may change it while the statement runs).
    pub role: Role,
    pub reason: RouteReason,
    /// The statement needs the primary (its success moves the session's watermark).
    pub writes: bool,
    /// Before running, the replica must be seen to have replayed this position.
    pub check: Option<Lsn>,
}

impl Route {
    fn to(node: &Arc<Node>, reason: RouteReason) -> Self {
        Route {
            node: Arc::clone(node),
            role: node.role(),
            reason,
            writes: false,
            check: None,
        }
    }
}

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
    /// A replica did not catch up with the session in time: the primary.
    pub consistency_fallback: bool,
    pub session: Option<&'a SessionState>,
}

/// Decides where `kind` runs.
///
/// # Errors
/// [`Error::WriteOnReplica`] when a statement that needs the primary is targeted at a replica;
/// [`Error::NoEligibleReplica`], [`Error::UnknownNode`], [`Error::NodeUnavailable`].
pub(crate) async fn route(m: &Plane, kind: &QueryKind, c: Constraints<'_>) -> Result<Route, Error> {
    if let Some(s) = c.session.filter(|s| s.is_settling()) {
        s.wait_settled(m.cluster.config.health.timeout).await;
    }
    if let Some(s) = c.session.filter(|s| s.has_untracked()) {
        crate::data::session::settle_untracked(s, &m.cluster.primary().pool).await;
    }
    let route = route_once(m, kind, c).await?;
    // During a failover, what needs the primary waits for the new one.
    if route.role == Role::Primary && m.cluster.gate.holding() {
        m.cluster.gate.wait(m.cluster.config.failover.hold_writes).await;
        return route_once(m, kind, c).await;
    }
    Ok(route)
}

async fn route_once(m: &Plane, kind: &QueryKind, c: Constraints<'_>) -> Result<Route, Error> {
    let topology = m.cluster.topology.load();
    let mut route = decide(m, &topology, kind, c).await?;
    // The role in this snapshot, not the node's now: a failover may change the node's role
    // while the statement runs, and whether it may be retried depends on where it was sent.
    route.role = if Arc::ptr_eq(&route.node, &topology.primary) {
        Role::Primary
    } else {
        Role::Replica
    };
    Ok(route)
}

async fn decide(
    m: &Plane,
    topology: &crate::cluster::Topology,
    kind: &QueryKind,
    c: Constraints<'_>,
) -> Result<Route, Error> {
    let primary = &topology.primary;
    if c.force_primary {
        return Ok(Route {
            writes: true,
            ..Route::to(primary, RouteReason::Retry)
        });
    }
    let safe = m.catalog.replica_safe(kind, &primary.pool, &m.classifier).await;
    if !safe {
        if let Some(t) = replica_only(c.target, primary) {
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
            writes: true,
            ..Route::to(primary, reason)
        });
    }
    if c.consistency_fallback {
        return Ok(Route::to(primary, RouteReason::Consistency));
    }
    let routing = &m.cluster.config.routing;
    let mut req = ReadRequest {
        preferred_region: routing.preferred_region.as_deref(),
        preferred_datacenter: routing.preferred_datacenter.as_deref(),
        exclude: c.exclude,
        ..ReadRequest::default()
    };
    if let Some(s) = c.session {
        match s.level {
            // Its position is unknown: only the primary has it, and a read kept off the
            // primary is refused rather than served by it.
            _ if s.pinned() => {
                return match c.target.filter(|t| !target_allows_primary(Some(t), primary)) {
                    Some(t) => Err(Error::SessionPositionUnknown { target: t.to_string() }),
                    None => Ok(Route::to(primary, RouteReason::Consistency)),
                };
            }
            Consistency::Strong => return Ok(Route::to(primary, RouteReason::Consistency)),
            Consistency::WriteWindow(d) if s.since_last_write().is_some_and(|t| t < d) => {
                return Ok(Route::to(primary, RouteReason::Consistency));
            }
            Consistency::BoundedStaleness(d) => req.max_staleness = Some(d),
            _ => {}
        }
    }
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
        Some(Target::Primary) => return Ok(Route::to(primary, RouteReason::Override)),
        Some(Target::Node(id)) => {
            let node = topology.find(id).ok_or_else(|| Error::UnknownNode { id: id.clone() })?;
            if let s @ (NodeState::Down | NodeState::Draining) = node.state() {
                return Err(Error::NodeUnavailable {
                    id: node.id.clone(),
                    state: s,
                });
            }
            // A monotonic session reading elsewhere than its replica leaves it: the floor rises
            // to what that replica may have shown (the primary's position), as when routing
            // moves it.
            if let Some(s) = c.session
                && !Arc::ptr_eq(node, primary)
                && s.sticky().is_some_and(|sticky| *sticky != node.id)
                && !leave_sticky(m, topology, s).await
            {
                return Ok(Route::to(primary, RouteReason::Consistency));
            }
            return Ok(Route {
                check: behind(node, c.session.and_then(SessionState::min_lsn)),
                ..Route::to(node, RouteReason::Override)
            });
        }
        Some(Target::Replica) => req.preference = Some(ReadPreference::Replica),
        Some(Target::Region(r)) => req.region = Some(r),
        Some(Target::Preference(p)) => req.preference = Some(*p),
    }
    if c.target.is_some() {
        reason = RouteReason::Override;
    }
    // Targets that leave a choice (a replica, a region, a preference) keep a monotonic
    // session on its replica too, when that replica meets them.
    if let Some(s) = c.session
        && let Some(route) = sticky_route(m, topology, s, &req, reason).await?
    {
        return Ok(route);
    }
    // The session may have moved its floor while switching replicas.
    let min_lsn = c.session.and_then(SessionState::min_lsn);
    req.min_lsn = min_lsn;
    let default = routing.read_preference;
    let mut picked = select(primary, &topology.replicas, &req, default, &mut FastRand);
    let mut check = None;
    if min_lsn.is_some() && !matches!(picked, Ok(Pick::Replica(_)) | Ok(Pick::Primary)) {
        // No replica is known to be far enough: ask one (the cache may just be old), among
        // those whose measured lag leaves a chance of catching up within the wait.
        req.min_lsn = None;
        let chance = m.cluster.config.consistency.max_wait + m.cluster.config.health.interval;
        req.max_staleness = Some(req.max_staleness.map_or(chance, |d| d.min(chance)));
        if let Ok(Pick::Replica(i)) = select(primary, &topology.replicas, &req, default, &mut FastRand) {
            picked = Ok(Pick::Replica(i));
            check = min_lsn;
        }
    }
    match picked {
        Ok(Pick::Primary) => Ok(Route::to(primary, reason)),
        Ok(Pick::Replica(i)) => Ok(Route {
            check,
            ..Route::to(&topology.replicas[i], reason)
        }),
        Ok(Pick::FallbackPrimary) => Ok(Route::to(primary, RouteReason::Fallback)),
        Err(NoNode::NoEligibleReplica) => Err(Error::NoEligibleReplica {
            preference: req.preference.unwrap_or(default),
            region: req.region.map(str::to_owned),
        }),
    }
}

/// The target, if it excludes the primary (a replica, or a node other than the primary).
fn replica_only<'a>(target: Option<&'a Target>, primary: &Node) -> Option<&'a Target> {
    target.filter(|t| match t {
        Target::Replica => true,
        Target::Node(id) => *id != primary.id.as_str(),
        _ => false,
    })
}

/// `Some(lsn)` if `node`'s cached position does not show it has replayed `lsn`.
fn behind(node: &Node, min_lsn: Option<Lsn>) -> Option<Lsn> {
    min_lsn.filter(|&lsn| node.replay_lsn() < lsn)
}

/// Keeps a monotonic session on its replica while that replica may serve it. Leaving it, the
/// session's floor rises to the primary's position now: whatever the old replica had replayed,
/// the next one must have too (a rare round trip, for an exact guarantee).
async fn sticky_route(
    m: &Plane,
    topology: &crate::cluster::Topology,
    s: &SessionState,
    req: &ReadRequest<'_>,
    reason: RouteReason,
) -> Result<Option<Route>, Error> {
    let Some(id) = s.sticky() else { return Ok(None) };
    let node = topology.replicas.iter().find(|n| n.id == *id);
    if let Some(node) = node.filter(|n| super::select::is_eligible(*n, req)) {
        return Ok(Some(Route {
            check: behind(node, s.min_lsn()),
            ..Route::to(node, reason)
        }));
    }
    if leave_sticky(m, topology, s).await {
        Ok(None)
    } else {
        // Without the position the guarantee cannot be kept on a replica.
        Ok(Some(Route::to(&topology.primary, RouteReason::Consistency)))
    }
}

/// Moves a monotonic session off its replica: whatever that replica had replayed, the next
/// one must have too, so the floor rises to the primary's position now (a rare round trip, for
/// an exact guarantee). False if that position could not be read.
async fn leave_sticky(m: &Plane, topology: &crate::cluster::Topology, s: &SessionState) -> bool {
    m.consistency
        .switches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match crate::data::session::primary_lsn(&topology.primary.pool).await {
        Ok(lsn) => {
            s.raise_floor(lsn);
            s.unstick();
            true
        }
        Err(_) => false,
    }
}

/// Whether a read with `target` may be served by the primary in its place: no target, one
/// that names the primary or allows it, or a region the primary is in.
pub(crate) fn target_allows_primary(target: Option<&Target>, primary: &Node) -> bool {
    match target {
        Some(Target::Replica | Target::Preference(ReadPreference::Replica)) => false,
        Some(Target::Node(id)) => *id == primary.id.as_str(),
        Some(Target::Region(r)) => primary.config.region.as_deref() == Some(r.as_str()),
        _ => true,
    }
}

/// Whether a failure of a statement sent on `route` may be retried on another node.
pub(crate) fn may_retry_elsewhere(route: &Route) -> bool {
    // A statement that may have run on the primary is never repeated.
    route.role == Role::Replica
}
