//! Lag in time from WAL positions, not from replay timestamps.
//!
//! `now() - pg_last_xact_replay_timestamp()` grows on an idle primary although the replica has
//! everything. Instead we remember when the primary reached each WAL position (one sample per
//! health check) and define a replica's lag as the age of the oldest WAL it has not replayed:
//! `now - (time of the first primary sample beyond its replay position)`. A replica that has
//! replayed the primary's latest position is at zero, however long ago the last write was; a
//! paused replica or one whose WAL receiver is gone falls behind the samples and its lag grows
//! with every check. The resolution is one health interval: a replica missing only WAL written
//! since the previous check is at zero seconds (its bytes still show).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::core::Lsn;

/// Primary WAL positions over time, oldest first, positions strictly increasing.
#[derive(Debug)]
pub(crate) struct WalHistory {
    samples: VecDeque<(Instant, Lsn)>,
    /// For each sample, when the primary was last seen at its position (it may sit there long).
    seen: VecDeque<Instant>,
    capacity: usize,
}

impl WalHistory {
    pub fn new(capacity: usize) -> Self {
        WalHistory {
            samples: VecDeque::with_capacity(capacity.min(1024)),
            seen: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(2),
        }
    }

    /// Records the primary's position at `at`. A position seen before keeps its first time.
    pub fn record(&mut self, at: Instant, lsn: Lsn) {
        match self.samples.back() {
            Some(&(_, last)) if lsn == last => {
                if let Some(seen) = self.seen.back_mut() {
                    *seen = at;
                }
                return;
            }
            // Behind what was seen: another server (a failover, an address that now leads to
            // another node): its history starts anew.
            Some(&(_, last)) if lsn < last => self.clear(),
            _ => {}
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
            self.seen.pop_front();
        }
        self.samples.push_back((at, lsn));
        self.seen.push_back(at);
    }

    /// At most how old the data of a replica that has replayed up to `replay` is, as seen at
    /// `now`: it has everything the primary had when last seen at or below `replay`. Unlike
    /// [`lag`](Self::lag) (the age of the oldest WAL it lacks, a lower bound, one interval
    /// coarse), an upper bound: `Duration::MAX` when the history does not reach back that far.
    pub fn staleness(&self, replay: Lsn, now: Instant) -> Duration {
        match self.samples.partition_point(|&(_, lsn)| lsn <= replay) {
            0 => Duration::MAX,
            n => now.saturating_duration_since(self.seen[n - 1]),
        }
    }

    /// Forgets every sample (a new primary: its positions are not comparable with these).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.seen.clear();
    }

    pub fn latest(&self) -> Option<Lsn> {
        self.samples.back().map(|&(_, lsn)| lsn)
    }

    /// Lag of a replica that has replayed up to `replay`, as seen at `now`.
    pub fn lag(&self, replay: Lsn, now: Instant) -> (u64, Duration) {
        let Some(latest) = self.latest() else {
            return (0, Duration::ZERO);
        };
        if replay >= latest {
            return (0, Duration::ZERO);
        }
        let bytes = latest.bytes_since(replay);
        // The first sample beyond `replay`; if the history is shorter than the lag, the oldest
        // sample gives a lower bound.
        let idx = self.samples.partition_point(|&(_, lsn)| lsn <= replay);
        if idx + 1 == self.samples.len() {
            // Missing only what the primary wrote since its previous check: younger than one
            // interval, which is this method's resolution.
            return (bytes, Duration::ZERO);
        }
        let since = self.samples.get(idx).or(self.samples.front()).map_or(now, |&(t, _)| t);
        (bytes, now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_up_replica_has_no_lag_on_an_idle_primary() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(100);
        h.record(t0, Lsn(1000));
        // An hour without writes: the position does not move.
        h.record(t0 + Duration::from_secs(3600), Lsn(1000));
        assert_eq!(h.lag(Lsn(1000), t0 + Duration::from_secs(3600)), (0, Duration::ZERO));
    }

    #[test]
    fn a_stuck_replica_lags_by_the_age_of_its_oldest_missing_wal() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(100);
        for i in 0..10u64 {
            h.record(t0 + Duration::from_secs(i), Lsn(1000 + i * 100));
        }
        // Replayed up to the sample at t0+3s: the first missing WAL appeared at t0+4s.
        let now = t0 + Duration::from_secs(10);
        assert_eq!(h.lag(Lsn(1300), now), (600, Duration::from_secs(6)));
        // Between samples: what it lacks appeared with the next sample.
        assert_eq!(h.lag(Lsn(1350), now), (550, Duration::from_secs(6)));
        // Missing only WAL newer than the previous sample: below the resolution.
        assert_eq!(h.lag(Lsn(1850), now), (50, Duration::ZERO));
        // It stays stuck; the lag grows with the clock.
        assert_eq!(
            h.lag(Lsn(1300), now + Duration::from_secs(5)).1,
            Duration::from_secs(11)
        );
    }

    /// The upper bound: everything the primary had when last seen at or below the replay
    /// position (an idle primary seen again at its position counts).
    #[test]
    fn staleness_is_bounded_by_when_the_primary_was_last_seen_at_or_below_the_replay_position() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut h = WalHistory::new(100);
        h.record(t0, Lsn(1000));
        h.record(t0 + s(1), Lsn(1000));
        h.record(t0 + s(2), Lsn(1000));
        h.record(t0 + s(3), Lsn(1200));
        let now = t0 + s(4);
        // Replayed 1000: the primary was still there at t0+2s (the lag says 1 s: WAL of t0+3s).
        assert_eq!(h.staleness(Lsn(1000), now), s(2));
        assert_eq!(h.lag(Lsn(1000), now).1, Duration::ZERO);
        // Between samples: no later than the last time it was seen at 1000.
        assert_eq!(h.staleness(Lsn(1100), now), s(2));
        // Caught up: as of the last check that saw the position.
        assert_eq!(h.staleness(Lsn(1200), now), s(1));
        h.record(t0 + s(4), Lsn(1200));
        assert_eq!(h.staleness(Lsn(1200), now), Duration::ZERO);
        // Older than the history: nothing bounds it.
        assert_eq!(h.staleness(Lsn(900), now), Duration::MAX);
    }

    #[test]
    fn history_is_bounded_and_gives_a_lower_bound_beyond_it() {
        let t0 = Instant::now();
        let mut h = WalHistory::new(3);
        for i in 0..10u64 {
            h.record(t0 + Duration::from_secs(i), Lsn(i + 1));
        }
        assert_eq!(h.samples.len(), 3);
        assert_eq!(
            h.lag(Lsn(0), t0 + Duration::from_secs(10)),
            (10, Duration::from_secs(3))
        );
    }
}
