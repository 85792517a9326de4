//! [`ClusterStatus`]: a serializable snapshot of nodes, lag, pools and routing, without secrets;
//! [`NodeReport`], one node as `status()` and [`ReplicaManager`](crate::ReplicaManager) show it;
//! and the counters both carry.

use std::fmt;

use serde::Serialize;

use std::time::Duration;

use crate::cluster::Role;
use crate::control::failover::FailoverEvent;
use crate::control::lag::Alert;
use crate::core::NodeState;
use crate::pool::ReplicatedPool;

pub use crate::control::failover::FleetStatus;
pub use crate::data::routing::{ClassCounters, RouterCounters};
pub use crate::data::session::ConsistencyCounters;
pub use crate::manager::NodeReport;

/// Failover events a status report carries.
const RECENT_FAILOVERS: usize = 10;

/// The state of the cluster as this process sees it.
///
/// Serializes to JSON for dashboards; `Display` prints a table like `patronictl list`. Holds
/// host names and ports, never credentials.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ClusterStatus {
    /// `pg_control_system().system_identifier`, 0 until the first check.
    pub system_id: u64,
    /// The primary's timeline, 0 until the first check.
    pub timeline: u32,
    /// Every node, primary first.
    pub nodes: Vec<NodeReport>,
    /// Routing decisions by target and reason.
    pub router: RouterCounters,
    /// Share of routed statements that replicas served.
    pub replica_hit_rate: f64,
    /// What sessions' promises cost.
    pub consistency: ConsistencyCounters,
    /// Statements the parser could not read (sent to the primary).
    pub parse_failures: u64,
    /// The latest lag alerts, oldest first.
    pub recent_alerts: Vec<Alert>,
    /// Whether a failover or switchover is running now.
    pub failover_in_progress: bool,
    /// The failover mode in force ([`FailoverManager::mode`](crate::failover::FailoverManager::mode)).
    pub failover_mode: crate::config::FailoverMode,
    /// In `coordinated` mode, where this process stands in the fleet.
    pub fleet: Option<FleetStatus>,
    /// Settings of the servers that work against what this handle is configured to do, one
    /// sentence each (e.g. a standby whose `wal_retrieve_retry_interval` would slow an
    /// automatic failover). `covet check` prints them.
    pub warnings: Vec<String>,
    /// The latest failover events (failovers, switchovers, fencing, repointing), oldest first.
    pub recent_failovers: Vec<FailoverEvent>,
}

/// What a fenced node is and what to do about it: one warning each.
fn fenced(nodes: &[NodeReport], timeline: u32) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Fenced)
        .map(|n| {
            format!(
                "{} is fenced: a former primary cut off by a failover, diverged from the cluster \
                 (timeline {timeline}); it takes no queries. Rebuild it as a standby of the new \
                 primary (pg_rewind, or a new base backup) and it rejoins by itself, or remove it \
                 from the configuration",
                n.id
            )
        })
        .collect()
}

/// Above this, a standby's `wal_retrieve_retry_interval` can hold up a promotion: a standby
/// whose primary died sleeps that long between attempts, and `pg_promote` waits the sleep out
/// (PostgreSQL's default, 5 s, made one failover in five take 5.5 s instead of 0.45 s).
const SLOW_RETRIEVE_RETRY: Duration = Duration::from_secs(1);

impl ReplicatedPool {
    /// A snapshot of the cluster, this pool's routing and consistency counters, and recent
    /// alerts.
    pub fn status(&self) -> ClusterStatus {
        let (data, control) = (&self.data.plane, &self.control);
        let topology = data.cluster.topology.load();
        let nodes: Vec<NodeReport> = topology.nodes().map(|n| NodeReport::of(n, control)).collect();
        let router = data.stats.snapshot();
        let routed = router.to_primary + router.to_replica;
        let (system_id, timeline) = data.cluster.identity.get();
        let mut warnings = slow_retries(&nodes);
        warnings.extend(fenced(&nodes, timeline));
        let writable: Vec<&str> = topology
            .nodes()
            .filter(|n| n.writable.load(std::sync::atomic::Ordering::Relaxed))
            .map(|n| n.id.as_str())
            .collect();
        if writable.len() > 1 {
            warnings.push(format!(
                "{} nodes answer as writable primaries ({}): writes go to {} only, the one on the \
                 highest timeline; the others must be stopped or rebuilt as standbys",
                writable.len(),
                writable.join(", "),
                topology.primary.id
            ));
        }
        ClusterStatus {
            system_id,
            timeline,
            nodes,
            router,
            replica_hit_rate: if routed == 0 {
                0.0
            } else {
                router.to_replica as f64 / routed as f64
            },
            consistency: data.consistency.snapshot(),
            parse_failures: data.classifier.parse_failures(),
            recent_alerts: control.lag_monitor.recent_alerts(),
            failover_in_progress: self.failover().in_progress(),
            failover_mode: self.failover().mode(),
            fleet: crate::control::failover::fleet_status(control),
            warnings,
            recent_failovers: {
                let mut events = self.failover().history();
                events.drain(..events.len().saturating_sub(RECENT_FAILOVERS));
                events
            },
        }
    }
}

