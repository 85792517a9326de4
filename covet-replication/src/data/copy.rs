//! `COPY` through the handle, as `PgPoolCopyExt` on `PgPool`: on the primary, and counted as
//! its session's write.
//!
//! sqlx's `PgCopyIn` and copy-out stream own their connection, so the session cannot read the
//! position on it afterwards. Instead the session is pinned to the primary before the `COPY` is
//! sent, and the pin is lifted by a position read after the `COPY` ended: at once when it
//! finished or failed in our hands; when it was dropped half-way, once the primary shows no
//! backend still running that statement (a dropped `finish()` may commit after the drop).

use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgCopyIn, PgPoolCopyExt};

use super::handle::Handle;
use super::session::SessionState;

/// How long a dropped `COPY`'s settling waits for the primary to show it ended; after that the
/// session stays on the primary until its next write's position is known.
const DROPPED_WAIT: Duration = Duration::from_secs(30);

/// The pin a `COPY` holds on its session until a position read after it is known.
struct CopyPin {
    /// `None` once settled, or when the session does not track writes.
    session: Option<Arc<SessionState>>,
    epoch: u64,
    primary: PgPool,
    statement: String,
    /// The primary's clock before the `COPY` was sent.
    since: String,
}

impl CopyPin {
    /// Pins `session` (if it tracks writes) before `statement` is sent to `primary`.
    async fn take(session: Option<Arc<SessionState>>, primary: &PgPool, statement: &str) -> Result<Self, sqlx::Error> {
        let session = session.filter(|s| s.tracks_writes());
        let since = match &session {
            Some(_) => {
                sqlx::query_scalar("SELECT clock_timestamp()::text")
                    .fetch_one(primary)
                    .await?
            }
            None => String::new(),
        };
        let epoch = session.as_ref().map_or(0, |s| {
            s.wrote_unknown();
            s.epoch()
        });
        Ok(CopyPin {
            session,
            epoch,
            primary: primary.clone(),
            statement: statement.to_owned(),
            since,
        })
    }

    /// The `COPY` has ended in our hands: a position read now covers it.
    async fn settle(mut self) {
        if let Some(session) = self.session.take() {
            record_position(&session, self.epoch, &self.primary).await;
        }
    }
}

impl Drop for CopyPin {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else { return };
        // Outside a runtime the pin stays: the session reads from the primary.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (epoch, primary) = (self.epoch, self.primary.clone());
        let (statement, since) = (std::mem::take(&mut self.statement), std::mem::take(&mut self.since));
        session.begin_settling();
        runtime.spawn(async move {
            if wait_ended(&primary, &statement, &since).await {
                record_position(&session, epoch, &primary).await;
            }
            session.end_settling();
        });
    }
}

async fn record_position(session: &SessionState, epoch: u64, primary: &PgPool) {
    if let Ok(lsn) = crate::pg::primary_lsn(primary).await {
        session.wrote_since(epoch, lsn);
    }
}

/// Waits until no backend of the primary runs `statement` begun since `since` (ours among
/// them, if it still runs); `false` if that was not seen within [`DROPPED_WAIT`].
async fn wait_ended(primary: &PgPool, statement: &str, since: &str) -> bool {
    let deadline = tokio::time::Instant::now() + DROPPED_WAIT;
    while tokio::time::Instant::now() < deadline {
        let running: Result<bool, _> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE query = $1 AND query_start >= $2::timestamptz AND state <> 'idle' \
             AND pid <> pg_backend_pid())",
        )
        .bind(statement)
        .bind(since)
        .fetch_one(primary)
        .await;
        if let Ok(false) = running {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// A `COPY ... FROM STDIN` in progress on the primary: sqlx's `PgCopyIn`, whose commit counts
/// for the session that started it. Call [`finish`](Self::finish) or [`abort`](Self::abort);
/// dropped, the `COPY` is aborted (as sqlx's).
#[must_use = "the COPY is aborted unless finish() is called"]
pub struct CopyIn {
    inner: PgCopyIn<PoolConnection<sqlx::Postgres>>,
    pin: CopyPin,
}

impl std::fmt::Debug for CopyIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyIn")
            .field("statement", &self.pin.statement)
            .finish_non_exhaustive()
    }
}

impl CopyIn {
    /// Whether the data is text (text or CSV format), not binary.
    #[must_use]
    pub fn is_textual(&self) -> bool {
        self.inner.is_textual()
    }

