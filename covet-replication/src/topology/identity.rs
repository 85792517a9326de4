use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

/// Which cluster and which history the primary is on, as the health loop last saw it.
#[derive(Debug, Default)]
pub(crate) struct Identity {
    system_id: AtomicU64,
    timeline: AtomicU32,
    /// The primary has `synchronous_standby_names` set.
    synchronous: AtomicBool,
}

impl Identity {
    pub fn observe(&self, system_id: u64, timeline: Option<u32>) {
        if system_id != 0 {
            self.system_id.store(system_id, Relaxed);
        }
        if let Some(t) = timeline {
            self.timeline.store(t, Relaxed);
        }
    }

    pub fn observe_synchronous(&self, on: bool) {
        self.synchronous.store(on, Relaxed);
    }

    /// Whether the primary, when last seen, replicated synchronously.
    pub fn synchronous(&self) -> bool {
        self.synchronous.load(Relaxed)
    }

    /// `(system_id, timeline)`, zeros while unknown.
    pub fn get(&self) -> (u64, u32) {
        (self.system_id.load(Relaxed), self.timeline.load(Relaxed))
    }
}
