use std::time::Duration;

/// A query the library sent to a server of its own accord (to survey, fence, promote or repoint
/// it) failed or did not have the effect it waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// No connection could be opened.
    #[error("connecting: {0}")]
    Connect(#[source] sqlx::Error),
    /// No connection within the timeout.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// A query failed.
    #[error("{what}: {source}")]
    Query {
        /// What the query was for.
        what: &'static str,
        /// The server's or the driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A query had no answer in time.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// What the query was for.
        what: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// `pg_promote` returned false: the promotion did not finish in the time it was given.
    #[error("pg_promote did not finish within {0:?}")]
    NotPromoted(Duration),
    /// The server was expected to be a primary and is in recovery.
    #[error("still in recovery")]
    InRecovery,
    /// Sessions ended by a fence were still running.
    #[error("{left} ended sessions still running after {after:?}")]
    SessionsRemain {
        /// How many.
        left: i64,
        /// How long they were waited for.
        after: Duration,
    },
    /// A repointed standby did not stream from its new primary on the new timeline in time.
    #[error(
        "not streaming from the new primary on timeline {timeline} after {after:?} (receiver: {}, timeline {})",
        receiver.as_deref().unwrap_or("none"),
        received_timeline.unwrap_or(0)
    )]
    NotFollowing {
        /// The new primary's timeline.
        timeline: u32,
        /// How long it was waited for.
        after: Duration,
        /// `pg_stat_wal_receiver.status` at the last look.
        receiver: Option<String>,
        /// `pg_stat_wal_receiver.received_tli` at the last look.
        received_timeline: Option<u32>,
    },
    /// A standby's `primary_conninfo` could not be read.
    #[error("primary_conninfo: {0}")]
    Conninfo(#[from] ConninfoError),
}

/// A libpq `key=value` connection string that does not parse. Never quotes the string: it holds
/// a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConninfoError {
    /// A keyword without `=`.
    #[error("missing \"=\" after keyword {0}")]
    MissingEquals(usize),
    /// A quoted value that does not end.
    #[error("unterminated quoted value of keyword {0}")]
    UnterminatedQuote(usize),
    /// A backslash at the end.
    #[error("unterminated escape")]
    UnterminatedEscape,
}
