//! The data plane's handle, and what the public handle and sessions do through it besides
//! running statements: transactions, whole connections, explaining a route, tokens.

use std::sync::Arc;

use sqlx::Postgres;

use super::Plane;
use super::executor::{NodeConnection, ReadOnlyTransaction};
use super::routing::{Constraints, RouteReason, Target};
use super::session::{CausalToken, Session, SessionState, TokenError};
use crate::classify::QueryKind;
use crate::cluster::{Cluster, Node, NodeId, Role};
use crate::config::Consistency;
use crate::core::Lsn;
use crate::error::Error;

/// The data plane as a handle sees it: the plane, a per-handle target, and the class of the
/// statements sent through it when the caller knows it (the ORM: the executor then skips the
/// classifier). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub plane: Arc<Plane>,
    pub target: Option<Target>,
    pub known_kind: Option<QueryKind>,
}

impl Handle {
    pub fn new(plane: Plane) -> Self {
        Handle {
            plane: Arc::new(plane),
            target: None,
            known_kind: None,
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.plane.cluster
    }

    /// This handle, for statements sent to `target`.
    pub fn using(&self, target: Target) -> Self {
        Handle {
            plane: Arc::clone(&self.plane),
            target: Some(target),
            known_kind: None,
        }
    }

    /// This handle, for statements of `kind` only: routed by `kind` without parsing them.
    pub fn with_known_kind(mut self, kind: QueryKind) -> Self {
        self.known_kind = Some(kind);
        self
    }

    /// The target in force: the handle's, else the enclosing `with_target`'s.
    pub fn target(&self) -> Option<Target> {
        self.target.clone().or_else(super::routing::scoped_target)
    }

    /// The session a statement through this handle belongs to: the enclosing
    /// `Session::scope`, else the handle's own.
    pub fn effective_session(&self) -> Option<Arc<SessionState>> {
        super::session::scoped().or_else(|| Some(Arc::clone(&self.plane.handle_session)))
    }

    /// The effective session at `level`, for one read through this handle.
    pub fn session_at(&self, level: Consistency) -> Session {
        let state = match self.effective_session() {
            Some(source) => SessionState::at_level(&source, level),
            None => Arc::new(SessionState::new(level, false)),
        };
        Session {
            handle: self.clone(),
            state,
        }
    }
}

impl Handle {
    /// A transaction on the primary, begun with `statement` (default `BEGIN`).
    pub async fn begin_in(
        &self,
        session: Option<Arc<SessionState>>,
        statement: Option<sqlx::SqlStr>,
    ) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let begun = self.begin_on_primary(session, statement, false).await?;
        begun.ok_or(sqlx::Error::PoolTimedOut)
    }

    /// A transaction on the primary, begun with `statement` (default `BEGIN`); with `idle_only`,
    /// only if a connection is free at once (`None` otherwise), as `PgPool::try_begin`.
    ///
    /// It is sqlx's own `Transaction`, which cannot report its commit: the session notes the
    /// transaction's server process and a time read just before `BEGIN` (one more round trip,
    /// before it, since nothing of ours may run inside the user's transaction, whose first
    /// statement may have to be `SET TRANSACTION ISOLATION LEVEL ...`), and its reads look on
    /// the primary whether it has ended (see `session::settle_untracked`).
    pub async fn begin_on_primary(
        &self,
        session: Option<Arc<SessionState>>,
        statement: Option<sqlx::SqlStr>,
        idle_only: bool,
    ) -> Result<Option<sqlx::Transaction<'static, Postgres>>, sqlx::Error> {
        let primary = self.cluster().primary_for_write().await;
        let mut conn = if idle_only {
            let Some(conn) = primary.pool.try_acquire() else {
                return Ok(None);
            };
            conn
        } else {
            primary.pool.acquire().await?
        };
        if let Some(session) = session.filter(|s| s.tracks_writes()) {
            let (pid, since) = crate::pg::backend_and_clock(&mut conn).await?;
            session.add_untracked(pid, since);
        }
        sqlx::Transaction::begin(conn, statement).await.map(Some)
    }

    pub fn session_with(&self, level: Consistency) -> Session {
        Session::new(self.clone(), level)
    }

    /// See `ReplicatedPool::session_from_token`.
    pub fn session_from_token(&self, token: &str) -> Result<Session, TokenError> {
        let token: CausalToken = token.parse()?;
        let (system_id, timeline) = self.cluster().identity.get();
        if system_id != 0 && token.system_id != 0 && token.system_id != system_id {
            return Err(TokenError::ForeignCluster {
                expected: system_id,
                found: token.system_id,
            });
        }
        let session = self.session_with(self.cluster().config.consistency.session);
        if system_id == 0 || token.system_id == 0 || token.timeline != timeline || token.lsn == Lsn(u64::MAX) {
            session.state.pin();
        } else if token.lsn != Lsn::ZERO {
            session.state.wrote(token.lsn);
            session.state.raise_floor(token.lsn);
        }
        Ok(session)
    }

    pub async fn begin_read_only_in(
        &self,
        session: Option<Arc<SessionState>>,
    ) -> Result<ReadOnlyTransaction, sqlx::Error> {
        let node = self.pick_for_read(session.as_deref()).await.map_err(Error::into_sqlx)?;
        let tx = node
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        if let Some(session) = session.filter(|_| node.role() == Role::Replica) {
            session.read_from(&node.id, node.replay_lsn());
        }
        Ok(ReadOnlyTransaction::new(tx, node.id.clone()))
    }

    pub async fn acquire_in(
        &self,
        session: Option<Arc<SessionState>>,
        target: Target,
    ) -> Result<NodeConnection, Error> {
        let pinned = self.using(target);
        let node = pinned.pick_for_read(session.as_deref()).await?;
        let conn = node.pool.acquire().await.map_err(|source| Error::Database {
            node: node.id.clone(),
            source,
        })?;
        let writes = session
            .filter(|s| s.tracks_writes() && node.role() == Role::Primary)
            .map(|s| (s, self.clone()));
        Ok(NodeConnection::new(conn, node.id.clone(), writes))
    }

    /// See `ReplicatedPool::explain`.
    pub async fn explain(&self, sql: &str) -> Result<(NodeId, RouteReason), Error> {
        let kind = self.plane.classifier.classify(sql);
        let target = self.target();
        let session = self.effective_session();
        let c = Constraints {
            target: target.as_ref(),
            session: session.as_deref(),
            ..Constraints::default()
        };
        let route = super::routing::route(&self.plane, &kind, c).await?;
        Ok((route.node.id.clone(), route.reason))
    }

    /// The node a read through this handle would use now, its session's replay check done.
    async fn pick_for_read(&self, session: Option<&SessionState>) -> Result<Arc<Node>, Error> {
        let kind = self.plane.classifier.classify("SELECT 1");
        let target = self.target();
        let c = Constraints {
            target: target.as_ref(),
            session,
            ..Constraints::default()
        };
        let route = super::routing::route(&self.plane, &kind, c).await?;
        let Some(lsn) = route.check else { return Ok(route.node) };
        let node = route.node;
        let database = |source| Error::Database {
            node: node.id.clone(),
            source,
        };
        let mut conn = node.pool.acquire().await.map_err(database)?;
        if super::executor::caught_up(self, &node, &mut conn, lsn)
            .await
            .map_err(database)?
        {
            return Ok(node);
        }
        super::executor::behind_session(self, target.as_ref(), &node, lsn)?;
        Ok(self.cluster().primary())
    }
}
