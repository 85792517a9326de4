//! Read-only transactions pinned to one replica.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres};

use crate::cluster::NodeId;

/// A read-only, repeatable-read transaction on one node, from
/// [`ReplicatedPool::begin_read_only`](crate::ReplicatedPool::begin_read_only): a replica that
/// has replayed the session's writes, or the primary when none has in time.
///
/// Use it like sqlx's: `sqlx::query(..).fetch_all(&mut *tx)`, then [`commit`](Self::commit).
/// Dropped without a commit, it rolls back. (Read-write transactions are sqlx's own
/// `Transaction`, from [`ReplicatedPool::begin`](crate::ReplicatedPool::begin).)
#[derive(Debug)]
pub struct ReadOnlyTransaction {
    inner: sqlx::Transaction<'static, Postgres>,
    node: NodeId,
}

impl ReadOnlyTransaction {
    pub(crate) fn new(inner: sqlx::Transaction<'static, Postgres>, node: NodeId) -> Self {
        ReadOnlyTransaction { inner, node }
    }

    /// The node the transaction runs on.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Commits.
    ///
    /// # Errors
    /// The database error if the commit fails.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Rolls back.
    ///
    /// # Errors
    /// The database error if the rollback fails.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for ReadOnlyTransaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for ReadOnlyTransaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}
