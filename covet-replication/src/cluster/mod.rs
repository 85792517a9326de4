//! The cluster snapshot, where the data plane and the control plane meet: the nodes with their
//! pools and health views, the topology (who is primary), the cluster's identity, and the write
//! gate. The control plane writes it; the data plane reads it.

mod gate;
mod hooks;
mod identity;
mod node;

pub use crate::core::{NodeId, NodeState, Role};
pub(crate) use gate::{HoldWrites, WriteGate};
pub(crate) use hooks::PoolHooks;
pub(crate) use identity::{Identity, SyncRule, SyncShortfall};
pub(crate) use node::{InFlight, Node};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use arc_swap::ArcSwap;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::config::{NodeConfig, ReplicationConfig};

/// What both planes share. Built once per handle; the planes hold it in an `Arc`.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub config: ReplicationConfig,
    /// Set on every pool made for a node.
    pub hooks: PoolHooks,
    pub topology: ArcSwap<Topology>,
    pub identity: Identity,
    pub gate: WriteGate,
    /// Wakes the health loop for a round now (a failure the data plane reported).
    pub wake: tokio::sync::Notify,
    /// Health rounds begun so far (each round's number).
    pub rounds: AtomicU64,
    /// What the control plane concluded from the latest round it acted on.
    pub verdicts: watch::Sender<Verdict>,
}

/// The control plane's word on the primary after acting on health round `round`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub round: u64,
    /// The topology's primary answered as a writable primary.
    pub primary_writable: bool,
}

impl Cluster {
    /// The configured nodes, each with a new (lazy) pool, healthy until checked.
    pub fn new(config: ReplicationConfig, hooks: PoolHooks) -> Self {
        let timeout = config.health.timeout;
        let primary = new_node(&config.primary, Role::Primary, NodeState::Healthy, timeout, &hooks);
        let replicas = config
            .replicas
            .iter()
            .map(|c| new_node(c, Role::Replica, NodeState::Healthy, timeout, &hooks))
            .collect();
        Cluster {
            hooks,
            topology: ArcSwap::from_pointee(Topology { primary, replicas }),
            identity: Identity::default(),
            gate: WriteGate::default(),
            wake: tokio::sync::Notify::new(),
            rounds: AtomicU64::new(0),
            verdicts: watch::Sender::new(Verdict::default()),
            config,
        }
    }

    /// The data plane's one way to tell the control plane about a node: a statement's
    /// connection to this replica failed. It takes no reads from now on, its reads in flight go
    /// elsewhere, its cached position is forgotten, and the health loop judges it at once.
    /// Returns false if it was reported already (or serves no reads anyway).
    pub fn report_failure(&self, node: &Node) -> bool {
        if !node.suspect() {
            return false;
        }
        node.lost();
        self.wake.notify_one();
        true
    }

