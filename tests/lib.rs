//! Support for the integration tests: a cluster shared by the non-destructive tests of one
//! test binary, and helpers that ask a server who it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// A TCP link to a server on loopback that a test can break: cut (every connection through it
/// dropped, new ones refused), or stalled (connections stay open, bytes go nowhere: a far end
/// that stopped answering).
#[derive(Debug)]
pub struct Link {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Bytes came back from the server.
    replied: Arc<tokio::sync::Notify>,
    stalled: Arc<AtomicBool>,
}

impl Link {
    /// A link to `127.0.0.1:upstream`.
    pub async fn to(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let replied = Arc::new(tokio::sync::Notify::new());
        let stalled = Arc::new(AtomicBool::new(false));
        let (list, notify, stall) = (conns.clone(), replied.clone(), stalled.clone());
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                let up = tokio::spawn(forward(in_read, out_write, stall.clone(), None));
                let down = tokio::spawn(forward(out_read, in_write, stall.clone(), Some(notify.clone())));
                list.lock().unwrap().extend([up, down]);
            }
        });
        Link {
            port,
            accept,
            conns,
            replied,
            stalled,
        }
    }

    /// The port to connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection through the link and refuses new ones.
    pub fn cut(&self) {
        self.accept.abort();
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// Cuts the link just after the server's next answer through it (a lease keep-alive's, for
    /// an idle etcd lease holder: its next keep-alive is nearly a whole interval away).
    pub async fn cut_after_next_reply(&self) {
        self.replied.notified().await;
        // The reply may be an HTTP/2 frame that comes before the answer itself: let that
        // through too.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.cut();
    }

    /// Stalls the link (`true`: nothing goes through either way, nothing is closed) or lets
    /// bytes through again.
    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` but while stalled (reading and dropping), notifying `replied` of
/// each chunk passed on.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
    replied: Option<Arc<tokio::sync::Notify>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await
        && n > 0
    {
        if stalled.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(replied) = &replied {
            replied.notify_waiters();
        }
    }
}

/// Runs `test`, an ignored test of this test binary, in a child process on the cluster of the
/// config file `config`, with `env` set; returns what it printed after `prefix` (its result).
pub fn child_result(test: &str, config: &std::path::Path, env: (&str, &std::ffi::OsStr), prefix: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture", test])
        .env("COVET_CONFIG", config)
        .env(env.0, env.1)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line from {test}: {out}"))
        .to_owned()
}

/// Waits until reads through `db` are served by a replica of `cluster` again.
pub async fn until_reads_reach_replicas(db: &ReplicatedPool, cluster: &LocalCluster) {
    eventually(
        Duration::from_secs(10),
        || "reads never went back to the replicas".into(),
        || async {
            let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(db)
                .await
                .unwrap();
            node_name(cluster, port) != "primary"
        },
    )
    .await;
}
