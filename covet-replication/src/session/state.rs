//! What a session remembers: its write watermark, its monotonic floor, its replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::clock::now_us;
use crate::config::Consistency;
use crate::lsn::Lsn;
use crate::topology::NodeId;

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
    /// Reads go to the primary: the watermark is unknown (a write whose position could not be
    /// read, a token from another timeline).
    pinned: AtomicBool,
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
            pinned: AtomicBool::new(false),
        }
    }

    /// Whether a write in this session must record the primary's position.
    pub fn tracks_writes(&self) -> bool {
        !matches!(self.level, Consistency::Eventual)
    }

    pub fn watermark(&self) -> Option<Lsn> {
        Some(Lsn(self.watermark.load(Relaxed))).filter(|l| *l != Lsn::ZERO)
    }

    /// Records a write that completed with the primary at `lsn`.
    pub fn wrote(&self, lsn: Lsn) {
        self.watermark.fetch_max(lsn.0, Relaxed);
        self.last_write_us.store(now_us(), Relaxed);
        self.pinned.store(false, Relaxed);
    }

    /// A write completed but its position is unknown: read from the primary until the next write.
    pub fn wrote_unknown(&self) {
        self.last_write_us.store(now_us(), Relaxed);
        self.pinned.store(true, Relaxed);
    }

    pub fn pin(&self) {
        self.pinned.store(true, Relaxed);
    }

    pub fn pinned(&self) -> bool {
        self.pinned.load(Relaxed)
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
