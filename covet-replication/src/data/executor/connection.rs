//! Connections handed out whole, and sqlx's `Acquire` for the handle and sessions.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

use crate::cluster::NodeId;
use crate::data::Handle;
use crate::data::routing::Target;
use crate::data::session::SessionState;

/// A pooled connection to one node, from [`ReplicatedPool::acquire`](crate::ReplicatedPool::acquire) or sqlx's
/// [`Acquire`](sqlx::Acquire). Use it like sqlx's: `sqlx::query(..).execute(&mut *conn)`.
///
/// Whatever runs on a primary connection may write: from the moment it is handed out, the
/// session's reads go to the primary (as `PgPool` reads see a write on a held connection at
/// once); when it goes back to the pool, its WAL position is read, and reads go to replicas
/// that have replayed that position (exact read-after-write, as for statements through the
/// handle).
pub struct NodeConnection {
    conn: PoolConnection<Postgres>,
    node: NodeId,
    /// The session whose watermark this connection's writes move, and the handle (whose
    /// primary may have changed by the time it is returned).
    writes: Option<(Arc<SessionState>, Handle)>,
}

impl NodeConnection {
    pub(crate) fn new(
        conn: PoolConnection<Postgres>,
        node: NodeId,
        writes: Option<(Arc<SessionState>, Handle)>,
    ) -> Self {
        if let Some((session, _)) = &writes {
            // Existing code writes on a held connection and reads through the pool.
            session.wrote_unknown();
        }
        NodeConnection { conn, node, writes }
    }

    /// The node it is connected to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }
}

impl std::fmt::Debug for NodeConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConnection")
            .field("node", &self.node)
            .field("tracks_writes", &self.writes.is_some())
            .finish_non_exhaustive()
    }
}

impl Deref for NodeConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for NodeConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

/// As sqlx's `PoolConnection`: APIs bounded on `AsMut<PgConnection>` (`PgAdvisoryLock::acquire`)
/// take it.
impl AsMut<PgConnection> for NodeConnection {
    fn as_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl AsRef<PgConnection> for NodeConnection {
    fn as_ref(&self) -> &PgConnection {
        &self.conn
    }
}

impl Drop for NodeConnection {
    fn drop(&mut self) {
        let Some((session, pool)) = self.writes.take() else {
            return;
        };
        // Reads go to the primary from now until the position is known (Drop cannot wait).
        session.wrote_unknown();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(
                async move { crate::data::session::record_write(&session, &pool.cluster().primary().pool).await },
            );
        }
    }
}

/// sqlx's `Acquire`, for `session`: a primary connection, as `PgPool` gives (code written
/// for `Acquire`, and `Migrator::run`, may write on it).
pub(crate) fn acquire_primary<'c>(
    pool: Handle,
    session: Option<Arc<SessionState>>,
) -> BoxFuture<'c, Result<NodeConnection, sqlx::Error>> {
    Box::pin(async move {
        pool.acquire_in(session, Target::Primary)
            .await
            .map_err(|e| e.into_sqlx())
    })
}

/// sqlx's `Acquire::begin`: a transaction on the primary, as `ReplicatedPool::begin`.
pub(crate) fn begin_primary<'c>(
    pool: Handle,
    session: Option<Arc<SessionState>>,
) -> BoxFuture<'c, Result<sqlx::Transaction<'c, Postgres>, sqlx::Error>> {
    Box::pin(async move { pool.begin_in(session, None).await })
}

/// sqlx's `Acquire` for a handle type (as sqlx's `impl_acquire!`): `$parts` turns `self` into
/// the data handle and the session its work belongs to.
macro_rules! impl_acquire {
    ($ty:ty, |$this:ident| $parts:expr) => {
        impl<'c> ::sqlx::Acquire<'c> for &'c $ty {
            type Database = ::sqlx::Postgres;
            type Connection = $crate::data::executor::NodeConnection;

            fn acquire(
                self,
            ) -> ::futures::future::BoxFuture<'c, Result<$crate::data::executor::NodeConnection, ::sqlx::Error>> {
                let $this = self;
                let (handle, session) = $parts;
                $crate::data::executor::acquire_primary(handle, session)
            }

            fn begin(
                self,
            ) -> ::futures::future::BoxFuture<'c, Result<::sqlx::Transaction<'c, ::sqlx::Postgres>, ::sqlx::Error>>
            {
                let $this = self;
                let (handle, session) = $parts;
                $crate::data::executor::begin_primary(handle, session)
            }
        }
    };
}
pub(crate) use impl_acquire;
