//! Where one statement goes: a pure function of the topology snapshot, what routing gathered
//! about the statement, and the caller's constraints.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Hint, QueryKind};
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::config::{Consistency, ReadPreference, ReplicationConfig};
use crate::core::Lsn;
use crate::data::session::SessionState;
use crate::error::Error;

use super::select::{NoNode, Pick, ReadRequest, Rng, is_eligible, select};
use super::{RouteReason, Target};

/// Where a statement goes, and why.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub node: Arc<Node>,
    /// The node's role in the snapshot it was routed on (a failover may change the node's role
    /// while the statement runs, and whether it may be retried depends on where it was sent).
    pub role: Role,
    pub reason: RouteReason,
    /// The statement needs the primary (its success moves the session's watermark).
    pub writes: bool,
    /// Before running, the replica must be seen to have replayed this position.
    pub check: Option<Lsn>,
    /// A `BoundedStaleness` read on a replica without a check: once its connection is in
    /// hand, the replica must still be within this (a wait for the connection ages it).
    pub bound: Option<Duration>,
}

impl Route {
    pub fn to(topology: &Topology, node: &Arc<Node>, reason: RouteReason) -> Self {
        Route {
            node: Arc::clone(node),
            role: if Arc::ptr_eq(node, &topology.primary) {
                Role::Primary
            } else {
                Role::Replica
            },
            reason,
            writes: false,
            check: None,
            bound: None,
        }
    }
}

/// A session's consistency state, as read when routing starts.
#[derive(Debug, Clone)]
pub(crate) struct SessionView {
    pub level: Consistency,
    /// Its position is unknown: only the primary has it.
    pub pinned: bool,
    pub since_last_write: Option<Duration>,
    /// The replica a monotonic session reads from.
    pub sticky: Option<Arc<NodeId>>,
    /// What a replica must have replayed to serve it.
    pub min_lsn: Option<Lsn>,
}

impl SessionView {
    pub fn of(s: &SessionState) -> Self {
        SessionView {
            level: s.level,
            pinned: s.pinned(),
            since_last_write: s.since_last_write(),
            sticky: s.sticky(),
            min_lsn: s.min_lsn(),
        }
    }
}

/// Everything a decision depends on.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub topology: &'a Topology,
    pub kind: &'a QueryKind,
    /// The statement may run on a standby: its text and what the catalog knows of its
    /// functions and views say so.
    pub replica_safe: bool,
    /// That rests on answers learned from the catalog, which DDL elsewhere may have made stale.
    pub learned: bool,
    pub target: Option<&'a Target>,
    /// Nodes that already failed this statement.
    pub exclude: &'a [NodeId],
    /// Run on the primary whatever the statement is (a standby refused it as a write).
    pub force_primary: bool,
    /// A replica did not catch up with the session in time: the primary.
    pub consistency_fallback: bool,
    pub session: Option<SessionView>,
    pub config: &'a ReplicationConfig,
}

/// What routing does next.
#[derive(Debug, Clone)]
pub(crate) enum Decision {
    Go(Route),
    /// The monotonic session must leave its replica first: its floor rises to the primary's
    /// position (whatever the old replica had shown, the next one must have too), then decide
    /// again; if that position cannot be read, the primary serves it.
    LeaveSticky,
}

/// Decides where a statement runs.
///
/// # Errors
/// [`Error::WriteOnReplica`] when a statement that needs the primary is targeted at a replica;
/// [`Error::SessionPositionUnknown`], [`Error::NoEligibleReplica`], [`Error::UnknownNode`],
/// [`Error::NodeUnavailable`].
pub(crate) fn decide(f: &Facts<'_>, rng: &mut impl Rng) -> Result<Decision, Error> {
    let decision = decide_node(f, rng)?;
    Ok(match decision {
        // A read on the primary whose verdict was learned may be a write after all (a function
        // replaced since): its position counts for the session as a write's would.
        Decision::Go(route) if f.learned && route.role == Role::Primary => {
            Decision::Go(Route { writes: true, ..route })
        }
        other => other,
    })
}

