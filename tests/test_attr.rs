//! `#[covet_replication::test]`, the counterpart of `#[sqlx::test]`: the `child_*` tests use it
//! and are run by the driver below in a second process (this binary again), on a cluster whose
//! standbys replay 2 s behind, so a fixture row is on the primary long before a standby has it.

use std::process::Command;
use std::time::Duration;

use covet_replication::testing::{LocalCluster, TestArgs, TestDatabase, TestFixture};
use covet_replication::{ReplicatedPool, ReplicationConfig, RouteReason, Target};

/// Set by the driver: the standbys of the cluster are behind, a stale read is possible.
const LAGGING: &str = "COVET_TEST_LAGGING";

async fn names(db: impl sqlx::Executor<'_, Database = sqlx::Postgres>) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM users ORDER BY name")
        .fetch_all(db)
        .await
        .unwrap()
}

#[covet_replication::test(migrations = "../migrations", fixtures("users", "orders"))]
#[ignore = "run by the_attribute_gives_each_test_a_database_consistent_with_its_fixtures"]
async fn child_fixtures_are_read_back_at_once(db: ReplicatedPool) {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(database.starts_with("_covet_test_"), "{database}");
    assert_eq!(names(&db).await, ["alice", "bob"]);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    // Every node of the handle is on the test database: the standbys had it before the test.
    let nodes = db.manager().nodes();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(
        nodes.iter().all(|n| n.state == covet_replication::NodeState::Healthy),
        "{nodes:?}"
    );
    if std::env::var_os(LAGGING).is_some() {
        // The negative control: a handle that did not write the fixtures, reading on a standby.
        let mut config = ReplicationConfig::from_env().unwrap();
        for node in std::iter::once(&mut config.primary).chain(&mut config.replicas) {
            node.database.clone_from(&database);
        }
        let other = ReplicatedPool::connect(config).await.unwrap();
        // The standbys do not even have the migrated table yet.
        let migrated: bool = sqlx::query_scalar("SELECT to_regclass('users') IS NOT NULL")
            .fetch_one(&other.using(Target::Replica))
            .await
            .unwrap();
        assert!(!migrated, "the standbys are not behind");
        other.close().await;
    }
    println!("CHECKED fixtures");
}

/// No `migrations` argument: this crate's `./migrations`, as `#[sqlx::test]` does.
#[covet_replication::test]
#[ignore = "run by the_attribute_gives_each_test_a_database_consistent_with_its_fixtures"]
async fn child_the_crates_migrations_by_default(db: ReplicatedPool) {
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('inferred') IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(migrated);
    println!("CHECKED default migrations");
}

#[covet_replication::test(migrations = false)]
#[ignore = "run by the_attribute_gives_each_test_a_database_consistent_with_its_fixtures"]
async fn child_without_migrations_the_database_is_empty(db: ReplicatedPool) -> Result<(), sqlx::Error> {
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&db)
        .await?;
    assert_eq!(tables, 0);
    // A session of the test's handle reads on a standby when nothing was written.
    let session = db.session();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&session).await?;
    assert_eq!(one, 1);
    assert_eq!(
        session.last_route().map(|r| (r.role, r.reason)),
        Some((covet_replication::Role::Replica, RouteReason::ReadPreference))
    );
    println!("CHECKED empty");
    Ok(())
}

#[covet_replication::test(migrations = "../migrations", fixtures(path = "fixtures", scripts("users")))]
#[ignore = "run by the_attribute_gives_each_test_a_database_consistent_with_its_fixtures"]
async fn child_fails_on_purpose(db: ReplicatedPool) -> Result<(), String> {
    assert_eq!(names(&db).await, ["alice", "bob"]);
    println!("CHECKED failing");
    Err("failed on purpose: the database is kept".into())
}

/// Runs `tests` of this binary in a child process on the cluster of `config`.
fn run_children(config: &std::path::Path, tests: &[&str]) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture", "--test-threads=2"])
        .args(tests)
        .env("COVET_CONFIG", config)
        .env(LAGGING, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

async fn test_databases(cluster: &LocalCluster) -> Vec<String> {
    let mut conn = cluster.connect(cluster.primary()).await.unwrap();
    sqlx::query_scalar(r"SELECT datname::text FROM pg_database WHERE datname LIKE '\_covet\_test\_%' ORDER BY 1")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attribute_gives_each_test_a_database_consistent_with_its_fixtures() {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    for replica in cluster.replicas() {
        cluster.set_apply_delay(replica, Duration::from_secs(2)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("covet.toml");
    std::fs::write(&config, cluster.replication_config().to_toml_string().unwrap()).unwrap();

    let (passed, out) = run_children(
        &config,
        &[
            "child_fixtures_are_read_back_at_once",
            "child_without_migrations_the_database_is_empty",
            "child_the_crates_migrations_by_default",
        ],
    );
    assert!(passed, "{out}");
    for checked in ["fixtures", "empty", "default migrations"] {
        assert!(out.contains(&format!("CHECKED {checked}")), "{checked}: {out}");
    }
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    // Those passed: their databases are gone.
    assert_eq!(test_databases(&cluster).await, Vec::<String>::new());

    let (passed, out) = run_children(&config, &["child_fails_on_purpose"]);
    assert!(!passed, "{out}");
    assert!(
        out.contains("CHECKED failing") && out.contains("failed on purpose"),
        "{out}"
    );
    let kept = test_databases(&cluster).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(out.contains(&format!("kept the test database {}", kept[0])), "{out}");
}

/// A fixture that fails: the error names it, and the database made for it is dropped.
#[tokio::test]
async fn a_failing_fixture_is_named_and_leaves_no_database() {
    static BAD: [TestFixture; 1] = [TestFixture {
        path: "fixtures/bad.sql",
        contents: "INSERT INTO no_such_table VALUES (1)",
    }];
    let mut args = TestArgs::new("test_attr::a_failing_fixture");
    args.fixtures(&BAD);
    let err = TestDatabase::create(&args).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("fixture fixtures/bad.sql failed") && text.contains("no_such_table"),
        "{text}"
    );
    // This process's cluster (the local one: no COVET_CONFIG here) holds no test database.
    let args = TestArgs::new("test_attr::a_failing_fixture::after");
    let database = TestDatabase::create(&args).await.unwrap();
    let left: Vec<String> =
        sqlx::query_scalar(r"SELECT datname::text FROM pg_database WHERE datname LIKE '\_covet\_test\_%'")
            .fetch_all(&database.db().using(Target::Primary))
            .await
            .unwrap();
    assert_eq!(left, [database.name().to_owned()]);
    database.drop_database().await.unwrap();
}
