//! Sessions: read-your-writes from WAL positions, monotonic reads, and causal tokens.
//!
//! A session records the primary's WAL position after each of its writes (its watermark). A
//! read may go to a replica only if that replica has replayed the watermark: the health loop's
//! cached replay position decides when it can; otherwise the chosen replica is asked
//! (`pg_last_wal_replay_lsn()`, on the connection the read then uses), waited for up to
//! `consistency.max_wait`, and the read goes to the primary if it is still behind.

mod state;
mod stats;
mod token;

pub(crate) use state::SessionState;
pub use stats::ConsistencyCounters;
pub(crate) use stats::ConsistencyStats;
pub use token::{CausalToken, TokenError};

use std::future::Future;
use std::sync::Arc;

use crate::config::Consistency;
use crate::core::Lsn;
use crate::data::Handle;
use crate::data::executor::ReadOnlyTransaction;

/// A unit of work with a consistency promise: typically one request or one user.
///
/// `&Session` is an sqlx `Executor`, like `&ReplicatedPool`. Creating one does no I/O and
/// takes no lock; clones share the watermark.
///
/// ```no_run
/// # async fn demo(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
/// let session = db.session(); // ReadAfterWrite unless configured otherwise
/// sqlx::query("UPDATE users SET name = $1 WHERE id = 1").bind("ana").execute(&session).await?;
/// // A replica serves this only if it has replayed the update; else the primary does.
/// let name: String = sqlx::query_scalar("SELECT name FROM users WHERE id = 1").fetch_one(&session).await?;
/// assert_eq!(name, "ana");
/// let token = session.token(); // for the next request, in a header or cookie
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) handle: Handle,
    pub(crate) state: Arc<SessionState>,
}

crate::data::executor::impl_executor!(Session, |s| (s.handle.clone(), Some(Arc::clone(&s.state))));
crate::data::executor::impl_acquire!(Session, |s| (s.handle.clone(), Some(Arc::clone(&s.state))));

tokio::task_local! {
    static SCOPED: Arc<SessionState>;
}

/// The session of the enclosing [`Session::scope`], if any.
pub(crate) fn scoped() -> Option<Arc<SessionState>> {
    SCOPED.try_with(Arc::clone).ok()
}

impl Session {
    pub(crate) fn new(handle: Handle, level: Consistency) -> Self {
        Session {
            handle,
            state: Arc::new(SessionState::new(level, true)),
        }
    }

    /// This session for one read at `level` (see `SessionState::at_level`).
    pub(crate) fn at_level(&self, level: Consistency) -> Session {
        Session {
            handle: self.handle.clone(),
            state: SessionState::at_level(&self.state, level),
        }
    }

    /// This session's state through another handle (a target, a known statement kind).
    pub(crate) fn with_handle(self, handle: Handle) -> Session {
        Session { handle, ..self }
    }

    /// This session, for statements sent to `target` (a [`Target`](crate::data::routing::Target) or a
    /// [`ReadPreference`](crate::ReadPreference)), as [`ReplicatedPool::using`](crate::ReplicatedPool::using) for the handle.
    /// The session's promises still hold: one that needs a position a replica target has not
    /// replayed gets [`NotCaughtUp`](crate::Error::NotCaughtUp), never the primary in its place.
    ///
    /// ```no_run
    /// # async fn demo(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
    /// use covet_replication::Target;
    /// let session = db.session();
    /// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
    ///     .fetch_one(&session.using(Target::Primary))
    ///     .await?;
    /// # let _ = n; Ok(()) }
    /// ```
    #[must_use]
    pub fn using(&self, target: impl Into<crate::data::routing::Target>) -> Session {
        Session {
            handle: self.handle.using(target.into()),
            state: Arc::clone(&self.state),
        }
    }

    /// The session's consistency level.
    pub fn consistency(&self) -> Consistency {
        self.state.level
    }

    /// The primary's WAL position after this session's latest write, if it wrote.
    pub fn watermark(&self) -> Option<Lsn> {
        self.state.watermark()
    }

    /// A compact token carrying this session's guarantee to another process:
    /// [`ReplicatedPool::session_from_token`](crate::ReplicatedPool::session_from_token) continues it there.
    pub fn token(&self) -> String {
        let (system_id, timeline) = self.handle.cluster().identity.get();
        CausalToken {
            system_id,
            timeline,
            lsn: self.state.causal_lsn(),
        }
        .to_string()
    }

