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

mod coordinate;
mod elect;
mod event;
mod follow;
mod plan;
mod run;

pub use coordinate::FleetStatus;
pub(crate) use coordinate::status as fleet_status;
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
use crate::cluster::NodeId;
use crate::cluster::{Node, NodeState, Verdict};
use crate::config::{FailoverConfig, FailoverMode, NodeConfig, ReplicationConfig};
use crate::core::lock;
use crate::error::{Error, FailoverError};
use crate::ha::patroni::{ClusterView, Member};

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
    /// `own` mode saw a promotion it did not make: why it follows now.
    following: Mutex<Option<String>>,
    /// `supervised` mode: the failover waiting for approval.
    proposal: Mutex<Option<Proposal>>,
    approver: Mutex<Option<Approver>>,
}

/// A failover proposed in `supervised` mode.
#[derive(Debug, Clone)]
struct Proposal {
    node: NodeId,
    since: Instant,
}

/// Decides on a proposed failover (given its event); true approves.
#[derive(Clone)]
struct Approver(Arc<dyn Fn(FailoverEvent) -> futures::future::BoxFuture<'static, bool> + Send + Sync>);

impl std::fmt::Debug for Approver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Approver")
    }
}

impl FailoverState {
    pub fn new(config: &crate::config::FailoverConfig) -> Self {
        FailoverState {
            running: tokio::sync::Mutex::new(()),
            last_automatic: Mutex::new(None),
            last_abort: Mutex::new(None),
            stragglers: Mutex::default(),
            audit: AuditLog::new(config.audit_log.clone()),
            following: Mutex::new(None),
            proposal: Mutex::new(None),
            approver: Mutex::new(None),
        }
    }

    /// The mode in force: Patroni's endpoints make it `follow`, etcd's `coordinated` (for
    /// `own`), and `own` turns into `follow` once a promotion made elsewhere was seen.
    fn mode(&self, config: &ReplicationConfig) -> FailoverMode {
        match config.failover.mode {
            _ if !config.patroni.is_empty() => FailoverMode::Follow,
            FailoverMode::Own if config.etcd.is_enabled() => FailoverMode::Coordinated,
            FailoverMode::Own if lock(&self.following).is_some() => FailoverMode::Follow,
            mode => mode,
        }
    }
}

/// Refuses to act for a process that follows another manager, or a fleet's other lease holder.
fn may_act(m: &Control) -> Result<(), FailoverError> {
    let config = &m.cluster.config;
    match m.failover.mode(config) {
        FailoverMode::Follow => {
            let reason = if config.patroni.is_empty() {
                lock(&m.failover.following)
                    .clone()
                    .unwrap_or_else(|| "failover.mode = follow".to_owned())
            } else {
                "Patroni manages the cluster".to_owned()
            };
            Err(FailoverError::Following { reason })
        }
        _ => coordinate::refusal(m).map_or(Ok(()), Err),
    }
}

