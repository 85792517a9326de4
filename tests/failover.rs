//! Failover, switchover and fencing against real streaming replication. Destructive: each test
//! that changes the cluster has its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covet_replication::config::FailoverMode;
use covet_replication::testing::{LocalCluster, LocalClusterBuilder};
use covet_replication::{
    Error, NodeState, ReplicatedPool, ReplicationConfig,
    failover::{FailoverError, FailoverEvent, FailoverKind, Outcome},
};
use covet_tests::{DEAD_PORT, connect, eventually, node_name, set_upstream, shared_cluster, test_config};
use sqlx::Connection;

/// An acknowledged write: its id, the port of the server that took it, when it was acknowledged.
type Ack = (i32, i32, Instant);

/// Writes ids 0, 1, 2, ... through `db` until stopped; returns the acknowledged writes and the
/// errors of the others.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<Ack>, Vec<String>)>,
}

impl Writer {
    fn start(db: &ReplicatedPool, table: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (db, flag) = (db.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), Vec::new());
            let mut id = 0;
            while !flag.load(Ordering::Relaxed) {
                let sql = format!("INSERT INTO {table} VALUES ($1) RETURNING inet_server_port()");
                match sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_one(&db)
                    .await
                {
                    Ok(port) => acked.push((id, port, Instant::now())),
                    Err(e) => failed.push(e.to_string()),
                }
                id += 1;
            }
            (acked, failed)
        });
        Writer { stop, task }
    }

    async fn finish(self) -> (Vec<Ack>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

fn config(cluster: &LocalCluster, audit: &std::path::Path) -> ReplicationConfig {
    let mut config = test_config(cluster);
    config.health.timeout = Duration::from_millis(500);
    config.failover.audit_log = Some(audit.to_path_buf());
    config
}

async fn wait_event(db: &ReplicatedPool, kind: FailoverKind, timeout: Duration) -> FailoverEvent {
    let started = Instant::now();
    loop {
        if let Some(e) = db.failover().history().into_iter().find(|e| e.kind == kind) {
            return e;
        }
        assert!(
            started.elapsed() < timeout,
            "no {kind:?} event after {timeout:?}: {:#?}",
            db.failover().history()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(in recovery, port of the server it streams from)` of node `i`.
async fn replication_state(cluster: &LocalCluster, i: usize) -> (bool, Option<i32>) {
    let mut conn = cluster.connect(i).await.unwrap();
    sqlx::query_as(
        "SELECT pg_is_in_recovery(), (SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// `failover(None)` by hand while the health loop keeps attempting (and aborting)
/// automatically: a request that meets one of those attempts gets `InProgress` and asks again.
async fn manual_failover(db: &ReplicatedPool) -> Result<FailoverEvent, Error> {
    loop {
        match db.failover().failover(None).await {
            Err(Error::Failover(FailoverError::InProgress)) => tokio::time::sleep(Duration::from_millis(10)).await,
            other => return other,
        }
    }
}

/// A port nothing listens on: a standby pointed there receives nothing more.
/// How many of `ids` are in `table` on node `i`.
async fn count_present(cluster: &LocalCluster, i: usize, table: &str, ids: &[i32]) -> i64 {
    let mut conn = cluster.connect(i).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE id = ANY($1)"
    )))
    .bind(ids)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Starts `builder`'s cluster with `schema` created on the primary and replayed by every standby.
async fn start_with(builder: LocalClusterBuilder, schema: &str) -> LocalCluster {
    let cluster = builder.start().await.unwrap();
    cluster.execute(0, schema).await.unwrap();
    cluster.wait_streaming().await.unwrap();
    cluster
}

/// A primary and two standbys with `schema`, and a config for them whose audit log lives in the
/// returned directory (keep it while the test runs).
async fn two_standbys_with(schema: &str) -> (LocalCluster, tempfile::TempDir, ReplicationConfig) {
    let cluster = start_with(LocalCluster::builder().replicas(2), schema).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&cluster, &dir.path().join("audit.jsonl"));
    (cluster, dir, config)
}

async fn wait_until_present(cluster: &LocalCluster, i: usize, table: &str, ids: &[i32]) {
    eventually(
        Duration::from_secs(20),
        || format!("rows never reached node {i}"),
        || async { count_present(cluster, i, table, ids).await == ids.len() as i64 },
    )
    .await;
}

fn steps(event: &FailoverEvent) -> Vec<(&str, Option<&str>, bool)> {
    event
        .steps
        .iter()
        .map(|s| (s.name, s.node.as_ref().map(|n| n.as_str()), s.ok))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_is_replaced_by_the_standby_with_the_most_wal_losing_no_acknowledged_write() {
    // Synchronous replication (ANY 1 of the two standbys): a commit is acknowledged once one
    // standby has it on disk. Electing the standby that received the most WAL then loses none.
    let cluster = start_with(
        LocalCluster::builder().replicas(2).synchronous(true),
        "CREATE TABLE fo_t (id int PRIMARY KEY)",
    )
    .await;
    // replica1 loses its upstream (a bad port): it stays a standby but receives nothing more,
    // so replica2 ends up with more WAL even though replica1 would win a tie (lowest id).
    set_upstream(&cluster, 1, DEAD_PORT).await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let db = connect(config(&cluster, &audit)).await;
    let writer = Writer::start(&db, "fo_t");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(0).await.unwrap();
    let killed = Instant::now();

    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    // Keep writing on the new primary for a while.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed) = writer.finish().await;

    assert_eq!(event.outcome, Outcome::Completed, "{event:#?}");
    assert_eq!(
        event.new_primary.as_ref().map(|n| n.as_str()),
        Some("replica2"),
        "{event:#?}"
    );
    assert_eq!(event.timeline, Some(2));
    assert_eq!(
        event.repointed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["replica1"]
    );
    let names: Vec<&str> = event.steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "confirm", "survey", "survey", "elect", "abandon", "promote", "switch", "fence", "repoint"
        ],
        "{event:#?}"
    );

    // Not one acknowledged write is missing on the new primary.
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    assert_eq!(count_present(&cluster, 2, "fo_t", &ids).await, ids.len() as i64);
    let before: Vec<_> = acked
        .iter()
        .filter(|(_, p, _)| node_name(&cluster, *p) == "primary")
        .collect();
    let after: Vec<_> = acked
        .iter()
        .filter(|(_, p, _)| node_name(&cluster, *p) == "replica2")
        .collect();
    assert_eq!(before.len() + after.len(), acked.len(), "every write went to a primary");
    assert!(
        !before.is_empty() && !after.is_empty(),
        "{} before, {} after",
        before.len(),
        after.len()
    );
    assert!(
        before.iter().all(|b| after.iter().all(|a| a.0 > b.0)),
        "no write went back to the old primary"
    );
    let writes_stopped = after[0].2.duration_since(killed);
    println!(
        "failover took {:?}; no write acknowledged for {writes_stopped:?} after the kill; {} writes, {} failed",
        event.duration,
        acked.len(),
        failed.len(),
    );
    // Only a write in flight at the crash may fail; later ones wait for the new primary.
    assert!(failed.len() <= 1, "{failed:?}");

    // replica1 follows the new primary and has every row.
    assert_eq!(
        replication_state(&cluster, 1).await,
        (true, Some(i32::from(cluster.nodes()[2].port)))
    );
    wait_until_present(&cluster, 1, "fo_t", &ids).await;
    let node = |id: &str| db.manager().node(id).unwrap();
    assert_eq!(node("primary").state, NodeState::Fenced);
    assert_eq!(node("replica2").role, covet_replication::Role::Primary);
    // Reads go to the remaining replica, writes to the new primary.
    covet_tests::wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(20)).await;
    let read: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(&cluster, read), "replica1");

    let status = db.status();
    assert!(!status.failover_in_progress);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["recent_failovers"][0]["new_primary"], "replica2");
    assert_eq!(json["timeline"], 2);
    let table = status.to_string();
    assert!(
        table.contains("fenced") && table.contains("last failover event: #1 Automatic Completed, primary -> replica2"),
        "{table}"
    );

    // The audit log has the event.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["kind"], "automatic");
    assert_eq!(lines[0]["outcome"], "completed");
    assert_eq!(lines[0]["new_primary"], "replica2");

    // The old primary restarts as a primary on the old timeline: a split brain in the making.
    // The health loop finds it and fences it; our writes never go there.
    cluster.start(0).await.unwrap();
    let fence = wait_event(&db, FailoverKind::Fence, Duration::from_secs(20)).await;
    assert_eq!(fence.outcome, Outcome::Completed, "{fence:#?}");
    assert_eq!(fence.old_primary.as_str(), "primary");
    let mut old = cluster.connect(0).await.unwrap();
    let err = sqlx::query("INSERT INTO fo_t VALUES (-1)")
        .execute(&mut old)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("25006"),
        "the fenced old primary refuses writes: {err}"
    );
    old.close().await.unwrap();
    for i in 0..20 {
        let port: i32 = sqlx::query_scalar("INSERT INTO fo_t VALUES ($1) RETURNING inet_server_port()")
            .bind(1_000_000 + i)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(node_name(&cluster, port), "replica2");
    }
    assert_eq!(node("primary").state, NodeState::Fenced);
    assert_eq!(std::fs::read_to_string(&audit).unwrap().lines().count(), 2);

    // Rebuilt as a standby of the new primary, the old primary is readmitted as a replica.
    cluster.set_primary(2).unwrap();
    cluster.rebuild_standby(0).await.unwrap();
    covet_tests::wait_state(&db, "primary", NodeState::Healthy, Duration::from_secs(20)).await;
    assert_eq!(node("primary").role, covet_replication::Role::Replica);
    let (port, standby): (i32, bool) = sqlx::query_as("SELECT inet_server_port(), pg_is_in_recovery()")
        .fetch_one(&db.using(covet_replication::Target::Node("primary".into())))
        .await
        .unwrap();
    assert_eq!((node_name(&cluster, port).as_str(), standby), ("primary", true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_moves_the_primary_without_losing_or_failing_a_write() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE so_t (id int PRIMARY KEY)").await;
    config.failover.automatic = false;
    let db = connect(config).await;
    let writer = Writer::start(&db, "so_t");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let event = db.failover().switchover(Some("replica2")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, failed) = writer.finish().await;
    println!("switchover took {:?}; {} writes", event.duration, acked.len());

    assert!(
        failed.is_empty(),
        "{} failed writes: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(event.kind, FailoverKind::Switchover);
    assert_eq!(
        steps(&event),
        [
            ("survey", Some("replica1"), true),
            ("survey", Some("replica2"), true),
            ("elect", Some("replica2"), true),
            ("fence", Some("primary"), true),
            ("catch_up", Some("replica2"), true),
            ("promote", Some("replica2"), true),
            ("switch", Some("replica2"), true),
            ("repoint", Some("replica1"), true),
        ]
    );
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    assert_eq!(
        count_present(&cluster, 2, "so_t", &ids).await,
        ids.len() as i64,
        "no write lost"
    );
    let ports: Vec<String> = acked.iter().map(|(_, p, _)| node_name(&cluster, *p)).collect();
    let switched = ports
        .iter()
        .position(|n| n == "replica2")
        .expect("writes reached the new primary");
    assert!(switched > 0, "writes went to the old primary before");
    assert!(ports[..switched].iter().all(|n| n == "primary") && ports[switched..].iter().all(|n| n == "replica2"));
    // The old primary is fenced: up, and refusing writes.
    let mut old = cluster.connect(0).await.unwrap();
    let err = sqlx::query("INSERT INTO so_t VALUES (-1)")
        .execute(&mut old)
        .await
        .unwrap_err();
    assert_eq!(err.as_database_error().and_then(|e| e.code()).as_deref(), Some("25006"));
    assert_eq!(db.manager().node("primary").unwrap().state, NodeState::Fenced);
    assert_eq!(
        replication_state(&cluster, 1).await,
        (true, Some(i32::from(cluster.nodes()[2].port)))
    );
    wait_until_present(&cluster, 1, "so_t", &ids).await;
    // A second request finds nothing to promote to that is streaming from the new primary but
    // replica1, and the old primary is not a candidate.
    let err = db.failover().switchover(Some("primary")).await.unwrap_err();
    assert!(
        matches!(err, Error::Failover(FailoverError::TargetNotEligible { ref node, .. }) if node == "primary"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_while_standbys_still_stream_from_the_primary() {
    // This process cannot reach the primary (its config has a dead port: a partition between
    // the application and the database), but the standbys still stream from it.
    let cluster = shared_cluster().await;
    let mut config = test_config(cluster);
    config.primary.port = 1;
    config.primary.pool.acquire_timeout = Duration::from_secs(1);
    let db = ReplicatedPool::connect_lazy(config).unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(20)).await;
    assert_eq!(event.outcome, Outcome::Aborted, "{event:#?}");
    let error = event.error.clone().unwrap_or_default();
    assert!(error.contains("still streaming"), "{error}");
    // Later rounds abort for the same reason without filling the audit trail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.failover().history().len(), 1, "{:#?}", db.failover().history());
    let err = manual_failover(&db).await.unwrap_err();
    assert!(
        matches!(&err, Error::Failover(FailoverError::PrimaryStillStreaming { witnesses }) if witnesses.len() == 2),
        "{err}"
    );
    for i in 1..=2 {
        assert!(replication_state(cluster, i).await.0, "replica{i} is still a standby");
    }
}

#[tokio::test]
async fn a_live_primary_is_not_failed_over() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let err = db.failover().failover(None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Failover(FailoverError::PrimaryAlive { node }) if node.as_str() == "primary"),
        "{err}"
    );
    let event = db.failover().history().pop().unwrap();
    assert_eq!((event.kind, event.outcome), (FailoverKind::Manual, Outcome::Aborted));
    assert_eq!(steps(&event), [("confirm", Some("primary"), false)]);
    assert!(!replication_state(cluster, 0).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_down_during_the_failover_follows_the_new_primary_when_it_returns() {
    let cluster = start_with(LocalCluster::builder().replicas(2), "CREATE TABLE late_t (id int)").await;
    let dir = tempfile::tempdir().unwrap();
    let db = connect(config(&cluster, &dir.path().join("audit.jsonl"))).await;
    cluster.stop(1).await.unwrap();
    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    assert_eq!(event.outcome, Outcome::Completed, "{event:#?}");
    assert_eq!(event.new_primary.as_ref().map(|n| n.as_str()), Some("replica2"));
    assert!(event.repointed.is_empty(), "{event:#?}");
    sqlx::query("INSERT INTO late_t VALUES (1)").execute(&db).await.unwrap();

    // replica1 comes back still configured for the dead primary; the manager repoints it.
    cluster.set_primary(2).unwrap();
    cluster.start(1).await.unwrap();
    let repoint = wait_event(&db, FailoverKind::Repoint, Duration::from_secs(30)).await;
    assert_eq!(
        repoint.repointed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["replica1"]
    );
    assert_eq!(
        replication_state(&cluster, 1).await,
        (true, Some(i32::from(cluster.nodes()[2].port)))
    );
    wait_until_present(&cluster, 1, "late_t", &[1]).await;
    covet_tests::wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(20)).await;
    // Connections pooled before replica1 stopped fail once each (and are retried elsewhere).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&db)
            .await
            .unwrap();
        if node_name(&cluster, port) == "replica1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica1 serves no reads: {:#?}",
            db.manager().nodes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_would_lose_too_much_wal_is_refused() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&cluster, &dir.path().join("audit.jsonl"));
    config.failover.max_data_loss_bytes = Some(64 * 1024);
    let db = connect(config).await;
    // Both standbys lose their upstream; then the primary writes a few MB they never receive.
    for i in 1..=2 {
        set_upstream(&cluster, i, DEAD_PORT).await;
    }
    sqlx::query("CREATE TABLE loss_t AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 20000) g")
        .execute(&db)
        .await
        .unwrap();
    // The health loop has seen the primary's new position before it dies.
    db.manager().check_now().await;
    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    assert_eq!(event.outcome, Outcome::Aborted, "{event:#?}");
    assert!(
        event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("failover.max_data_loss_bytes")),
        "{event:#?}"
    );
    let err = manual_failover(&db).await.unwrap_err();
    assert!(
        matches!(&err, Error::Failover(FailoverError::DataLoss { bytes, limit: 65536, .. }) if *bytes > 1_000_000),
        "{err}"
    );
    for i in 1..=2 {
        assert!(replication_state(&cluster, i).await.0, "replica{i} was not promoted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_synchronous_replication_a_missing_standby_stops_the_automatic_failover() {
    // ANY 1 of 2: a commit may be acknowledged by replica1 alone. With replica1 gone too, no
    // one can tell whether replica2 has every acknowledged commit: wait, or let an operator
    // decide.
    let cluster = LocalCluster::builder()
        .replicas(2)
        .synchronous(true)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = connect(config(&cluster, &dir.path().join("audit.jsonl"))).await;
    cluster.stop(1).await.unwrap();
    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    assert_eq!(event.outcome, Outcome::Aborted, "{event:#?}");
    let error = event.error.unwrap_or_default();
    assert!(
        error.contains("2 standbys must answer") && error.contains("replica1"),
        "{error}"
    );
    assert!(replication_state(&cluster, 2).await.0, "replica2 is still a standby");
    // The operator's call: a manual failover goes ahead.
    let manual = manual_failover(&db).await.unwrap();
    assert_eq!(manual.new_primary.as_ref().map(|n| n.as_str()), Some("replica2"));
    assert!(!replication_state(&cluster, 2).await.0);
}

/// SIGSTOP of the primary with writes in flight; the standbys lose it after
/// `wal_receiver_timeout` and a failover promotes one. On SIGCONT the old primary commits what
/// it had received and answers: 3 such acknowledgments per run were lost writes. The handle
/// must have abandoned those statements (OutcomeUnknown): no write acknowledged after the
/// failover is lost; with synchronous replication, none at all. (Asynchronously, a commit
/// acknowledged just before the pause may not have reached a standby: that loss is
/// asynchronous replication's, as after a crash.) Returns how many were abandoned.
async fn paused_primary_loses_nothing_acknowledged(synchronous: bool) -> usize {
    let cluster = start_with(
        LocalCluster::builder()
            .replicas(2)
            .synchronous(synchronous)
            .setting("wal_receiver_timeout", "2s"),
        "CREATE TABLE p (id int PRIMARY KEY)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = connect(config(&cluster, &dir.path().join("audit.jsonl"))).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut unknown) = (Vec::new(), 0);
                let mut id = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    // 20 ms each: at any moment most writers are inside a statement, not between two.
                    match sqlx::query("INSERT INTO p SELECT $1 FROM pg_sleep(0.02)")
                        .bind(id)
                        .execute(&db)
                        .await
                    {
                        Ok(_) => acked.push((id, Instant::now())),
                        Err(e) if matches!(Error::from_sqlx(&e), Some(Error::OutcomeUnknown { .. })) => unknown += 1,
                        Err(_) => {}
                    }
                    id += 1;
                }
                (acked, unknown)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.pause(0).unwrap();
    let promoted = {
        let started = Instant::now();
        loop {
            let history = db.failover().history();
            if let Some(e) = history
                .iter()
                .find(|e| e.outcome == Outcome::Completed && e.new_primary.is_some())
            {
                break e.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no failover: {history:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Every acknowledgment from here on comes from the new primary, or from the old one
    // waking up: the ones this test is about.
    let promoted_at = Instant::now();
    cluster.resume(0).unwrap();
    // Time for the old primary to commit and answer what it had, had anyone listened.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut unknown) = (Vec::new(), 0);
    for w in writers {
        let (a, u) = w.await.unwrap();
        acked.extend(a);
        unknown += u;
    }
    let new = promoted.new_primary.clone().expect("a new primary");
    let index = cluster.nodes().iter().position(|n| n.name == new.as_str()).unwrap();
    let ids: Vec<i32> = acked.iter().map(|(id, _)| *id).collect();
    let mut conn = cluster.connect(index).await.unwrap();
    let present: Vec<i32> = sqlx::query_scalar("SELECT id FROM p WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let lost: Vec<&(i32, Instant)> = acked.iter().filter(|(id, _)| !present.contains(id)).collect();
    let lost_late = lost.iter().filter(|(_, at)| *at > promoted_at).count();
    assert!(acked.len() > 20, "the writers wrote: {}", acked.len());
    assert_eq!(lost_late, 0, "acknowledged after the pause, missing on {new}: {lost:?}");
    if synchronous {
        assert_eq!(
            lost.len(),
            0,
            "acknowledged under synchronous replication, missing on {new}"
        );
    }
    assert!(
        steps(&promoted).contains(&("abandon", Some("primary"), true)),
        "{promoted:#?}"
    );
    unknown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_that_wakes_after_the_failover_acknowledges_nothing() {
    let abandoned = paused_primary_loses_nothing_acknowledged(false).await;
    // The four writers were all waiting on the frozen primary: their statements were abandoned.
    assert!(abandoned >= 1, "abandoned: {abandoned}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_synchronous_primary_loses_no_acknowledged_write() {
    let abandoned = paused_primary_loses_nothing_acknowledged(true).await;
    assert!(abandoned >= 1, "abandoned: {abandoned}");
}

/// `FIRST 1 (replica1)`, replica2 outside the list and not streaming: every acknowledged commit
/// is on replica1 alone. With the primary and replica1 lost together, promoting replica2 (which
/// answers) lost every one of them (3,556 of 3,556 in the report): the automatic failover must
/// stop, naming replica1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_outside_the_synchronous_list_is_not_promoted_automatically() {
    let cluster = start_with(
        LocalCluster::builder().replicas(2),
        "CREATE TABLE s (id int PRIMARY KEY)",
    )
    .await;
    cluster
        .execute(0, "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (replica1)'")
        .await
        .unwrap();
    cluster.execute(0, "SELECT pg_reload_conf()").await.unwrap();
    set_upstream(&cluster, 2, DEAD_PORT).await;
    let dir = tempfile::tempdir().unwrap();
    let db = connect(config(&cluster, &dir.path().join("audit.jsonl"))).await;
    eventually(
        Duration::from_secs(10),
        || "the health loop never saw the synchronous setting".into(),
        || async {
            let sync: String =
                sqlx::query_scalar("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'")
                    .fetch_one(&db.using(covet_replication::Target::Primary))
                    .await
                    .unwrap_or_default();
            sync == "sync"
        },
    )
    .await;
    let ids: Vec<i32> = (0..200).collect();
    for id in &ids {
        sqlx::query("INSERT INTO s VALUES ($1)")
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
    }
    // Each commit waited for replica1's flush; its replay follows.
    wait_until_present(&cluster, 1, "s", &ids).await;
    let on_outsider = count_present(&cluster, 2, "s", &ids).await;
    assert_eq!(on_outsider, 0, "replica2 received none: promoting it loses all 200");
    cluster.kill(1).await.unwrap();
    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    assert_eq!(event.outcome, Outcome::Aborted, "{event:#?}");
    let error = event.error.unwrap_or_default();
    assert!(
        error.contains("1 standbys must answer") && error.contains("replica1"),
        "{error}"
    );
    assert!(replication_state(&cluster, 2).await.0, "replica2 is still a standby");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cascading_from_an_unreachable_standby_is_a_witness_that_the_primary_lives() {
    // primary -> replica1 -> replica2 (cascading). This process reaches neither the primary
    // nor replica1, only replica2, which streams from replica1: the primary may well be alive,
    // so nothing is promoted.
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    // Its slot lives on the primary, not on replica1.
    cluster
        .execute(2, "ALTER SYSTEM SET primary_slot_name = ''")
        .await
        .unwrap();
    set_upstream(&cluster, 2, cluster.nodes()[1].port).await;
    eventually(
        Duration::from_secs(20),
        || "replica2 never cascaded".into(),
        || async { replication_state(&cluster, 2).await.1 == Some(i32::from(cluster.nodes()[1].port)) },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&cluster, &dir.path().join("audit.jsonl"));
    config.failover.automatic = false;
    config.primary.port = 1;
    // replica1 keeps its real address (so replica2's sender is recognisably a standby of ours)
    // but cannot be reached: no such database.
    config.replicas[0].database = "no_such_database".into();
    let db = ReplicatedPool::connect_lazy(config).unwrap();
    let err = db.failover().failover(None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Failover(FailoverError::PrimaryStillStreaming { witnesses })
            if witnesses.iter().map(|w| w.as_str()).eq(["replica2"])),
        "{err}"
    );
    assert!(replication_state(&cluster, 2).await.0, "replica2 is still a standby");
}

/// The port of the one standby of `cluster` that is out of recovery; fails on none or several.
async fn only_primary(cluster: &LocalCluster) -> i32 {
    let mut primaries = Vec::new();
    for i in cluster.replicas() {
        let node = &cluster.nodes()[i];
        let mut conn = cluster.connect(i).await.unwrap();
        let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if !recovering {
            primaries.push(i32::from(node.port));
        }
    }
    assert_eq!(primaries.len(), 1, "servers out of recovery: {primaries:?}");
    primaries[0]
}

/// Where a write through `db` lands, once it lands on `port` (a process that lost the race
/// follows the winner when its health loop sees it).
async fn writes_reach(db: &ReplicatedPool, table: &str, port: i32, id: i32) {
    let sql = format!("INSERT INTO {table} VALUES ($1) RETURNING inet_server_port()");
    eventually(
        Duration::from_secs(30),
        || "writes through the pool never resumed".into(),
        || async {
            let landed = sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .fetch_one(db)
                .await;
            landed
                .inspect(|p| assert_eq!(*p, port, "a write went to another server than the one primary"))
                .is_ok()
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_that_see_the_same_crash_promote_one_standby_and_agree_on_it() {
    // Two application processes (two pools, each with its own health loop and failover
    // manager) under synchronous replication, both writing; the primary crashes. They may race
    // to promote: the election gives both the same standby (once the primary is gone, the
    // received positions stop moving), and whoever comes second finds it promoted, or promoting
    // (its pg_promote then waits for the same promotion), and follows. Never two primaries.
    let cluster = start_with(
        LocalCluster::builder().replicas(2).synchronous(true),
        "CREATE TABLE race_a (id int PRIMARY KEY); CREATE TABLE race_b (id int PRIMARY KEY)",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let a = connect(config(&cluster, &dir.path().join("a.jsonl"))).await;
    let b = connect(config(&cluster, &dir.path().join("b.jsonl"))).await;
    let (wa, wb) = (Writer::start(&a, "race_a"), Writer::start(&b, "race_b"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(0).await.unwrap();

    let completed = |db: &ReplicatedPool| {
        db.failover()
            .history()
            .into_iter()
            .filter(|e| {
                e.outcome == Outcome::Completed && matches!(e.kind, FailoverKind::Automatic | FailoverKind::Adopt)
            })
            .collect::<Vec<_>>()
    };
    let histories = || {
        format!(
            "not both switched: {:#?} {:#?}",
            a.failover().history(),
            b.failover().history()
        )
    };
    eventually(Duration::from_secs(40), histories, || async {
        !completed(&a).is_empty() && !completed(&b).is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked_a, _) = wa.finish().await;
    let (acked_b, _) = wb.finish().await;

    let port = only_primary(&cluster).await;
    let new = node_name(&cluster, port);
    let (ea, eb) = (completed(&a), completed(&b));
    // Both may have sent `pg_promote` to it while it was promoting (both then see it finish);
    // the server promoted once: one new timeline, the same in every event.
    assert!(
        ea.iter().chain(&eb).any(|e| e.kind == FailoverKind::Automatic),
        "{ea:#?} {eb:#?}"
    );
    for e in ea.iter().chain(&eb) {
        assert_eq!(e.new_primary.as_ref().map(|n| n.as_str()), Some(new.as_str()), "{e:#?}");
        assert_eq!(e.timeline, Some(2), "{e:#?}");
    }
    for db in [&a, &b] {
        assert_eq!(db.manager().node(&new).unwrap().role, covet_replication::Role::Primary);
    }
    writes_reach(&a, "race_a", port, 1_000_000).await;
    writes_reach(&b, "race_b", port, 1_000_000).await;
    // Acknowledged means on the new primary, for both processes.
    let new_index = cluster.nodes().iter().position(|n| i32::from(n.port) == port).unwrap();
    for (table, acked) in [("race_a", &acked_a), ("race_b", &acked_b)] {
        let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
        assert!(!ids.is_empty());
        assert_eq!(
            count_present(&cluster, new_index, table, &ids).await,
            ids.len() as i64,
            "{table}"
        );
    }
    // The other standby follows the new primary.
    let other = 3 - new_index;
    eventually(
        Duration::from_secs(20),
        || format!("node {other} does not follow {new}"),
        || async { replication_state(&cluster, other).await == (true, Some(port)) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_are_repointed_when_every_node_listens_on_the_same_port() {
    // Production servers all listen on 5432, each on its own machine: only the host tells the
    // old primary, the new one and the standbys apart (a port-only comparison would take the
    // standbys' stream from the primary for a stream from a standby, and fail over a live
    // primary). Here: 127.0.0.1-3, one port.
    let cluster = start_with(
        LocalCluster::builder().replicas(2).distinct_hosts(true),
        "CREATE TABLE hosts_t (id int PRIMARY KEY)",
    )
    .await;
    let nodes = cluster.nodes();
    assert!(nodes.iter().all(|n| n.port == nodes[0].port), "{nodes:?}");
    let dir = tempfile::tempdir().unwrap();
    let db = connect(config(&cluster, &dir.path().join("audit.jsonl"))).await;
    let addr: String = sqlx::query_scalar("SELECT host(inet_server_addr())")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(addr == nodes[1].host || addr == nodes[2].host, "a read went to {addr}");

    // A process cut off from the live primary (its address for it leads nowhere), while the
    // standbys stream from it on the same port as their own: they are witnesses, no failover.
    let mut cut_off = config(&cluster, &dir.path().join("cut_off.jsonl"));
    cut_off.primary.host = "127.0.0.9".into();
    cut_off.primary.pool.acquire_timeout = Duration::from_secs(1);
    let partitioned = ReplicatedPool::connect_lazy(cut_off).unwrap();
    let aborted = wait_event(&partitioned, FailoverKind::Automatic, Duration::from_secs(20)).await;
    assert_eq!(aborted.outcome, Outcome::Aborted, "{aborted:#?}");
    assert!(
        aborted.error.as_deref().is_some_and(|e| e.contains("still streaming")),
        "{aborted:#?}"
    );
    partitioned.close().await;

    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Automatic, Duration::from_secs(30)).await;
    assert_eq!(event.outcome, Outcome::Completed, "{event:#?}");
    let new = nodes
        .iter()
        .position(|n| event.new_primary.as_ref().is_some_and(|p| p.as_str() == n.name))
        .unwrap();
    let other = 3 - new;
    assert_eq!(
        event.repointed.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        [nodes[other].name.as_str()]
    );
    // The other standby streams from the new primary's address.
    let mut conn = cluster.connect(other).await.unwrap();
    let (host, port): (String, i32) =
        sqlx::query_as("SELECT sender_host, sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (host.as_str(), port),
        (nodes[new].host.as_str(), i32::from(nodes[new].port))
    );
    // Writes go to the new primary and reach the other standby.
    let at: String = sqlx::query_scalar("INSERT INTO hosts_t VALUES (1) RETURNING host(inet_server_addr())")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(at, nodes[new].host);
    wait_until_present(&cluster, other, "hosts_t", &[1]).await;
}

/// The nodes of `cluster` as one multi-host URL, in `order` (node indexes).
fn multi_host_url(cluster: &LocalCluster, order: &[usize]) -> String {
    let nodes = cluster.nodes();
    let hosts: Vec<String> = order.iter().map(|&i| format!("127.0.0.1:{}", nodes[i].port)).collect();
    format!("postgres://postgres@{}/postgres?sslmode=disable", hosts.join(","))
}

#[tokio::test]
async fn roles_come_from_the_servers_not_the_configuration() {
    let cluster = shared_cluster().await;
    let primary_port = i32::from(cluster.nodes()[cluster.primary()].port);
    // The primary listed last, after both standbys: node3 is the primary.
    let mut config = ReplicationConfig::from_url(&multi_host_url(cluster, &[1, 2, 0])).unwrap();
    config.health.interval = Duration::from_millis(100);
    config.failover.automatic = false;
    let db = connect(config).await;
    let (node, _) = db.explain("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(node.as_str(), "node3");
    let roles: Vec<(String, covet_replication::Role)> = db
        .manager()
        .nodes()
        .into_iter()
        .map(|n| (n.id.to_string(), n.role))
        .collect();
    assert_eq!(
        roles[0],
        ("node3".to_owned(), covet_replication::Role::Primary),
        "{roles:?}"
    );
    let (port, recovering): (i32, bool) = sqlx::query_as("SELECT inet_server_port(), pg_is_in_recovery()")
        .fetch_one(&db.using(covet_replication::Target::Primary))
        .await
        .unwrap();
    assert_eq!((port, recovering), (primary_port, false));
    // node1, configured as the primary, is a replica: it serves reads.
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db.using(covet_replication::Target::Node("node1".into())))
        .await
        .unwrap();
    assert_eq!(port, i32::from(cluster.nodes()[1].port));
    // The URL as such, as `PgPool::connect(&url)` takes it: the same roles.
    let from_url = covet_replication::ReplicatedPool::connect(&multi_host_url(cluster, &[1, 2, 0]))
        .await
        .unwrap();
    let (node, _) = from_url.explain("INSERT INTO t VALUES (1)").await.unwrap();
    assert_eq!(node.as_str(), "node3");
    let bad = covet_replication::ReplicatedPool::connect("postgres://x@h:99999/db")
        .await
        .unwrap_err();
    assert!(matches!(bad, covet_replication::Error::Config(_)), "{bad}");
    from_url.close().await;
    let adopted = db.failover().history();
    assert!(
        adopted
            .iter()
            .any(|e| e.kind == FailoverKind::Adopt && e.new_primary.as_ref().is_some_and(|n| n.as_str() == "node3")),
        "{adopted:#?}"
    );
    // The same with the roles swapped in a table config: a configured role is only a hint.
    let mut swapped = test_config(cluster);
    std::mem::swap(&mut swapped.primary, &mut swapped.replicas[1]);
    swapped.failover.automatic = false;
    let db = connect(swapped).await;
    let (node, _) = db.explain("UPDATE t SET a = 1").await.unwrap();
    assert_eq!(node.as_str(), "primary");
}

/// Errors of a writer: refusals (25006) and the rest.
fn refusals(failed: &[String]) -> usize {
    failed.iter().filter(|e| e.contains("read-only transaction")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_made_by_another_process_fails_no_write_here() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE xs_t (id int PRIMARY KEY)").await;
    config.failover.automatic = false;
    // The application's handle writes; another handle (as `covet switchover` in another process
    // would) moves the primary. They share nothing but the servers.
    let app = connect(config.clone()).await;
    let operator = connect(config).await;
    let writer = Writer::start(&app, "xs_t");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let called = Instant::now();
    let event = operator.failover().switchover(Some("replica2")).await.unwrap();
    let promote = event.steps.iter().find(|s| s.name == "promote").expect("promoted");
    // When pg_promote returned (the step's time): the new primary accepted writes from then.
    let promoted_at = called + promote.after;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, failed) = writer.finish().await;
    println!(
        "switchover took {:?}; {} writes acknowledged, {} failed: {:?}",
        event.duration,
        acked.len(),
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(refusals(&failed), 0, "writes refused as read-only: {failed:?}");
    // The fence ends this handle's sessions on the old primary: a statement running at that
    // moment has an unknown outcome (never resent). One writer: at most one.
    assert!(failed.len() <= 1, "{failed:?}");
    let first_new = acked
        .iter()
        .find(|(_, port, _)| node_name(&cluster, *port) == "replica2")
        .expect("writes reached the new primary");
    let waited = first_new.2.saturating_duration_since(promoted_at);
    println!("first write on the new primary {waited:?} after pg_promote returned");
    let ids: Vec<i32> = acked.iter().map(|(id, ..)| *id).collect();
    assert_eq!(
        count_present(&cluster, 2, "xs_t", &ids).await,
        ids.len() as i64,
        "no write lost"
    );
    assert!(
        acked
            .iter()
            .skip_while(|(_, p, _)| node_name(&cluster, *p) == "primary")
            .all(|(_, p, _)| node_name(&cluster, *p) == "replica2"),
        "no write on the old primary after the first on the new"
    );
    assert!(
        app.failover().history().iter().any(|e| e.kind == FailoverKind::Adopt),
        "{:#?}",
        app.failover().history()
    );
}

#[tokio::test]
async fn two_writable_nodes_are_reported_and_writes_go_to_the_higher_timeline() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE tw_t (id serial PRIMARY KEY)").await;
    config.failover.automatic = false;
    // Nobody fences the old primary: it stays writable.
    config.failover.fence = false;
    let db = connect(config).await;
    let warning = |db: &ReplicatedPool| {
        db.status()
            .warnings
            .into_iter()
            .find(|w| w.contains("answer as writable primaries"))
    };
    assert_eq!(warning(&db), None, "one writable node yet");
    // Someone promotes replica2 by hand, leaving the primary as it was.
    cluster.promote(2).await.unwrap();
    writes_go_to(&db, &cluster, "tw_t", "replica2").await;
    let adopt = wait_event(&db, FailoverKind::Adopt, Duration::from_secs(5)).await;
    assert!(adopt.steps[0].detail.contains("two writable nodes"), "{adopt:#?}");
    eventually(
        Duration::from_secs(5),
        || format!("no warning: {:?}", db.status().warnings),
        || async { warning(&db).is_some() },
    )
    .await;
    let warning = warning(&db).expect("two writable nodes reported");
    assert!(
        warning.contains("primary, replica2") || warning.contains("replica2, primary"),
        "{warning}"
    );
    assert!(warning.contains("writes go to replica2"), "{warning}");
    // The old primary really is writable still (the rule, not the servers, keeps writes off it).
    let mut old = cluster.connect(0).await.unwrap();
    sqlx::query("INSERT INTO tw_t VALUES (-1)")
        .execute(&mut old)
        .await
        .unwrap();
}

/// Waits until `db` routes writes to `node`, then checks that one lands there.
async fn writes_go_to(db: &ReplicatedPool, cluster: &LocalCluster, table: &str, node: &str) {
    let insert = format!("INSERT INTO {table} VALUES (DEFAULT) RETURNING inet_server_port()");
    eventually(
        Duration::from_secs(10),
        || format!("writes never routed to {node}: {:#?}", db.failover().history()),
        || async { db.explain(&insert).await.is_ok_and(|(n, _)| n.as_str() == node) },
    )
    .await;
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(insert))
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), node);
}

/// `default_transaction_read_only` on node `i`: `on` once fenced.
async fn read_only_setting(cluster: &LocalCluster, i: usize) -> String {
    let mut conn = cluster.connect(i).await.unwrap();
    sqlx::query_scalar("SHOW default_transaction_read_only")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

fn promoted_by_us(db: &ReplicatedPool) -> usize {
    db.failover()
        .history()
        .iter()
        .filter(|e| e.steps.iter().any(|s| s.name == "promote"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_follow_mode_nothing_is_promoted_fenced_or_repointed_by_us() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE fm_t (id serial PRIMARY KEY)").await;
    config.failover.mode = FailoverMode::Follow;
    config.failover.cooldown = Duration::from_millis(100);
    let db = connect(config).await;
    assert_eq!(db.failover().mode(), FailoverMode::Follow);
    let refused = db.failover().switchover(None).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Failover(FailoverError::Following { reason }) if reason == "failover.mode = follow"),
        "{refused}"
    );
    cluster.kill(0).await.unwrap();
    covet_tests::wait_state(&db, "primary", NodeState::Down, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(promoted_by_us(&db), 0, "{:#?}", db.failover().history());
    for i in [1, 2] {
        assert!(replication_state(&cluster, i).await.0, "node {i} still a standby");
    }
    // Whoever manages the cluster promotes replica1: followed.
    cluster.promote(1).await.unwrap();
    writes_go_to(&db, &cluster, "fm_t", "replica1").await;
    // replica2 is left to the manager: not repointed by us.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let replica1_port = i32::from(cluster.nodes()[1].port);
    assert_ne!(replication_state(&cluster, 2).await.1, Some(replica1_port));
    // The old primary comes back writable: not fenced by us; two writable nodes, writes stay
    // on the higher timeline.
    cluster.start(0).await.unwrap();
    eventually(
        Duration::from_secs(10),
        || format!("{:?}", db.status().warnings),
        || async {
            db.status()
                .warnings
                .iter()
                .any(|w| w.contains("answer as writable primaries"))
        },
    )
    .await;
    assert_eq!(
        read_only_setting(&cluster, 0).await,
        "off",
        "the old primary was not fenced by us"
    );
    writes_go_to(&db, &cluster, "fm_t", "replica1").await;
    assert_eq!(promoted_by_us(&db), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_mode_stops_acting_once_it_sees_a_promotion_it_did_not_make() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE om_t (id int PRIMARY KEY)").await;
    config.failover.cooldown = Duration::from_millis(100);
    let db = connect(config).await;
    assert_eq!(db.failover().mode(), FailoverMode::Own);
    // Someone else promotes replica2 (the old primary still up): this process follows it, and
    // from now on acts no more.
    cluster.promote(2).await.unwrap();
    eventually(
        Duration::from_secs(10),
        || format!("{:#?}", db.failover().history()),
        || async { db.failover().mode() == FailoverMode::Follow },
    )
    .await;
    assert_eq!(
        db.explain("INSERT INTO om_t VALUES (1)").await.unwrap().0.as_str(),
        "replica2"
    );
    // The new primary dies: this process does not fail over (the other manager will).
    cluster.kill(2).await.unwrap();
    covet_tests::wait_state(&db, "replica2", NodeState::Down, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(promoted_by_us(&db), 0, "{:#?}", db.failover().history());
    assert!(replication_state(&cluster, 1).await.0, "replica1 is still a standby");
    let refused = db.failover().failover(None).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Failover(FailoverError::Following { reason }) if reason.contains("replica2 was promoted elsewhere")),
        "{refused}"
    );
    // The old primary was not fenced either: following, it fences nothing.
    assert_eq!(read_only_setting(&cluster, 0).await, "off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_mode_proposes_a_failover_and_promotes_only_once_approved() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE sv_t (id int PRIMARY KEY)").await;
    config.failover.mode = FailoverMode::Supervised;
    config.failover.approval_timeout = Duration::from_secs(30);
    let db = connect(config).await;
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    db.failover().set_approver(move |event: FailoverEvent| {
        seen.lock().unwrap().push(event);
        async { false }
    });
    let nothing = db.failover().approve().await.unwrap_err();
    assert!(
        matches!(nothing, Error::Failover(FailoverError::NothingToApprove)),
        "{nothing}"
    );
    cluster.kill(0).await.unwrap();
    eventually(
        Duration::from_secs(10),
        || format!("approver never asked: {:#?}", db.failover().history()),
        || async { !asked.lock().unwrap().is_empty() },
    )
    .await;
    let proposal = asked.lock().unwrap()[0].clone();
    assert_eq!(proposal.outcome, Outcome::Aborted);
    let error = proposal.error.clone().unwrap();
    assert!(error.contains("would promote replica"), "{error}");
    // Not approved: nothing is promoted meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(promoted_by_us(&db), 0);
    for i in [1, 2] {
        assert!(replication_state(&cluster, i).await.0, "node {i} still a standby");
    }
    assert_eq!(asked.lock().unwrap().len(), 1, "asked once per proposal");
    let event = db.failover().approve().await.unwrap();
    assert_eq!(
        (event.kind, event.outcome),
        (FailoverKind::Approved, Outcome::Completed)
    );
    let new = event.new_primary.clone().unwrap();
    assert!(
        error.contains(&format!("would promote {new}")),
        "promoted what it proposed: {error}"
    );
    let port: i32 = sqlx::query_scalar("INSERT INTO sv_t VALUES (1) RETURNING inet_server_port()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(&cluster, port), new.as_str());
    let again = db.failover().approve().await.unwrap_err();
    assert!(
        matches!(again, Error::Failover(FailoverError::NothingToApprove)),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_callback_can_approve_a_proposed_failover() {
    let (cluster, _dir, mut config) = two_standbys_with("CREATE TABLE ap_t (id int PRIMARY KEY)").await;
    config.failover.mode = FailoverMode::Supervised;
    let db = connect(config).await;
    db.failover()
        .set_approver(|event: FailoverEvent| async move { event.error.is_some_and(|e| e.contains("would promote")) });
    cluster.kill(0).await.unwrap();
    let event = wait_event(&db, FailoverKind::Approved, Duration::from_secs(15)).await;
    assert_eq!(event.outcome, Outcome::Completed, "{event:#?}");
    let new = event.new_primary.unwrap();
    let port: i32 = sqlx::query_scalar("INSERT INTO ap_t VALUES (1) RETURNING inet_server_port()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(&cluster, port), new.as_str());
}

/// `PgListener::connect_with(&pool)`'s counterpart: a listener on the primary that listens
/// again on the new one after a switchover (the old primary stays up, fenced: its connection
/// does not break) and after a crash and failover, saying so with one `None` each time. Every
/// notification sent through the handle while it listens arrives; sqlx's own listener, left on
/// the first primary, hears none after the switchover (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_follows_the_primary_across_a_switchover_and_a_failover() {
    async fn notify(db: &ReplicatedPool, phase: &str, n: usize) {
        for i in 0..n {
            sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY covet_ch, '{phase}-{i}'")))
                .execute(db)
                .await
                .unwrap();
        }
    }
    /// What arrives until `n` notifications have (`None`s counted apart), within 20 s.
    async fn receive(listener: &mut covet_replication::Listener, n: usize) -> (Vec<String>, usize) {
        let (mut got, mut nones) = (Vec::new(), 0);
        tokio::time::timeout(Duration::from_secs(20), async {
            while got.len() < n {
                match listener.try_recv().await {
                    Ok(Some(notification)) => got.push(notification.payload().to_owned()),
                    Ok(None) => nones += 1,
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("got {got:?}, {nones} reconnections"));
        (got, nones)
    }
    let phase = |name: &str, n: usize| (0..n).map(|i| format!("{name}-{i}")).collect::<Vec<_>>();

    let (cluster, _dir, mut config) = two_standbys_with("SELECT 1").await;
    config.failover.automatic = false;
    let db = connect(config).await;
    let mut listener = db.listener().await.unwrap();
    listener.listen("covet_ch").await.unwrap();
    let mut control = sqlx::postgres::PgListener::connect(&cluster.url(0).unwrap())
        .await
        .unwrap();
    control.listen("covet_ch").await.unwrap();

    notify(&db, "first", 5).await;
    assert_eq!(receive(&mut listener, 5).await, (phase("first", 5), 0));
    assert_eq!(listener.node().as_str(), "primary");
    // Statements run on its own connection, as on `&mut PgListener`.
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut listener)
        .await
        .unwrap();
    assert_eq!(node_name(&cluster, port), "primary");
    for expected in phase("first", 5) {
        assert_eq!(control.recv().await.unwrap().payload(), expected);
    }

    db.failover().switchover(Some("replica2")).await.unwrap();
    // The new primary's notifications, sent once the listener has moved (its `None`).
    assert_eq!(listener.try_recv().await.unwrap().map(|n| n.payload().to_owned()), None);
    assert_eq!(listener.node().as_str(), "replica2");
    notify(&db, "switched", 5).await;
    assert_eq!(receive(&mut listener, 5).await, (phase("switched", 5), 0));
    let heard = tokio::time::timeout(Duration::from_millis(500), control.try_recv()).await;
    assert!(
        !matches!(heard, Ok(Ok(Some(_)))),
        "sqlx's listener on the old primary heard {heard:?}"
    );

    cluster.kill(2).await.unwrap();
    manual_failover(&db).await.unwrap();
    assert_eq!(listener.try_recv().await.unwrap().map(|n| n.payload().to_owned()), None);
    assert_eq!(listener.node().as_str(), "replica1");
    notify(&db, "failed-over", 5).await;
    assert_eq!(receive(&mut listener, 5).await, (phase("failed-over", 5), 0));
    assert_eq!(listener.reconnects(), 2);
    let mut stream = listener.into_stream();
    notify(&db, "stream", 1).await;
    let notification = futures::StreamExt::next(&mut stream).await.unwrap().unwrap();
    assert_eq!(notification.payload(), "stream-0");
}
