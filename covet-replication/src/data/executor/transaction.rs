//! Transactions pinned to one node.

use std::ops::{Deref, DerefMut};

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres};

use crate::data::session::SessionState;

use crate::cluster::NodeId;

/// A transaction on one node: the primary for [`ReplicatedPool::begin`](crate::ReplicatedPool::begin),
/// one replica for [`begin_read_only`](crate::ReplicatedPool::begin_read_only).
///
/// Use it like sqlx's: `sqlx::query(..).execute(&mut *tx)`, then [`commit`](Self::commit).
/// Dropped without a commit, it rolls back.
#[derive(Debug)]
pub struct Transaction {
    inner: sqlx::Transaction<'static, Postgres>,
    node: NodeId,
    /// The session whose watermark a commit on the primary moves.
    session: Option<(Arc<SessionState>, PgPool)>,
}

impl Transaction {
    pub(crate) fn new(
        inner: sqlx::Transaction<'static, Postgres>,
        node: NodeId,
        session: Option<(Arc<SessionState>, PgPool)>,
    ) -> Self {
        Transaction { inner, node, session }
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
        self.inner.commit().await?;
        if let Some((session, primary)) = self.session {
            // The commit record is behind the insert position read after it.
            crate::data::session::record_write(&session, &primary).await;
        }
        Ok(())
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