    /// Begins a transaction on the primary; its commit counts as a write of this session.
    ///
    /// # Errors
    /// The database error if no connection can be had or `BEGIN` fails.
    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.handle.begin_in(Some(Arc::clone(&self.state)), None).await
    }

    /// `COPY ... FROM STDIN` on the primary for this session (see
    /// [`ReplicatedPool::copy_in_raw`](crate::ReplicatedPool::copy_in_raw)).
    ///
    /// # Errors
    /// The database error if the primary cannot be reached or refuses the statement.
    pub async fn copy_in_raw(&self, statement: &str) -> Result<crate::data::CopyIn, sqlx::Error> {
        self.handle.copy_in_raw(Some(Arc::clone(&self.state)), statement).await
    }

    /// A connection to the primary for this session (see
    /// [`ReplicatedPool::acquire`](crate::ReplicatedPool::acquire)): work on it counts as its
    /// write.
    ///
    /// # Errors
    /// As [`ReplicatedPool::acquire`](crate::ReplicatedPool::acquire).
    pub async fn acquire(&self) -> Result<crate::data::executor::NodeConnection, sqlx::Error> {
        self.acquire_on(crate::data::routing::Target::Primary).await
    }

    /// A connection from the node `target` selects, for this session (see
    /// [`ReplicatedPool::acquire_on`](crate::ReplicatedPool::acquire_on)).
    ///
    /// # Errors
    /// As [`ReplicatedPool::acquire`](crate::ReplicatedPool::acquire).
    pub async fn acquire_on(
        &self,
        target: impl Into<crate::data::routing::Target>,
    ) -> Result<crate::data::executor::NodeConnection, sqlx::Error> {
        self.handle
            .acquire_in(Some(Arc::clone(&self.state)), target.into())
            .await
            .map_err(crate::error::Error::into_sqlx)
    }

    /// Begins a read-only, repeatable-read transaction on a replica that has replayed this
    /// session's writes (or on the primary if none has in time).
    ///
    /// # Errors
    /// As [`ReplicatedPool::begin_read_only`](crate::ReplicatedPool::begin_read_only).
    pub async fn begin_read_only(&self) -> Result<ReadOnlyTransaction, sqlx::Error> {
        self.handle.begin_read_only_in(Some(Arc::clone(&self.state))).await
    }

    /// Where this session's latest statement was sent, and why (`None` before the first):
    /// the node that served it, without SQL tricks. Statements through a plain handle inside
    /// [`scope`](Self::scope) count; those in a transaction or on a held connection do not
    /// (they run where it was begun), nor reads at another level than the session's (the
    /// ORM's `.consistency()`).
    ///
    /// ```no_run
    /// # async fn f(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
    /// let session = db.session();
    /// sqlx::query("SELECT 1").execute(&session).await?;
    /// let served = session.last_route().expect("one statement ran");
    /// println!("{} ({:?}, {:?})", served.node, served.role, served.reason);
    /// # Ok(()) }
    /// ```
    pub fn last_route(&self) -> Option<crate::data::routing::Routed> {
        self.state.last_route()
    }

    /// Runs `fut` with this session as the one every statement sent through a plain
    /// `ReplicatedPool` handle uses: request middleware sets it, handlers keep their `&db`.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        SCOPED.scope(Arc::clone(&self.state), fut).await
    }
}

/// Moves `session`'s watermark past writes that completed on the primary before the call
/// (commits included); if the position cannot be read, reads go to the primary until the next
/// write.
pub(crate) async fn record_write(session: &SessionState, primary: &sqlx::PgPool) {
    let epoch = session.epoch();
    match crate::pg::primary_lsn(primary).await {
        Ok(lsn) => session.wrote_since(epoch, lsn),
        Err(_) => session.wrote_unknown(),
    }
}

/// Looks on the primary for the session's transactions begun through sqlx's `Acquire`: those
/// that ended are settled with a position read after seeing that, which covers their commits.
/// Each is known by its server process and a time read just before its `BEGIN`: a transaction
/// begun since on that process is taken for it (a later one on the same pooled connection
/// keeps reads on the primary a little longer, never shorter).
/// One round trip, only while such a transaction is open; on error they stay open (reads stay
/// on the primary).
pub(crate) async fn settle_untracked(session: &SessionState, primary: &sqlx::PgPool) {
    let open = session.untracked();
    if open.is_empty() {
        return;
    }
    let Ok((still_open, lsn)) = crate::pg::transactions_open(primary, &open).await else {
        return;
    };
    let ended: Vec<(i32, String)> = open
        .into_iter()
        .zip(still_open)
        .filter(|(_, open)| !open)
        .map(|(t, _)| t)
        .collect();
    if !ended.is_empty() {
        session.settled(&ended, lsn);
    }
}
