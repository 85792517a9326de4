//! Carrying out a failover or a switchover: survey, plan, promote, switch, repoint, each step
//! recorded.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::coordinate;
use super::elect::Candidate;
use super::event::Recorder;
use super::follow::note_stragglers;
use super::plan;
use super::{FailoverEvent, FailoverKind, Outcome};
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::config::FailoverMode;
use crate::control::Control;
use crate::core::{Lsn, lock};
use crate::error::{Error, FailoverError, PgError};
use crate::pg::{self, Sample};

pub(super) async fn run(m: &Arc<Control>, kind: FailoverKind, target: Option<&str>) -> Result<FailoverEvent, Error> {
    let state = &m.failover;
    let Ok(_running) = state.running.try_lock() else {
        return Err(FailoverError::InProgress.into());
    };
    let topology = m.cluster.topology.load_full();
    let mut rec = Recorder::new(kind, topology.primary.id.clone());
    let result = match kind {
        FailoverKind::Switchover => switchover(m, &topology, target, &mut rec).await,
        _ => failover(m, &topology, target, &mut rec).await,
    };
    let (outcome, error) = match &result {
        Ok(()) => (Outcome::Completed, None),
        Err(Stop::Check(e)) => (Outcome::Aborted, Some(e.to_string())),
        Err(Stop::Failed(e)) => (Outcome::Failed, Some(e.to_string())),
    };
    let event = rec.finish(outcome, error.clone());
    let repeat = {
        let mut last = lock(&state.last_abort);
        let repeat = kind == FailoverKind::Automatic && outcome == Outcome::Aborted && *last == error;
        *last = if kind == FailoverKind::Automatic { error } else { None };
        repeat
    };
    let event = if repeat {
        tracing::debug!(target: "covet::failover", "automatic failover aborted again for the same reason");
        event
    } else {
        state.audit.record(event).await
    };
    match result {
        Ok(()) => Ok(event),
        Err(Stop::Check(e) | Stop::Failed(e)) => Err(e.into()),
    }
}

/// How a failover stopped: a safety check that changed nothing, or a step that failed.
enum Stop {
    Check(FailoverError),
    Failed(FailoverError),
}

fn step_failed<'a>(step: &'static str, node: &'a Node) -> impl FnOnce(PgError) -> Stop + use<'a> {
    move |source| step_error(step, node, source)
}

/// [`pg::survey`] of a node, on a connection of its own.
pub(super) async fn survey(node: &Node, timeout: Duration) -> Result<Sample, PgError> {
    pg::survey(&node.pool.connect_options(), timeout).await
}

/// [`pg::connect`] to a node.
pub(super) async fn connect(node: &Node, timeout: Duration) -> Result<sqlx::PgConnection, PgError> {
    pg::connect(&node.pool.connect_options(), timeout).await
}

/// The standbys that may take part: not being removed, not fenced.
pub(super) fn standbys(topology: &Topology) -> Vec<Arc<Node>> {
    topology
        .replicas
        .iter()
        .filter(|n| !matches!(n.state(), NodeState::Draining | NodeState::Fenced))
        .cloned()
        .collect()
}

/// Samples every standby at once; records who answered.
async fn survey_all(m: &Control, nodes: &[Arc<Node>], rec: &mut Recorder) -> Vec<(Arc<Node>, Option<Sample>)> {
    let timeout = m.cluster.config.health.timeout;
    let results = futures::future::join_all(nodes.iter().map(|n| survey(n, timeout))).await;
    nodes
        .iter()
        .zip(results)
        .map(|(node, result)| match result {
            Ok(s) => {
                let detail = format!(
                    "in recovery: {}, received {}, replayed {}, receiver: {}",
                    s.in_recovery,
                    s.received.unwrap_or(Lsn::ZERO),
                    s.replayed.unwrap_or(Lsn::ZERO),
                    s.receiver_status()
                );
                rec.step("survey", Some(&node.id), true, detail);
                (Arc::clone(node), Some(s))
            }
            Err(e) => {
                rec.step("survey", Some(&node.id), false, e.to_string());
                (Arc::clone(node), None)
            }
        })
        .collect()
}

