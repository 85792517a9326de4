//! Lag monitoring against real replication: alerts, rotation, status, metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use covet_replication::testing::LocalCluster;
use covet_replication::{
    NodeState, ReplicatedPool,
    config::LagConfig,
    lag::{AlertKind, Severity},
};
use covet_tests::{connect, node_name, test_config, wait_state};

/// Updates a row on the primary every 20 ms until stopped: WAL keeps flowing.
fn steady_writes(cluster: Arc<LocalCluster>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn = cluster.connect(0).await.unwrap();
        while !stop.load(Ordering::Relaxed) {
            sqlx::query("UPDATE lag_t SET v = v + 1")
                .execute(&mut conn)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn readers_of(db: &ReplicatedPool, cluster: &LocalCluster, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(db)
            .await
            .unwrap();
        seen.push(node_name(cluster, port));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replica_raises_alerts_leaves_rotation_and_comes_back() {
    let cluster = Arc::new(LocalCluster::builder().replicas(2).start().await.unwrap());
    cluster
        .execute(0, "CREATE TABLE lag_t (v int); INSERT INTO lag_t VALUES (0)")
        .await
        .unwrap();
    let mut config = test_config(&cluster);
    let mut lag = LagConfig::default();
    lag.thresholds.info = Duration::from_millis(300);
    lag.thresholds.warning = Duration::from_millis(600);
    lag.thresholds.error = Duration::from_millis(1200);
    lag.thresholds.critical = Duration::from_secs(60);
    lag.readmit_after = Duration::from_millis(500);
    config.lag = lag;
    config.replicas[0].max_lag = Some(Duration::from_millis(1500));
    let db = connect(config).await;

    // One callback that records, one that sleeps, one that panics: the first must not wait.
    let received: Arc<Mutex<Vec<(covet_replication::lag::Alert, SystemTime)>>> = Arc::default();
    let slow_calls = Arc::new(Mutex::new(0));
    {
        let slow_calls = slow_calls.clone();
        db.lag_monitor().register_alert_callback(move |_| {
            *slow_calls.lock().unwrap() += 1;
            tokio::time::sleep(Duration::from_secs(30))
        });
    }
    db.lag_monitor().register_alert_callback(|alert| async move {
        panic!("a callback that panics on {alert:?}");
    });
    {
        let received = received.clone();
        db.lag_monitor().register_alert_callback(move |alert| {
            received.lock().unwrap().push((alert, SystemTime::now()));
            async {}
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer = steady_writes(cluster.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.pause_replay(1).await.unwrap();
    wait_state(&db, "replica1", NodeState::Lagging, Duration::from_secs(10)).await;
    assert!(
        readers_of(&db, &cluster, 100).await.iter().all(|n| n == "replica2"),
        "a lagging replica takes no reads"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.lag_monitor().severity("replica1") != Some(Severity::Error) {
        assert!(
            Instant::now() < deadline,
            "no error alert: {:?}",
            db.lag_monitor().recent_alerts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    cluster.resume_replay(1).await.unwrap();
    wait_state(&db, "replica1", NodeState::Healthy, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.lag_monitor().severity("replica1").is_some() {
        assert!(
            Instant::now() < deadline,
            "alert not cleared: {:?}",
            db.lag_monitor().recent_alerts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        readers_of(&db, &cluster, 100).await.iter().any(|n| n == "replica1"),
        "readmitted to rotation"
    );
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let received = received.lock().unwrap().clone();
    let events: Vec<(AlertKind, Option<Severity>)> = received
        .iter()
        .filter(|(a, _)| a.node.as_str() == "replica1")
        .map(|(a, _)| (a.kind, a.severity))
        .collect();
    println!("{events:?}");
    let pos = |sev| events.iter().position(|&(_, s)| s == Some(sev)).unwrap_or(usize::MAX);
    assert!(pos(Severity::Info) < pos(Severity::Warning), "{events:?}");
    assert!(pos(Severity::Warning) < pos(Severity::Error), "{events:?}");
    assert_eq!(events.last(), Some(&(AlertKind::Cleared, None)), "{events:?}");
    for (alert, at) in &received {
        if alert.kind == AlertKind::Raised || alert.kind == AlertKind::Escalated {
            let threshold = match alert.severity {
                Some(Severity::Info) => 0.3,
                Some(Severity::Warning) => 0.6,
                _ => 1.2,
            };
            assert!(alert.lag_seconds >= threshold, "{alert:?}");
        }
        // The sleeping and the panicking callbacks held nothing up.
        let delay = at.duration_since(alert.at).unwrap_or_default();
        assert!(delay < Duration::from_millis(500), "alert delivered {delay:?} late");
    }
    assert_eq!(
        *slow_calls.lock().unwrap(),
        1,
        "the slow callback is still on its first alert"
    );
    let stats = db.lag_monitor().stats("replica1").unwrap();
    assert!(stats.max >= 1.2 && stats.samples > 10, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_cluster_reports_zero_lag_for_a_minute() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    let db = connect(test_config(&cluster)).await;
    let started = Instant::now();
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(60) {
        for node in db.manager().nodes() {
            assert_eq!(node.lag, Duration::ZERO, "{node:?} after {:?}", started.elapsed());
            assert_eq!(node.state, NodeState::Healthy, "{node:?}");
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 300);
    assert!(
        db.lag_monitor().recent_alerts().is_empty(),
        "{:?}",
        db.lag_monitor().recent_alerts()
    );
}

#[tokio::test]
async fn the_status_report_serializes_without_secrets() {
    let cluster = LocalCluster::builder()
        .replicas(2)
        .password("pw-Secr3t-xyz")
        .start()
        .await
        .unwrap();
    let db = connect(test_config(&cluster)).await;
    for _ in 0..20 {
        let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&db).await.unwrap();
    }
    sqlx::query("CREATE TABLE s (x int)").execute(&db).await.unwrap();
    db.manager().check_now().await;
    let status = db.status();
    let json = serde_json::to_string_pretty(&status).unwrap();
    let table = status.to_string();
    println!("{table}\n{json}");
    for text in [
        &json,
        &table,
        &format!("{status:?}"),
        &format!("{db:?}"),
        &format!("{:?}", db.manager()),
    ] {
        assert!(!text.contains("pw-Secr3t-xyz"), "secret leaked: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(v["nodes"][0]["role"], "primary");
    assert_eq!(v["nodes"][1]["state"], "healthy");
    assert!(v["router"]["to_replica"].as_u64().unwrap() >= 20);
    assert_eq!(v["router"]["writes"].as_u64().unwrap(), 1);
    assert!(v["router"]["by_class"]["read"].as_u64().unwrap() >= 20);
    assert_eq!(v["router"]["by_class"]["write"].as_u64().unwrap(), 1);
    assert!(v["replica_hit_rate"].as_f64().unwrap() > 0.9);
    assert!(v["system_id"].as_u64().unwrap() > 0);
    assert!(table.contains("replica2") && table.contains("| Member"));
}
