//! What failover asks of and does to the servers, each on a direct connection of its own: a
//! node's pool may be full, or full of dead connections, just when this matters.

use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::cluster::Node;
use crate::config::NodeConfig;
use crate::core::Lsn;

/// `Err(message)`: the reason is all a failover step records.
pub(crate) type OpResult<T> = Result<T, String>;

pub(crate) async fn connect(node: &Node, timeout: Duration) -> OpResult<PgConnection> {
    // sqlx logs statements (and slow ones at WARN); ours carry `primary_conninfo`, password
    // included: never log them.
    let opts = (*node.pool.connect_options())
        .clone()
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::ZERO);
    match tokio::time::timeout(timeout, PgConnection::connect_with(&opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// A node's replication state, from one query that works on both roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Survey {
    pub in_recovery: bool,
    pub received: Option<Lsn>,
    pub replayed: Option<Lsn>,
    pub system_id: u64,
    /// `pg_stat_wal_receiver.status` (`streaming`, `waiting`, ...); None without a receiver.
    pub receiver: Option<String>,
    pub sender_host: Option<String>,
    pub sender_port: Option<i32>,
    /// The name it replicates under (what `synchronous_standby_names` lists), for a standby
    /// whose `primary_conninfo` we may read.
    pub standby_name: Option<String>,
}

impl Survey {
    /// Whether it is receiving WAL from some server.
    pub fn streaming(&self) -> bool {
        self.receiver.as_deref() == Some("streaming")
    }

    /// Whether it is receiving WAL from the server at `host:port`.
    pub fn streams_from(&self, host: &str, port: u16) -> bool {
        self.streaming()
            && self.sender_port == Some(i32::from(port))
            && self.sender_host.as_deref().is_some_and(|h| same_host(h, host))
    }

    /// Where its WAL would come from on promotion: what it received, else what it replayed.
    pub fn position(&self) -> Lsn {
        self.received
            .unwrap_or(Lsn::ZERO)
            .max(self.replayed.unwrap_or(Lsn::ZERO))
    }
}

/// Whether two host names are the same server's, to a standby's walreceiver and to us.
fn same_host(a: &str, b: &str) -> bool {
    NodeConfig::host_key(a) == NodeConfig::host_key(b)
}

/// `primary_conninfo` from `pg_settings`, which leaves it out (NULL here) for a role that may
/// not read it, where `current_setting` would fail the whole survey.
const SURVEY_SQL: &str = "SELECT pg_is_in_recovery(), pg_last_wal_receive_lsn()::text, \
    pg_last_wal_replay_lsn()::text, (SELECT system_identifier FROM pg_control_system())::text, \
    r.status, r.sender_host, r.sender_port, \
    (SELECT setting FROM pg_settings WHERE name = 'primary_conninfo'), current_setting('cluster_name') \
    FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

pub(crate) async fn survey(node: &Node, timeout: Duration) -> OpResult<Survey> {
    let mut conn = connect(node, timeout).await?;
    type Row = (
        bool,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
        Option<i32>,
        Option<String>,
        String,
    );
    let row: Row = within(timeout, sqlx::query_as(SURVEY_SQL).fetch_one(&mut conn)).await?;
    let parse = |s: Option<String>| s.and_then(|s| s.parse::<Lsn>().ok());
    Ok(Survey {
        in_recovery: row.0,
        received: parse(row.1),
        replayed: parse(row.2),
        system_id: row.3.parse().unwrap_or(0),
        receiver: row.4,
        sender_host: row.5,
        sender_port: row.6,
        standby_name: row
            .7
            .filter(|_| row.0)
            .map(|conninfo| super::conninfo::standby_name(&conninfo, &row.8)),
    })
}

async fn within<T>(timeout: Duration, fut: impl Future<Output = Result<T, sqlx::Error>>) -> OpResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// Runs statements one by one (ALTER SYSTEM refuses to run in the implicit transaction of a
/// multi-statement string).
async fn run(conn: &mut PgConnection, statements: &[&str]) -> OpResult<()> {
    for sql in statements {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
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
pub(crate) async fn fence(conn: &mut PgConnection) -> OpResult<Vec<i32>> {
    run(
        conn,
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
    .map_err(|e| e.to_string())
}

/// After [`fence`]: waits until the ended sessions are gone (a signalled backend may still be
/// committing) and the WAL writer has flushed what asynchronous commits left behind.
pub(crate) async fn quiesce(conn: &mut PgConnection, ended: &[i32], timeout: Duration) -> OpResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
            .bind(ended)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("{left} ended sessions still running after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delay_ms: i64 = sqlx::query_scalar("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_writer_delay'")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::sleep(Duration::from_millis(u64::try_from(delay_ms).unwrap_or(200) + 20)).await;
    Ok(())
}

/// Whether a fenced node refuses writes now.
pub(crate) async fn is_fenced(conn: &mut PgConnection) -> OpResult<bool> {
    sqlx::query_scalar("SELECT current_setting('default_transaction_read_only') = 'on'")
        .fetch_one(conn)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) async fn unfence(conn: &mut PgConnection) -> OpResult<()> {
    run(
        conn,
        &[
            "ALTER SYSTEM RESET default_transaction_read_only",
            "SELECT pg_reload_conf()",
        ],
    )
    .await
}

/// The position a primary has flushed: all a standby can receive.
pub(crate) async fn flushed_lsn(conn: &mut PgConnection) -> OpResult<Lsn> {
    let s: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(conn)
        .await
        .map_err(|e| e.to_string())?;
    s.parse().map_err(|e| format!("{e}"))
}

/// Waits until the standby has replayed `lsn`; returns what it replayed last.
pub(crate) async fn wait_replayed(conn: &mut PgConnection, lsn: Lsn, timeout: Duration) -> OpResult<(bool, Lsn)> {
    let deadline = Instant::now() + timeout;
    loop {
        let s: Option<String> = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn()::text")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| e.to_string())?;
        let replayed = s.and_then(|s| s.parse().ok()).unwrap_or(Lsn::ZERO);
        if replayed >= lsn || Instant::now() >= deadline {
            return Ok((replayed >= lsn, replayed));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Promotes a standby and returns its new timeline. Lift a fence left by an earlier life as
/// an old primary first ([`unfence`]), or the new primary would refuse writes.
pub(crate) async fn promote(conn: &mut PgConnection, timeout: Duration) -> OpResult<u32> {
    let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
    let done: bool = sqlx::query_scalar("SELECT pg_promote(true, $1)")
        .bind(secs)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| e.to_string())?;
    if !done {
        return Err(format!("pg_promote did not finish within {secs}s"));
    }
    timeline(conn).await
}

/// The timeline a primary writes on.
pub(crate) async fn timeline(conn: &mut PgConnection) -> OpResult<u32> {
    let (recovering, tli): (bool, Option<String>) = sqlx::query_as(
        "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL \
         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
    )
    .fetch_one(conn)
    .await
    .map_err(|e| e.to_string())?;
    match tli {
        Some(t) if !recovering => u32::from_str_radix(&t, 16).map_err(|e| e.to_string()),
        _ => Err("still in recovery".into()),
    }
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
) -> OpResult<()> {
    let target = (host, port);
    let (conninfo, slot): (String, String) =
        sqlx::query_as("SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')")
            .fetch_one(&mut *standby)
            .await
            .map_err(|e| e.to_string())?;
    if !slot.is_empty() {
        sqlx::query(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
        )
        .bind(&slot)
        .execute(&mut *primary)
        .await
        .map_err(|e| format!("creating replication slot {slot:?}: {e}"))?;
    }
    let conninfo = super::conninfo::repoint(&conninfo, host, port).map_err(|e| format!("primary_conninfo: {e}"))?;
    let set = format!("ALTER SYSTEM SET primary_conninfo = {}", literal(&conninfo));
    run(standby, &[&set, "SELECT pg_reload_conf()"]).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let (status, sender_host, sender_port, tli): (Option<String>, Option<String>, Option<i32>, Option<i32>) =
            sqlx::query_as(
                "SELECT r.status, r.sender_host, r.sender_port, r.received_tli \
             FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true",
            )
            .fetch_one(&mut *standby)
            .await
            .map_err(|e| e.to_string())?;
        // Host and port: in production every node may listen on 5432.
        if status.as_deref() == Some("streaming")
            && tli.is_some_and(|t| i64::from(t) >= i64::from(timeline))
            && sender_port == Some(i32::from(target.1))
            && sender_host.as_deref().is_some_and(|h| same_host(h, target.0))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not streaming from the new primary on timeline {timeline} after {timeout:?} (receiver: {}, timeline {})",
                status.as_deref().unwrap_or("none"),
                tli.unwrap_or(0)
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_is_judged_by_status_and_address() {
        let s = Survey {
            in_recovery: true,
            received: Some(Lsn(10)),
            replayed: Some(Lsn(8)),
            system_id: 1,
            receiver: Some("streaming".into()),
            sender_host: Some("localhost".into()),
            sender_port: Some(5432),
            standby_name: Some("replica1".into()),
        };
        assert!(s.streams_from("127.0.0.1", 5432));
        assert!(!s.streams_from("127.0.0.1", 5433));
        assert!(!s.streams_from("10.0.0.1", 5432));
        let waiting = Survey {
            receiver: Some("waiting".into()),
            ..s.clone()
        };
        assert!(!waiting.streams_from("127.0.0.1", 5432));
        assert_eq!(s.position(), Lsn(10));
        let no_receiver = Survey { received: None, ..s };
        assert_eq!(no_receiver.position(), Lsn(8));
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
