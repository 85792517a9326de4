//! [`FailoverManager`]: replaces a dead primary with its best standby, or switches primaries
//! on request, and keeps a former primary from ever taking writes again.
//!
//! A failover: confirm the primary is unreachable; survey the standbys (each must have lost its
//! own connection to the primary, so a manager cut off from a live primary does nothing);
//! elect the standby that received the most WAL; hold writes; `pg_promote` it; switch the
//! topology (the old primary is *fenced*: never routed to); repoint the other standbys
//! (`primary_conninfo` + reload, a replication slot created first) and wait until they stream
//! from the new primary. Every step goes to the audit trail. A fenced node that comes back as a
//! primary is made read-only and its sessions are ended; one that comes back as a standby of
//! the cluster is readmitted as a replica.

mod elect;
mod event;
mod plan;

use elect::Candidate;

pub use event::{FailoverEvent, FailoverKind, Outcome, Step};

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use event::{AuditLog, Recorder};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Control;
use super::health::Round;
use crate::cluster::new_node;
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::core::Lsn;
use crate::core::lock;
use crate::error::{Error, FailoverError, PgError};
use crate::pg::{self, Sample};

/// Failover state shared by the handles.
#[derive(Debug)]
pub(crate) struct FailoverState {
    running: tokio::sync::Mutex<()>,
    last_automatic: Mutex<Option<Instant>>,
    /// The last automatic attempt's abort reason: a repeat is not recorded again.
    last_abort: Mutex<Option<String>>,
    /// Standbys a failover could not repoint (down at the time), and when to try again.
    stragglers: Mutex<Vec<Straggler>>,
    audit: AuditLog,
}

impl FailoverState {
    pub fn new(config: &crate::config::FailoverConfig) -> Self {
        FailoverState {
            running: tokio::sync::Mutex::new(()),
            last_automatic: Mutex::new(None),
            last_abort: Mutex::new(None),
            stragglers: Mutex::default(),
            audit: AuditLog::new(config.audit_log.clone()),
        }
    }
}

#[derive(Debug)]
struct Straggler {
    id: NodeId,
    next_try: Instant,
    backoff: Duration,
}

/// Runs failovers and switchovers, and keeps their audit trail.
///
/// Obtained from [`ReplicatedPool::failover`](crate::ReplicatedPool::failover); cheap to clone.
/// The database role needs the rights to promote and reconfigure servers: a superuser, or on
/// PostgreSQL 15+ `EXECUTE` on `pg_promote` and `pg_reload_conf`, `ALTER SYSTEM` on
/// `default_transaction_read_only` and `primary_conninfo`, and `pg_signal_backend`.
///
/// ```no_run
/// # async fn demo(db: covet_replication::ReplicatedPool) -> Result<(), covet_replication::Error> {
/// // Planned maintenance of the primary: move it to replica2 without losing a write.
/// let event = db.failover().switchover(Some("replica2")).await?;
/// println!("new primary {:?} in {:?}", event.new_primary, event.duration);
/// for step in &event.steps {
///     println!("{:>8?} {} {}", step.after, step.name, step.detail);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FailoverManager {
    pub(crate) control: Arc<Control>,
}

impl FailoverManager {
    /// Replaces a primary that cannot be reached with the best standby (or `target`), as an
    /// automatic failover would, without waiting for the health loop.
    ///
    /// # Errors
    /// [`Error::Failover`]: [`FailoverError::PrimaryAlive`] if the primary answers (use
    /// [`switchover`](Self::switchover)), [`FailoverError::PrimaryStillStreaming`],
    /// [`FailoverError::NotEnoughReplicas`], [`FailoverError::NoCandidate`],
    /// [`FailoverError::TargetNotEligible`], [`FailoverError::DataLoss`], [`FailoverError::InProgress`],
    /// or [`FailoverError::Step`] if promoting failed.
    pub async fn failover(&self, target: Option<&str>) -> Result<FailoverEvent, Error> {
        run(&self.control, FailoverKind::Manual, target).await
    }

    /// Moves the primary role to a standby (`target`, else the best one) while the primary is
    /// up, losing nothing: writes are held, the old primary is fenced (read-only, sessions
    /// ended), the target replays everything it wrote, and only then is promoted. The old
    /// primary stays fenced; to make it a standby, rebuild it from the new primary (e.g.
    /// `pg_rewind` or a new base backup) and it is readmitted as a replica once it streams.
    ///
    /// # Errors
    /// As [`failover`](Self::failover); [`FailoverError::CatchUp`] if the target did not catch up
    /// in time (the old primary is unfenced and stays primary).
    pub async fn switchover(&self, target: Option<&str>) -> Result<FailoverEvent, Error> {
        run(&self.control, FailoverKind::Switchover, target).await
    }

