//! [`ReplicaManager`]: the nodes, their pools and the loops that watch them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::classify::Classifier;
use crate::cluster::{Identity, Node, NodeId, NodeState, Role, Topology};
use crate::config::{NodeConfig, ReplicationConfig};
use crate::control::lag::{LagMonitor, WalHistory};
use crate::data::routing::{Catalog, RouterStats};
use crate::data::session::{ConsistencyStats, SessionState};
use crate::error::Error;

/// Primary WAL samples kept for lag estimation: an hour at the default 1 s interval.
const WAL_HISTORY: usize = 3600;

/// Shared state behind every handle. Background loops hold it weakly.
#[derive(Debug)]
pub(crate) struct ManagerInner {
    pub config: ReplicationConfig,
    pub topology: ArcSwap<Topology>,
    pub classifier: Classifier,
    pub catalog: Catalog,
    pub stats: RouterStats,
    pub wal_history: Mutex<WalHistory>,
    pub identity: Identity,
    /// The plain handle's own session: its watermark is every write through any clone of it.
    pub handle_session: Arc<SessionState>,
    pub consistency: ConsistencyStats,
    pub lag_monitor: LagMonitor,
    pub failover: crate::control::failover::FailoverState,
    shutdown: CancellationToken,
}

impl Drop for ManagerInner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A node with a new (lazy) pool configured for `role`.
pub(crate) fn new_node(cfg: &NodeConfig, role: Role, state: NodeState, health_timeout: Duration) -> Arc<Node> {
    Arc::new(Node::new(cfg.clone(), pool_for(cfg, role, health_timeout), role, state))
}

/// `health_timeout` bounds a replica's acquire: a replica that cannot hand out a connection
/// that fast costs a retry elsewhere, not the pool's full acquire timeout.
fn pool_for(cfg: &NodeConfig, role: Role, health_timeout: Duration) -> PgPool {
    let p = &cfg.pool;
    let acquire_timeout = match role {
        Role::Primary => p.acquire_timeout,
        Role::Replica => p.acquire_timeout.min(health_timeout),
    };
    PgPoolOptions::new()
        // A replica's dead connection fails its read, which is retried on another node, so the
        // round trip sqlx spends testing each connection before handing it out buys nothing
        // there. The primary's statements are never retried: keep the test. (Without the test
        // and without a `before_acquire` hook, which we never set, the executor takes idle
        // connections with `try_acquire`: see `executor::idle_connection`.)
        .test_before_acquire(role == Role::Primary)
        .min_connections(p.min_connections)
        .max_connections(p.max_connections)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(p.idle_timeout)
        .max_lifetime(p.max_lifetime)
        .connect_lazy_with(cfg.connect_options())
}

impl ManagerInner {
    /// Builds the nodes (pools are lazy) and starts the health loop.
    pub fn start(config: ReplicationConfig) -> Result<Arc<Self>, Error> {
        config.validate()?;
        let timeout = config.health.timeout;
        let primary = new_node(&config.primary, Role::Primary, NodeState::Healthy, timeout);
        let replicas = config
            .replicas
            .iter()
            .map(|c| new_node(c, Role::Replica, NodeState::Healthy, timeout))
            .collect();
        let classifier =
            Classifier::new(usize::try_from(config.routing.classifier_cache_capacity).unwrap_or(usize::MAX))
                .with_read_only_functions(config.routing.read_only_functions.iter().cloned())
                .with_write_functions(config.routing.write_functions.iter().cloned());
        let inner = Arc::new(ManagerInner {
            catalog: Catalog::new(&config.routing, config.health.timeout),
            classifier,
            topology: ArcSwap::from_pointee(Topology { primary, replicas }),
            stats: RouterStats::default(),
            wal_history: Mutex::new(WalHistory::new(WAL_HISTORY)),
            identity: Identity::default(),
            handle_session: Arc::new(SessionState::new(config.consistency.handle, false)),
            consistency: ConsistencyStats::default(),
            lag_monitor: LagMonitor::new(config.lag),
            failover: crate::control::failover::FailoverState::new(&config.failover),
            shutdown: CancellationToken::new(),
            config,
        });
        crate::control::health::spawn(
            Arc::downgrade(&inner),
            inner.config.health.interval,
            inner.shutdown.child_token(),
        );
        Ok(inner)
    }

    /// Stops the background loops.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }

    pub fn primary(&self) -> Arc<Node> {
        Arc::clone(&self.topology.load().primary)
    }

    /// The primary, once any failover running now has finished (or `failover.hold_writes` has
    /// passed): writes wait for the new primary rather than fail on the old one.
    pub async fn primary_for_write(&self) -> Arc<Node> {
        if self.failover.holding() {
            self.failover.wait(self.config.failover.hold_writes).await;
        }
        self.primary()
    }
}

