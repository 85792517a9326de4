//! Counters of what consistency cost.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::Consistency;

#[derive(Debug, Default)]
pub(crate) struct ConsistencyStats {
    reads: [AtomicU64; 5],
    pub after_write_replica: AtomicU64,
    pub after_write_primary: AtomicU64,
    pub replay_checks: AtomicU64,
    pub waits: AtomicU64,
    wait_us: AtomicU64,
    pub fallbacks: AtomicU64,
    pub switches: AtomicU64,
}

fn index(level: Consistency) -> usize {
    match level {
        Consistency::Eventual => 0,
        Consistency::ReadAfterWrite => 1,
        Consistency::BoundedStaleness(_) => 2,
        Consistency::Strong => 3,
        Consistency::WriteWindow(_) => 4,
    }
}

impl ConsistencyStats {
    /// A read in a session at `level` ran; `after_write`: the session had written before.
    pub fn read(&self, level: Consistency, after_write: bool, on_replica: bool) {
        self.reads[index(level)].fetch_add(1, Relaxed);
        if after_write {
            if on_replica {
                &self.after_write_replica
            } else {
                &self.after_write_primary
            }
            .fetch_add(1, Relaxed);
        }
    }

    pub fn waited(&self, d: Duration) {
        self.waits.fetch_add(1, Relaxed);
        self.wait_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn snapshot(&self) -> ConsistencyCounters {
        let r = |i: usize| self.reads[i].load(Relaxed);
        ConsistencyCounters {
            eventual_reads: r(0),
            read_after_write_reads: r(1),
            bounded_staleness_reads: r(2),
            strong_reads: r(3),
            write_window_reads: r(4),
            reads_after_write_on_replica: self.after_write_replica.load(Relaxed),
            reads_after_write_on_primary: self.after_write_primary.load(Relaxed),
            replay_checks: self.replay_checks.load(Relaxed),
            waits: self.waits.load(Relaxed),
            wait_time: Duration::from_micros(self.wait_us.load(Relaxed)),
            fallbacks: self.fallbacks.load(Relaxed),
            replica_switches: self.switches.load(Relaxed),
        }
    }
}

/// What consistency cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ConsistencyCounters {
    /// Reads at each level.
    pub eventual_reads: u64,
    /// Reads at `ReadAfterWrite`.
    pub read_after_write_reads: u64,
    /// Reads at `BoundedStaleness`.
    pub bounded_staleness_reads: u64,
    /// Reads at `Strong`.
    pub strong_reads: u64,
    /// Reads at `WriteWindow`.
    pub write_window_reads: u64,
    /// Reads in sessions that had written, served by a replica.
    pub reads_after_write_on_replica: u64,
    /// Reads in sessions that had written, served by the primary.
    pub reads_after_write_on_primary: u64,
    /// `pg_last_wal_replay_lsn()` round trips made because the cached position was too old.
    pub replay_checks: u64,
    /// Reads that waited for a replica to catch up.
    pub waits: u64,
    /// Time spent in those waits.
    #[serde(with = "humantime_serde")]
    pub wait_time: Duration,
    /// Reads sent to the primary because no replica had caught up within `max_wait`.
    pub fallbacks: u64,
    /// Times a monotonic session had to leave its replica.
    pub replica_switches: u64,
}
