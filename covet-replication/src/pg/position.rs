//! WAL positions: where a primary is, how far a standby replayed, and waiting for it to get
//! somewhere.

use std::time::{Duration, Instant};

use sqlx::{Executor, PgConnection, Postgres};

use crate::core::Lsn;

/// The end of the primary's last WAL record: at or past the end of every write that completed
/// before the call, committed or not yet flushed, and reachable by a standby's replay.
pub(crate) async fn primary_lsn<'c, E>(executor: E) -> Result<Lsn, sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
{
    let lsn: Lsn = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()")
        .fetch_one(executor)
        .await?;
    Ok(lsn.record_end())
}

/// The position a primary has flushed: all a standby can receive.
pub(crate) async fn flushed_lsn(conn: &mut PgConnection) -> Result<Lsn, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()")
        .fetch_one(conn)
        .await
}

/// How far a standby has replayed (0/0 if it has replayed nothing yet).
async fn replay_lsn(conn: &mut PgConnection) -> Result<Lsn, sqlx::Error> {
    let lsn: Option<Lsn> = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()")
        .fetch_one(conn)
        .await?;
    Ok(lsn.unwrap_or(Lsn::ZERO))
}

/// How a wait for a standby to replay a position ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replayed {
    pub caught_up: bool,
    /// The last position read.
    pub lsn: Lsn,
    pub waited: Duration,
}

/// Reads the standby's replay position every `poll` until it reaches `lsn` or `max_wait` has
/// passed (one read when `max_wait` is zero); `seen` gets every position read.
pub(crate) async fn wait_replayed(
    conn: &mut PgConnection,
    lsn: Lsn,
    max_wait: Duration,
    poll: Duration,
    mut seen: impl FnMut(Lsn),
) -> Result<Replayed, sqlx::Error> {
    let started = Instant::now();
    loop {
        let replayed = replay_lsn(conn).await?;
        seen(replayed);
        let waited = started.elapsed();
        if replayed >= lsn || waited >= max_wait {
            return Ok(Replayed {
                caught_up: replayed >= lsn,
                lsn: replayed,
                waited,
            });
        }
        tokio::time::sleep(poll.min(max_wait - waited)).await;
    }
}

/// The connection's server process and the server's clock: what knows a transaction begun on
/// it next (`pg_stat_activity.xact_start` is at or after that time).
pub(crate) async fn backend_and_clock(conn: &mut PgConnection) -> Result<(i32, String), sqlx::Error> {
    sqlx::query_as("SELECT pg_backend_pid(), clock_timestamp()::text")
        .fetch_one(conn)
        .await
}

/// For each `(process, since)` from [`backend_and_clock`], whether a transaction begun since is
/// open on it; and the primary's position read after looking (so it covers the commits of those
/// that ended). One round trip.
pub(crate) async fn transactions_open<'c, E>(
    executor: E,
    began: &[(i32, String)],
) -> Result<(Vec<bool>, Lsn), sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
{
    let (pids, starts): (Vec<i32>, Vec<String>) = began.iter().cloned().unzip();
    let (open, lsn): (Vec<bool>, Lsn) = sqlx::query_as(
        "SELECT array(SELECT EXISTS (SELECT 1 FROM pg_stat_activity a \
           WHERE a.pid = t.pid AND a.xact_start >= t.start::timestamptz) \
           FROM unnest($1::int[], $2::text[]) WITH ORDINALITY AS t(pid, start, n) ORDER BY n), \
         pg_current_wal_insert_lsn()",
    )
    .bind(&pids)
    .bind(&starts)
    .fetch_one(executor)
    .await?;
    Ok((open, lsn.record_end()))
}