    /// After `old` refused a write as read-only, or could not be reached, nothing having been
    /// sent: asks for a health round now and waits (up to `failover.hold_writes`) for the
    /// primary to change. The primary to send the statement to again: the new one, or `old`
    /// itself when a round taken after asking found it writable (a fence lifted, a reload the
    /// round saw before the refused statement's session did, or the statement's own refusal,
    /// which its next attempt meets again). `None` when the time ran out.
    pub async fn new_primary_after(&self, old: &Arc<Node>) -> Option<Arc<Node>> {
        let deadline = Instant::now() + self.config.failover.hold_writes;
        let mut verdicts = self.verdicts.subscribe();
        loop {
            let asked_after = self.rounds.load(SeqCst);
            self.wake.notify_one();
            loop {
                let primary = self.primary();
                if !Arc::ptr_eq(&primary, old) {
                    return Some(primary);
                }
                let verdict = *verdicts.borrow_and_update();
                if verdict.round > asked_after {
                    if verdict.primary_writable {
                        return Some(Arc::clone(old));
                    }
                    // Not writable, nobody else is yet (a switchover between its fence and
                    // its promotion): ask again.
                    break;
                }
                match tokio::time::timeout_at(deadline, verdicts.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return None,
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn primary(&self) -> Arc<Node> {
        Arc::clone(&self.topology.load().primary)
    }

    /// The primary once it can be reached: while health checks get no answer from it (it is
    /// down) and no failover holds writes, waits up to `failover.hold_writes` for it to answer
    /// again or to be replaced. `None` when it stayed down: a statement sent into a partition
    /// would wait as long as TCP does, minutes, for an outcome nobody can know.
    pub async fn primary_when_reachable(&self) -> Option<Arc<Node>> {
        let deadline = Instant::now() + self.config.failover.hold_writes;
        let mut verdicts = self.verdicts.subscribe();
        loop {
            if self.gate.holding() {
                self.gate.wait(deadline.saturating_duration_since(Instant::now())).await;
            }
            let primary = self.primary();
            if primary.state() != NodeState::Down {
                return Some(primary);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            // Each round the control plane acts on is a verdict; the interval bounds the wait
            // where none comes.
            let _ = tokio::time::timeout(left.min(self.config.health.interval), verdicts.changed()).await;
        }
    }

    /// The primary, once any failover running now has finished (or `failover.hold_writes` has
    /// passed): writes wait for the new primary rather than fail on the old one.
    pub async fn primary_for_write(&self) -> Arc<Node> {
        if self.gate.holding() {
            self.gate.wait(self.config.failover.hold_writes).await;
        }
        self.primary()
    }

    /// A node of this cluster with a new (lazy) pool configured for `role`.
    pub fn new_node(&self, cfg: &NodeConfig, role: Role, state: NodeState) -> Arc<Node> {
        new_node(cfg, role, state, self.config.health.timeout, &self.hooks)
    }
}

/// A node with a new (lazy) pool configured for `role`.
pub(crate) fn new_node(
    cfg: &NodeConfig,
    role: Role,
    state: NodeState,
    health_timeout: Duration,
    hooks: &PoolHooks,
) -> Arc<Node> {
    Arc::new(Node::new(
        cfg.clone(),
        pool_for(cfg, role, health_timeout, hooks),
        role,
        state,
    ))
}

/// `health_timeout` bounds a replica's acquire: a replica that cannot hand out a connection
/// that fast costs a retry elsewhere, not the pool's full acquire timeout.
fn pool_for(cfg: &NodeConfig, role: Role, health_timeout: Duration, hooks: &PoolHooks) -> PgPool {
    let p = &cfg.pool;
    let acquire_timeout = match role {
        Role::Primary => p.acquire_timeout,
        Role::Replica => p.acquire_timeout.min(health_timeout),
    };
    let options = PgPoolOptions::new()
        // A replica's dead connection fails its read, which is retried on another node, so the
        // round trip sqlx spends testing each connection before handing it out buys nothing
        // there. A primary's statement is not resent once it may have reached the server: keep
        // the test there, unless configured otherwise. (Without the test and without a
        // `before_acquire` hook, the executor takes idle connections with `try_acquire`: see
        // `data::executor::idle_connection`.)
        .test_before_acquire(p.test_before_acquire.unwrap_or(role == Role::Primary))
        .min_connections(p.min_connections)
        .max_connections(p.max_connections)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(p.idle_timeout)
        .max_lifetime(p.max_lifetime);
    hooks.apply(options).connect_lazy_with(cfg.connect_options())
}

/// The nodes a query can be routed to, swapped atomically when replicas are added or removed
/// (readers hold a snapshot, so a query in flight keeps its node).
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub primary: Arc<Node>,
    pub replicas: Vec<Arc<Node>>,
}

impl Topology {
    pub fn nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    pub fn find(&self, id: &str) -> Option<&Arc<Node>> {
        self.nodes().find(|n| n.id.as_str() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pre_acquire_ping_is_the_roles_unless_configured() {
        let node = |test: Option<bool>| {
            let mut config = NodeConfig::from_url("postgres://u@127.0.0.1:1/db").unwrap();
            config.pool = config.pool.with_test_before_acquire(test);
            config
        };
        let timeout = Duration::from_secs(1);
        let ping = |config: &NodeConfig, role| {
            pool_for(config, role, timeout, &PoolHooks::default())
                .options()
                .get_test_before_acquire()
        };
        assert!(ping(&node(None), Role::Primary));
        assert!(!ping(&node(None), Role::Replica));
        assert!(!ping(&node(Some(false)), Role::Primary));
        assert!(ping(&node(Some(true)), Role::Replica));
    }
}
