//! [`ReplicatedPool`]: the handle applications use in place of `&PgPool`.

use std::fmt;
use std::sync::Arc;

use sqlx::Postgres;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, NodeId, PoolHooks};
use crate::config::{Consistency, IntoReplicationConfig, ReadPreference, ReplicationConfig};
use crate::control::Control;
use crate::data::executor::{NodeConnection, ReadOnlyTransaction};
use crate::data::routing::{RouteReason, RouterCounters, Target};
use crate::data::session::{ConsistencyCounters, Session, TokenError};
use crate::data::{CopyIn, Handle, Plane};
use crate::error::Error;
use crate::manager::ReplicaManager;

mod options;
pub use options::ReplicatedPoolOptions;

/// A primary and its replicas behind one sqlx [`Executor`](sqlx::Executor).
///
/// Swap `&PgPool` for `&ReplicatedPool` and every statement is classified and routed: writes,
/// transactions and session state to the primary, reads to a replica chosen by read
/// preference, region, lag and load. Cheap to clone; clones share the pools.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use covet_replication::{ReplicatedPool, ReplicationConfig, Target};
/// let config = ReplicationConfig::from_urls(
///     "postgres://app@10.0.0.1/app",
///     &["postgres://app@10.0.0.2/app", "postgres://app@10.0.0.3/app"],
/// )?;
/// let db = ReplicatedPool::connect(config).await?;
/// sqlx::query("INSERT INTO users (name) VALUES ($1)").bind("ana").execute(&db).await?; // primary
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db).await?; // a replica
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db.using(Target::Primary)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReplicatedPool {
    /// Routing and running statements.
    pub(crate) data: Handle,
    /// Health, lag and failover.
    pub(crate) control: Arc<Control>,
}

crate::data::executor::impl_executor!(ReplicatedPool, |p| (p.data.clone(), p.data.effective_session()));
crate::data::executor::impl_acquire!(ReplicatedPool, |p| (p.data.clone(), p.data.effective_session()));

impl fmt::Debug for ReplicatedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = self.data.cluster().topology.load();
        f.debug_struct("ReplicatedPool")
            .field("primary", &topology.primary.id)
            .field("replicas", &topology.replicas.iter().map(|r| &r.id).collect::<Vec<_>>())
            .field("target", &self.data.target)
            .finish()
    }
}