/// The standbys that answered.
fn answered(surveyed: &[(Arc<Node>, Option<Sample>)]) -> Vec<(Arc<Node>, Sample)> {
    surveyed
        .iter()
        .filter_map(|(n, s)| Some((Arc::clone(n), s.clone()?)))
        .collect()
}

fn as_standby<'a>(node: &'a Node, survey: Option<&'a Sample>) -> plan::Standby<'a> {
    plan::Standby {
        id: &node.id,
        host: &node.config.host,
        port: node.config.port,
        survey,
    }
}

/// Records the election: the standby chosen, or why none could be.
fn record_election(rec: &mut Recorder, chosen: Result<&Candidate, &FailoverError>) {
    match chosen {
        Ok(c) => rec.step(
            "elect",
            Some(&c.id),
            true,
            format!("received {}, replayed {}", c.received, c.replayed),
        ),
        Err(e) => rec.step("elect", None, false, e.to_string()),
    }
}

/// The node the plan named, among those that answered.
fn node_of(answered: &[(Arc<Node>, Sample)], id: &NodeId) -> Result<Arc<Node>, Stop> {
    answered
        .iter()
        .find(|(n, _)| n.id == *id)
        .map(|(n, _)| Arc::clone(n))
        .ok_or_else(|| Stop::Check(FailoverError::NoCandidate { reasons: Vec::new() }))
}

async fn failover(m: &Arc<Control>, topology: &Topology, target: Option<&str>, rec: &mut Recorder) -> Result<(), Stop> {
    let old = &topology.primary;
    let timeout = m.cluster.config.health.timeout;
    // 1. The primary must really be gone from here...
    let old_survey = survey(old, timeout).await;
    if let Err(e) = plan::confirm(&old.id, old_survey.as_ref().ok()) {
        rec.step("confirm", Some(&old.id), false, "the primary answers as a primary");
        return Err(Stop::Check(e));
    }
    match &old_survey {
        Ok(_) => rec.step("confirm", Some(&old.id), true, "the old primary answers, in recovery"),
        Err(e) => rec.step("confirm", Some(&old.id), true, format!("unreachable: {e}")),
    }
    // 2. ...and from the standbys; then elect, and check what it would cost. In a fleet, a
    // promotion another lease holder began may have happened: only its node may be next.
    let under_way = coordinate::under_way(m, rec).await.map_err(Stop::Check)?;
    let target = under_way.target.as_deref().or(target);
    let surveyed = survey_all(m, &standbys(topology), rec).await;
    let (system_id, _) = m.cluster.identity.get();
    let sync = m.cluster.identity.sync_rule();
    let facts: Vec<plan::Standby<'_>> = surveyed.iter().map(|(n, s)| as_standby(n, s.as_ref())).collect();
    let decided = plan::plan(&plan::Facts {
        kind: rec.kind(),
        target,
        standbys: &facts,
        system_id,
        sync: sync.as_ref(),
        old_position: old.replay_lsn(),
        config: &m.cluster.config.failover,
    });
    let answered = answered(&surveyed);
    let hold;
    let (new, timeline) = match decided {
        Err(e) => {
            if matches!(
                e,
                FailoverError::NoCandidate { .. } | FailoverError::TargetNotEligible { .. }
            ) {
                record_election(rec, Err(&e));
            }
            return Err(Stop::Check(e));
        }
        Ok(plan::Plan::Adopt(id)) => {
            let node = node_of(&answered, &id)?;
            hold = m.cluster.gate.hold();
            let mut conn = connect(&node, timeout).await.map_err(step_failed("adopt", &node))?;
            let tli = pg::timeline(&mut conn).await.map_err(step_failed("adopt", &node))?;
            rec.step(
                "adopt",
                Some(&node.id),
                true,
                format!("already promoted, timeline {tli}"),
            );
            (node, tli)
        }
        Ok(plan::Plan::Promote(chosen)) => {
            record_election(rec, Ok(&chosen));
            let cfg = &m.cluster.config.failover;
            if rec.kind() == FailoverKind::Automatic && cfg.mode == FailoverMode::Supervised {
                return Err(Stop::Check(FailoverError::AwaitingApproval {
                    node: chosen.id.clone(),
                    timeout: cfg.approval_timeout,
                }));
            }
            let node = node_of(&answered, &chosen.id)?;
            hold = m.cluster.gate.hold();
            // Another manager may have promoted one meanwhile: look once more, right before.
            let again = futures::future::join_all(answered.iter().map(|(n, _)| survey(n, timeout))).await;
            let ids: Vec<&NodeId> = answered.iter().map(|(n, _)| &n.id).collect();
            let again: Vec<Option<Sample>> = again.into_iter().map(Result::ok).collect();
            plan::still_unpromoted(&ids, &again).map_err(Stop::Check)?;
            let left = timeline_of(&answered, &node, m);
            coordinate::begin(m, &node, left, &under_way, rec)
                .await
                .map_err(Stop::Check)?;
            // A paused old primary may wake and answer statements sent before it stopped: none
            // of those answers may reach a caller once another node is primary.
            let in_flight = old.in_flight.load(Ordering::SeqCst);
            old.abandon_in_flight();
            rec.step(
                "abandon",
                Some(&old.id),
                true,
                format!("{in_flight} statements in flight abandoned: their callers get OutcomeUnknown"),
            );
            let tli = promote(m, &node, rec).await?;
            (node, tli)
        }
    };
    switch(m, old, &new, timeline, false, rec);
    coordinate::publish(m, &new, timeline, rec).await;
    rec.step(
        "fence",
        Some(&old.id),
        true,
        "fenced in the topology; made read-only if it comes back as a primary",
    );
    finish(m, topology, &new, &answered, hold, rec).await;
    Ok(())
}

