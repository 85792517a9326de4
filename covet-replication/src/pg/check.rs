//! The one round trip a health check makes.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::core::Lsn;

/// What one check saw on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sample {
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a standby.
    pub lsn: Lsn,
    /// `pg_last_wal_receive_lsn()` on a standby.
    pub receive_lsn: Option<Lsn>,
    pub replay_paused: bool,
    /// `pg_control_system().system_identifier`: the same on a primary and its standbys.
    pub system_id: u64,
    /// The timeline a primary writes on (None on a standby).
    pub timeline: Option<u32>,
    /// `default_transaction_read_only`: a fenced former primary has it on.
    pub read_only: bool,
    /// `synchronous_standby_names`.
    pub synchronous: String,
    /// The server's incarnation: its system identifier and postmaster start time. A position
    /// holds only for the incarnation that reported it (a standby restored from an older copy
    /// comes back at the same address, further behind).
    pub incarnation: u64,
    /// `wal_retrieve_retry_interval` in milliseconds: how long a standby whose primary died
    /// sleeps between attempts, which a promotion may wait out.
    pub retrieve_retry_ms: u32,
    pub rtt: Duration,
}

/// Works on both roles: the CASEs keep primary-only and standby-only functions from erroring.
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), \
    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
    pg_last_wal_receive_lsn()::text, \
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END, \
    (SELECT system_identifier FROM pg_control_system())::text, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
    current_setting('default_transaction_read_only') = 'on', \
    current_setting('synchronous_standby_names'), \
    (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8, \
    (SELECT setting::int4 FROM pg_settings WHERE name = 'wal_retrieve_retry_interval')";

/// One number for (system identifier, postmaster start): equal for one server's lifetime.
fn incarnation(system_id: u64, started_us: i64) -> u64 {
    system_id.rotate_left(17) ^ started_us as u64
}

pub(crate) async fn check(conn: &mut PgConnection) -> Result<Sample, sqlx::Error> {
    let started = Instant::now();
    type Row = (
        bool,
        Option<String>,
        Option<String>,
        bool,
        String,
        Option<String>,
        bool,
        String,
        i64,
        Option<i32>,
    );
    let (in_recovery, lsn, receive, paused, system_id, timeline, read_only, synchronous, started_us, retry_ms): Row =
        sqlx::query_as(CHECK_SQL).persistent(true).fetch_one(conn).await?;
    let rtt = started.elapsed();
    let parse = |s: Option<String>| s.and_then(|s| s.parse::<Lsn>().ok());
    Ok(Sample {
        in_recovery,
        lsn: parse(lsn).unwrap_or(Lsn::ZERO),
        receive_lsn: parse(receive),
        replay_paused: paused,
        system_id: system_id.parse().unwrap_or(0),
        timeline: timeline.and_then(|t| u32::from_str_radix(&t, 16).ok()),
        read_only,
        synchronous,
        incarnation: incarnation(system_id.parse().unwrap_or(0), started_us),
        retrieve_retry_ms: retry_ms.and_then(|ms| u32::try_from(ms).ok()).unwrap_or(0),
        rtt,
    })
}
