//! Destructive routing tests: each has its own cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use covet_replication::testing::LocalCluster;
use covet_replication::{NodeState, ReplicatedPool, Target};
use covet_tests::{connect, node_name, test_config, wait_state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_replica_under_read_load_fails_no_read() {
    let cluster = Arc::new(LocalCluster::builder().replicas(2).start().await.unwrap());
    let db = connect(test_config(&cluster)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let on_replica1_after_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (db, stop, ok, killed, late, cluster) = (
            db.clone(),
            stop.clone(),
            ok.clone(),
            killed.clone(),
            on_replica1_after_kill.clone(),
            cluster.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Only a read that started after the kill returned cannot have been served by
                // the node (one in flight may have had its answer just before the SIGKILL).
                let started_after_kill = killed.load(Ordering::Relaxed);
                match sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                    .fetch_one(&db)
                    .await
                {
                    Ok(port) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if started_after_kill && node_name(&cluster, port) == "replica1" {
                            late.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(1).await.unwrap();
    killed.store(true, Ordering::Relaxed);
    wait_state(&db, "replica1", NodeState::Down, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for r in readers {
        failures.extend(r.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed reads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran");
    assert_eq!(
        on_replica1_after_kill.load(Ordering::Relaxed),
        0,
        "no read served by a dead node"
    );
    println!("reads: {}, counters: {:?}", ok.load(Ordering::Relaxed), db.counters());

    cluster.start(1).await.unwrap();
    wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(20)).await;
    // A pooled connection from before the crash fails once more (retried elsewhere, marking the
    // node unhealthy until the next checks): allow the health loop a few rounds.
    let mut back = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !back && std::time::Instant::now() < deadline {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&db)
            .await
            .unwrap();
        back = node_name(&cluster, port) == "replica1";
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        back,
        "the restarted replica serves reads again: {:#?} {:?}",
        db.manager().nodes(),
        db.counters()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_replica_drains_without_failing_in_flight_queries() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let db = connect(test_config(&cluster)).await;
    let pinned = db.using(Target::Node("replica1".into()));
    let slow = tokio::spawn(async move {
        sqlx::query_scalar::<_, i32>("SELECT inet_server_port() FROM pg_sleep(1)")
            .fetch_one(&pinned)
            .await
    });
    // Wait until the slow query is running on replica1.
    for _ in 0..200 {
        if db.manager().node("replica1").unwrap().in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    db.manager()
        .remove_replica("replica1", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "removal waited for the in-flight query"
    );
    let port = slow.await.unwrap().expect("the in-flight query finished normally");
    assert_eq!(node_name(&cluster, port), "replica1");
    assert!(db.manager().node("replica1").is_none());
    for _ in 0..50 {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(node_name(&cluster, port), "replica2");
    }
    // And it can come back at run time.
    let cfg = cluster
        .replication_config()
        .replicas
        .into_iter()
        .find(|r| r.id == "replica1")
        .unwrap();
    db.manager().add_replica(cfg).await.unwrap();
    wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn connect_fails_clearly_without_a_primary() {
    let cluster = LocalCluster::builder().replicas(1).start().await.unwrap();
    let config = test_config(&cluster);
    cluster.stop(0).await.unwrap();
    let mut config = config;
    config.primary.pool.acquire_timeout = Duration::from_secs(1);
    let err = ReplicatedPool::connect(config).await.unwrap_err();
    assert!(
        matches!(err, covet_replication::Error::Database { ref node, .. } if node.as_str() == "primary"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_conflict_is_retried_on_another_replica() {
    // Without feedback the primary vacuums away rows a standby query still sees, and the
    // standby cancels that query after 100 ms: "conflict with recovery" (SQLSTATE 40001).
    let cluster = LocalCluster::builder()
        .replicas(2)
        .setting("hot_standby_feedback", "off")
        .setting("max_standby_streaming_delay", "100ms")
        .start()
        .await
        .unwrap();
    cluster
        .execute(
            0,
            "CREATE TABLE conflict_t (id int); INSERT INTO conflict_t SELECT generate_series(1, 1000)",
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let mut config = test_config(&cluster);
    // The first attempt all but surely goes to replica1.
    config.replicas[0].weight = 10_000;
    let db = connect(config).await;
    let reader = db.clone();
    let slow = tokio::spawn(async move {
        sqlx::query_scalar::<_, i32>(
            "SELECT inet_server_port() FROM (SELECT count(*) FROM conflict_t) c, pg_sleep(1.5)",
        )
        .fetch_one(&reader)
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.execute(0, "DELETE FROM conflict_t").await.unwrap();
    cluster.execute(0, "VACUUM conflict_t").await.unwrap();
    let port = slow.await.unwrap().expect("the conflicted read succeeded elsewhere");
    assert_eq!(node_name(&cluster, port), "replica2");
    assert_eq!(db.counters().retries, 1);
    assert_eq!(db.counters().errors, 0);
    // A conflict is not a connection failure: replica1 stays in rotation.
    assert_eq!(db.manager().node("replica1").unwrap().state, NodeState::Healthy);
}

/// A standby whose pg_hba.conf starts rejecting us (FATAL 28000) after the handle connected:
/// new connections to it fail before anything is sent, its open ones still work. 14 of 30
/// concurrent reads failed with 0 retries, and the node stayed healthy because the health check
/// reused its open connection. Every read must move on, and the node must go down and stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refusing_new_connections_fails_no_read_and_goes_down() {
    use sqlx::Connection;
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let db = connect(test_config(&cluster)).await;
    let mut admin = cluster.connect(1).await.unwrap();
    let hba = cluster.dir().join("node1").join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all all 127.0.0.0/8 reject\n{old}")).unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    let refused = sqlx::PgConnection::connect_with(&cluster.connect_options(1).unwrap()).await;
    let code = refused
        .err()
        .and_then(|e| e.into_database_error())
        .and_then(|e| e.code().map(|c| c.into_owned()));
    assert_eq!(code.as_deref(), Some("28000"), "the standby rejects new connections");

    let mut failures = Vec::new();
    let mut served = std::collections::HashMap::<String, usize>::new();
    for _ in 0..5 {
        let reads = (0..30).map(|_| {
            let db = db.clone();
            async move {
                sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                    .fetch_one(&db)
                    .await
            }
        });
        for result in futures::future::join_all(reads).await {
            match result {
                Ok(port) => *served.entry(node_name(&cluster, port)).or_default() += 1,
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    assert_eq!(failures, Vec::<String>::new(), "served: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 150);
    wait_state(&db, "replica1", NodeState::Down, Duration::from_secs(10)).await;
    // It stays down: the health check now connects anew and is refused too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(db.manager().node("replica1").unwrap().state, NodeState::Down);
    std::fs::write(&hba, old).unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .unwrap();
    wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(10)).await;
}

/// 16 readers through `db` while standby 1 of `cluster` is stopped (SIGSTOP) for `pause`:
/// the slowest read, the failures, the reads.
async fn reads_while_hung(
    db: &ReplicatedPool,
    cluster: &LocalCluster,
    pause: Duration,
) -> (Duration, Vec<String>, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut slowest, mut failures, mut reads) = (Duration::ZERO, Vec::new(), 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let started = std::time::Instant::now();
                    match sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                        .fetch_one(&db)
                        .await
                    {
                        Ok(_) => reads += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                    slowest = slowest.max(started.elapsed());
                }
                (slowest, failures, reads)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.pause(1).unwrap();
    tokio::time::sleep(pause).await;
    cluster.resume(1).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut slowest, mut failures, mut reads) = (Duration::ZERO, Vec::new(), 0);
    for r in readers {
        let (s, f, n) = r.await.unwrap();
        slowest = slowest.max(s);
        failures.extend(f);
        reads += n;
    }
    (slowest, failures, reads)
}

/// SIGSTOP of a standby for 8 s under 16 readers: reads already sent to it waited for as long as
/// it hung (4-5 of 16 readers blocked 10-15 s). Once health checks find it unresponsive its
/// reads are abandoned and retried elsewhere: no read fails, none waits for the pause to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_on_a_hung_replica_move_on_when_health_gives_up_on_it() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let db = connect(test_config(&cluster)).await;
    let (slowest, failures, reads) = reads_while_hung(&db, &cluster, Duration::from_secs(8)).await;
    // Awake again, it comes back into rotation.
    wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(10)).await;
    assert_eq!(failures, Vec::<String>::new());
    assert!(reads > 1_000, "reads went on: {reads}");
    // One failed check (the 1 s health timeout) marks it unhealthy; the pause lasts 8 s.
    assert!(
        slowest < Duration::from_secs(3),
        "a read waited {slowest:?} on the hung replica"
    );
    let abandoned_retries = db.counters().retries;
    assert!(
        abandoned_retries >= 1,
        "the reads in flight on it were retried: {abandoned_retries}"
    );
}

/// `routing.read_timeout`: a read sent to a hung standby is abandoned at its deadline and
/// retried elsewhere before health gives up on the standby (here it would take 10 s, longer
/// than the 5 s pause). The control, without the deadline, waits out the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_timeout_moves_reads_off_a_hung_replica_before_health_does() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let mut config = test_config(&cluster);
    config.health.timeout = Duration::from_secs(10);
    let pause = Duration::from_secs(5);

    config.routing.read_timeout = Some(Duration::from_millis(300));
    let db = connect(config.clone()).await;
    let (slowest, failures, reads) = reads_while_hung(&db, &cluster, pause).await;
    assert_eq!(failures, Vec::<String>::new());
    assert!(reads > 1_000, "reads went on: {reads}");
    assert!(
        slowest < Duration::from_secs(2),
        "a read waited {slowest:?} on the hung replica"
    );
    let timeouts = db.counters().read_timeouts;
    println!("read_timeout 300ms: slowest {slowest:?}, {timeouts} abandoned at the deadline, {reads} reads");
    assert!(timeouts >= 1, "no read hit the deadline: {timeouts}");
    db.close().await;
    cluster.wait_streaming().await.unwrap();

    config.routing.read_timeout = None;
    let control = connect(config).await;
    let (slowest, failures, _) = reads_while_hung(&control, &cluster, pause).await;
    assert_eq!(failures, Vec::<String>::new());
    println!("no read_timeout: slowest {slowest:?}");
    assert!(
        slowest >= Duration::from_secs(4),
        "the control did not wait out the pause: {slowest:?}"
    );
    assert_eq!(control.counters().read_timeouts, 0);
}

/// The health loop used to run failover inline: for the whole of a failover (up to
/// promote_timeout + repoint_timeout) no node was probed, so a replica that died meanwhile kept
/// its state until the failover ended. Failover runs on its own task now.
///
/// A slow failover for real: replica1 lost its upstream before the last writes, which
/// replica2 and replica3 received; both are excluded from promotion, so replica1 is promoted
/// and they, ahead of its timeline's fork, never stream from it: the repoint step waits its
/// full timeout for them. replica3 is killed in the meantime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_keeps_probing_while_a_failover_runs() {
    use covet_replication::failover::{FailoverKind, Outcome};
    use covet_tests::{DEAD_PORT, set_upstream};
    use std::time::Instant;
    let cluster = LocalCluster::builder().replicas(3).start().await.unwrap();
    let mut config = test_config(&cluster);
    config.health.timeout = Duration::from_millis(500);
    config.failover.exclude = vec!["replica2".into(), "replica3".into()];
    config.failover.repoint_timeout = Duration::from_secs(8);
    let db = connect(config).await;
    set_upstream(&cluster, 1, DEAD_PORT).await;
    cluster
        .execute(0, "CREATE TABLE after_cut AS SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    cluster.kill(0).await.unwrap();
    let started = Instant::now();
    // The failover starts once health has seen the primary down.
    while !db.failover().in_progress() {
        assert!(started.elapsed() < Duration::from_secs(10), "no failover started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(3).await.unwrap();
    let killed = Instant::now();
    let mut down_after = None;
    while db.failover().in_progress() {
        if down_after.is_none() && db.manager().node("replica3").unwrap().state == NodeState::Down {
            down_after = Some(killed.elapsed());
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the failover never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = killed.elapsed();
    let event = db
        .failover()
        .history()
        .into_iter()
        .find(|e| e.kind == FailoverKind::Automatic)
        .expect("an automatic failover event");
    assert_eq!(event.outcome, Outcome::Completed, "{event:#?}");
    assert_eq!(
        event.new_primary.as_ref().map(|n| n.as_str()),
        Some("replica1"),
        "{event:#?}"
    );
    // replica2 replayed past the new timeline's fork: it connects to replica1 and streams for a
    // moment before it is cut off, which the repoint step once took for success (seen in 1 of
    // 2 runs). It is not following, and says so.
    let repoint = event
        .steps
        .iter()
        .find(|s| s.name == "repoint" && s.node.as_ref().is_some_and(|n| n.as_str() == "replica2"));
    assert!(repoint.is_some_and(|s| !s.ok), "{event:#?}");
    assert!(!event.repointed.iter().any(|n| n.as_str() == "replica2"), "{event:#?}");
    // The failover went on for seconds after the kill, and health saw replica3 go down long
    // before it ended (failure_threshold checks 100 ms apart, each failing at once).
    assert!(
        took > Duration::from_secs(3),
        "the failover ended {took:?} after the kill: {event:#?}"
    );
    let down_after = down_after
        .unwrap_or_else(|| panic!("replica3 still not down when the failover ended, {took:?} after the kill"));
    assert!(
        down_after < Duration::from_secs(2),
        "replica3 down {down_after:?} after the kill"
    );
}
