//! What a session remembers: its write watermark, its monotonic floor, its replica.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::cluster::NodeId;
use crate::config::Consistency;
use crate::core::Lsn;
use crate::core::now_us;
use crate::data::routing::Routed;

/// Shared by a `Session` and its clones, or by all clones of a handle (the handle's own state).
#[derive(Debug)]
pub(crate) struct SessionState {
    pub level: Consistency,
    /// Keeps to one replica and never reads older data than before. Off for the handle's own
    /// state: many unrelated tasks share it.
    pub monotonic: bool,
    /// WAL position after the session's latest write (0: none).
    watermark: AtomicU64,
    /// Lowest position a read may see: what earlier reads saw at least.
    floor: AtomicU64,
    last_write_us: AtomicU64,
    /// The replica the session reads from while it can.
    sticky: ArcSwapOption<NodeId>,
    /// `epoch << 1 | pinned`. Pinned: reads go to the primary, the watermark is unknown (a
    /// write whose position could not be read yet, a token from another timeline). Each pin
    /// starts a new epoch, so a position read before it cannot lift it.
    pin: AtomicU64,
    /// Transactions begun through sqlx's `Acquire::begin`, which cannot report their commit:
    /// (server process id, a time just before its BEGIN). Reads go to the primary until each is seen to
    /// have ended and a position after its end is the watermark. (One seen open cannot be told
    /// from a later transaction on the same pooled connection, so it holds reads there.)
    untracked: Mutex<Vec<(i32, String)>>,
    has_untracked: AtomicBool,
    /// Writes whose statement ended abnormally and whose position is being read (see
    /// `executor::unsettled`): reads wait for them, so that they see what those wrote.
    settling: AtomicU32,
    settled: tokio::sync::Notify,
    last_route: Mutex<Option<Routed>>,
}

impl SessionState {
    pub fn new(level: Consistency, monotonic: bool) -> Self {
        SessionState {
            level,
            monotonic,
            watermark: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            last_write_us: AtomicU64::new(0),
            sticky: ArcSwapOption::empty(),
            pin: AtomicU64::new(0),
            untracked: Mutex::new(Vec::new()),
            has_untracked: AtomicBool::new(false),
            settling: AtomicU32::new(0),
            settled: tokio::sync::Notify::new(),
            last_route: Mutex::new(None),
        }
    }

    /// The session state one read at `level` runs with, derived from `source` (a session's, or the
    /// handle's): `source` itself at its own level; a fresh state that keeps nothing for
    /// `Eventual`; otherwise a copy of what `source` recorded, so the read sees the session's
    /// writes where `level` promises that, and never data older than the session already wrote or
    /// read (for a monotonic session). The copy is for this read only: it does not move `source`'s
    /// floor or replica.
    pub fn at_level(source: &Arc<SessionState>, level: Consistency) -> Arc<SessionState> {
        if source.level == level {
            return Arc::clone(source);
        }
        if level == Consistency::Eventual {
            // No promise at all: any eligible replica, no floor to respect.
            return Arc::new(SessionState::new(level, false));
        }
        let state = SessionState::new(level, source.monotonic);
        if source.pinned() {
            // The source's position is unknown (a failed watermark read, a token of another
            // timeline): only the primary is safe, as for the source itself.
            state.pin();
            return Arc::new(state);
        }
        let in_window = match level {
            Consistency::WriteWindow(window) => source.since_last_write().is_some_and(|t| t < window),
            _ => true,
        };
        if let Some(lsn) = source.watermark().filter(|_| in_window) {
            state.wrote(lsn);
        }
        // The greater of the source's watermark and floor (they cannot be read apart): a monotonic
        // copy reads nothing older than either.
        state.raise_floor(source.causal_lsn());
        Arc::new(state)
    }

    /// Whether a write in this session must record the primary's position.
    pub fn tracks_writes(&self) -> bool {
        !matches!(self.level, Consistency::Eventual)
    }

    pub fn watermark(&self) -> Option<Lsn> {
        Some(Lsn(self.watermark.load(Relaxed))).filter(|l| *l != Lsn::ZERO)
    }

    /// Records `lsn`, known to cover every write of the session so far (a token's position,
    /// a copy of another state): the watermark, and no pin.
    pub fn wrote(&self, lsn: Lsn) {
        self.wrote_since(self.epoch(), lsn);
    }

    /// The current pin epoch: take it *before* reading the position that [`wrote_since`]
    /// will record.
    ///
    /// [`wrote_since`]: Self::wrote_since
    pub fn epoch(&self) -> u64 {
        self.pin.load(Relaxed) >> 1
    }

    /// Records a write whose position, read after `epoch` was taken, is `lsn`. A pin set since
    /// (another write whose position is not known yet) stays.
    pub fn wrote_since(&self, epoch: u64, lsn: Lsn) {
        self.watermark.fetch_max(lsn.0, Relaxed);
        self.last_write_us.store(now_us(), Relaxed);
        let _ = self.pin.compare_exchange(epoch << 1 | 1, epoch << 1, Relaxed, Relaxed);
    }

    /// A write completed but its position is unknown: read from the primary until a position
    /// read after this is recorded.
    pub fn wrote_unknown(&self) {
        self.last_write_us.store(now_us(), Relaxed);
        self.pin();
    }

    /// A write's position is being read after its statement ended abnormally.
    pub fn begin_settling(&self) {
        self.settling.fetch_add(1, Relaxed);
    }

