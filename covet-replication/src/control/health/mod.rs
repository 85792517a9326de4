//! The health loop: one round trip per node per interval, driving node states and lag.

mod check;
mod decide;

pub(crate) use decide::Counters;
use decide::lagging;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Node, NodeState, Role};
use crate::core::lock;
use crate::manager::ManagerInner;
use check::Sample;
use decide::{Observed, decide, role_ok};

/// `tokio::time::interval` panics on zero; configs are validated, this guards the rest.
pub(crate) fn safe_interval(d: Duration) -> Duration {
    d.max(Duration::from_millis(10))
}

/// Spawns the loop. It holds the manager weakly: dropping the last pool handle stops it.
pub(crate) fn spawn(
    manager: Weak<ManagerInner>,
    interval: Duration,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(safe_interval(interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {
                    let Some(manager) = manager.upgrade() else { break };
                    round(&manager).await;
                    crate::control::failover::after_health_round(&manager).await;
                }
            }
        }
        tracing::debug!(target: "covet::health", "health loop stopped");
    })
}

/// Checks every node once, concurrently, and applies the results.
pub(crate) async fn round(manager: &ManagerInner) {
    let topology = manager.topology.load_full();
    let cfg = &manager.config.health;
    // The primary first: a replica sampled after it has had the time to replay what the
    // primary reported, so an idle cluster reads as zero lag rather than as a race.
    let primary = probe(&topology.primary, cfg.timeout).await;
    let replicas = futures::future::join_all(topology.replicas.iter().map(|node| probe(node, cfg.timeout))).await;
    let samples: Vec<_> = std::iter::once(primary).chain(replicas).collect();
    let now = Instant::now();
    // The primary first: its position is what replica lag is measured against.
    if let (Ok(s), primary) = (&samples[0], &topology.primary)
        && !s.in_recovery
        && !s.read_only
    {
        lock_history(manager).record(now, s.lsn);
        primary.observe_lsn(s.lsn);
        manager.identity.observe(s.system_id, s.timeline);
        manager.identity.observe_synchronous(&s.synchronous);
    }
    let adopt = promoted_elsewhere(manager, &topology, &samples);
    for (node, sample) in topology.nodes().zip(samples) {
        if node.state() == NodeState::Fenced {
            if let Ok(s) = &sample {
                crate::control::failover::fenced_node_answered(manager, node, s.in_recovery, s.read_only, s.system_id)
                    .await;
            }
            continue;
        }
        let observed = match &sample {
            Err(_) => Observed::Failed,
            Ok(s) => {
                node.record_rtt(s.rtt);
                let over = node.role() == Role::Replica && apply_lag(manager, node, s, &lock_history(manager), now);
                let mut counters = lock(&node.counters);
                let readmit_after = manager.config.lag.readmit_after;
                let lagging = lagging(node.state(), over, &mut counters.below_since, now, readmit_after);
                Observed::Answered {
                    role_ok: role_ok(node.role(), s.in_recovery),
                    rtt: s.rtt,
                    lagging,
                }
            }
        };
        let prev = node.state();
        let next = {
            let mut counters = lock(&node.counters);
            decide(prev, &mut counters, observed, cfg)
        };
        let id = node.id.to_string();
        metrics::gauge!("covet_node_up", "node" => id.clone()).set(f64::from(u8::from(sample.is_ok())));
        if let Ok(s) = &sample {
            metrics::gauge!("covet_node_rtt_seconds", "node" => id).set(s.rtt.as_secs_f64());
        }
        // The router or a failover may have changed the state meanwhile: keep theirs.
        if next != prev && node.transition(prev, next) {
            report_change(node, prev, next, &sample);
            // A replica that stopped answering checks holds its reads too (a hung server keeps
            // its connections open): they go elsewhere now rather than when it wakes.
            if node.role() == Role::Replica && matches!(next, NodeState::Unhealthy | NodeState::Down) {
                node.lost();
            }
        }
    }
    if let Some((node, timeline)) = adopt {
        crate::control::failover::adopt(manager, &node, timeline).await;
    }
}

/// A replica that answers as a writable primary on a newer timeline than the configured
/// primary (or while that one is gone, a standby, or fenced): someone promoted it.
fn promoted_elsewhere(
    manager: &ManagerInner,
    topology: &crate::cluster::Topology,
    samples: &[Result<Sample, String>],
) -> Option<(Arc<Node>, u32)> {
    let primary = samples[0].as_ref().ok().filter(|s| !s.in_recovery && !s.read_only);
    let (cluster, _) = manager.identity.get();
    topology
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

fn lock_history(manager: &ManagerInner) -> std::sync::MutexGuard<'_, crate::control::lag::WalHistory> {
    lock(&manager.wal_history)
}

/// Stores the replica's position and lag; returns whether it is above its limit.
fn apply_lag(
    manager: &ManagerInner,
    node: &Node,
    s: &Sample,
    history: &crate::control::lag::WalHistory,
    now: Instant,
) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    node.observe_replay(s.incarnation, s.lsn);
    node.retrieve_retry_ms.store(s.retrieve_retry_ms, Relaxed);
    let (bytes, time) = history.lag(s.lsn, now);
    node.lag_bytes.store(bytes, Relaxed);
    node.lag_us
        .store(time.as_micros().min(u128::from(u64::MAX)) as u64, Relaxed);
    manager.lag_monitor.observe(&node.id, time, bytes, now);
    let id = node.id.to_string();
    metrics::gauge!("covet_replica_lag_seconds", "node" => id.clone()).set(time.as_secs_f64());
    metrics::gauge!("covet_replica_lag_bytes", "node" => id).set(bytes as f64);
    let routing = &manager.config.routing;
    let max_lag = node.config.max_lag.unwrap_or(routing.max_lag);
    time > max_lag || routing.max_lag_bytes.is_some_and(|max| bytes > max)
}

fn report_change(node: &Node, prev: NodeState, next: NodeState, sample: &Result<Sample, String>) {
    let error = sample.as_ref().err().map(String::as_str).unwrap_or("");
    if matches!(next, NodeState::Healthy | NodeState::Degraded) {
        tracing::info!(target: "covet::health", node = %node.id, from = %prev, to = %next, "node state changed");
    } else {
        tracing::warn!(target: "covet::health", node = %node.id, from = %prev, to = %next, error, "node state changed");
    }
}

/// One check on the node's dedicated connection, reconnecting if needed, within `timeout`.
/// A node the data path marked unhealthy is checked on a new connection: what failed there
/// may be new connections (a pg_hba reject, a dropped database), which an open one hides.
async fn probe(node: &Arc<Node>, timeout: Duration) -> Result<Sample, String> {
    let mut slot = node.check_conn.lock().await;
    if node.state() == NodeState::Unhealthy {
        *slot = None;
    }
    let result = tokio::time::timeout(timeout, async {
        if slot.is_none() {
            let opts = node.pool.connect_options();
            let conn = sqlx::PgConnection::connect_with(&opts).await?;
            crate::pg::version::check(&node.id, &conn).map_err(crate::Error::into_sqlx)?;
            *slot = Some(conn);
        }
        match slot.as_mut() {
            Some(conn) => check::check(conn).await,
            None => Err(sqlx::Error::PoolClosed),
        }
    })
    .await;
    match result {
        Ok(Ok(sample)) => Ok(sample),
        Ok(Err(e)) => {
            *slot = None;
            Err(e.to_string())
        }
        Err(_) => {
            *slot = None;
            Err(format!("health check timed out after {timeout:?}"))
        }
    }
}
