//! [`ReplicatedPoolOptions`]: sqlx's `PgPoolOptions`, for every node of the cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::PgConnection;
use sqlx::pool::PoolConnectionMetadata;

use super::ReplicatedPool;
use crate::cluster::PoolHooks;
use crate::config::{PoolConfig, ReplicationConfig};
use crate::error::Error;

/// The counterpart of sqlx's `PgPoolOptions`: pool sizes, timeouts and sqlx's connection
/// hooks, set on every node's pool, then `connect` with a URL (a libpq multi-host URL names
/// the replicas too: see [`ReplicationConfig::from_url`]) or a whole [`ReplicationConfig`].
///
/// What is set here replaces what the configuration says for every node (URL parameters,
/// `[pool]`, a node's own `pool` table); what is not set keeps it. The hooks run on every
/// pool the handle makes, also for nodes it adds later (a replica added, a node rebuilt
/// after a failover): set `search_path`, a role or a `statement_timeout` there, as with
/// `PgPool`.
///
/// ```no_run
/// use covet_replication::ReplicatedPoolOptions;
/// use sqlx::Executor;
///
/// # async fn f() -> Result<(), covet_replication::Error> {
/// // Was: PgPoolOptions::new().max_connections(16).after_connect(..).connect(&url)
/// let db = ReplicatedPoolOptions::new()
///     .max_connections(16)
///     .after_connect(|conn, _meta| {
///         Box::pin(async move {
///             conn.execute("SET search_path = app, public").await?;
///             Ok(())
///         })
///     })
///     .connect("postgres://app:secret@db1:5432,db2:5432,db3:5432/app")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ReplicatedPoolOptions {
    min_connections: Option<u32>,
    max_connections: Option<u32>,
    acquire_timeout: Option<Duration>,
    idle_timeout: Option<Option<Duration>>,
    max_lifetime: Option<Option<Duration>>,
    test_before_acquire: Option<bool>,
    hooks: PoolHooks,
}