async fn switchover(
    m: &Arc<Control>,
    topology: &Topology,
    target: Option<&str>,
    rec: &mut Recorder,
) -> Result<(), Stop> {
    let cfg = &m.cluster.config.failover;
    let old = &topology.primary;
    let timeout = m.cluster.config.health.timeout;
    let under_way = coordinate::under_way(m, rec).await.map_err(Stop::Check)?;
    if let Some(refused) = under_way.refusal() {
        return Err(Stop::Check(refused));
    }
    let mut old_conn = connect(old, timeout).await.map_err(step_failed("connect", old))?;
    let answered = answered(&survey_all(m, &standbys(topology), rec).await);
    let facts: Vec<plan::Standby<'_>> = answered.iter().map(|(n, s)| as_standby(n, Some(s))).collect();
    let pairs: Vec<_> = facts.iter().zip(&answered).map(|(f, (_, s))| (f, s)).collect();
    let (system_id, _) = m.cluster.identity.get();
    let chosen = plan::choose(&pairs, target, true, system_id, &cfg.exclude);
    record_election(rec, chosen.as_ref());
    let chosen = chosen.map_err(Stop::Check)?;
    let node = node_of(&answered, &chosen.id)?;
    let mut target_conn = connect(&node, timeout).await.map_err(step_failed("connect", &node))?;
    // Writes wait from here; those already running get a moment to finish before the fence.
    let hold = m.cluster.gate.hold();
    let drain_until = Instant::now() + cfg.hold_writes / 2;
    while old.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // In a fleet, the promotion is recorded before anything changes: a holder that cannot
    // record it fences nothing.
    let left = timeline_of(&answered, &node, m);
    coordinate::begin(m, &node, left, &under_way, rec)
        .await
        .map_err(Stop::Check)?;
    // From the fence until pg_promote is sent, any failure must make the old primary writable
    // again: otherwise the cluster is left without one.
    let prepared = async {
        let ended = pg::fence(&mut old_conn).await.map_err(step_failed("fence", old))?;
        rec.step(
            "fence",
            Some(&old.id),
            true,
            format!("read-only; {} client sessions ended", ended.len()),
        );
        pg::quiesce(&mut old_conn, &ended, cfg.catchup_timeout)
            .await
            .map_err(step_failed("fence", old))?;
        catch_up(&mut old_conn, &mut target_conn, &node, cfg.catchup_timeout, rec).await?;
        pg::unfence(&mut target_conn)
            .await
            .map_err(step_failed("promote", &node))
    }
    .await;
    if let Err(stop) = prepared {
        let undone = pg::unfence(&mut old_conn).await;
        rec.step(
            "unfence",
            Some(&old.id),
            undone.is_ok(),
            undone.map_or_else(|e| e.to_string(), |()| "writable again".into()),
        );
        coordinate::abandon(m, rec).await;
        return Err(stop);
    }
    // Sent: even if it reports a failure, the promotion may complete, so no unfencing now.
    let timeline = promote_on(m, &mut target_conn, &node, rec).await?;
    switch(m, old, &node, timeline, false, rec);
    coordinate::publish(m, &node, timeline, rec).await;
    finish(m, topology, &node, &answered, hold, rec).await;
    Ok(())
}

