//! A write whose statement did not end normally still counts for its session.
//!
//! The watermark moves when a write's bookkeeping reads the primary's position after it. A
//! statement that fails after a COMMIT (`INSERT ...; COMMIT; SELECT 1/0`, a procedure that
//! commits then raises), or whose stream or future the caller drops (an early `break`, a
//! timeout, a cancelled task), may have written all the same, and never got there: the next
//! read went to a replica without the row. Such a connection pins the session when it is
//! dropped, and a task waits on it until the statement has ended, reads the position there,
//! and lifts the pin.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, Postgres};

use crate::data::routing::Route;
use crate::data::session::SessionState;

/// A connection running a statement for `session` that may write on the primary.
pub(super) struct Unsettled {
    conn: Option<PoolConnection<Postgres>>,
    /// `Some` until the statement's bookkeeping is done: what a drop must settle.
    session: Option<Arc<SessionState>>,
}

impl Unsettled {
    pub fn new(conn: PoolConnection<Postgres>, route: &Route, session: Option<&Arc<SessionState>>) -> Self {
        Unsettled {
            conn: Some(conn),
            session: session.filter(|s| route.writes && s.tracks_writes()).cloned(),
        }
    }

    /// The statement's bookkeeping ran (or its outcome is no concern of the session's).
    pub fn settled(&mut self) {
        self.session = None;
    }

    /// The connection, settled.
    pub fn into_inner(mut self) -> PoolConnection<Postgres> {
        self.session = None;
        self.conn.take().expect("connection present until drop")
    }
}

impl Deref for Unsettled {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for Unsettled {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        let (Some(session), Some(mut conn)) = (self.session.take(), self.conn.take()) else {
            return;
        };
        // Until the position is known the session reads from the primary, and its next reads
        // wait for it: the statement may still be committing.
        session.wrote_unknown();
        let epoch = session.epoch();
        // Outside a runtime (a process shutting down) the pin stays: reads stay on the primary.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        session.begin_settling();
        runtime.spawn(async move {
            // A ping first waits out whatever the statement still sends: then it has ended,
            // committed or not, and a position read after it covers it.
            if conn.ping().await.is_ok()
                && let Ok(lsn) = crate::pg::primary_lsn(&mut *conn).await
            {
                session.wrote_since(epoch, lsn);
            }
            session.end_settling();
        });
    }
}