    /// That read is done (its position recorded, or the pin left in place).
    pub fn end_settling(&self) {
        self.settling.fetch_sub(1, Relaxed);
        self.settled.notify_waiters();
    }

    /// Waits, up to `limit`, until no write of the session is settling; a read routed after
    /// that sees their positions (or the pin they left).
    pub async fn wait_settled(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.settling.load(Relaxed) > 0 {
            let notified = self.settled.notified();
            if self.settling.load(Relaxed) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }

    /// A statement of the session is being sent on `route`.
    pub fn routed(&self, route: Routed) {
        *crate::core::lock(&self.last_route) = Some(route);
    }

    pub fn last_route(&self) -> Option<Routed> {
        crate::core::lock(&self.last_route).clone()
    }

    pub fn is_settling(&self) -> bool {
        self.settling.load(Relaxed) > 0
    }

    pub fn pin(&self) {
        let _ = self
            .pin
            .fetch_update(Relaxed, Relaxed, |v| Some(((v >> 1) + 1) << 1 | 1));
    }

    pub fn pinned(&self) -> bool {
        self.pin.load(Relaxed) & 1 == 1 || self.has_untracked()
    }

    /// A transaction began through sqlx's `Acquire` on server process `pid`, not before `start`.
    pub fn add_untracked(&self, pid: i32, start: String) {
        let mut open = crate::core::lock(&self.untracked);
        open.push((pid, start));
        self.last_write_us.store(now_us(), Relaxed);
        self.has_untracked.store(true, Relaxed);
    }

    /// Whether a transaction begun through sqlx's `Acquire` may still be open.
    pub fn has_untracked(&self) -> bool {
        self.has_untracked.load(Relaxed)
    }

    /// The transactions begun through sqlx's `Acquire` not yet seen to end.
    pub fn untracked(&self) -> Vec<(i32, String)> {
        crate::core::lock(&self.untracked).clone()
    }

    /// Those of `ended` have ended; `lsn`, read after that was seen, covers their commits.
    pub fn settled(&self, ended: &[(i32, String)], lsn: Lsn) {
        self.watermark.fetch_max(lsn.0, Relaxed);
        let mut open = crate::core::lock(&self.untracked);
        open.retain(|t| !ended.contains(t));
        self.has_untracked.store(!open.is_empty(), Relaxed);
    }

    pub fn since_last_write(&self) -> Option<Duration> {
        match self.last_write_us.load(Relaxed) {
            0 => None,
            at => Some(Duration::from_micros(now_us().saturating_sub(at))),
        }
    }

    /// The position a replica must have replayed for this session's next read.
    pub fn min_lsn(&self) -> Option<Lsn> {
        let w = match self.level {
            Consistency::ReadAfterWrite => self.watermark.load(Relaxed),
            _ => 0,
        };
        let f = if self.monotonic { self.floor.load(Relaxed) } else { 0 };
        Some(Lsn(w.max(f))).filter(|l| *l != Lsn::ZERO)
    }

    pub fn raise_floor(&self, lsn: Lsn) {
        if self.monotonic {
            self.floor.fetch_max(lsn.0, Relaxed);
        }
    }

    pub fn sticky(&self) -> Option<Arc<NodeId>> {
        if self.monotonic { self.sticky.load_full() } else { None }
    }

    /// A read was served by replica `node`, which had replayed at least `lsn`.
    pub fn read_from(&self, node: &NodeId, lsn: Lsn) {
        if !self.monotonic {
            return;
        }
        self.raise_floor(lsn);
        if self.sticky.load().as_deref() != Some(node) {
            self.sticky.store(Some(Arc::new(node.clone())));
        }
    }

    /// The session left its replica: the next read picks anew (its floor holds the position).
    pub fn unstick(&self) {
        self.sticky.store(None);
    }

    /// The position a token carries: everything this session wrote or read.
    pub fn causal_lsn(&self) -> Lsn {
        if self.pinned() {
            return Lsn(u64::MAX);
        }
        Lsn(self.watermark.load(Relaxed).max(self.floor.load(Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_read_before_a_pin_does_not_lift_it() {
        let s = SessionState::new(Consistency::ReadAfterWrite, false);
        // A statement's write finished; its position is being read...
        let epoch = s.epoch();
        // ...while a returned connection pins the session (its writes' position is unknown)...
        s.wrote_unknown();
        // ...then the statement's position arrives: recorded, but the pin stays.
        s.wrote_since(epoch, Lsn(0x100));
        assert!(s.pinned());
        assert_eq!(s.watermark(), Some(Lsn(0x100)));
        // A position read after the pin lifts it.
        let epoch = s.epoch();
        s.wrote_since(epoch, Lsn(0x200));
        assert!(!s.pinned());
        assert_eq!(s.min_lsn(), Some(Lsn(0x200)));
    }

    #[test]
    fn an_untracked_transaction_pins_until_settled() {
        let s = SessionState::new(Consistency::ReadAfterWrite, false);
        s.add_untracked(42, "t0".into());
        s.add_untracked(43, "t1".into());
        // Other writes do not settle it.
        s.wrote_since(s.epoch(), Lsn(0x100));
        assert!(s.pinned());
        s.settled(&[(42, "t0".into())], Lsn(0x180));
        assert!(s.pinned(), "43 is still open");
        s.settled(&[(43, "t1".into())], Lsn(0x200));
        assert!(!s.pinned());
        assert_eq!(s.watermark(), Some(Lsn(0x200)));
    }
}

#[cfg(test)]
mod at_level_tests;
