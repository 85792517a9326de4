//! The health loop: one round trip per node per interval (and at once when the data plane
//! reports a failed node), driving node states and lag. Each round's findings go out on a
//! channel; the failover task acts on them, so a long failover never stops the probing.

mod decide;

use decide::lagging;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::cluster::{Node, NodeId, NodeState, Role, Topology};
use crate::core::lock;
use crate::pg::Sample;
use decide::{Counters, Observed, decide, give_up_in_flight, role_ok};

/// `tokio::time::interval` panics on zero; configs are validated, this guards the rest.
pub(crate) fn safe_interval(d: Duration) -> Duration {
    d.max(Duration::from_millis(10))
}

/// Why a node's check failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Unsupported(#[from] crate::error::Error),
}

/// What one round found: every node of `topology`, primary first, with its check.
#[derive(Debug)]
pub(crate) struct Round {
    /// Its number in `Cluster::rounds`.
    pub id: u64,
    /// What Patroni said, when it manages the cluster.
    pub patroni: Option<Result<crate::ha::patroni::ClusterView, crate::error::HaError>>,
    pub topology: Arc<Topology>,
    pub samples: Vec<Result<Sample, ProbeError>>,
}

/// The health loop's own state: per node, its check connection (so checks never wait behind
/// the pool) and its consecutive outcomes.
#[derive(Debug)]
pub(crate) struct Health {
    probes: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Probe>>>>,
    rounds: watch::Sender<Option<Arc<Round>>>,
}

#[derive(Debug)]
struct Probe {
    /// The node object it belongs to: a node replaced by a new one (a failover's new primary,
    /// a readmitted replica) starts afresh.
    node: Weak<Node>,
    conn: Option<PgConnection>,
    counters: Counters,
    /// When the last failure that counted happened.
    counted_failure: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            probes: Mutex::default(),
            rounds: watch::Sender::new(None),
        }
    }
}

impl Health {
    /// Each round, as it ends.
    pub fn rounds(&self) -> watch::Receiver<Option<Arc<Round>>> {
        self.rounds.subscribe()
    }

    fn probe_of(&self, node: &Arc<Node>) -> Arc<tokio::sync::Mutex<Probe>> {
        let mut probes = lock(&self.probes);
        let fresh = || {
            Arc::new(tokio::sync::Mutex::new(Probe {
                node: Arc::downgrade(node),
                conn: None,
                counters: Counters::default(),
                counted_failure: None,
            }))
        };
        let entry = probes.entry(node.id.clone()).or_insert_with(fresh);
        let same = entry
            .try_lock()
            .map_or(true, |p| std::ptr::eq(p.node.as_ptr(), Arc::as_ptr(node)));
        if !same {
            *entry = fresh();
        }
        Arc::clone(entry)
    }

    /// Drops the state of nodes no longer in `topology`.
    fn retain(&self, topology: &Topology) {
        lock(&self.probes).retain(|id, _| topology.find(id.as_str()).is_some());
    }

    /// Closes the check connection of the node `id` (it is being removed).
    pub async fn forget(&self, id: &NodeId) {
        let probe = lock(&self.probes).remove(id);
        if let Some(probe) = probe
            && let Some(conn) = probe.lock().await.conn.take()
        {
            let _ = conn.close().await;
        }
    }

    /// Closes every check connection.
    pub async fn close(&self) {
        let probes: Vec<_> = lock(&self.probes).drain().map(|(_, p)| p).collect();
        for probe in probes {
            if let Some(conn) = probe.lock().await.conn.take() {
                let _ = conn.close().await;
            }
        }
    }
}

/// The loop. It holds the control plane weakly, and stops with `token`.
pub(crate) async fn task(control: Weak<Control>, token: CancellationToken) {
    let Some((interval, cluster)) = control
        .upgrade()
        .map(|c| (c.cluster.config.health.interval, Arc::clone(&c.cluster)))
    else {
        return;
    };
    let mut tick = tokio::time::interval(safe_interval(interval));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tick.tick() => {}
            // A failure the data plane reported: judge the node now, not at the next tick.
            _ = cluster.wake.notified() => {}
        }
        let Some(control) = control.upgrade() else { break };
        round(&control).await;
    }
    tracing::debug!(target: "covet::health", "health loop stopped");
}

