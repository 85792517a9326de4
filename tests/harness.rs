//! Tests of the LocalCluster harness itself: everything else stands on it.

use std::time::{Duration, Instant};

use covet_replication::testing::{ClusterError, LocalCluster};
use sqlx::{Connection, PgConnection};

async fn scalar<T>(cluster: &LocalCluster, node: usize, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut conn = cluster.connect(node).await.expect("connect");
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect("query")
}

/// Whether `node` has the row `id` in `harness`.
async fn has_row(cluster: &LocalCluster, node: usize, id: i32) -> bool {
    let mut conn = cluster.connect(node).await.expect("connect");
    sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM harness WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .expect("query")
}

async fn wait_row(cluster: &LocalCluster, node: usize, id: i32, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if has_row(cluster, node, id).await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn insert(cluster: &LocalCluster, id: i32) {
    let mut conn = cluster.connect(cluster.primary()).await.expect("connect primary");
    sqlx::query("INSERT INTO harness (id) VALUES ($1)")
        .bind(id)
        .execute(&mut conn)
        .await
        .expect("insert");
}

#[tokio::test]
async fn replication_streams_to_every_standby() {
    let cluster = LocalCluster::builder()
        .replicas(2)
        .regions(["eu", "eu", "us"])
        .start()
        .await
        .expect("cluster");
    println!("1 primary + 2 standbys ready in {:?}", cluster.startup_time());
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().map(|n| n.region.as_str()).collect::<Vec<_>>(),
        ["eu", "eu", "us"]
    );
    assert!(nodes.iter().all(|n| n.running));

    assert!(!scalar::<bool>(&cluster, 0, "SELECT pg_is_in_recovery()").await);
    let streaming: i64 = scalar(
        &cluster,
        0,
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
    )
    .await;
    assert_eq!(streaming, 2);
    for node in cluster.replicas() {
        assert!(
            scalar::<bool>(&cluster, node, "SELECT pg_is_in_recovery()").await,
            "node {node} is a standby"
        );
    }

    cluster
        .execute(0, "CREATE TABLE harness (id int PRIMARY KEY)")
        .await
        .expect("create");
    cluster.wait_streaming().await.expect("caught up");
    insert(&cluster, 1).await;
    for node in cluster.replicas() {
        assert!(
            wait_row(&cluster, node, 1, Duration::from_secs(10)).await.is_some(),
            "row reached node {node}"
        );
    }
    // A standby refuses writes with SQLSTATE 25006, the routing's last line of defence.
    let mut conn = cluster.connect(1).await.expect("connect");
    let err = sqlx::query("INSERT INTO harness VALUES (2)")
        .execute(&mut conn)
        .await
        .expect_err("standby write");
    assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("25006"));
}

#[tokio::test]
async fn apply_delay_pause_and_resume_hold_back_replay() {
    let cluster = LocalCluster::builder().replicas(2).start().await.expect("cluster");
    cluster
        .execute(0, "CREATE TABLE harness (id int PRIMARY KEY)")
        .await
        .expect("create");
    cluster.wait_streaming().await.expect("caught up");

    cluster.set_apply_delay(1, Duration::from_secs(3)).await.expect("delay");
    insert(&cluster, 1).await;
    let undelayed = wait_row(&cluster, 2, 1, Duration::from_secs(10))
        .await
        .expect("undelayed standby has the row");
    assert!(
        !has_row(&cluster, 1, 1).await,
        "delayed standby must not have the row yet"
    );
    let delayed = wait_row(&cluster, 1, 1, Duration::from_secs(20))
        .await
        .expect("delayed standby gets the row");
    println!("undelayed standby after {undelayed:?}, delayed standby after further {delayed:?}");
    assert!(
        delayed >= Duration::from_secs(1),
        "apply delay held the row back ({delayed:?})"
    );
    cluster.set_apply_delay(1, Duration::ZERO).await.expect("no delay");

    cluster.pause_replay(2).await.expect("pause");
    insert(&cluster, 2).await;
    assert!(wait_row(&cluster, 1, 2, Duration::from_secs(10)).await.is_some());
    assert!(!has_row(&cluster, 2, 2).await, "paused standby must not replay");
    cluster.resume_replay(2).await.expect("resume");
    assert!(
        wait_row(&cluster, 2, 2, Duration::from_secs(10)).await.is_some(),
        "resumed standby replays"
    );
}