impl ReplicatedPool {
    /// Builds the pools, runs a first health check on every node and starts the health loop.
    /// The primary is the node that answers as one (not in recovery, not read-only): the
    /// configuration's `primary` is only where the search starts, so a list of nodes in any
    /// order ([`ReplicationConfig::from_url`] with several hosts) is enough.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or URL; [`Error::Database`] if the primary cannot
    /// be reached (replicas that cannot be reached start `down` and are retried by the loop);
    /// [`Error::UnsupportedServerVersion`] for a primary older than PostgreSQL 13 (the health
    /// loop keeps such a replica down).
    ///
    /// A URL works as with `PgPool::connect`:
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), covet_replication::Error> {
    /// let db = covet_replication::ReplicatedPool::connect("postgres://app@db1,db2,db3/app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: impl IntoReplicationConfig) -> Result<Self, Error> {
        Self::connect_hooked(config.into_replication_config()?, PoolHooks::default()).await
    }

    /// Like [`connect`](Self::connect) without touching the network: nodes count as healthy
    /// until the health loop's first round says otherwise. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn connect_lazy(config: impl IntoReplicationConfig) -> Result<Self, Error> {
        Self::connect_lazy_hooked(config.into_replication_config()?, PoolHooks::default())
    }

    pub(crate) async fn connect_hooked(config: ReplicationConfig, hooks: PoolHooks) -> Result<Self, Error> {
        let pool = Self::connect_lazy_hooked(config, hooks)?;
        pool.control.settle().await;
        let primary = pool.cluster().primary();
        let conn = primary.pool.acquire().await.map_err(|source| Error::Database {
            node: primary.id.clone(),
            source,
        })?;
        crate::pg::version::check(&primary.id, &conn)?;
        Ok(pool)
    }

    pub(crate) fn connect_lazy_hooked(config: ReplicationConfig, hooks: PoolHooks) -> Result<Self, Error> {
        config.validate()?;
        let cluster = Arc::new(Cluster::new(config, hooks));
        let shutdown = CancellationToken::new();
        let control = Control::start(Arc::clone(&cluster), shutdown.clone());
        Ok(ReplicatedPool {
            data: Handle::new(Plane::new(cluster, shutdown.drop_guard())),
            control,
        })
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        self.data.cluster()
    }

    /// This handle with its data handle replaced (the ORM's routing of built statements).
    pub(crate) fn map_data(&self, f: impl FnOnce(&Handle) -> Handle) -> Self {
        ReplicatedPool {
            data: f(&self.data),
            control: Arc::clone(&self.control),
        }
    }

    /// A handle whose statements go to `target` (a [`Target`] or a [`ReadPreference`]).
    #[must_use]
    pub fn using(&self, target: impl Into<Target>) -> Self {
        let target = target.into();
        self.map_data(|d| d.using(target))
    }

    /// The manager of the nodes behind this pool.
    pub fn manager(&self) -> ReplicaManager {
        ReplicaManager {
            control: Arc::clone(&self.control),
        }
    }

    /// Counters of the routing decisions so far.
    pub fn counters(&self) -> RouterCounters {
        self.data.plane.stats.snapshot()
    }

    /// The configured default read preference.
    pub fn read_preference(&self) -> ReadPreference {
        self.cluster().config.routing.read_preference
    }

    /// Begins a transaction on the primary: sqlx's own `Transaction`, so code typed
    /// `&mut sqlx::Transaction<'_, Postgres>` (helpers, struct fields) keeps its types.
    ///
    /// Its commit counts as a write of the handle's (or the scoped session's) reads: sqlx's
    /// `Transaction` cannot report its commit, so one more round trip before `BEGIN` notes its
    /// server process, and while it has not been seen to end, each read of that session first
    /// asks the primary whether it has (one round trip) and runs there until it has; then on
    /// replicas that replayed it. A per-request [`Session`] keeps other requests' transactions
    /// out of its reads.
    ///
    /// ```no_run
    /// # async fn f(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
    /// async fn add(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, text: &str) -> Result<(), sqlx::Error> {
    ///     sqlx::query("INSERT INTO todos (description) VALUES ($1)").bind(text).execute(&mut **tx).await?;
    ///     Ok(())
    /// }
    /// let mut tx = db.begin().await?;
    /// add(&mut tx, "write the docs").await?;
    /// tx.commit().await?;
    /// // Seen at once, as with `PgPool`: on a replica that replayed the commit, else the primary.
    /// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM todos").fetch_one(&db).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The database error if no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.data.begin_in(self.data.effective_session(), None).await
    }

    /// Begins a transaction on the primary with `statement` instead of `BEGIN` (e.g.
    /// `BEGIN ISOLATION LEVEL SERIALIZABLE`), as `PgPool::begin_with`.
    ///
    /// # Errors
    /// As [`begin`](Self::begin).
    pub async fn begin_with(
        &self,
        statement: impl sqlx::SqlSafeStr,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        self.data
            .begin_in(self.data.effective_session(), Some(statement.into_sql_str()))
            .await
    }

    /// Begins a transaction on the primary if one of its connections is free now (`None`
    /// otherwise), as `PgPool::try_begin`.
    ///
    /// # Errors
    /// The database error if `BEGIN` fails.
    pub async fn try_begin(&self) -> Result<Option<sqlx::Transaction<'static, Postgres>>, sqlx::Error> {
        self.data
            .begin_on_primary(self.data.effective_session(), None, true)
            .await
    }

    /// `COPY ... FROM STDIN` on the primary, as `PgPoolCopyExt::copy_in_raw`: send the data,
    /// then [`finish`](CopyIn::finish). The rows count as the handle's write (or the scoped
    /// session's): its reads afterwards see them.
    ///
    /// ```no_run
    /// # async fn f(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
    /// let mut copy = db.copy_in_raw("COPY todos (description) FROM STDIN").await?;
    /// copy.send(b"write the docs\nship it\n".as_slice()).await?;
    /// assert_eq!(copy.finish().await?, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The database error if the primary cannot be reached or refuses the statement.
    pub async fn copy_in_raw(&self, statement: &str) -> Result<CopyIn, sqlx::Error> {
        self.data.copy_in_raw(self.data.effective_session(), statement).await
    }

    /// `COPY ... TO STDOUT` on the primary, as `PgPoolCopyExt::copy_out_raw`: the data in
    /// chunks. A statement that may write (`COPY (DELETE ... RETURNING *) TO STDOUT`) counts as
    /// the handle's write.
    ///
    /// # Errors
    /// The database error if the primary cannot be reached or refuses the statement.
    pub async fn copy_out_raw(
        &self,
        statement: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, sqlx::Error>>, sqlx::Error> {
        self.data.copy_out_raw(self.data.effective_session(), statement).await
    }

    /// Whether [`close`](Self::close) was called, as `PgPool::is_closed`.
    pub fn is_closed(&self) -> bool {
        self.cluster().primary().pool.is_closed()
    }

    /// Connections open to all nodes, idle or in use (`PgPool::size`, summed).
    pub fn size(&self) -> u32 {
        self.cluster().topology.load().nodes().map(|n| n.pool.size()).sum()
    }

    /// Idle connections of all nodes (`PgPool::num_idle`, summed).
    pub fn num_idle(&self) -> usize {
        self.cluster().topology.load().nodes().map(|n| n.pool.num_idle()).sum()
    }

    /// The primary pool's options, as `PgPool::options` (a copy: the pool behind it changes
    /// with a failover). Each node's sizes are in [`status`](Self::status).
    pub fn options(&self) -> sqlx::pool::PoolOptions<Postgres> {
        self.cluster().primary().pool.options().clone()
    }

    /// The primary's connect options, as `PgPool::connect_options` (each node's are in
    /// [`status`](Self::status) and its config).
    pub fn connect_options(&self) -> Arc<sqlx::postgres::PgConnectOptions> {
        self.cluster().primary().pool.connect_options()
    }

    /// A new session at the configured level (`consistency.session`). No I/O, no lock.
    pub fn session(&self) -> Session {
        self.session_with(self.cluster().config.consistency.session)
    }

    /// A new session at `level`.
    pub fn session_with(&self, level: Consistency) -> Session {
        self.data.session_with(level)
    }

    /// Continues, in this process, the session whose [`token`](Session::token) is given: its
    /// reads see everything the token's session wrote. A token from before a failover (another
    /// timeline), or while this process does not know the cluster yet, sends reads to the primary.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] for text that is not a token, [`TokenError::ForeignCluster`]
    /// for a token of another cluster.
    pub fn session_from_token(&self, token: &str) -> Result<Session, TokenError> {
        self.data.session_from_token(token)
    }

    /// A listener for `NOTIFY` on the primary that follows the primary across failovers (see
    /// [`Listener`](crate::data::Listener)): the counterpart of `PgListener::connect_with(&pool)`.
    ///
    /// # Errors
    /// The database error if the primary cannot be reached.
    pub async fn listener(&self) -> Result<crate::data::Listener, sqlx::Error> {
        crate::data::Listener::connect(self.data.clone()).await
    }

    /// The lag monitor: alerts, callbacks, statistics.
    pub fn lag_monitor(&self) -> crate::control::lag::LagMonitor {
        self.control.lag_monitor.clone()
    }

    /// Counters of what consistency cost so far.
    pub fn consistency_counters(&self) -> ConsistencyCounters {
        self.data.plane.consistency.snapshot()
    }

    /// Begins a read-only, repeatable-read transaction on one replica, chosen like a read (the
    /// handle's target and session apply): a consistent snapshot across several statements.
    ///
    /// # Errors
    /// [`Error::NoEligibleReplica`] (boxed in `sqlx::Error`) when the preference forbids the
    /// primary and no replica is eligible, or the database error.
    pub async fn begin_read_only(&self) -> Result<ReadOnlyTransaction, sqlx::Error> {
        self.data.begin_read_only_in(self.data.effective_session()).await
    }

    /// A connection to the primary, as `PgPool::acquire`: for work that needs one connection
    /// (`LISTEN`, temporary tables, `COPY`, advisory locks: it is `AsMut<PgConnection>`, so
    /// `PgAdvisoryLock::acquire(conn)` takes it). What runs on it counts as a write of the
    /// handle's session: reads go to the primary while it is out, and to replicas that replayed
    /// its last position once it is back (see [`NodeConnection`]).
    ///
    /// # Errors
    /// The pool's error (`PoolTimedOut`, `PoolClosed`, ...), or the routing error boxed in
    /// `sqlx::Error` ([`Error::from_sqlx`] gets it back).
    pub async fn acquire(&self) -> Result<NodeConnection, sqlx::Error> {
        self.acquire_on(Target::Primary).await
    }

    /// A connection from the node `target` selects (a replica's is read-only); otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_on(&self, target: impl Into<Target>) -> Result<NodeConnection, sqlx::Error> {
        self.data
            .acquire_in(self.data.effective_session(), target.into())
            .await
            .map_err(Error::into_sqlx)
    }

    /// Where `sql` would run now through this handle, and why, without running it.
    ///
    /// # Errors
    /// The routing error the statement would get.
    pub async fn explain(&self, sql: &str) -> Result<(NodeId, RouteReason), Error> {
        self.data.explain(sql).await
    }

    /// Failovers and switchovers, and their audit trail.
    pub fn failover(&self) -> crate::control::failover::FailoverManager {
        crate::control::failover::FailoverManager {
            control: Arc::clone(&self.control),
        }
    }

    /// Stops the background tasks, then closes every pool and the health loop's connections;
    /// waits for checked-out connections.
    pub async fn close(&self) {
        self.control.stop().await;
        let topology = self.cluster().topology.load_full();
        for node in topology.nodes() {
            node.pool.close().await;
        }
    }
}
