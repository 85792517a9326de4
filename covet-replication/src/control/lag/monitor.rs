//! [`LagMonitor`]: alerts by severity with hysteresis, callbacks, and per-replica history.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::stats::{LagSample, LagStats};
use crate::cluster::NodeId;
use crate::config::LagConfig;
use crate::control::callbacks::Callbacks;
use crate::core::lock;

/// How bad a replica's lag is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Severity {
    /// Past `lag.thresholds.info`.
    Info,
    /// Past `lag.thresholds.warning`.
    Warning,
    /// Past `lag.thresholds.error`.
    Error,
    /// Past `lag.thresholds.critical`.
    Critical,
}

const SEVERITIES: [Severity; 4] = [Severity::Info, Severity::Warning, Severity::Error, Severity::Critical];

/// What happened to a replica's alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// Lag crossed a threshold with no alert standing.
    Raised,
    /// Lag crossed a higher threshold.
    Escalated,
    /// Lag fell clearly below the standing alert's threshold, but not below all.
    Lowered,
    /// Lag fell clearly below every threshold.
    Cleared,
}

/// A lag alert event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// The replica.
    pub node: NodeId,
    /// What happened.
    pub kind: AlertKind,
    /// The severity now (`None` once cleared).
    pub severity: Option<Severity>,
    /// The severity before.
    pub previous: Option<Severity>,
    /// Lag in time when it happened, in seconds.
    pub lag_seconds: f64,
    /// Lag in bytes when it happened.
    pub lag_bytes: u64,
    /// When it happened.
    pub at: SystemTime,
}

/// The severity for a lag: the highest threshold it reaches, thresholds scaled by `scale`.
fn severity_at(cfg: &LagConfig, lag: Duration, bytes: u64, scale: f64) -> Option<Severity> {
    let t = &cfg.thresholds;
    let b = &cfg.byte_thresholds;
    let times = [t.info, t.warning, t.error, t.critical];
    let sizes = [b.info, b.warning, b.error, b.critical];
    (0..4)
        .rev()
        .find(|&i| lag >= times[i].mul_f64(scale) || sizes[i].is_some_and(|s| bytes as f64 >= s as f64 * scale))
        .map(|i| SEVERITIES[i])
}

/// The next severity: up as soon as a threshold is reached, down only once lag is
/// `hysteresis` below the standing one.
pub(crate) fn next_severity(cfg: &LagConfig, prev: Option<Severity>, lag: Duration, bytes: u64) -> Option<Severity> {
    let raised = severity_at(cfg, lag, bytes, 1.0);
    if raised > prev {
        return raised;
    }
    prev.min(severity_at(cfg, lag, bytes, 1.0 - cfg.hysteresis))
}

fn kind(prev: Option<Severity>, next: Option<Severity>) -> AlertKind {
    match (prev, next) {
        (None, _) => AlertKind::Raised,
        (_, None) => AlertKind::Cleared,
        (p, n) if n > p => AlertKind::Escalated,
        _ => AlertKind::Lowered,
    }
}

#[derive(Debug, Default)]
struct ReplicaLag {
    severity: Option<Severity>,
    history: VecDeque<LagSample>,
}

/// Watches replication lag: alerts, history and statistics per replica.
///
/// Fed by the health loop's measurements (one per replica per interval). Obtained from
/// [`ReplicatedPool::lag_monitor`](crate::ReplicatedPool::lag_monitor); cheap to clone.
#[derive(Clone)]
pub struct LagMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: LagConfig,
    replicas: Mutex<HashMap<NodeId, ReplicaLag>>,
    recent: Mutex<VecDeque<Alert>>,
    callbacks: Callbacks<Alert>,
}

/// Alerts kept for the status report.
const RECENT_ALERTS: usize = 100;