fn decide_node(f: &Facts<'_>, rng: &mut impl Rng) -> Result<Decision, Error> {
    let topology = f.topology;
    let primary = &topology.primary;
    let go = |node: &Arc<Node>, reason| Ok(Decision::Go(Route::to(topology, node, reason)));
    if f.force_primary {
        return Ok(Decision::Go(Route {
            writes: true,
            ..Route::to(topology, primary, RouteReason::Retry)
        }));
    }
    if !f.replica_safe {
        if let Some(t) = replica_only(f.target, primary) {
            return Err(Error::WriteOnReplica {
                reason: f.kind.reason().to_string(),
                target: t.to_string(),
            });
        }
        let reason = if f.kind.hint() == Some(Hint::Primary) {
            RouteReason::Hint
        } else {
            RouteReason::Write
        };
        return Ok(Decision::Go(Route {
            writes: true,
            ..Route::to(topology, primary, reason)
        }));
    }
    if f.consistency_fallback {
        return go(primary, RouteReason::Consistency);
    }
    let routing = &f.config.routing;
    let mut req = ReadRequest {
        preferred_region: routing.preferred_region.as_deref(),
        preferred_datacenter: routing.preferred_datacenter.as_deref(),
        exclude: f.exclude,
        ..ReadRequest::default()
    };
    let session = f.session.as_ref();
    if let Some(s) = session {
        match s.level {
            // Its position is unknown: only the primary has it, and a read kept off the
            // primary is refused rather than served by it.
            _ if s.pinned => {
                return match f.target.filter(|t| !target_allows_primary(Some(t), primary)) {
                    Some(t) => Err(Error::SessionPositionUnknown { target: t.to_string() }),
                    None => go(primary, RouteReason::Consistency),
                };
            }
            Consistency::Strong => return go(primary, RouteReason::Consistency),
            Consistency::WriteWindow(d) if s.since_last_write.is_some_and(|t| t < d) => {
                return go(primary, RouteReason::Consistency);
            }
            Consistency::BoundedStaleness(d) => req.max_staleness = Some(d),
            Consistency::Eventual | Consistency::ReadAfterWrite | Consistency::WriteWindow(_) => {}
        }
    }
    let mut reason = if f.exclude.is_empty() {
        RouteReason::ReadPreference
    } else {
        RouteReason::Retry
    };
    if f.kind.hint() == Some(Hint::Replica) {
        req.preference = Some(ReadPreference::ReplicaPreferred);
        reason = RouteReason::Hint;
    }
    let min_lsn = session.and_then(|s| s.min_lsn);
    let sticky = session.and_then(|s| s.sticky.as_deref());
    let bound = session.and_then(|s| match s.level {
        Consistency::BoundedStaleness(d) => Some(d),
        _ => None,
    });
    match f.target {
        None => {}
        Some(Target::Primary) => return go(primary, RouteReason::Override),
        Some(Target::Node(id)) => {
            let node = topology.find(id).ok_or_else(|| Error::UnknownNode { id: id.clone() })?;
            if let s @ (NodeState::Down | NodeState::Draining) = node.state() {
                return Err(Error::NodeUnavailable {
                    id: node.id.clone(),
                    state: s,
                });
            }
            // A monotonic session reading elsewhere than its replica leaves it, as when
            // routing moves it.
            if !Arc::ptr_eq(node, primary) && sticky.is_some_and(|sticky| *sticky != node.id) {
                return Ok(Decision::LeaveSticky);
            }
            let proof = match bound.filter(|_| !Arc::ptr_eq(node, primary)) {
                Some(d) => within(node, primary, d, f.config).map_err(|()| Error::StalenessUnknown {
                    node: node.id.clone(),
                    bound: d,
                })?,
                None => None,
            };
            let check = behind(node, min_lsn).max(proof);
            return Ok(Decision::Go(Route {
                check,
                bound: recheck(node, bound, check).filter(|_| !Arc::ptr_eq(node, primary)),
                ..Route::to(topology, node, RouteReason::Override)
            }));
        }
        Some(Target::Replica) => req.preference = Some(ReadPreference::Replica),
        Some(Target::Region(r)) => req.region = Some(r),
        Some(Target::Preference(p)) => req.preference = Some(*p),
    }
    if f.target.is_some() {
        reason = RouteReason::Override;
    }
    // Targets that leave a choice (a replica, a region, a preference) keep a monotonic
    // session on its replica too, when that replica meets them.
    if let Some(id) = sticky {
        // Bounded, its replica may also show the bound on the read's connection.
        let mut stay = req;
        if bound.is_some() {
            stay.max_staleness = None;
            stay.max_lag = bound;
        }
        let node = topology.replicas.iter().find(|n| n.id == *id);
        let proof = |n: &Arc<Node>| bound.map_or(Ok(None), |d| within(n, primary, d, f.config));
        return match node.filter(|n| is_eligible(*n, &stay)).map(|n| (n, proof(n))) {
            Some((node, Ok(proof))) => {
                let check = behind(node, min_lsn).max(proof);
                Ok(Decision::Go(Route {
                    check,
                    bound: recheck(node, bound, check),
                    ..Route::to(topology, node, reason)
                }))
            }
            _ => Ok(Decision::LeaveSticky),
        };
    }
    let unpositioned = req;
    req.min_lsn = min_lsn;
    let default = routing.read_preference;
    let mut picked = select(primary, &topology.replicas, &req, default, rng);
    let mut check = None;
    if min_lsn.is_some() && !matches!(picked, Ok(Pick::Replica(_)) | Ok(Pick::Primary)) {
        // No replica is known to be far enough: ask one (the cache may just be old), among
        // those whose measured lag leaves a chance of catching up within the wait.
        req.min_lsn = None;
        req.max_lag = Some(f.config.consistency.max_wait + f.config.health.interval);
        if let Ok(Pick::Replica(i)) = select(primary, &topology.replicas, &req, default, rng) {
            picked = Ok(Pick::Replica(i));
            check = min_lsn;
        }
    }
    if let Some(d) = bound
        && !matches!(picked, Ok(Pick::Replica(_)) | Ok(Pick::Primary))
    {
        // No replica's measurement shows the bound any more: one whose lag leaves a chance
        // shows it on the read's connection, by having replayed what the primary had when
        // last measured, if that is recent enough.
        req.max_staleness = None;
        req.max_lag = Some(d);
        if let Ok(Pick::Replica(i)) = select(primary, &topology.replicas, &req, default, rng)
            && let Ok(proof) = within(&topology.replicas[i], primary, d, f.config)
        {
            picked = Ok(Pick::Replica(i));
            check = min_lsn.max(proof);
        }
    }
    match picked {
        Ok(Pick::Primary) => go(primary, reason),
        Ok(Pick::Replica(i)) => Ok(Decision::Go(Route {
            check,
            bound: recheck(&topology.replicas[i], bound, check),
            ..Route::to(topology, &topology.replicas[i], reason)
        })),
        Ok(Pick::FallbackPrimary) => go(primary, RouteReason::Fallback),
        Err(NoNode::NoEligibleReplica) => Err(not_caught_up(&topology.replicas, &unpositioned, min_lsn)
            .unwrap_or_else(|| Error::NoEligibleReplica {
                preference: req.preference.unwrap_or(default),
                region: req.region.map(str::to_owned),
            })),
    }
}

