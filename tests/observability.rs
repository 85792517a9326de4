//! Metrics through the `metrics` facade, with the application's recorder.

use std::collections::HashMap;

use covet_tests::{connect, shared_cluster, test_config};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test]
async fn routed_queries_and_lag_reach_the_applications_recorder() {
    // The application installs its recorder before connecting (this binary has one test).
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    for _ in 0..30 {
        let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&db).await.unwrap();
    }
    db.manager().check_now().await;

    let mut counters: HashMap<String, u64> = HashMap::new();
    let mut gauges: HashMap<String, f64> = HashMap::new();
    let mut histograms: HashMap<String, usize> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.key().name(), labels.join(","));
        match value {
            DebugValue::Counter(v) => *counters.entry(name).or_default() += v,
            DebugValue::Gauge(v) => {
                gauges.insert(name, v.into_inner());
            }
            DebugValue::Histogram(v) => *histograms.entry(name).or_default() += v.len(),
        }
    }
    let replica_queries: u64 = ["replica1", "replica2"]
        .iter()
        .map(|n| {
            counters
                .get(&format!("covet_queries_total{{node={n}}}"))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(replica_queries >= 30, "{counters:#?}");
    assert!(
        counters
            .get("covet_route_decisions_total{reason=read_preference}")
            .copied()
            .unwrap_or(0)
            >= 30,
        "{counters:#?}"
    );
    assert!(
        histograms
            .keys()
            .any(|k| k.starts_with("covet_query_duration_seconds{node=replica")),
        "{histograms:#?}"
    );
    assert_eq!(gauges.get("covet_node_up{node=primary}"), Some(&1.0), "{gauges:#?}");
    assert!(
        gauges.contains_key("covet_replica_lag_seconds{node=replica1}"),
        "{gauges:#?}"
    );
    assert!(
        gauges.contains_key("covet_replica_lag_bytes{node=replica2}"),
        "{gauges:#?}"
    );
}