impl std::fmt::Debug for LagMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagMonitor")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl LagMonitor {
    pub(crate) fn new(cfg: LagConfig) -> Self {
        LagMonitor {
            inner: Arc::new(Inner {
                cfg,
                replicas: Mutex::default(),
                recent: Mutex::default(),
                callbacks: Callbacks::new("covet::lag"),
            }),
        }
    }

    /// Calls `callback` with every alert, in order. Each callback runs on its own task: a slow
    /// one delays only its own later alerts, a panicking one is logged and keeps receiving.
    ///
    /// ```no_run
    /// # fn demo(db: covet_replication::ReplicatedPool) {
    /// db.lag_monitor().register_alert_callback(|alert| async move {
    ///     eprintln!("{} lag {:?}: {:.1}s", alert.node, alert.kind, alert.lag_seconds);
    /// });
    /// # }
    /// ```
    pub fn register_alert_callback<F, Fut>(&self, callback: F)
    where
        F: Fn(Alert) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.inner.callbacks.register(callback);
    }

    /// The standing alert severity of a replica.
    pub fn severity(&self, node: &str) -> Option<Severity> {
        lock(&self.inner.replicas)
            .iter()
            .find(|(id, _)| id.as_str() == node)
            .and_then(|(_, r)| r.severity)
    }

    /// Statistics of a replica's lag over the configured window.
    pub fn stats(&self, node: &str) -> Option<LagStats> {
        let replicas = lock(&self.inner.replicas);
        let (_, r) = replicas.iter().find(|(id, _)| id.as_str() == node)?;
        LagStats::from_samples(r.history.iter().copied())
    }

    /// The most recent alerts, oldest first.
    pub fn recent_alerts(&self) -> Vec<Alert> {
        lock(&self.inner.recent).iter().cloned().collect()
    }

    /// Records a measurement; raises, escalates, lowers or clears the replica's alert.
    pub(crate) fn observe(&self, node: &NodeId, lag: Duration, bytes: u64, now: Instant) {
        let cfg = &self.inner.cfg;
        let alert = {
            let mut replicas = lock(&self.inner.replicas);
            let r = replicas.entry(node.clone()).or_default();
            r.history.push_back(LagSample { at: now, lag, bytes });
            while r.history.len() > cfg.max_samples
                || r.history
                    .front()
                    .is_some_and(|s| now.saturating_duration_since(s.at) > cfg.window)
            {
                r.history.pop_front();
            }
            let next = next_severity(cfg, r.severity, lag, bytes);
            if next == r.severity {
                return;
            }
            let prev = std::mem::replace(&mut r.severity, next);
            Alert {
                node: node.clone(),
                kind: kind(prev, next),
                severity: next,
                previous: prev,
                lag_seconds: lag.as_secs_f64(),
                lag_bytes: bytes,
                at: SystemTime::now(),
            }
        };
        self.emit(alert);
    }

    /// Forgets a replica that left the cluster.
    pub(crate) fn forget(&self, node: &str) {
        lock(&self.inner.replicas).retain(|id, _| id.as_str() != node);
    }

    fn emit(&self, alert: Alert) {
        let severity = alert.severity.or(alert.previous).map_or("none", severity_name);
        if matches!(alert.kind, AlertKind::Raised | AlertKind::Escalated) && alert.severity >= Some(Severity::Warning) {
            tracing::warn!(target: "covet::lag", node = %alert.node, kind = ?alert.kind, severity, lag_seconds = alert.lag_seconds, lag_bytes = alert.lag_bytes, "replication lag alert");
        } else {
            tracing::info!(target: "covet::lag", node = %alert.node, kind = ?alert.kind, severity, lag_seconds = alert.lag_seconds, lag_bytes = alert.lag_bytes, "replication lag alert");
        }
        metrics::counter!("covet_lag_alerts_total", "severity" => severity, "kind" => kind_name(alert.kind))
            .increment(1);
        {
            let mut recent = lock(&self.inner.recent);
            if recent.len() == RECENT_ALERTS {
                recent.pop_front();
            }
            recent.push_back(alert.clone());
        }
        self.inner.callbacks.emit(&alert);
    }
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
        Severity::Critical => "critical",
    }
}

fn kind_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::Raised => "raised",
        AlertKind::Escalated => "escalated",
        AlertKind::Lowered => "lowered",
        AlertKind::Cleared => "cleared",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LagConfig {
        LagConfig::default()
    }

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn severities_rise_at_thresholds_and_fall_with_hysteresis() {
        let c = cfg();
        let mut sev = None;
        let mut seen = Vec::new();
        // Rising through 1, 5, 10, 30 s, then hovering at 5 s, then falling.
        for lag in [
            0.5, 1.0, 4.9, 5.0, 5.1, 4.9, 5.0, 4.5, 4.1, 3.9, 10.0, 30.0, 25.0, 23.9, 0.9, 0.79,
        ] {
            let next = next_severity(&c, sev, s(lag), 0);
            if next != sev {
                seen.push((lag, kind(sev, next), next));
                sev = next;
            }
        }
        use AlertKind::*;
        use Severity::*;
        assert_eq!(
            seen,
            [
                (1.0, Raised, Some(Info)),
                (5.0, Escalated, Some(Warning)),
                // 4.9 and 4.5 and 4.1 hold the warning (clears below 4.0 s with 20% hysteresis).
                (3.9, Lowered, Some(Info)),
                (10.0, Escalated, Some(Error)),
                (30.0, Escalated, Some(Critical)),
                (23.9, Lowered, Some(Error)),
                (0.9, Lowered, Some(Info)),
                (0.79, Cleared, None),
            ]
        );
    }

    #[test]
    fn bytes_raise_alerts_too() {
        let c = cfg();
        assert_eq!(
            next_severity(&c, None, Duration::ZERO, 70 * 1024 * 1024),
            Some(Severity::Warning)
        );
        assert_eq!(next_severity(&c, None, Duration::ZERO, 1024), None);
    }
}