/// The timeline `node` answered on in the survey (the one being left), else the cluster's.
fn timeline_of(answered: &[(Arc<Node>, Sample)], node: &Node, m: &Control) -> u32 {
    answered
        .iter()
        .find(|(n, _)| n.id == node.id)
        .and_then(|(_, s)| s.timeline)
        .unwrap_or_else(|| m.cluster.identity.get().1)
}

/// After the switch: writes go on (to the new primary), the other standbys are repointed, and
/// those that could not be are remembered.
async fn finish(
    m: &Control,
    topology: &Topology,
    new: &Node,
    answered: &[(Arc<Node>, Sample)],
    hold: crate::cluster::HoldWrites<'_>,
    rec: &mut Recorder,
) {
    drop(hold);
    repoint_all(m, new, answered, rec).await;
    note_stragglers(m, topology, new, rec);
}

/// Waits until the target has replayed everything the fenced old primary flushed, reading the
/// old primary's position again until it stops moving.
async fn catch_up(
    old: &mut sqlx::PgConnection,
    target: &mut sqlx::PgConnection,
    node: &Node,
    timeout: Duration,
    rec: &mut Recorder,
) -> Result<(), Stop> {
    let failed = |source| {
        step_error(
            "catch_up",
            node,
            PgError::Query {
                what: "positions",
                source,
            },
        )
    };
    let deadline = Instant::now() + timeout;
    let mut needed = pg::flushed_lsn(old).await.map_err(failed)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let replayed = pg::wait_replayed(target, needed, left, Duration::from_millis(10), |_| {})
            .await
            .map_err(failed)?;
        if !replayed.caught_up {
            return Err(Stop::Check(FailoverError::CatchUp {
                node: node.id.clone(),
                needed,
                replayed: replayed.lsn,
            }));
        }
        let now = pg::flushed_lsn(old).await.map_err(failed)?;
        if now == needed {
            rec.step(
                "catch_up",
                Some(&node.id),
                true,
                format!("replayed {} >= {needed}", replayed.lsn),
            );
            return Ok(());
        }
        needed = now;
    }
}

fn step_error(step: &'static str, node: &Node, source: PgError) -> Stop {
    Stop::Failed(FailoverError::Step {
        step,
        node: node.id.clone(),
        source,
    })
}

async fn promote(m: &Control, node: &Node, rec: &mut Recorder) -> Result<u32, Stop> {
    let mut conn = connect(node, m.cluster.config.health.timeout)
        .await
        .map_err(step_failed("promote", node))?;
    pg::unfence(&mut conn).await.map_err(step_failed("promote", node))?;
    promote_on(m, &mut conn, node, rec).await
}