impl ReplicatedPoolOptions {
    /// Nothing set: the configuration's pools, no hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every node's `max_connections`.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Every node's `min_connections`.
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = Some(min);
        self
    }

    /// Every node's `acquire_timeout` (a replica's acquire is also bounded by
    /// `health.timeout`, so a slow one costs a retry elsewhere, not the whole wait).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Every node's `idle_timeout` (`None`: idle connections are kept).
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = Some(timeout.into());
        self
    }

    /// Every node's `max_lifetime` (`None`: connections are never recycled for age).
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = Some(lifetime.into());
        self
    }

    /// sqlx's ping before handing out an idle connection, on every node (by default on for
    /// the primary, off for replicas: see [`PoolConfig::test_before_acquire`]).
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = Some(test);
        self
    }

    /// As `PgPoolOptions::after_connect`: runs on each new connection to any node before it
    /// is used; an error closes it (and the statement waiting for it goes elsewhere or fails
    /// as a connection failure does).
    pub fn after_connect<F>(mut self, callback: F) -> Self
    where
        for<'c> F: Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, Result<(), sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.hooks.after_connect = Some(Arc::new(callback));
        self
    }

    /// As `PgPoolOptions::before_acquire`: runs before an idle connection is handed out;
    /// `Ok(false)` or an error closes it and another is taken.
    pub fn before_acquire<F>(mut self, callback: F) -> Self
    where
        for<'c> F: Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, Result<bool, sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.hooks.before_acquire = Some(Arc::new(callback));
        self
    }

    /// As `PgPoolOptions::after_release`: runs when a connection goes back to its pool;
    /// `Ok(false)` or an error closes it.
    pub fn after_release<F>(mut self, callback: F) -> Self
    where
        for<'c> F: Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, Result<bool, sqlx::Error>>
            + Send
            + Sync
            + 'static,
    {
        self.hooks.after_release = Some(Arc::new(callback));
        self
    }

    /// Connects to the nodes of `url` (see [`ReplicationConfig::from_url`]), as
    /// [`ReplicatedPool::connect`].
    ///
    /// # Errors
    /// [`Error::Config`] for a URL or setting that is not valid; otherwise as
    /// [`ReplicatedPool::connect`].
    pub async fn connect(self, url: &str) -> Result<ReplicatedPool, Error> {
        let config = ReplicationConfig::from_url(url)?;
        self.connect_with(config).await
    }

    /// As [`connect`](Self::connect), without touching the network
    /// ([`ReplicatedPool::connect_lazy`]).
    ///
    /// # Errors
    /// [`Error::Config`] for a URL or setting that is not valid.
    pub fn connect_lazy(self, url: &str) -> Result<ReplicatedPool, Error> {
        let config = ReplicationConfig::from_url(url)?;
        self.connect_lazy_with(config)
    }

    /// Connects with a whole configuration, these options applied to every node.
    ///
    /// # Errors
    /// As [`ReplicatedPool::connect`].
    pub async fn connect_with(self, config: ReplicationConfig) -> Result<ReplicatedPool, Error> {
        let (config, hooks) = self.apply(config);
        ReplicatedPool::connect_hooked(config, hooks).await
    }

    /// As [`connect_with`](Self::connect_with), without touching the network.
    ///
    /// # Errors
    /// [`Error::Config`] for a setting that is not valid.
    pub fn connect_lazy_with(self, config: ReplicationConfig) -> Result<ReplicatedPool, Error> {
        let (config, hooks) = self.apply(config);
        ReplicatedPool::connect_lazy_hooked(config, hooks)
    }

    fn apply(self, mut config: ReplicationConfig) -> (ReplicationConfig, PoolHooks) {
        for node in std::iter::once(&mut config.primary).chain(&mut config.replicas) {
            node.pool = self.pool_over(node.pool.clone());
        }
        (config, self.hooks)
    }

    fn pool_over(&self, mut pool: PoolConfig) -> PoolConfig {
        pool.min_connections = self.min_connections.unwrap_or(pool.min_connections);
        pool.max_connections = self.max_connections.unwrap_or(pool.max_connections);
        pool.acquire_timeout = self.acquire_timeout.unwrap_or(pool.acquire_timeout);
        pool.idle_timeout = self.idle_timeout.unwrap_or(pool.idle_timeout);
        pool.max_lifetime = self.max_lifetime.unwrap_or(pool.max_lifetime);
        pool.test_before_acquire = self.test_before_acquire.or(pool.test_before_acquire);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_set_replaces_every_nodes_pool_and_the_rest_stays() {
        let config =
            ReplicationConfig::from_url("postgres://u@h1:5432,h2:5432/app?max_connections=4&min_connections=1")
                .unwrap();
        let options = ReplicatedPoolOptions::new()
            .max_connections(16)
            .idle_timeout(None)
            .test_before_acquire(false);
        let (config, hooks) = options.apply(config);
        for node in std::iter::once(&config.primary).chain(&config.replicas) {
            assert_eq!(node.pool.max_connections, 16, "{}", node.id);
            assert_eq!(node.pool.min_connections, 1, "{}: from the URL", node.id);
            assert_eq!(node.pool.idle_timeout, None);
            assert_eq!(node.pool.max_lifetime, PoolConfig::default().max_lifetime);
            assert_eq!(node.pool.test_before_acquire, Some(false));
        }
        assert_eq!(config.replicas.len(), 1);
        assert!(hooks.after_connect.is_none());
    }

    #[test]
    fn invalid_sizes_are_refused_by_name() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _guard = runtime.enter();
        let err = ReplicatedPoolOptions::new()
            .max_connections(0)
            .connect_lazy("postgres://u@h1:5432/app")
            .unwrap_err();
        let Error::Config(err) = err else { panic!("{err}") };
        assert_eq!(err.field(), Some("primary.pool.max_connections"), "{err}");
    }
}
