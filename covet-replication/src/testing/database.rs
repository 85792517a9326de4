//! A fresh database per test on a replicated cluster: what `#[covet_replication::test]` runs,
//! the counterpart of `#[sqlx::test]`.
//!
//! The database is created on the primary, every standby is waited for until it has replayed
//! the `CREATE DATABASE` (a standby that has not cannot be connected to it), and the migrations and
//! fixtures are applied *through the handle the test gets*: they are its writes, so its reads
//! after them see them on any standby, however far behind.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::OnceCell;

use super::{ClusterError, LocalCluster};
use crate::{ReplicatedPool, ReplicationConfig};

/// How long a standby may take to replay the `CREATE DATABASE` before the test gives up.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// What a test asks for: its name, its migrations, its fixtures. Built by
/// `#[covet_replication::test]`; build one by hand for [`TestDatabase::create`].
#[derive(Debug, Clone, Copy)]
pub struct TestArgs {
    /// The test's path (`module::name`), for messages.
    pub test_path: &'static str,
    /// The migrations to apply first, if any.
    pub migrator: Option<&'static Migrator>,
    /// The SQL scripts to run after the migrations, in order.
    pub fixtures: &'static [TestFixture],
}

impl TestArgs {
    /// No migrations, no fixtures.
    #[must_use]
    pub const fn new(test_path: &'static str) -> Self {
        Self {
            test_path,
            migrator: None,
            fixtures: &[],
        }
    }

    /// Applies `migrator` to the test database first.
    pub fn migrator(&mut self, migrator: &'static Migrator) {
        self.migrator = Some(migrator);
    }

    /// Runs `fixtures` after the migrations.
    pub fn fixtures(&mut self, fixtures: &'static [TestFixture]) {
        self.fixtures = fixtures;
    }
}

/// One fixture script: where it came from and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct TestFixture {
    /// The file, as given to the attribute.
    pub path: &'static str,
    /// Its SQL (one or more statements).
    pub contents: &'static str,
}

/// Whether a test's return value means it passed: `()`, or `Ok` of a `Result`.
pub trait TestOutcome {
    /// `true` when the test passed.
    fn passed(&self) -> bool;
}

impl TestOutcome for () {
    fn passed(&self) -> bool {
        true
    }
}

impl<T, E> TestOutcome for Result<T, E> {
    fn passed(&self) -> bool {
        self.is_ok()
    }
}

/// A database of its own for one test, on the cluster of [`configured_or_local`](super::configured_or_local)
/// (started once per test process and shared), with a handle whose every node points at it.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    db: ReplicatedPool,
    /// A handle on the cluster's own database: who is primary when the test database is dropped.
    admin: ReplicatedPool,
}

impl TestDatabase {
    /// Creates the database, waits for every standby to have it, connects a handle to it, then
    /// applies `args`' migrations and fixtures through that handle.
    ///
    /// # Errors
    /// Why the cluster, the database, a standby, a migration or a fixture failed, naming which.
    pub async fn create(args: &TestArgs) -> Result<Self, ClusterError> {
        let config = cluster_config().await?;
        let admin = ReplicatedPool::connect(config.clone())
            .await
            .map_err(|source| ClusterError::Handle { source })?;
        let name = next_name();
        let opened = match create_database(&admin, &name).await {
            Ok(lsn) => Self::open(config, &name, &lsn, args).await,
            Err(e) => {
                admin.close().await;
                return Err(e);
            }
        };
        match opened {
            Ok(db) => Ok(Self { name, db, admin }),
            Err(e) => {
                tracing::warn!(target: "covet::testing", test = args.test_path, error = %e, "test database setup failed");
                let _ = drop_database(&admin, &name).await;
                admin.close().await;
                Err(e)
            }
        }
    }

    /// Waits for the standbys to have database `name`, connects a handle to it and applies
    /// `args` through it.
    async fn open(
        config: &ReplicationConfig,
        name: &str,
        lsn: &str,
        args: &TestArgs,
    ) -> Result<ReplicatedPool, ClusterError> {
        for (index, node) in config.nodes().enumerate() {
            wait_replayed(index, &node.connect_options(), lsn).await?;
        }
        let mut test_config = config.clone();
        test_config.primary.database = name.to_owned();
        for replica in &mut test_config.replicas {
            replica.database = name.to_owned();
        }
        let db = ReplicatedPool::connect(test_config)
            .await
            .map_err(|source| ClusterError::Handle { source })?;
        if let Some(migrator) = args.migrator {
            crate::orm::migrate(&db, migrator)
                .await
                .map_err(|source| ClusterError::Migrate { source })?;
        }
        for fixture in args.fixtures {
            sqlx::raw_sql(fixture.contents)
                .execute(&db)
                .await
                .map_err(|source| ClusterError::Fixture {
                    path: fixture.path,
                    source,
                })?;
        }
        Ok(db)
    }

