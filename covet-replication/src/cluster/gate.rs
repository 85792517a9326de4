//! The write gate: while a failover or switchover replaces the primary, writes wait for the new
//! one instead of failing on the old.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct WriteGate {
    holding: AtomicBool,
    held: watch::Sender<bool>,
    /// Counts topology switches; waits for a primary connection end on a change.
    switched: watch::Sender<u64>,
}

impl Default for WriteGate {
    fn default() -> Self {
        WriteGate {
            holding: AtomicBool::new(false),
            held: watch::Sender::new(false),
            switched: watch::Sender::new(0),
        }
    }
}

impl WriteGate {
    /// Whether writes are being held for a new primary.
    pub fn holding(&self) -> bool {
        self.holding.load(Ordering::SeqCst)
    }

    /// Waits (at most `max`) until writes are no longer held.
    pub async fn wait(&self, max: Duration) {
        let mut rx = self.held.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|held| !held)).await;
    }

    /// Notified when the primary is replaced.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.switched.subscribe()
    }

    /// The primary was replaced: waits for a connection to the old one end.
    pub fn switched(&self) {
        self.switched.send_modify(|n| *n += 1);
    }

    /// Holds writes until the guard drops, whatever way the failover ends.
    pub fn hold(&self) -> HoldWrites<'_> {
        self.holding.store(true, Ordering::SeqCst);
        self.held.send_replace(true);
        HoldWrites(self)
    }
}

/// Releases held writes when dropped.
pub(crate) struct HoldWrites<'a>(&'a WriteGate);

impl Drop for HoldWrites<'_> {
    fn drop(&mut self) {
        self.0.holding.store(false, Ordering::Release);
        self.0.held.send_replace(false);
    }
}