/// Whether this process promotes, fences and repoints: not when it follows, and in a fleet
/// only while it holds the lease.
fn acts(m: &Control) -> bool {
    match m.failover.mode(&m.cluster.config) {
        FailoverMode::Follow => false,
        FailoverMode::Coordinated => coordinate::leads(m),
        _ => true,
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
    /// or [`FailoverError::Step`] if promoting failed; [`FailoverError::Following`] in `follow`
    /// mode. In `supervised` mode this is an operator's failover: it needs no approval.
    pub async fn failover(&self, target: Option<&str>) -> Result<FailoverEvent, Error> {
        self.may_act()?;
        run(&self.control, FailoverKind::Manual, target).await
    }

    /// Approves the failover proposed in `supervised` mode: runs it now, to the standby it
    /// proposed (if that one is still the best choice the checks allow).
    ///
    /// # Errors
    /// [`FailoverError::NothingToApprove`] with no proposal standing; otherwise as
    /// [`failover`](Self::failover).
    pub async fn approve(&self) -> Result<FailoverEvent, Error> {
        let proposal = lock(&self.control.failover.proposal).take();
        let Some(proposal) = proposal else {
            return Err(FailoverError::NothingToApprove.into());
        };
        run(&self.control, FailoverKind::Approved, Some(proposal.node.as_str())).await
    }

    /// Asks `approver` about every failover proposed in `supervised` mode (with the event that
    /// proposes it): true runs it, false leaves it to an operator until `approval_timeout`.
    /// Replaces an earlier approver.
    pub fn set_approver<F, Fut>(&self, approver: F)
    where
        F: Fn(FailoverEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let approver = Approver(Arc::new(move |event| Box::pin(approver(event))));
        *lock(&self.control.failover.approver) = Some(approver);
    }

    /// The mode in force: `failover.mode`, except that `own` becomes `follow` once this process
    /// saw a promotion it did not make.
    pub fn mode(&self) -> FailoverMode {
        self.control.failover.mode(&self.control.cluster.config)
    }

    fn may_act(&self) -> Result<(), Error> {
        Ok(may_act(&self.control)?)
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
        self.may_act()?;
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
    let cfg = &m.cluster.config.failover;
    if acts(m) {
        coordinate::reconcile(m, &round.topology.primary, round.samples[0].as_ref().ok()).await;
        repoint_stragglers(m).await;
    }
    for (node, sample) in round.topology.nodes().zip(&round.samples) {
        if let (NodeState::Fenced, Ok(s)) = (node.state(), sample) {
            // Asked each time: a repoint above may have outlasted a fleet's lease.
            fenced_node_answered(m, node, s, cfg.fence && acts(m)).await;
        }
    }
    // A round taken before the topology changed says nothing about the new one.
    let topology = m.cluster.topology.load_full();
    if !Arc::ptr_eq(&topology, &round.topology) {
        return;
    }
    // Patroni decides who leads; PostgreSQL's word counts only while its API does not answer.
    if let Some(Ok(view)) = &round.patroni {
        follow_patroni(m, round, view).await;
        return;
    }
    if let Some((node, timeline)) = promoted_elsewhere(m, round) {
        let (_, known) = m.cluster.identity.get();
        let adopted = adopt(m, &node, timeline, OldPrimary::of(&round.samples[0], &node)).await;
        // A promotion past the timeline this process knew was made by someone else (at
        // startup the timeline is unknown: that is only the configuration being wrong).
        let own = m.failover.mode(&m.cluster.config) == FailoverMode::Own;
        if adopted && own && known != 0 && timeline > known {
            let reason = format!("{} was promoted elsewhere, to timeline {timeline}", node.id);
            tracing::warn!(target: "covet::failover", %reason, "failover.mode = own: following from now on");
            lock(&m.failover.following).get_or_insert(reason);
        }
        return;
    }
    if topology.primary.state() != NodeState::Down {
        // The primary is back: a proposal for the outage that ended stands no more.
        lock(&m.failover.proposal).take();
    }
    if !cfg.automatic || topology.primary.state() != NodeState::Down || topology.replicas.is_empty() {
        return;
    }
    if lock(&m.failover.last_automatic).is_some_and(|t| t.elapsed() < cfg.cooldown) {
        return;
    }
    match m.failover.mode(&m.cluster.config) {
        FailoverMode::Follow => {}
        FailoverMode::Supervised => supervise(m, cfg).await,
        // Only the lease holder: the others follow what it does.
        FailoverMode::Coordinated if !acts(m) => {}
        FailoverMode::Own | FailoverMode::Coordinated => {
            if run(m, FailoverKind::Automatic, None).await.is_ok() {
                *lock(&m.failover.last_automatic) = Some(Instant::now());
            }
        }
    }
}

/// `supervised`: proposes the failover (an aborted event naming the standby, given to the
/// approver), and withdraws a proposal nobody approved in time (then waits out the cooldown).
async fn supervise(m: &Arc<Control>, cfg: &FailoverConfig) {
    let standing = lock(&m.failover.proposal).clone();
    if let Some(p) = standing {
        if p.since.elapsed() >= cfg.approval_timeout {
            lock(&m.failover.proposal).take();
            // The next proposal (after the cooldown) is recorded and asked about again.
            lock(&m.failover.last_abort).take();
            *lock(&m.failover.last_automatic) = Some(Instant::now());
            tracing::warn!(target: "covet::failover", node = %p.node, "proposed failover not approved in time");
        }
        return;
    }
    let proposed = match run(m, FailoverKind::Automatic, None).await {
        Err(Error::Failover(FailoverError::AwaitingApproval { node, .. })) => node,
        // Completed (an adoption), or aborted by a check: nothing to approve.
        _ => return,
    };
    *lock(&m.failover.proposal) = Some(Proposal {
        node: proposed.clone(),
        since: Instant::now(),
    });
    let approver = lock(&m.failover.approver).clone();
    let event = m
        .failover
        .audit
        .history()
        .into_iter()
        .rev()
        .find(|e| e.kind == FailoverKind::Automatic && e.outcome == Outcome::Aborted);
    if let (Some(Approver(approver)), Some(event)) = (approver, event) {
        let control = Arc::downgrade(m);
        tokio::spawn(async move {
            if approver(event).await
                && let Some(control) = control.upgrade()
            {
                let approved = FailoverManager { control }.approve().await;
                tracing::info!(target: "covet::failover", node = %proposed, ok = approved.is_ok(), "approver approved the proposed failover");
            }
        });
    }
}

/// Follows Patroni: its leader becomes the primary once it answers as a writable primary
/// (Patroni takes the leader lock before promoting), members that appear are added as replicas
/// and ones that disappear are drained.
async fn follow_patroni(m: &Arc<Control>, round: &Round, view: &ClusterView) {
    let topology = &round.topology;
    let at = |node: &Node, member: &Member| {
        member.port == Some(node.config.port)
            && member
                .host
                .as_deref()
                .is_some_and(|h| NodeConfig::host_key(&node.config.host) == NodeConfig::host_key(h))
    };
    let primary_writable = round.samples[0].as_ref().is_ok_and(|s| !s.in_recovery && !s.read_only);
    let leader = view.leader().filter(|l| !at(&topology.primary, l));
    let found = leader.and_then(|l| {
        topology
            .replicas
            .iter()
            .zip(&round.samples[1..])
            .find(|(node, _)| at(node, l))
    });
    match found {
        Some((node, Ok(s))) if !s.in_recovery && !s.read_only => {
            let node = Arc::clone(node);
            adopt(
                m,
                &node,
                s.timeline.unwrap_or(0),
                OldPrimary::of(&round.samples[0], &node),
            )
            .await;
            return;
        }
        // The leader is promoting: the next round.
        Some(_) => return,
        // No new leader, or one this process cannot place (a member not added yet, an address
        // written another way): PostgreSQL's word decides. A member answers `/cluster` from
        // its own copy of the DCS, so it may still name the old primary for a moment.
        None => {
            if !primary_writable && let Some((node, timeline)) = promoted_elsewhere(m, round) {
                adopt(m, &node, timeline, OldPrimary::of(&round.samples[0], &node)).await;
                return;
            }
        }
    }
    // Membership only while a leader stands: a cluster between leaders lists what it lists.
    if view.leader().is_none() {
        return;
    }
    for member in &view.members {
        let (Some(host), Some(port)) = (&member.host, member.port) else {
            continue;
        };
        if topology.nodes().any(|n| at(n, member)) {
            continue;
        }
        let mut config = topology.primary.config.clone().with_id(member.name.clone());
        config.host = host.clone();
        config.port = port;
        match m.add_replica(config) {
            Ok(()) => {
                tracing::info!(target: "covet::topology", node = %member.name, "Patroni member added as a replica")
            }
            Err(error) => {
                tracing::warn!(target: "covet::topology", node = %member.name, %error, "Patroni member not added")
            }
        }
    }
    let gone: Vec<NodeId> = topology
        .replicas
        .iter()
        .filter(|n| n.state() != NodeState::Draining && !view.members.iter().any(|member| at(n, member)))
        .map(|n| n.id.clone())
        .collect();
    for id in gone {
        tracing::info!(target: "covet::topology", node = %id, "no longer a Patroni member: draining");
        // A drain waits for the reads in flight there: not on this task, which the next
        // round's leader change must not wait behind.
        let control = Arc::downgrade(m);
        m.tasks.spawn(async move {
            let Some(control) = control.upgrade() else { return };
            if let Err(error) = control
                .remove_replica(id.as_str(), control.cluster.config.health.timeout)
                .await
            {
                tracing::warn!(target: "covet::topology", node = %id, %error, "not removed");
            }
        });
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
