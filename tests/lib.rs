//! Support for the integration tests: a cluster shared by the non-destructive tests of one
//! test binary, and helpers that ask a server who it is.

use std::time::{Duration, Instant};

use covet_replication::testing::LocalCluster;
use covet_replication::{NodeState, ReplicatedPool, ReplicationConfig};
use tokio::sync::OnceCell;

/// The cluster every non-destructive test of a binary shares: 1 primary (`eu`) and 2 standbys
/// (`replica1` in `eu`, `replica2` in `us`). Stopped by the harness's exit handler.
pub async fn shared_cluster() -> &'static LocalCluster {
    static CLUSTER: OnceCell<LocalCluster> = OnceCell::const_new();
    CLUSTER
        .get_or_init(|| async {
            LocalCluster::builder()
                .replicas(2)
                .regions(["eu", "eu", "us"])
                .start()
                .await
                .expect("start shared cluster")
        })
        .await
}

/// The cluster's config with a fast health loop, as tests want it.
pub fn test_config(cluster: &LocalCluster) -> ReplicationConfig {
    let mut config = cluster.replication_config();
    config.health.interval = Duration::from_millis(100);
    config.health.timeout = Duration::from_secs(1);
    config
}

/// Connects a pool to `cluster` with `config` and waits until every node is healthy.
pub async fn connect(config: ReplicationConfig) -> ReplicatedPool {
    let db = ReplicatedPool::connect(config).await.expect("connect");
    wait_states(&db, NodeState::Healthy, Duration::from_secs(20)).await;
    db
}

/// Waits until every node of `db` is in `state`.
pub async fn wait_states(db: &ReplicatedPool, state: NodeState, timeout: Duration) {
    let start = std::time::Instant::now();
    loop {
        db.manager().check_now().await;
        let nodes = db.manager().nodes();
        if nodes.iter().all(|n| n.state == state) {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "nodes not {state} after {timeout:?}: {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until node `id` of `db` is in `state`.
pub async fn wait_state(db: &ReplicatedPool, id: &str, state: NodeState, timeout: Duration) {
    let start = std::time::Instant::now();
    loop {
        let node = db.manager().node(id).expect("node");
        if node.state == state {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{id} not {state} after {timeout:?}: {node:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which node of `cluster` listens on `port`.
pub fn node_name(cluster: &LocalCluster, port: i32) -> String {
    cluster
        .nodes()
        .into_iter()
        .find(|n| i32::from(n.port) == port)
        .map(|n| n.name)
        .unwrap_or_else(|| format!("unknown port {port}"))
}

/// A table name unique to the calling test, so tests sharing a cluster don't collide.
pub fn table(test: &str) -> String {
    format!("t_{test}_{}", std::process::id())
}

/// Polls `done` every 20 ms until it holds; fails with `what()` after `timeout`.
pub async fn eventually<F: Future<Output = bool>>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut done: impl FnMut() -> F,
) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < timeout, "{} (after {timeout:?})", what());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on.
pub const DEAD_PORT: u16 = 1;

/// Points standby `i` at the server on `port` (`primary_conninfo` + reload).
pub async fn set_upstream(cluster: &LocalCluster, i: usize, port: u16) {
    let name = &cluster.nodes()[i].name;
    let sql = format!(
        "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={name}'"
    );
    cluster.execute(i, &sql).await.unwrap();
    cluster.execute(i, "SELECT pg_reload_conf()").await.unwrap();
}
