//! [`ConsistencyConfig`]: what reads promise after writes, for sessions and the plain handle.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a read promises about the data it sees.
///
/// In files: `"eventual"`, `"read_after_write"`, `"strong"`, `{ bounded_staleness = "5s" }`,
/// `{ write_window = "2s" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Consistency {
    /// Any eligible replica: reads may miss the session's own recent writes.
    Eventual,
    /// A read sees every write the session made (its WAL watermark), and never older data than a
    /// read before it (monotonic reads). Exact: compares WAL positions, not clocks.
    #[default]
    ReadAfterWrite,
    /// Only replicas whose measured lag is at most this (plus monotonic reads).
    BoundedStaleness(#[serde(with = "humantime_serde")] Duration),
    /// The primary only.
    Strong,
    /// For this long after a write, reads go to the primary; otherwise like `Eventual`.
    ///
    /// The earlier system's time-window semantics: weaker than `ReadAfterWrite` (a replica more
    /// than the window behind serves stale data) and slower (every read in the window hits the
    /// primary, however far the replicas are).
    WriteWindow(#[serde(with = "humantime_serde")] Duration),
}

impl Consistency {
    /// Short name for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Consistency::Eventual => "eventual",
            Consistency::ReadAfterWrite => "read_after_write",
            Consistency::BoundedStaleness(_) => "bounded_staleness",
            Consistency::Strong => "strong",
            Consistency::WriteWindow(_) => "write_window",
        }
    }
}

/// Consistency of sessions and of the plain handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConsistencyConfig {
    /// Level of `db.session()`.
    pub session: Consistency,
    /// Level of statements sent through the plain handle outside any session: its watermark is
    /// the handle's (every write through any clone of it).
    pub handle: Consistency,
    /// How long a read may wait for a replica to replay its watermark before it goes to the
    /// primary.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// Interval between replay checks while waiting.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for ConsistencyConfig {
    fn default() -> Self {
        Self {
            // The promise users expect from one request: see your own writes.
            session: Consistency::ReadAfterWrite,
            // Code that swapped `&PgPool` for the handle expects what one server gave it: its
            // writes are visible to its next reads. See docs/BENCHMARKS.md for the figures.
            handle: Consistency::ReadAfterWrite,
            // Replay on a healthy standby takes milliseconds; past 20 ms the primary is faster.
            max_wait: Duration::from_millis(20),
            // A replay check is one round trip: a few per wait at most.
            poll_interval: Duration::from_millis(2),
        }
    }
}

impl ConsistencyConfig {
    /// Sets the level of `db.session()`.
    #[must_use]
    pub fn with_session(mut self, level: Consistency) -> Self {
        self.session = level;
        self
    }

    /// Sets the level of the plain handle.
    #[must_use]
    pub fn with_handle(mut self, level: Consistency) -> Self {
        self.handle = level;
        self
    }

    /// Sets how long a read waits for a replica to catch up.
    #[must_use]
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }
}
