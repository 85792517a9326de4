//! Transactions pinned to one node.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres};

use crate::topology::NodeId;

/// A transaction on one node: the primary for [`ReplicatedPool::begin`](crate::ReplicatedPool::begin),
/// one replica for [`begin_read_only`](crate::ReplicatedPool::begin_read_only).
///
/// Use it like sqlx's: `sqlx::query(..).execute(&mut *tx)`, then [`commit`](Self::commit).
/// Dropped without a commit, it rolls back.
#[derive(Debug)]
pub struct Transaction {
    inner: sqlx::Transaction<'static, Postgres>,
    node: NodeId,
}

impl Transaction {
    pub(crate) fn new(inner: sqlx::Transaction<'static, Postgres>, node: NodeId) -> Self {
        Transaction { inner, node }
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

impl Deref for Transaction {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for Transaction {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}