/// Owns one sqlx pool per node and the health loop; adds and removes replicas at run time.
///
/// Obtained from [`ReplicatedPool::manager`](crate::ReplicatedPool::manager); cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplicaManager {
    pub(crate) inner: Arc<ManagerInner>,
}

/// A node as the manager sees it now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Primary or replica.
    pub role: Role,
    /// Health state.
    pub state: NodeState,
    /// Region label.
    pub region: Option<String>,
    /// Replay (replica) or current (primary) WAL position at the last check.
    pub lsn: crate::Lsn,
    /// Replication lag in bytes at the last check (0 for the primary).
    pub lag_bytes: u64,
    /// Replication lag in time at the last check (0 for the primary).
    #[serde(with = "humantime_serde")]
    pub lag: Duration,
    /// Queries running on it now.
    pub in_flight: u32,
    /// Average health-check round trip.
    #[serde(with = "humantime_serde")]
    pub rtt: Duration,
    /// Average query latency (from having a connection to the last row).
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
}

impl ReplicaManager {
    /// Every node, primary first.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.inner.topology.load().nodes().map(|n| status_of(n)).collect()
    }

    /// One node by id.
    pub fn node(&self, id: &str) -> Option<NodeStatus> {
        self.inner.topology.load().find(id).map(|n| status_of(n))
    }

    /// Runs one health round now (the loop keeps its own schedule).
    pub async fn check_now(&self) {
        crate::control::health::round(&self.inner).await;
        crate::control::failover::after_health_round(&self.inner).await;
    }

    /// The sqlx pool of a node, for work that must bypass routing.
    pub fn pool(&self, id: &str) -> Option<PgPool> {
        self.inner.topology.load().find(id).map(|n| n.pool.clone())
    }

    /// Adds a replica at run time. It takes reads once a health check has seen it healthy.
    ///
    /// # Errors
    /// [`Error::DuplicateNode`] if its id is taken; [`Error::Config`] if it is invalid.
    pub async fn add_replica(&self, config: NodeConfig) -> Result<(), Error> {
        let topology = self.inner.topology.load_full();
        if topology.find(&config.id).is_some() {
            return Err(Error::DuplicateNode { id: config.id });
        }
        // Validate against the nodes there are now, not the ones configured at start.
        let mut full = self.inner.config.clone();
        full.replicas = topology
            .replicas
            .iter()
            .map(|r| r.config.clone())
            .chain([config.clone()])
            .collect();
        full.validate()?;
        // Down until checked: a new node must prove itself before it takes reads.
        let node = new_node(
            &config,
            Role::Replica,
            NodeState::Down,
            self.inner.config.health.timeout,
        );
        self.inner.topology.rcu(|t| {
            let mut t = Topology::clone(t);
            t.replicas.push(Arc::clone(&node));
            t
        });
        tracing::info!(target: "covet::topology", node = %node.id, "replica added");
        Ok(())
    }

    /// Removes a replica: it takes no new queries, in-flight ones finish (up to `timeout`),
    /// then its pool closes.
    ///
    /// # Errors
    /// [`Error::UnknownNode`], [`Error::CannotRemove`] for the primary, or
    /// [`Error::DrainTimeout`] if queries were still running after `timeout` (the pool is
    /// closed anyway, which waits for their connections).
    pub async fn remove_replica(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let topology = self.inner.topology.load_full();
        let node = topology
            .find(id)
            .cloned()
            .ok_or_else(|| Error::UnknownNode { id: id.into() })?;
        if node.role() == Role::Primary {
            return Err(Error::CannotRemove {
                id: node.id.clone(),
                reason: "it is the primary",
            });
        }
        node.set_state(NodeState::Draining);
        self.inner.topology.rcu(|t| {
            let mut t = Topology::clone(t);
            t.replicas.retain(|r| !Arc::ptr_eq(r, &node));
            t
        });
        tracing::info!(target: "covet::topology", node = %node.id, "replica draining");
        let started = Instant::now();
        let mut result = Ok(());
        loop {
            let in_flight = node.in_flight.load(std::sync::atomic::Ordering::Acquire);
            if in_flight == 0 {
                break;
            }
            if started.elapsed() >= timeout {
                result = Err(Error::DrainTimeout {
                    node: node.id.clone(),
                    in_flight,
                    waited: timeout,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        node.pool.close().await;
        if let Some(conn) = node.check_conn.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
        self.inner.lag_monitor.forget(node.id.as_str());
        tracing::info!(target: "covet::topology", node = %node.id, "replica removed");
        result
    }
}

fn status_of(n: &Node) -> NodeStatus {
    let (lag_bytes, lag) = n.lag();
    NodeStatus {
        id: n.id.clone(),
        role: n.role(),
        state: n.state(),
        region: n.config.region.clone(),
        lsn: n.replay_lsn(),
        lag_bytes,
        lag,
        in_flight: n.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        rtt: n.rtt(),
        latency: n.latency(),
    }
}