    /// Whether a failover or switchover is running.
    pub fn in_progress(&self) -> bool {
        self.control.failover.running.try_lock().is_err()
    }

    /// The last 100 events, oldest first.
    pub fn history(&self) -> Vec<FailoverEvent> {
        self.control.failover.audit.history()
    }

    /// Calls `callback` with every event (e.g. to page someone, or to power off a fenced node
    /// for good). Each callback runs on its own task; a panicking one is logged.
    pub fn register_event_callback<F, Fut>(&self, callback: F)
    where
        F: Fn(FailoverEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.control.failover.audit.callbacks.register(callback);
    }
}

/// The failover task: acts on each health round as it ends, on a task of its own, so that a
/// failover (up to promote_timeout + repoint_timeout) never stops the probing. Rounds that end
/// while it acts are skipped but for the latest.
pub(crate) async fn task(
    control: Weak<Control>,
    mut rounds: watch::Receiver<Option<Arc<Round>>>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            changed = rounds.changed() => if changed.is_err() { break },
        }
        let Some(round) = rounds.borrow_and_update().clone() else {
            continue;
        };
        let Some(control) = control.upgrade() else { break };
        after_health_round(&control, &round).await;
    }
    tracing::debug!(target: "covet::failover", "failover task stopped");
}

/// What a health round asks of failover: repoint standbys that missed one, re-fence a former
/// primary that answers, follow a promotion made elsewhere, and fail over if the primary is
/// down and that is allowed.
async fn after_health_round(m: &Arc<Control>, round: &Round) {
    repoint_stragglers(m).await;
    for (node, sample) in round.topology.nodes().zip(&round.samples) {
        if let (NodeState::Fenced, Ok(s)) = (node.state(), sample) {
            fenced_node_answered(m, node, s.in_recovery, s.read_only, s.system_id).await;
        }
    }
    // A round taken before the topology changed says nothing about the new one.
    let topology = m.cluster.topology.load_full();
    if !Arc::ptr_eq(&topology, &round.topology) {
        return;
    }
    if let Some((node, timeline)) = promoted_elsewhere(m, round) {
        adopt(m, &node, timeline).await;
        return;
    }
    let cfg = &m.cluster.config.failover;
    if !cfg.automatic || topology.primary.state() != NodeState::Down || topology.replicas.is_empty() {
        return;
    }
    if lock(&m.failover.last_automatic).is_some_and(|t| t.elapsed() < cfg.cooldown) {
        return;
    }
    if run(m, FailoverKind::Automatic, None).await.is_ok() {
        *lock(&m.failover.last_automatic) = Some(Instant::now());
    }
}

/// A replica that answers as a writable primary on a newer timeline than the configured
/// primary (or while that one is gone, a standby, or fenced): someone promoted it.
fn promoted_elsewhere(m: &Control, round: &Round) -> Option<(Arc<Node>, u32)> {
    let samples = &round.samples;
    let primary = samples[0].as_ref().ok().filter(|s| !s.in_recovery && !s.read_only);
    let (cluster, _) = m.cluster.identity.get();
    round
        .topology
        .replicas
        .iter()
        .zip(&samples[1..])
        .filter_map(|(node, sample)| {
            let s = sample.as_ref().ok()?;
            let timeline = s.timeline?;
            let newer = primary.is_none_or(|p| p.timeline.is_some_and(|t| t < timeline));
            let writable = !s.in_recovery && !s.read_only;
            let member = cluster == 0 || s.system_id == cluster;
            let usable = !matches!(node.state(), NodeState::Draining | NodeState::Fenced);
            (newer && writable && member && usable).then(|| (Arc::clone(node), timeline))
        })
        .max_by_key(|(_, timeline)| *timeline)
}

