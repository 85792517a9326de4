//! What failover does to servers, each on a direct connection of its own: a node's pool may be
//! full, or full of dead connections, just when this matters.

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use super::check::{Sample, check};
use crate::error::PgError;

fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> PgError {
    move |source| PgError::Query { what, source }
}

/// A connection of its own to the server `options` name, within `timeout`.
pub(crate) async fn connect(options: &PgConnectOptions, timeout: Duration) -> Result<PgConnection, PgError> {
    // sqlx logs statements (and slow ones at WARN); ours carry `primary_conninfo`, password
    // included: never log them.
    let opts = options
        .clone()
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    match tokio::time::timeout(timeout, PgConnection::connect_with(&opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(PgError::Connect(e)),
        Err(_) => Err(PgError::ConnectTimeout(timeout)),
    }
}

/// [`check`] on a connection of its own, everything within `timeout`.
pub(crate) async fn survey(options: &PgConnectOptions, timeout: Duration) -> Result<Sample, PgError> {
    let mut conn = connect(options, timeout).await?;
    match tokio::time::timeout(timeout, check(&mut conn)).await {
        Ok(r) => r.map_err(query("survey")),
        Err(_) => Err(PgError::Timeout {
            what: "survey",
            after: timeout,
        }),
    }
}

/// Runs statements one by one (ALTER SYSTEM refuses to run in the implicit transaction of a
/// multi-statement string).
async fn run(conn: &mut PgConnection, what: &'static str, statements: &[&str]) -> Result<(), PgError> {
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *conn)
            .await
            .map_err(query(what))?;
    }
    Ok(())
}

/// A SQL string literal (ALTER SYSTEM takes no parameters).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Makes a primary refuse writes: new transactions read-only, client sessions ended (their open
/// transactions roll back). Walsenders keep running, so standbys still get the last WAL.
/// Returns the process ids of the sessions ended.
pub(crate) async fn fence(conn: &mut PgConnection) -> Result<Vec<i32>, PgError> {
    run(
        conn,
        "fence",
        &[
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ],
    )
    .await?;
    // Materialized first: in one WHERE clause the planner may terminate our own session
    // before it filters it out.
    sqlx::query_scalar(
        "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) \
         SELECT pid FROM victims WHERE pg_terminate_backend(pid)",
    )
    .fetch_all(conn)
    .await
    .map_err(query("ending sessions"))
}

/// After [`fence`]: waits until the ended sessions are gone (a signalled backend may still be
/// committing) and the WAL writer has flushed what asynchronous commits left behind.
pub(crate) async fn quiesce(conn: &mut PgConnection, ended: &[i32], timeout: Duration) -> Result<(), PgError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(ended)
            .fetch_one(&mut *conn)
            .await
            .map_err(query("ended sessions"))?;
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(PgError::SessionsRemain { left, after: timeout });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay_ms: i64 = sqlx::query_scalar("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_writer_delay'")
        .fetch_one(&mut *conn)
        .await
        .map_err(query("wal_writer_delay"))?;
    tokio::time::sleep(Duration::from_millis(u64::try_from(delay_ms).unwrap_or(200) + 20)).await;
    Ok(())
}

pub(crate) async fn unfence(conn: &mut PgConnection) -> Result<(), PgError> {
    run(
        conn,
        "unfence",
        &[
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ],
    )
    .await
}

/// Promotes a standby and returns its new timeline. Lift a fence left by an earlier life as
/// an old primary first ([`unfence`]), or the new primary would refuse writes.
pub(crate) async fn promote(conn: &mut PgConnection, timeout: Duration) -> Result<u32, PgError> {
    let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    let done: bool = sqlx::query_scalar("SELECT pg_promote(true, $1)")
        .bind(secs)
        .fetch_one(&mut *conn)
        .await
        .map_err(query("pg_promote"))?;
    if !done {
        return Err(PgError::NotPromoted(Duration::from_secs(secs.unsigned_abs().into())));
    }
    timeline(conn).await
}

/// The timeline a primary writes on.
pub(crate) async fn timeline(conn: &mut PgConnection) -> Result<u32, PgError> {
    let sample = check(conn).await.map_err(query("timeline"))?;
    sample
        .timeline
        .filter(|_| !sample.in_recovery)
        .ok_or(PgError::InRecovery)
}

/// Points a standby at a new primary: same connection settings but the address, a replication
/// slot of the same name created there first, then waits until it streams from it on the new
/// primary's `timeline`. (A standby that replayed past the new timeline's fork connects, streams
/// for a moment, and is cut off again: the timeline says whether it follows.)
pub(crate) async fn repoint(
    standby: &mut PgConnection,
    primary: &mut PgConnection,
    (host, port): (&str, u16),
    timeline: u32,
    timeout: Duration,
) -> Result<(), PgError> {
    let (conninfo, slot): (String, String) =
        sqlx::query_as("SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')")
            .fetch_one(&mut *standby)
            .await
            .map_err(query("primary_conninfo"))?;
    if !slot.is_empty() {
        sqlx::query(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(&slot)
        .execute(&mut *primary)
        .await
        .map_err(query("creating the replication slot"))?;
    }
    let conninfo = super::conninfo::repoint(&conninfo, host, port)?;
    let set = format!("ALTER SYSTEM SET primary_conninfo = {}", literal(&conninfo));
    run(standby, "setting primary_conninfo", &[&set, "SELECT pg_reload_conf()"]).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let sample = check(standby).await.map_err(query("wal receiver"))?;
        let receiver = sample.receiver.as_ref();
        if sample.streams_from(host, port) && receiver.and_then(|r| r.timeline).is_some_and(|t| t >= timeline) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(PgError::NotFollowing {
                timeline,
                after: timeout,
                receiver: receiver.map(|r| r.status.clone()),
                received_timeline: receiver.and_then(|r| r.timeline),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(super::literal("a'b"), "'a''b'");
        assert_eq!(super::literal(""), "''");
    }
}