/// Standbys whose `wal_retrieve_retry_interval` can hold up an automatic failover. The library
/// does not change it itself: the servers' settings belong to their operator (or HA manager).
fn slow_retries(nodes: &[NodeReport]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| {
            let interval = n.wal_retrieve_retry_interval.filter(|i| *i > SLOW_RETRIEVE_RETRY)?;
            Some(format!(
                "{}: wal_retrieve_retry_interval is {interval:?}; a failover may wait that long for \
                 pg_promote (set it to 1s or less on standbys)",
                n.id
            ))
        })
        .collect()
}

impl fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "Member", "Host", "Role", "State", "Region", "TL", "LSN", "Lag (MB)", "Lag (s)", "Pool",
        ];
        let rows: Vec<[String; 10]> = self
            .nodes
            .iter()
            .map(|n| {
                // A fenced node's lag to a primary it diverged from means nothing.
                let replica = n.role == Role::Replica && n.state != NodeState::Fenced;
                let fenced = n.state == NodeState::Fenced;
                [
                    n.id.to_string(),
                    n.address.clone(),
                    format!("{:?}", n.role).to_lowercase(),
                    n.state.to_string(),
                    n.region.clone().unwrap_or_default(),
                    if replica || fenced {
                        String::new()
                    } else {
                        self.timeline.to_string()
                    },
                    n.lsn.to_string(),
                    match (replica, fenced) {
                        (true, _) => format!("{:.1}", n.lag_bytes as f64 / 1_048_576.0),
                        (_, true) => "diverged".into(),
                        _ => String::new(),
                    },
                    match (replica, fenced) {
                        (true, _) => format!("{:.3}", n.lag.as_secs_f64()),
                        (_, true) => "rebuild".into(),
                        _ => String::new(),
                    },
                    format!("{}/{}", n.pool_in_use, n.pool_max),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>| {
            let parts: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
            writeln!(f, "+{}+", parts.join("+"))
        };
        let row = |f: &mut fmt::Formatter<'_>, cells: &[String]| {
            let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!(" {c:<w$} ")).collect();
            writeln!(f, "|{}|", parts.join("|"))
        };
        writeln!(f, "Cluster {:x}", self.system_id)?;
        line(f)?;
        row(f, &header.map(String::from))?;
        line(f)?;
        for r in &rows {
            row(f, r)?;
        }
        line(f)?;
        let r = &self.router;
        write!(
            f,
            "routed: {} primary, {} replica ({:.1}% replica), {} retries, {} fallbacks, {} errors; {} lag alerts",
            r.to_primary,
            r.to_replica,
            self.replica_hit_rate * 100.0,
            r.retries,
            r.fallbacks,
            r.errors,
            self.recent_alerts.len()
        )?;
        write!(f, "\nfailover mode: {}", self.failover_mode.name())?;
        if let Some(fleet) = &self.fleet {
            write!(f, " (instance {}: {})", fleet.instance, fleet.standing)?;
        }
        if self.failover_in_progress {
            write!(f, "\nfailover in progress")?;
        }
        for warning in &self.warnings {
            write!(f, "\nwarning: {warning}")?;
        }
        if let Some(e) = self.recent_failovers.last() {
            write!(
                f,
                "\nlast failover event: #{} {:?} {:?}, {} -> {} in {:?}{}",
                e.id,
                e.kind,
                e.outcome,
                e.old_primary,
                e.new_primary.as_ref().map_or("-", |n| n.as_str()),
                e.duration,
                e.error.as_ref().map(|err| format!(" ({err})")).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