#[tokio::test]
async fn kill_start_stop_and_promote() {
    let cluster = LocalCluster::builder().replicas(2).start().await.expect("cluster");
    cluster
        .execute(0, "CREATE TABLE harness (id int PRIMARY KEY)")
        .await
        .expect("create");
    cluster.wait_streaming().await.expect("caught up");

    let pids = cluster.server_pids();
    cluster.kill(1).await.expect("kill");
    assert!(!cluster.nodes()[1].running);
    assert!(
        PgConnection::connect_with(&cluster.connect_options(1).expect("opts"))
            .await
            .is_err(),
        "killed node refuses"
    );
    assert!(matches!(
        cluster.kill(1).await,
        Err(ClusterError::InvalidState { node: 1, .. })
    ));
    insert(&cluster, 1).await;
    cluster.start(1).await.expect("restart after crash");
    assert!(
        wait_row(&cluster, 1, 1, Duration::from_secs(10)).await.is_some(),
        "restarted standby catches up"
    );
    assert_ne!(cluster.server_pids(), pids, "a new postmaster runs");

    cluster.stop(0).await.expect("stop primary");
    cluster.start(0).await.expect("start primary");
    insert(&cluster, 2).await;

    cluster.promote(2).await.expect("promote");
    assert_eq!(cluster.primary(), 2);
    assert!(!scalar::<bool>(&cluster, 2, "SELECT pg_is_in_recovery()").await);
    cluster
        .execute(2, "INSERT INTO harness VALUES (100)")
        .await
        .expect("promoted node takes writes");
}

#[tokio::test]
async fn password_auth_and_synchronous_standby() {
    let cluster = LocalCluster::builder()
        .replicas(1)
        .password("s3cret-pw")
        .synchronous(true)
        .start()
        .await
        .expect("cluster");
    assert!(
        !format!("{cluster:?}").contains("s3cret-pw"),
        "Debug must not show the password"
    );
    let no_pw = cluster.connect_options(0).expect("opts").password("wrong");
    assert!(
        PgConnection::connect_with(&no_pw).await.is_err(),
        "a wrong password is refused"
    );
    let sync: String = scalar(&cluster, 0, "SELECT sync_state FROM pg_stat_replication").await;
    assert_eq!(sync, "quorum");
    cluster
        .execute(0, "CREATE TABLE harness (id int PRIMARY KEY)")
        .await
        .expect("create");
    cluster.wait_streaming().await.expect("caught up");
    insert(&cluster, 1).await;
    // Synchronous commit waited for the standby's flush; replay follows within moments.
    assert!(wait_row(&cluster, 1, 1, Duration::from_secs(10)).await.is_some());
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Postgres processes whose command line mentions `dir` (postmasters name their data directory).
fn processes_under(dir: &std::path::Path) -> usize {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("proc")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&needle))
        .count()
}

#[tokio::test]
async fn drop_stops_every_server_and_removes_the_directory() {
    let cluster = LocalCluster::builder().replicas(1).start().await.expect("cluster");
    let pids = cluster.server_pids();
    let dir = cluster.dir().to_owned();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    drop(cluster);
    assert!(pids.iter().all(|&p| !alive(p)), "postmasters gone after drop");
    assert!(!dir.exists(), "cluster directory removed");
    assert_eq!(processes_under(&dir), 0);
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cluster = LocalCluster::builder().replicas(1).start().await.expect("cluster");
            tx.send((cluster.server_pids(), cluster.dir().to_owned()))
                .expect("send");
            panic!("test failure while the cluster runs");
        })
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (pids, dir) = rx.recv().expect("cluster details");
    assert!(pids.iter().all(|&p| !alive(p)), "postmasters gone after the panic");
    assert!(!dir.exists(), "cluster directory removed after the panic");
}

#[tokio::test]
async fn bad_input_gives_clear_errors() {
    let err = LocalCluster::builder()
        .bindir("/nonexistent/pg/bin")
        .start()
        .await
        .expect_err("no binaries");
    assert!(matches!(err, ClusterError::BinariesNotFound { .. }), "{err}");
    assert!(err.to_string().contains("apt-get install -y postgresql"), "{err}");

    let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let err = LocalCluster::builder()
        .replicas(0)
        .base_port(port)
        .start()
        .await
        .expect_err("port in use");
    assert!(matches!(err, ClusterError::PortInUse { port: p } if p == port), "{err}");

    let err = LocalCluster::builder()
        .temp_root("/etc/hostname/not-a-dir")
        .start()
        .await
        .expect_err("bad temp dir");
    assert!(matches!(err, ClusterError::TempDir { .. }), "{err}");
    assert!(err.to_string().contains("/etc/hostname/not-a-dir"), "{err}");

    let cluster = LocalCluster::builder().replicas(0).start().await.expect("cluster");
    assert!(matches!(
        cluster.connect_options(7),
        Err(ClusterError::UnknownNode { node: 7, count: 1 })
    ));
}