    /// The number of columns expected.
    #[must_use]
    pub fn num_columns(&self) -> usize {
        self.inner.num_columns()
    }

    /// Whether column `column` is expected as text.
    ///
    /// # Panics
    /// If `column` is out of range (as sqlx's).
    #[must_use]
    pub fn column_is_textual(&self, column: usize) -> bool {
        self.inner.column_is_textual(column)
    }

    /// Sends a chunk of data.
    ///
    /// # Errors
    /// The connection's error.
    pub async fn send(&mut self, data: impl Deref<Target = [u8]>) -> Result<&mut Self, sqlx::Error> {
        self.inner.send(data).await?;
        Ok(self)
    }

    /// Sends everything `source` yields.
    ///
    /// # Errors
    /// The connection's or `source`'s error.
    pub async fn read_from(&mut self, source: impl tokio::io::AsyncRead + Unpin) -> Result<&mut Self, sqlx::Error> {
        self.inner.read_from(source).await?;
        Ok(self)
    }

    /// Aborts the `COPY` with `message` (nothing is written).
    ///
    /// # Errors
    /// The server's error, if it is not the abort's own.
    pub async fn abort(self, message: impl Into<String>) -> Result<(), sqlx::Error> {
        let Self { inner, pin } = self;
        let result = inner.abort(message).await;
        pin.settle().await;
        result
    }

    /// Ends the data and commits: the number of rows copied. The session's next reads see them.
    ///
    /// # Errors
    /// The server's error (bad data, a constraint): nothing is written then.
    pub async fn finish(self) -> Result<u64, sqlx::Error> {
        let Self { inner, pin } = self;
        let result = inner.finish().await;
        pin.settle().await;
        result
    }
}

/// The data of a `COPY ... TO STDOUT` from the primary, as sqlx's copy-out stream; one that may
/// write (`COPY (DELETE ... RETURNING *) TO STDOUT`) counts for its session.
///
/// Dropped before its end, it is read to the end in the background: sqlx's stream owns a pooled
/// connection that would go back to the pool mid-`COPY` (its next statement then fails with
/// "expected CopyOutResponse, got ReadyForQuery"), and the server runs the statement to its end
/// anyway.
struct CopyOut {
    /// `None` once ended (or handed to the drain).
    inner: Option<BoxStream<'static, Result<Bytes, sqlx::Error>>>,
    /// `Some` until the stream has ended.
    pin: Option<CopyPin>,
}

impl Stream for CopyOut {
    type Item = Result<Bytes, sqlx::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let next = inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.inner = None;
            // Ended: the pin's settling sees at once that it has.
            self.pin = None;
        }
        next
    }
}

impl Drop for CopyOut {
    fn drop(&mut self) {
        let Some(mut inner) = self.inner.take() else { return };
        let pin = self.pin.take();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            while futures::StreamExt::next(&mut inner).await.is_some() {}
            drop(inner);
            drop(pin);
        });
    }
}

impl Handle {
    /// `COPY ... FROM STDIN` on the primary for `session`.
    pub async fn copy_in_raw(
        &self,
        session: Option<Arc<SessionState>>,
        statement: &str,
    ) -> Result<CopyIn, sqlx::Error> {
        let primary = self.cluster().primary_for_write().await;
        let pin = CopyPin::take(session, &primary.pool, statement).await?;
        match primary.pool.copy_in_raw(statement).await {
            Ok(inner) => Ok(CopyIn { inner, pin }),
            Err(e) => {
                pin.settle().await;
                Err(e)
            }
        }
    }

    /// `COPY ... TO STDOUT` on the primary for `session`: tracked as a write unless the
    /// classifier finds it replica safe (a table, or a query that only reads).
    pub async fn copy_out_raw(
        &self,
        session: Option<Arc<SessionState>>,
        statement: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, sqlx::Error>>, sqlx::Error> {
        let primary = self.cluster().primary_for_write().await;
        let writes = !crate::classify::classify(statement).is_replica_safe();
        let pin = match writes {
            true => Some(CopyPin::take(session, &primary.pool, statement).await?),
            false => None,
        };
        match primary.pool.copy_out_raw(statement).await {
            Ok(inner) => Ok(Box::pin(CopyOut {
                inner: Some(inner),
                pin,
            })),
            Err(e) => {
                if let Some(pin) = pin {
                    pin.settle().await;
                }
                Err(e)
            }
        }
    }
}