/// Checks every node once, concurrently, applies the results and publishes them.
pub(crate) async fn round(manager: &Control) -> Arc<Round> {
    let id = manager.cluster.rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    // What the round measures is at most this old: ages count from here.
    let began = Instant::now();
    let topology = manager.cluster.topology.load_full();
    let cfg = &manager.cluster.config.health;
    // Failures the data plane reported: those nodes are unhealthy from now (probed on a new
    // connection) until a check says otherwise.
    for node in topology.nodes() {
        let state = node.state();
        if node.take_suspect() && state.serves_reads() {
            node.transition(state, NodeState::Unhealthy);
        }
    }
    let health = &manager.health;
    let probes: Vec<_> = topology.nodes().map(|n| health.probe_of(n)).collect();
    // The primary first: a replica sampled after it has had the time to replay what the
    // primary reported, so an idle cluster reads as zero lag rather than as a race.
    let probing = async {
        let primary = probe(&topology.primary, &probes[0], cfg.timeout).await;
        let replicas = futures::future::join_all(
            topology
                .replicas
                .iter()
                .zip(&probes[1..])
                .map(|(node, p)| probe(node, p, cfg.timeout)),
        )
        .await;
        std::iter::once(primary).chain(replicas).collect::<Vec<_>>()
    };
    let (samples, patroni) = with_patroni(manager.patroni.as_ref(), probing).await;
    let now = Instant::now();
    // The primary first: its position is what replica lag is measured against.
    if let (Ok(s), primary) = (&samples[0], &topology.primary)
        && !s.in_recovery
        && !s.read_only
    {
        // As of the round's start, when the primary was asked first: never later than it was.
        lock_history(manager).record(began, s.lsn);
        primary.observe_lsn(s.lsn);
        primary.mark_measured(began, Duration::ZERO);
        manager.cluster.identity.observe(s.system_id, s.timeline);
        manager.cluster.identity.observe_synchronous(&s.synchronous);
    }
    let (cluster_id, _) = manager.cluster.identity.get();
    let mut writable = 0_u32;
    for ((node, sample), probe) in topology.nodes().zip(&samples).zip(&probes) {
        let answers_writable = sample
            .as_ref()
            .is_ok_and(|s| !s.in_recovery && !s.read_only && (cluster_id == 0 || s.system_id == cluster_id));
        node.writable
            .store(answers_writable, std::sync::atomic::Ordering::Relaxed);
        writable += u32::from(answers_writable);
        // A fenced node is the failover's to judge.
        if node.state() == NodeState::Fenced {
            continue;
        }
        let mut guard = probe.lock().await;
        let probe = &mut *guard;
        let counters = &mut probe.counters;
        let observed = match sample {
            Err(_)
                if probe
                    .counted_failure
                    .is_some_and(|t| now.duration_since(t) < cfg.interval) =>
            {
                Observed::FailedAgain
            }
            Err(_) => {
                probe.counted_failure = Some(now);
                Observed::Failed
            }
            Ok(s) => {
                probe.counted_failure = None;
                node.record_rtt(s.rtt);
                let over =
                    node.role() == Role::Replica && apply_lag(manager, node, s, &lock_history(manager), (began, now));
                let readmit_after = manager.cluster.config.lag.readmit_after;
                let lagging = lagging(node.state(), over, &mut counters.below_since, now, readmit_after);
                Observed::Answered {
                    role_ok: role_ok(node.role(), s.in_recovery),
                    rtt: s.rtt,
                    lagging,
                }
            }
        };
        let prev = node.state();
        let next = decide(prev, counters, observed, cfg);
        let id = node.id.to_string();
        metrics::gauge!("covet_node_up", "node" => id.clone()).set(f64::from(u8::from(sample.is_ok())));
        if let Ok(s) = sample {
            metrics::gauge!("covet_node_rtt_seconds", "node" => id).set(s.rtt.as_secs_f64());
        }
        // A failover or a removal may have changed the state meanwhile: keep theirs.
        if next != prev && node.transition(prev, next) {
            report_change(node, prev, next, sample);
            // A replica that stopped answering checks holds its reads too (a hung server keeps
            // its connections open): they go elsewhere now rather than when it wakes.
            if node.role() == Role::Replica && matches!(next, NodeState::Unhealthy | NodeState::Down) {
                node.lost();
            }
        }
        if node.role() == Role::Primary
            && give_up_in_flight(node.state(), counters, now, manager.cluster.config.failover.hold_writes)
        {
            tracing::warn!(target: "covet::health", node = %node.id, "primary unreachable for failover.hold_writes: its statements in flight are abandoned (outcome unknown)");
            node.abandon_in_flight();
        }
    }
    // More than one: someone promoted a standby while the old primary still takes writes.
    metrics::gauge!("covet_writable_nodes").set(f64::from(writable));
    health.retain(&manager.cluster.topology.load());
    let round = Arc::new(Round {
        id,
        patroni,
        topology,
        samples,
    });
    health.rounds.send_replace(Some(Arc::clone(&round)));
    round
}

