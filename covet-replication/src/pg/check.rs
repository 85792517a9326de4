//! "Who are you": the one query that asks a server its role, positions, identity and upstream.
//! Health checks send it every interval; failover surveys, confirms and repoints with it.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use crate::config::NodeConfig;
use crate::core::Lsn;

/// What one check saw on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a standby.
    pub lsn: Lsn,
    /// `pg_last_wal_receive_lsn()`: what a standby received (None if it never streamed).
    pub received: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`: what it replayed (on a primary, before its promotion).
    pub replayed: Option<Lsn>,
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
    /// `pg_stat_wal_receiver`, on a standby that runs a receiver.
    pub receiver: Option<WalReceiver>,
    /// The name a standby replicates under (what `synchronous_standby_names` lists), when its
    /// `primary_conninfo` may be read.
    pub standby_name: Option<String>,
    pub rtt: Duration,
}

/// A standby's WAL receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalReceiver {
    /// `streaming`, `waiting`, `starting`, ...
    pub status: String,
    pub sender_host: Option<String>,
    pub sender_port: Option<u16>,
    /// The timeline of the WAL it receives.
    pub timeline: Option<u32>,
}

impl Sample {
    /// Whether it is receiving WAL from some server.
    pub fn streaming(&self) -> bool {
        self.receiver.as_ref().is_some_and(|r| r.status == "streaming")
    }

    /// Whether it is receiving WAL from the server at `host:port` (in production every node may
    /// listen on 5432: the host counts too).
    pub fn streams_from(&self, host: &str, port: u16) -> bool {
        self.receiver.as_ref().is_some_and(|r| {
            r.status == "streaming"
                && r.sender_port == Some(port)
                && r.sender_host
                    .as_deref()
                    .is_some_and(|h| NodeConfig::host_key(h) == NodeConfig::host_key(host))
        })
    }

    /// Where its WAL would come from on promotion: what it received, else what it replayed.
    pub fn position(&self) -> Lsn {
        self.received
            .unwrap_or(Lsn::ZERO)
            .max(self.replayed.unwrap_or(Lsn::ZERO))
    }

    /// The receiver's status, `none` without one.
    pub fn receiver_status(&self) -> &str {
        self.receiver.as_ref().map_or("none", |r| r.status.as_str())
    }
}

/// Works on both roles: the CASEs keep primary-only and standby-only functions from erroring.
/// `primary_conninfo` comes from `pg_settings`, which leaves it out (NULL) for a role that may
/// not read it, where `current_setting` would fail the whole check.
const CHECK_SQL: &str = "SELECT pg_is_in_recovery() AS in_recovery, \
    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END AS lsn, \
    pg_last_wal_receive_lsn() AS received, pg_last_wal_replay_lsn() AS replayed, \
    CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END AS paused, \
    (SELECT system_identifier FROM pg_control_system()) AS system_id, \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END AS timeline, \
    current_setting('default_transaction_read_only') = 'on' AS read_only, \
    current_setting('synchronous_standby_names') AS synchronous, \
    (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8 AS started_us, \
    (SELECT setting::int4 FROM pg_settings WHERE name = 'wal_retrieve_retry_interval') AS retry_ms, \
    r.status AS receiver, r.sender_host, r.sender_port, r.received_tli, \
    CASE WHEN pg_is_in_recovery() THEN (SELECT setting FROM pg_settings WHERE name = 'primary_conninfo') END AS conninfo, \
    current_setting('cluster_name') AS cluster_name \
    FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

#[derive(sqlx::FromRow)]
struct Row {
    in_recovery: bool,
    lsn: Option<Lsn>,
    received: Option<Lsn>,
    replayed: Option<Lsn>,
    paused: bool,
    system_id: i64,
    timeline: Option<String>,
    read_only: bool,
    synchronous: String,
    started_us: i64,
    retry_ms: Option<i32>,
    receiver: Option<String>,
    sender_host: Option<String>,
    sender_port: Option<i32>,
    received_tli: Option<i32>,
    conninfo: Option<String>,
    cluster_name: String,
}

/// One number for (system identifier, postmaster start): equal for one server's lifetime.
fn incarnation(system_id: u64, started_us: i64) -> u64 {
    system_id.rotate_left(17) ^ started_us as u64
}

pub(crate) async fn check(conn: &mut PgConnection) -> Result<Sample, sqlx::Error> {
    let started = Instant::now();
    let row: Row = sqlx::query_as(CHECK_SQL).persistent(true).fetch_one(conn).await?;
    let rtt = started.elapsed();
    // The identifier is an unsigned 64-bit number the server shows as a signed bigint.
    let system_id = row.system_id as u64;
    Ok(Sample {
        in_recovery: row.in_recovery,
        lsn: row.lsn.unwrap_or(Lsn::ZERO),
        received: row.received,
        replayed: row.replayed,
        replay_paused: row.paused,
        system_id,
        timeline: row.timeline.and_then(|t| u32::from_str_radix(&t, 16).ok()),
        read_only: row.read_only,
        synchronous: row.synchronous,
        incarnation: incarnation(system_id, row.started_us),
        retrieve_retry_ms: row.retry_ms.and_then(|ms| u32::try_from(ms).ok()).unwrap_or(0),
        receiver: row.receiver.map(|status| WalReceiver {
            status,
            sender_host: row.sender_host,
            sender_port: row.sender_port.and_then(|p| u16::try_from(p).ok()),
            timeline: row.received_tli.and_then(|t| u32::try_from(t).ok()),
        }),
        standby_name: row
            .conninfo
            .map(|conninfo| super::conninfo::standby_name(&conninfo, &row.cluster_name)),
        rtt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_is_judged_by_status_and_address() {
        let s = Sample {
            in_recovery: true,
            received: Some(Lsn(10)),
            replayed: Some(Lsn(8)),
            receiver: Some(WalReceiver {
                status: "streaming".into(),
                sender_host: Some("localhost".into()),
                sender_port: Some(5432),
                timeline: Some(1),
            }),
            ..Sample::default()
        };
        assert!(s.streams_from("127.0.0.1", 5432));
        assert!(!s.streams_from("127.0.0.1", 5433));
        assert!(!s.streams_from("10.0.0.1", 5432));
        let mut waiting = s.clone();
        waiting.receiver.as_mut().unwrap().status = "waiting".into();
        assert!(!waiting.streams_from("127.0.0.1", 5432));
        assert!(!waiting.streaming());
        assert_eq!(waiting.receiver_status(), "waiting");
        assert_eq!(s.position(), Lsn(10));
        let no_receiver = Sample {
            received: None,
            receiver: None,
            ..s
        };
        assert_eq!(no_receiver.position(), Lsn(8));
        assert_eq!(no_receiver.receiver_status(), "none");
    }
}
