//! Which PostgreSQL the suites run on, and what the handle does with one it does not support.
//! CI runs the core suites once per major with `COVET_PG_VERSION` set (see `.ci/run`).

use std::path::PathBuf;
use std::process::Command;

use covet_replication::testing::{ClusterError, LocalCluster, VERSION_ENV};
use covet_replication::{Error, ReplicatedPool};
use covet_tests::{connect, test_config};

/// The server binaries of `major`, fetched into the cache by the project's own script.
fn fetch(major: u32) -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fetch-postgres.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(major.to_string())
        .output()
        .expect("run fetch-postgres.sh");
    assert!(
        out.status.success(),
        "fetch-postgres.sh {major} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The cluster runs the major CI asked for (else the default binaries' one), and the handle
/// works against it: the per-major runs cannot silently test the default version.
#[tokio::test]
async fn the_cluster_runs_the_requested_major() {
    let cluster = LocalCluster::builder().replicas(1).start().await.unwrap();
    if let Ok(major) = std::env::var(VERSION_ENV) {
        assert_eq!(cluster.major_version().to_string(), major.trim());
    }
    assert!(
        (13..=18).contains(&cluster.major_version()),
        "{}",
        cluster.server_version_num()
    );
    let db = connect(test_config(&cluster)).await;
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(num.parse::<u32>().unwrap(), cluster.server_version_num());
}

/// PostgreSQL 12 cannot be repointed without a restart: connecting to one is a typed error
/// naming the node and its version, and nothing is left running.
#[tokio::test]
async fn a_server_older_than_13_is_refused_by_name() {
    let bindir = fetch(12);
    let cluster = LocalCluster::builder()
        .bindir(&bindir)
        .replicas(0)
        .start()
        .await
        .unwrap();
    assert_eq!(cluster.major_version(), 12);
    let err = ReplicatedPool::connect(cluster.replication_config()).await.unwrap_err();
    match &err {
        Error::UnsupportedServerVersion { node, version } => {
            assert_eq!(node.as_str(), "primary");
            assert!(version.starts_with("12."), "{version}");
        }
        other => panic!("expected UnsupportedServerVersion, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("PostgreSQL 12.") && message.contains("13 or newer"),
        "{message}"
    );

    // And the harness itself refuses binaries of another major than the one asked for.
    let mismatch = LocalCluster::builder()
        .bindir(&bindir)
        .version(13)
        .replicas(0)
        .start()
        .await;
    match mismatch {
        Err(ClusterError::VersionMismatch {
            expected: 13,
            found: 12,
            ..
        }) => {}
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}
