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
mod follow;
mod plan;
mod run;

pub use event::{FailoverEvent, FailoverKind, Outcome, Step};

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use event::AuditLog;
use follow::{Straggler, adopt, fenced_node_answered, repoint_stragglers};
use run::run;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Control;
use super::health::Round;
use crate::cluster::{Node, NodeState, Verdict};
use crate::core::lock;
use crate::error::Error;
#[cfg(doc)]
use crate::error::FailoverError;

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
        let primary = &control.cluster.topology.load().primary;
        let writable = Arc::ptr_eq(primary, &round.topology.primary)
            && round.samples[0].as_ref().is_ok_and(|s| !s.in_recovery && !s.read_only);
        control.cluster.verdicts.send_replace(Verdict {
            round: round.id,
            primary_writable: writable,
        });
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
        adopt(m, &node, timeline, OldPrimary::of(&round.samples[0], &node)).await;
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

/// What the configured primary was when another node was found primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldPrimary {
    /// Still writable, on this (lower) timeline: two writable nodes.
    Writable(u32),
    /// A standby streaming from the new primary (demoted by whoever manages the cluster).
    Follows,
    /// Unreachable, fenced, or a standby of something else.
    Other,
}

impl OldPrimary {
    fn of(sample: &Result<crate::pg::Sample, super::health::ProbeError>, new: &Node) -> Self {
        match sample {
            Ok(s) if !s.in_recovery && !s.read_only => OldPrimary::Writable(s.timeline.unwrap_or(0)),
            Ok(s) if s.in_recovery && s.streams_from(&new.config.host, new.config.port) => OldPrimary::Follows,
            _ => OldPrimary::Other,
        }
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