    /// The handle on the test database.
    #[must_use]
    pub fn db(&self) -> &ReplicatedPool {
        &self.db
    }

    /// The database's name (`_covet_test_<pid>_<clock>_<n>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Closes the handle and drops the database (`WITH (FORCE)`: connections the test leaked
    /// do not keep it).
    ///
    /// # Errors
    /// [`ClusterError::Sql`] if the drop failed.
    pub async fn drop_database(self) -> Result<(), ClusterError> {
        self.db.close().await;
        let dropped = drop_database(&self.admin, &self.name).await;
        self.admin.close().await;
        dropped
    }

    /// Closes both handles, keeping the database for a look after a failed test.
    pub async fn keep(self) {
        self.db.close().await;
        self.admin.close().await;
    }
}

/// Runs `test` with a handle on a fresh database (see [`TestDatabase`]) on a runtime of its
/// own, as `#[sqlx::test]` does: what `#[covet_replication::test]` expands to. The database is
/// dropped when the test passes and kept (its name printed) when it fails.
///
/// # Panics
/// When the database cannot be set up, with the reason; and with the test's own panic.
pub fn run_test<F, Fut>(args: TestArgs, test: F) -> Fut::Output
where
    F: FnOnce(ReplicatedPool) -> Fut,
    Fut: Future,
    Fut::Output: TestOutcome,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{}: cannot build a tokio runtime: {e}", args.test_path));
    runtime.block_on(async move {
        let database = TestDatabase::create(&args)
            .await
            .unwrap_or_else(|e| panic!("{}: cannot set up the test database: {e}", args.test_path));
        let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(test(database.db.clone()))).await;
        match outcome {
            Ok(result) if result.passed() => {
                if let Err(e) = database.drop_database().await {
                    eprintln!("{}: the test database was not dropped: {e}", args.test_path);
                }
                result
            }
            failed => {
                eprintln!(
                    "{}: kept the test database {} for a look",
                    args.test_path, database.name
                );
                database.keep().await;
                failed.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
        }
    })
}

/// The cluster every test of this process uses, set up once.
async fn cluster_config() -> Result<&'static ReplicationConfig, ClusterError> {
    static CLUSTER: OnceCell<(ReplicationConfig, Option<LocalCluster>)> = OnceCell::const_new();
    let (config, _cluster) = CLUSTER.get_or_try_init(super::configured_or_local).await?;
    Ok(config)
}

/// A name no other test of any process has used: a standby may still be replaying the drop of
/// an earlier test's database, and a name reused then fails with 55000 (invalid database).
fn next_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000_000);
    format!(
        "_covet_test_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `CREATE DATABASE` on the primary; returns the primary's position after it.
async fn create_database(admin: &ReplicatedPool, name: &str) -> Result<String, ClusterError> {
    let sql = |source| ClusterError::Sql { node: 0, source };
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(admin)
        .await
        .map_err(sql)?;
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&admin.using(crate::Target::Primary))
        .await
        .map_err(sql)
}

/// Drops test database `name` (`WITH (FORCE)`: connections a test leaked do not keep it).
async fn drop_database(admin: &ReplicatedPool, name: &str) -> Result<(), ClusterError> {
    // The name is ours (letters, digits, `_`): no quoting needed.
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(admin)
        .await
        .map(drop)
        .map_err(|source| ClusterError::Sql { node: 0, source })
}

/// Waits until the node at `options` (if it is a standby) has replayed `lsn`. A node that does
/// not answer is left to the handle's health checks: the test then runs without it.
async fn wait_replayed(node: usize, options: &sqlx::postgres::PgConnectOptions, lsn: &str) -> Result<(), ClusterError> {
    let Ok(mut conn) = PgConnection::connect_with(options).await else {
        return Ok(());
    };
    let deadline = Instant::now() + REPLAY_WAIT;
    let result = loop {
        let replayed: Result<Option<bool>, _> =
            sqlx::query_scalar("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() >= $1::pg_lsn END")
                .bind(lsn)
                .fetch_one(&mut conn)
                .await;
        match replayed {
            // The primary (NULL), or a standby that has the database.
            Ok(None | Some(true)) => break Ok(()),
            Ok(Some(false)) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(Some(false)) => {
                break Err(ClusterError::Timeout {
                    what: format!("node {node} to replay the test database's creation (at {lsn})"),
                    after: REPLAY_WAIT,
                });
            }
            Err(source) => break Err(ClusterError::Sql { node, source }),
        }
    };
    let _ = conn.close().await;
    result
}
