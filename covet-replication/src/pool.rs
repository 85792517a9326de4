//! [`ReplicatedPool`]: the handle applications use in place of `&PgPool`.

use std::fmt;
use std::sync::Arc;

use crate::cluster::NodeId;
use crate::config::{Consistency, ReadPreference, ReplicationConfig};
use crate::core::Lsn;
use crate::data::executor::{NodeConnection, Transaction};
use crate::data::routing::{Constraints, RouteReason, RouterCounters, Target};
use crate::data::session::{CausalToken, ConsistencyCounters, Session, SessionState, TokenError};
use crate::error::Error;
use crate::manager::{ManagerInner, ReplicaManager};

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
    pub(crate) inner: Arc<ManagerInner>,
    pub(crate) target: Option<Target>,
    /// The class of the statements sent through this handle, when the caller knows it (the
    /// ORM): the executor then skips the classifier.
    pub(crate) known_kind: Option<crate::classify::QueryKind>,
}

impl fmt::Debug for ReplicatedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = self.inner.topology.load();
        f.debug_struct("ReplicatedPool")
            .field("primary", &topology.primary.id)
            .field("replicas", &topology.replicas.iter().map(|r| &r.id).collect::<Vec<_>>())
            .field("target", &self.target)
            .finish()
    }
}

impl ReplicatedPool {
    /// Builds the pools, runs a first health check on every node and starts the health loop.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration; [`Error::Database`] if the primary cannot
    /// be reached (replicas that cannot be reached start `down` and are retried by the loop);
    /// [`Error::UnsupportedServerVersion`] for a primary older than PostgreSQL 13 (the health
    /// loop keeps such a replica down).
    pub async fn connect(config: ReplicationConfig) -> Result<Self, Error> {
        let pool = Self::connect_lazy(config)?;
        pool.manager().check_now().await;
        let primary = pool.inner.primary();
        let conn = primary.pool.acquire().await.map_err(|source| Error::Database {
            node: primary.id.clone(),
            source,
        })?;
        crate::pg::version::check(&primary.id, &conn)?;
        Ok(pool)
    }

    /// Like [`connect`](Self::connect) without touching the network: nodes count as healthy
    /// until the health loop's first round says otherwise. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration.
    pub fn connect_lazy(config: ReplicationConfig) -> Result<Self, Error> {
        Ok(ReplicatedPool {
            inner: ManagerInner::start(config)?,
            target: None,
            known_kind: None,
        })
    }

    /// A handle whose statements go to `target` (a [`Target`] or a [`ReadPreference`]).
    #[must_use]
    pub fn using(&self, target: impl Into<Target>) -> Self {
        ReplicatedPool {
            inner: Arc::clone(&self.inner),
            target: Some(target.into()),
            known_kind: None,
        }
    }

    /// This handle, for statements of `kind` only: the executor routes them by `kind` without
    /// parsing them. For SQL the crate builds itself.
    pub(crate) fn with_known_kind(mut self, kind: crate::classify::QueryKind) -> Self {
        self.known_kind = Some(kind);
        self
    }