/// How much longer than the probes a round waits for Patroni's `GET /cluster`: a slow or
/// unreachable REST API must not slow the checks of the servers themselves.
const PATRONI_GRACE: Duration = Duration::from_millis(100);

/// Runs `probing` and, beside it, asks Patroni (when configured) for its view, which counts only
/// if it arrives by [`PATRONI_GRACE`] after the probes end.
async fn with_patroni<T>(
    patroni: Option<&crate::ha::patroni::Patroni>,
    probing: impl Future<Output = T>,
) -> (
    T,
    Option<Result<crate::ha::patroni::ClusterView, crate::error::HaError>>,
) {
    let Some(patroni) = patroni else {
        return (probing.await, None);
    };
    let ask = patroni.cluster();
    tokio::pin!(ask, probing);
    let mut view = None;
    let samples = loop {
        tokio::select! {
            answer = &mut ask, if view.is_none() => view = Some(answer),
            samples = &mut probing => break samples,
        }
    };
    let view = match view {
        Some(view) => view,
        None => tokio::time::timeout(PATRONI_GRACE, ask)
            .await
            .unwrap_or(Err(crate::error::HaError::Late { after: PATRONI_GRACE })),
    };
    (samples, Some(view))
}

fn lock_history(manager: &Control) -> std::sync::MutexGuard<'_, crate::control::lag::WalHistory> {
    lock(&manager.wal_history)
}

/// Stores the replica's position and lag; returns whether it is above its limit.
fn apply_lag(
    manager: &Control,
    node: &Node,
    s: &Sample,
    history: &crate::control::lag::WalHistory,
    (began, now): (Instant, Instant),
) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    node.observe_replay(s.incarnation, s.lsn);
    node.retrieve_retry_ms.store(s.retrieve_retry_ms, Relaxed);
    let (bytes, time) = history.lag(s.lsn, now);
    node.lag_bytes.store(bytes, Relaxed);
    node.lag_us
        .store(time.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    node.mark_measured(began, history.staleness(s.lsn, began));
    manager.lag_monitor.observe(&node.id, time, bytes, now);
    let id = node.id.to_string();
    metrics::gauge!("covet_replica_lag_seconds", "node" => id.clone()).set(time.as_secs_f64());
    metrics::gauge!("covet_replica_lag_bytes", "node" => id).set(bytes as f64);
    let routing = &manager.cluster.config.routing;
    let max_lag = node.config.max_lag.unwrap_or(routing.max_lag);
    time > max_lag || routing.max_lag_bytes.is_some_and(|max| bytes > max)
}

fn report_change(node: &Node, prev: NodeState, next: NodeState, sample: &Result<Sample, ProbeError>) {
    let error = sample.as_ref().err().map(ToString::to_string).unwrap_or_default();
    if matches!(next, NodeState::Healthy | NodeState::Degraded) {
        tracing::info!(target: "covet::health", node = %node.id, from = %prev, to = %next, "node state changed");
    } else {
        tracing::warn!(target: "covet::health", node = %node.id, from = %prev, to = %next, error, "node state changed");
    }
}

/// One check on the node's dedicated connection, reconnecting if needed, within `timeout`.
/// A node marked unhealthy is checked on a new connection: what failed there may be new
/// connections (a pg_hba reject, a dropped database), which an open one hides.
async fn probe(node: &Node, probe: &tokio::sync::Mutex<Probe>, timeout: Duration) -> Result<Sample, ProbeError> {
    let mut probe = probe.lock().await;
    let slot = &mut probe.conn;
    if node.state() == NodeState::Unhealthy {
        *slot = None;
    }
    let result = tokio::time::timeout(timeout, async {
        if slot.is_none() {
            let opts = node.pool.connect_options();
            let conn = PgConnection::connect_with(&opts).await?;
            crate::pg::version::check(&node.id, &conn)?;
            *slot = Some(conn);
        }
        match slot.as_mut() {
            Some(conn) => Ok(crate::pg::check(conn).await?),
            None => Err(ProbeError::Sql(sqlx::Error::PoolClosed)),
        }
    })
    .await;
    match result {
        Ok(Ok(sample)) => Ok(sample),
        Ok(Err(e)) => {
            *slot = None;
            Err(e)
        }
        Err(_) => {
            *slot = None;
            Err(ProbeError::Timeout(timeout))
        }
    }
}