async fn run(m: &Arc<Control>, kind: FailoverKind, target: Option<&str>) -> Result<FailoverEvent, Error> {
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
async fn survey(node: &Node, timeout: Duration) -> Result<Sample, PgError> {
    pg::survey(&node.pool.connect_options(), timeout).await
}

/// [`pg::connect`] to a node.
async fn connect(node: &Node, timeout: Duration) -> Result<sqlx::PgConnection, PgError> {
    pg::connect(&node.pool.connect_options(), timeout).await
}

/// The standbys that may take part: not being removed, not fenced.
fn standbys(topology: &Topology) -> Vec<Arc<Node>> {
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
    // 2. ...and from the standbys; then elect, and check what it would cost.
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
            let node = node_of(&answered, &chosen.id)?;
            hold = m.cluster.gate.hold();
            // Another manager may have promoted one meanwhile: look once more, right before.
            let again = futures::future::join_all(answered.iter().map(|(n, _)| survey(n, timeout))).await;
            let ids: Vec<&NodeId> = answered.iter().map(|(n, _)| &n.id).collect();
            let again: Vec<Option<Sample>> = again.into_iter().map(Result::ok).collect();
            plan::still_unpromoted(&ids, &again).map_err(Stop::Check)?;
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
    switch(m, old, &new, timeline, rec);
    rec.step(
        "fence",
        Some(&old.id),
        true,
        "fenced in the topology; made read-only if it comes back as a primary",
    );
    drop(hold);
    repoint_all(m, &new, &answered, rec).await;
    note_stragglers(m, topology, &new, rec);
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
        return Err(stop);
    }
    // Sent: even if it reports a failure, the promotion may complete, so no unfencing now.
    let timeline = pg::promote(&mut target_conn, cfg.promote_timeout)
        .await
        .map_err(step_failed("promote", &node))?;
    rec.step(
        "promote",
        Some(&node.id),
        true,
        format!("primary on timeline {timeline}"),
    );
    rec.promoted(node.id.clone(), timeline);
    switch(m, old, &node, timeline, rec);
    drop(hold);
    repoint_all(m, &node, &answered, rec).await;
    note_stragglers(m, topology, &node, rec);
    Ok(())
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
    let cfg = &m.cluster.config.failover;
    let mut conn = connect(node, m.cluster.config.health.timeout)
        .await
        .map_err(step_failed("promote", node))?;
    pg::unfence(&mut conn).await.map_err(step_failed("promote", node))?;
    let timeline = pg::promote(&mut conn, cfg.promote_timeout)
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

/// The new topology: `new` is the primary (a node with a primary's pool), `old` is fenced.
fn switch(m: &Control, old: &Arc<Node>, new: &Arc<Node>, timeline: u32, rec: &mut Recorder) {
    let primary = new_node(
        &new.config,
        Role::Primary,
        NodeState::Healthy,
        m.cluster.config.health.timeout,
    );
    primary.observe_lsn(new.replay_lsn());
    old.set_state(NodeState::Fenced);
    m.cluster.topology.rcu(|t| {
        let mut replicas: Vec<_> = t.replicas.iter().filter(|r| !Arc::ptr_eq(r, new)).cloned().collect();
        if !replicas.iter().any(|r| Arc::ptr_eq(r, old)) {
            replicas.push(Arc::clone(old));
        }
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
    rec.step(
        "switch",
        Some(&new.id),
        true,
        format!("writes go to {} now; {} fenced", new.id, old.id),
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
    let results = futures::future::join_all(others.iter().map(|standby| async {
        let mut primary = connect(new, timeout).await?;
        let mut conn = connect(standby, timeout).await?;
        let address = (new.config.host.as_str(), new.config.port);
        pg::repoint(&mut conn, &mut primary, address, timeline, cfg.repoint_timeout).await
    }))
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

/// A replica answered as a writable primary on a newer timeline than the configured primary's
/// (or the configured primary is gone, a standby, or fenced): another process or an operator
/// promoted it. Follow: it becomes the primary, the old one is fenced.
async fn adopt(m: &Control, node: &Arc<Node>, timeline: u32) {
    let Ok(_running) = m.failover.running.try_lock() else {
        return;
    };
    let topology = m.cluster.topology.load_full();
    if !topology.replicas.iter().any(|r| Arc::ptr_eq(r, node)) {
        return;
    }
    let old = &topology.primary;
    let mut rec = Recorder::new(FailoverKind::Adopt, old.id.clone());
    rec.step(
        "adopt",
        Some(&node.id),
        true,
        format!("answers as a primary on timeline {timeline}; {} does not", old.id),
    );
    rec.promoted(node.id.clone(), timeline);
    switch(m, old, node, timeline, &mut rec);
    m.failover.audit.record(rec.finish(Outcome::Completed, None)).await;
}

/// Remembers the standbys a failover did not repoint, to repoint them once they answer.
fn note_stragglers(m: &Control, topology: &Topology, new: &Node, rec: &Recorder) {
    let now = Instant::now();
    let missed = standbys(topology)
        .into_iter()
        .filter(|n| n.id != new.id && !rec.repointed_ids().contains(&n.id))
        .map(|n| Straggler {
            id: n.id.clone(),
            next_try: now,
            backoff: m.cluster.config.health.interval,
        });
    let mut stragglers = lock(&m.failover.stragglers);
    stragglers.clear();
    stragglers.extend(missed);
}

/// Tries to repoint each straggler that is due; backs off (up to a minute) on failure.
async fn repoint_stragglers(m: &Control) {
    let due: Vec<NodeId> = {
        let now = Instant::now();
        let stragglers = lock(&m.failover.stragglers);
        stragglers
            .iter()
            .filter(|s| s.next_try <= now)
            .map(|s| s.id.clone())
            .collect()
    };
    if due.is_empty() {
        return;
    }
    let Ok(_running) = m.failover.running.try_lock() else {
        return;
    };
    let topology = m.cluster.topology.load_full();
    let primary = &topology.primary;
    let timeout = m.cluster.config.health.timeout;
    let (_, timeline) = m.cluster.identity.get();
    for id in due {
        let Some(node) = topology.replicas.iter().find(|n| n.id == id) else {
            lock(&m.failover.stragglers).retain(|s| s.id != id);
            continue;
        };
        let result = async {
            let mut conn = connect(node, timeout).await?;
            let mut primary_conn = connect(primary, timeout).await?;
            let address = (primary.config.host.as_str(), primary.config.port);
            pg::repoint(&mut conn, &mut primary_conn, address, timeline, timeout * 2).await
        }
        .await;
        match result {
            Ok(()) => {
                lock(&m.failover.stragglers).retain(|s| s.id != id);
                let mut rec = Recorder::new(FailoverKind::Repoint, primary.id.clone());
                rec.step("repoint", Some(&id), true, format!("streaming from {}", primary.id));
                rec.repointed(id);
                rec.promoted(primary.id.clone(), m.cluster.identity.get().1);
                m.failover.audit.record(rec.finish(Outcome::Completed, None)).await;
            }
            Err(e) => {
                tracing::debug!(target: "covet::failover", node = %id, error = %e, "standby not repointed yet");
                if let Some(s) = lock(&m.failover.stragglers).iter_mut().find(|s| s.id == id) {
                    s.next_try = Instant::now() + s.backoff;
                    s.backoff = (s.backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
    }
}

/// A fenced node answered a health check. As a primary it is fenced again (if it takes
/// writes); as a standby of this cluster it becomes a replica again: a new node with a
/// replica's pool (the old one was closed), down until its checks succeed.
async fn fenced_node_answered(m: &Control, node: &Arc<Node>, in_recovery: bool, read_only: bool, system_id: u64) {
    if in_recovery {
        let (cluster, _) = m.cluster.identity.get();
        // Only once it streams from the current primary: a former primary restarted as a
        // standby without being rebuilt cannot follow the new timeline and may still hold
        // commits the cluster does not have.
        let primary = m.cluster.primary();
        let follows = system_id == cluster
            && survey(node, m.cluster.config.health.timeout)
                .await
                .is_ok_and(|s| s.streams_from(&primary.config.host, primary.config.port));
        if follows {
            let replica = new_node(
                &node.config,
                Role::Replica,
                NodeState::Down,
                m.cluster.config.health.timeout,
            );
            m.cluster.topology.rcu(|t| {
                let mut t = Topology::clone(t);
                for r in &mut t.replicas {
                    if Arc::ptr_eq(r, node) {
                        *r = Arc::clone(&replica);
                    }
                }
                t
            });
            tracing::info!(target: "covet::failover", node = %node.id, "fenced node is a standby again: readmitted as a replica");
        }
        return;
    }
    if read_only || !m.cluster.config.failover.fence {
        return;
    }
    let mut rec = Recorder::new(FailoverKind::Fence, node.id.clone());
    let result = async {
        let mut conn = connect(node, m.cluster.config.health.timeout).await?;
        let sample = pg::check(&mut conn).await.map_err(|source| PgError::Query {
            what: "read_only",
            source,
        })?;
        if sample.read_only {
            return Ok(None);
        }
        pg::fence(&mut conn).await.map(|ended| Some(ended.len()))
    }
    .await;
    match result {
        Ok(None) => return,
        Ok(Some(ended)) => rec.step(
            "fence",
            Some(&node.id),
            true,
            format!("came back as a primary: read-only now, {ended} client sessions ended"),
        ),
        Err(e) => rec.step("fence", Some(&node.id), false, e.to_string()),
    }
    let failed = rec.any_failed();
    m.failover
        .audit
        .record(rec.finish(
            if failed { Outcome::Failed } else { Outcome::Completed },
            failed.then(|| "could not fence a former primary that accepts writes".to_owned()),
        ))
        .await;
}