    /// The manager of the nodes behind this pool.
    pub fn manager(&self) -> ReplicaManager {
        ReplicaManager {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Counters of the routing decisions so far.
    pub fn counters(&self) -> RouterCounters {
        self.inner.stats.snapshot()
    }

    /// The configured default read preference.
    pub fn read_preference(&self) -> ReadPreference {
        self.inner.config.routing.read_preference
    }

    /// Begins a transaction on the primary.
    ///
    /// # Errors
    /// The database error if no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<Transaction, sqlx::Error> {
        self.begin_in(self.effective_session()).await
    }

    pub(crate) async fn begin_in(&self, session: Option<Arc<SessionState>>) -> Result<Transaction, sqlx::Error> {
        let primary = self.inner.primary_for_write().await;
        let tx = primary.pool.begin().await?;
        let session = session.filter(|s| s.tracks_writes()).map(|s| (s, primary.pool.clone()));
        Ok(Transaction::new(tx, primary.id.clone(), session))
    }

    /// The session a statement through this handle belongs to: the enclosing
    /// [`Session::scope`], else the handle's own.
    pub(crate) fn effective_session(&self) -> Option<Arc<SessionState>> {
        crate::data::session::scoped().or_else(|| Some(Arc::clone(&self.inner.handle_session)))
    }

    /// A new session at the configured level (`consistency.session`). No I/O, no lock.
    pub fn session(&self) -> Session {
        self.session_with(self.inner.config.consistency.session)
    }

    /// A new session at `level`.
    pub fn session_with(&self, level: Consistency) -> Session {
        Session::new(self.clone(), level)
    }

    /// Continues, in this process, the session whose [`token`](Session::token) is given: its
    /// reads see everything the token's session wrote. A token from before a failover (another
    /// timeline), or while this process does not know the cluster yet, sends reads to the primary.
    ///
    /// # Errors
    /// [`TokenError::Malformed`] for text that is not a token, [`TokenError::ForeignCluster`]
    /// for a token of another cluster.
    pub fn session_from_token(&self, token: &str) -> Result<Session, TokenError> {
        let token: CausalToken = token.parse()?;
        let (system_id, timeline) = self.inner.identity.get();
        if system_id != 0 && token.system_id != 0 && token.system_id != system_id {
            return Err(TokenError::ForeignCluster {
                expected: system_id,
                found: token.system_id,
            });
        }
        let session = self.session();
        if system_id == 0 || token.system_id == 0 || token.timeline != timeline || token.lsn == Lsn(u64::MAX) {
            session.state.pin();
        } else if token.lsn != Lsn::ZERO {
            session.state.wrote(token.lsn);
            session.state.raise_floor(token.lsn);
        }
        Ok(session)
    }

    /// The lag monitor: alerts, callbacks, statistics.
    pub fn lag_monitor(&self) -> crate::control::lag::LagMonitor {
        self.inner.lag_monitor.clone()
    }

    /// Counters of what consistency cost so far.
    pub fn consistency_counters(&self) -> ConsistencyCounters {
        self.inner.consistency.snapshot()
    }

    /// Begins a read-only, repeatable-read transaction on one replica, chosen like a read (the
    /// handle's target and session apply): a consistent snapshot across several statements.
    ///
    /// # Errors
    /// [`Error::NoEligibleReplica`] (boxed in `sqlx::Error`) when the preference forbids the
    /// primary and no replica is eligible, or the database error.
    pub async fn begin_read_only(&self) -> Result<Transaction, sqlx::Error> {
        self.begin_read_only_in(self.effective_session()).await
    }

    pub(crate) async fn begin_read_only_in(
        &self,
        session: Option<Arc<SessionState>>,
    ) -> Result<Transaction, sqlx::Error> {
        let node = self.pick_for_read(session.as_deref()).await.map_err(Error::into_sqlx)?;
        let tx = node
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        if let Some(session) = session.filter(|_| node.role() == crate::cluster::Role::Replica) {
            session.read_from(&node.id, node.replay_lsn());
        }
        Ok(Transaction::new(tx, node.id.clone(), None))
    }

    /// A connection from the node `target` selects, for work that needs one connection
    /// (`LISTEN`, temporary tables, `COPY`). A replica's connection is read-only; what runs on a
    /// primary connection counts as a write of the handle's session when it is returned (see
    /// [`NodeConnection`]).
    ///
    /// # Errors
    /// The routing error or the pool's.
    pub async fn acquire(&self, target: impl Into<Target>) -> Result<NodeConnection, Error> {
        self.acquire_in(self.effective_session(), target).await
    }

    pub(crate) async fn acquire_in(
        &self,
        session: Option<Arc<SessionState>>,
        target: impl Into<Target>,
    ) -> Result<NodeConnection, Error> {
        let pinned = self.using(target);
        let node = pinned.pick_for_read(session.as_deref()).await?;
        let conn = node.pool.acquire().await.map_err(|source| Error::Database {
            node: node.id.clone(),
            source,
        })?;
        let writes = session
            .filter(|s| s.tracks_writes() && node.role() == crate::cluster::Role::Primary)
            .map(|s| (s, self.clone()));
        Ok(NodeConnection::new(conn, node.id.clone(), writes))
    }

    /// Where `sql` would run now through this handle, and why, without running it.
    ///
    /// # Errors
    /// The routing error the statement would get.
    pub async fn explain(&self, sql: &str) -> Result<(NodeId, RouteReason), Error> {
        let kind = self.inner.classifier.classify(sql);
        let target = self.target.clone().or_else(crate::data::routing::scoped_target);
        let session = self.effective_session();
        let c = Constraints {
            target: target.as_ref(),
            session: session.as_deref(),
            ..Constraints::default()
        };
        let route = crate::data::routing::route(&self.inner, &kind, c).await?;
        Ok((route.node.id.clone(), route.reason))
    }

    /// The node a read through this handle would use now, its session's replay check done.
    async fn pick_for_read(&self, session: Option<&SessionState>) -> Result<Arc<crate::cluster::Node>, Error> {
        let kind = self.inner.classifier.classify("SELECT 1");
        let target = self.target.clone().or_else(crate::data::routing::scoped_target);
        let c = Constraints {
            target: target.as_ref(),
            session,
            ..Constraints::default()
        };
        let route = crate::data::routing::route(&self.inner, &kind, c).await?;
        let Some(lsn) = route.check else { return Ok(route.node) };
        let node = route.node;
        let database = |source| Error::Database {
            node: node.id.clone(),
            source,
        };
        let mut conn = node.pool.acquire().await.map_err(database)?;
        if crate::data::executor::caught_up(self, &node, &mut conn, lsn)
            .await
            .map_err(database)?
        {
            return Ok(node);
        }
        crate::data::executor::behind_session(self, target.as_ref(), &node, lsn)?;
        Ok(self.inner.primary())
    }

    /// Failovers and switchovers, and their audit trail.
    pub fn failover(&self) -> crate::control::failover::FailoverManager {
        crate::control::failover::FailoverManager {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Closes every pool and stops the background loops; waits for checked-out connections.
    pub async fn close(&self) {
        let topology = self.inner.topology.load_full();
        for node in topology.nodes() {
            node.pool.close().await;
        }
        self.inner.stop();
    }
}