/// When replicas could serve the read but for the session's position: the most advanced of
/// them and what it lacks, rather than "no eligible replica" (whether one was close enough to
/// be asked is a matter of timing).
fn not_caught_up(replicas: &[Arc<Node>], req: &ReadRequest<'_>, needed: Option<Lsn>) -> Option<Error> {
    let needed = needed?;
    let node = replicas
        .iter()
        .filter(|r| is_eligible(*r, req))
        .max_by_key(|r| r.replay_lsn())?;
    Some(Error::NotCaughtUp {
        node: node.id.clone(),
        needed,
        replayed: node.replay_lsn(),
    })
}

/// The target, if it excludes the primary (a replica, or a node other than the primary).
fn replica_only<'a>(target: Option<&'a Target>, primary: &Node) -> Option<&'a Target> {
    target.filter(|t| match t {
        Target::Replica => true,
        Target::Node(id) => *id != primary.id.as_str(),
        _ => false,
    })
}

/// The bound a replica read must still meet once its connection is in hand: when its own
/// measurement showed it (no check on the connection).
fn recheck(node: &Node, bound: Option<Duration>, check: Option<Lsn>) -> Option<Duration> {
    bound.filter(|d| check.is_none() && node.staleness() <= *d)
}

/// For a read of at most `bound` staleness on replica `node`: nothing to check if its last
/// measurement shows it within the bound; else the primary's last measured position, which it
/// must be seen to have replayed, if that measurement plus the longest the check may wait
/// (`consistency.max_wait`) stays within the bound; else nothing a replica can show proves it.
fn within(node: &Node, primary: &Node, bound: Duration, config: &ReplicationConfig) -> Result<Option<Lsn>, ()> {
    if node.staleness() <= bound {
        return Ok(None);
    }
    // The position after its time: a position newer than that time only asks more.
    let age = primary.staleness();
    let position = primary.replay_lsn();
    if age.saturating_add(config.consistency.max_wait) < bound {
        Ok(behind(node, Some(position)))
    } else {
        Err(())
    }
}

/// `Some(lsn)` if `node`'s cached position does not show it has replayed `lsn`.
fn behind(node: &Node, min_lsn: Option<Lsn>) -> Option<Lsn> {
    min_lsn.filter(|&lsn| node.replay_lsn() < lsn)
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

#[cfg(test)]
mod tests;
