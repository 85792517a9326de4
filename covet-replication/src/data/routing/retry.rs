//! Which failures may be retried elsewhere, and how long to wait between attempts.

use std::time::Duration;

use crate::config::RetryConfig;

/// What a failed statement tells the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection or the server went away, or no connection could be had: on a replica,
    /// the statement (a read) can run elsewhere.
    Connection,
    /// A standby cancelled the query to apply WAL (`conflict with recovery`).
    RecoveryConflict,
    /// SQLSTATE 25006 on a standby: the statement writes; the standby refused it, so nothing
    /// was written and it can run on the primary.
    ReadOnlyRefused,
    /// Anything else: the caller's error.
    Other,
}

pub(crate) fn classify_error(err: &sqlx::Error) -> Failure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Connection,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match code {
                "25006" => Failure::ReadOnlyRefused,
                // Standbys report conflicts as serialization failures or deadlocks; only the
                // message tells them from the application's own.
                "40001" | "40P01" if db.message().contains("conflict with recovery") => Failure::RecoveryConflict,
                // connection_exception, admin/crash shutdown, cannot_connect_now, database dropped.
                c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03") => Failure::Connection,
                _ => Failure::Other,
            }
        }
        _ => Failure::Other,
    }
}

/// Backoff before attempt `attempt` (1 = the first retry): doubling from `initial_backoff`,
/// capped at `max_backoff`, with up to 50% jitter so retries of many tasks spread out.
pub(crate) fn backoff(cfg: &RetryConfig, attempt: u32) -> Duration {
    let exp = cfg
        .initial_backoff
        .saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(cfg.max_backoff);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_and_pool_errors_are_connection_failures() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(classify_error(&io), Failure::Connection);
        assert_eq!(classify_error(&sqlx::Error::PoolTimedOut), Failure::Connection);
        assert_eq!(classify_error(&sqlx::Error::RowNotFound), Failure::Other);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cfg = RetryConfig::default();
        for attempt in 1..10 {
            let d = backoff(&cfg, attempt);
            assert!(d <= cfg.max_backoff, "{attempt}: {d:?}");
            let full = cfg
                .initial_backoff
                .saturating_mul(1 << (attempt - 1))
                .min(cfg.max_backoff);
            assert!(d >= full / 2, "{attempt}: {d:?} < half of {full:?}");
        }
    }
}