/// `pg_promote` on `conn` (to `node`), recorded; the new timeline.
async fn promote_on(m: &Control, conn: &mut sqlx::PgConnection, node: &Node, rec: &mut Recorder) -> Result<u32, Stop> {
    let timeline = pg::promote(conn, m.cluster.config.failover.promote_timeout)
        .await
        .map_err(step_failed("promote", node))?;
    rec.step(
        "promote",
        Some(&node.id),
        true,
        format!("primary on timeline {timeline}"),
    );
    rec.promoted(node.id.clone(), timeline);
    Ok(timeline)
}

/// The new topology: `new` is the primary (a node with a primary's pool); `old` is fenced, or,
/// if it `follows` the new primary as its standby (an HA manager demoted it), a replica (down
/// until its checks say otherwise).
pub(super) fn switch(m: &Control, old: &Arc<Node>, new: &Arc<Node>, timeline: u32, follows: bool, rec: &mut Recorder) {
    let primary = m.cluster.new_node(&new.config, Role::Primary, NodeState::Healthy);
    primary.observe_lsn(new.replay_lsn());
    primary.writable.store(true, Ordering::Relaxed);
    let old_next = if follows {
        m.cluster.new_node(&old.config, Role::Replica, NodeState::Down)
    } else {
        old.set_state(NodeState::Fenced);
        Arc::clone(old)
    };
    m.cluster.topology.rcu(|t| {
        let mut replicas: Vec<_> = t
            .replicas
            .iter()
            .filter(|r| !Arc::ptr_eq(r, new) && !Arc::ptr_eq(r, old))
            .cloned()
            .collect();
        replicas.push(Arc::clone(&old_next));
        Topology {
            primary: Arc::clone(&primary),
            replicas,
        }
    });
    // After the swap: routes from the old snapshot still see it as the primary they sent to.
    old.set_role(Role::Replica);
    let (system_id, _) = m.cluster.identity.get();
    m.cluster.identity.observe(system_id, Some(timeline));
    m.cluster.gate.switched();
    m.lag_monitor.forget(new.id.as_str());
    // In-flight reads on the standby's pool finish; then it closes.
    let (old_pool, new_pool) = (old.pool.clone(), new.pool.clone());
    tokio::spawn(async move {
        tokio::join!(old_pool.close(), new_pool.close());
    });
    let old_now = if follows { "a replica of it" } else { "fenced" };
    rec.step(
        "switch",
        Some(&new.id),
        true,
        format!("writes go to {} now; {} {old_now}", new.id, old.id),
    );
}

/// Points every other standby that answered at the new primary, all at once.
async fn repoint_all(m: &Control, new: &Node, answered: &[(Arc<Node>, Sample)], rec: &mut Recorder) {
    let cfg = &m.cluster.config.failover;
    let timeout = m.cluster.config.health.timeout;
    let (_, timeline) = m.cluster.identity.get();
    let others: Vec<&Arc<Node>> = answered
        .iter()
        .filter(|(n, s)| n.id != new.id && s.in_recovery)
        .map(|(n, _)| n)
        .collect();
    let results = futures::future::join_all(
        others
            .iter()
            .map(|standby| repoint(new, standby, timeline, timeout, cfg.repoint_timeout)),
    )
    .await;
    for (standby, result) in others.into_iter().zip(results) {
        match result {
            Ok(()) => {
                rec.step("repoint", Some(&standby.id), true, format!("streaming from {}", new.id));
                rec.repointed(standby.id.clone());
            }
            Err(e) => rec.step("repoint", Some(&standby.id), false, e.to_string()),
        }
    }
}

/// Points `standby` at `primary` (on `timeline`) and waits up to `wait` until it streams.
pub(super) async fn repoint(
    primary: &Node,
    standby: &Node,
    timeline: u32,
    timeout: Duration,
    wait: Duration,
) -> Result<(), PgError> {
    let mut primary_conn = connect(primary, timeout).await?;
    let mut conn = connect(standby, timeout).await?;
    let address = (primary.config.host.as_str(), primary.config.port);
    pg::repoint(&mut conn, &mut primary_conn, address, timeline, wait).await
}
