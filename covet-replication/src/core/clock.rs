//! A cheap monotonic clock for values kept in atomics.

use std::sync::OnceLock;
use std::time::Instant;

/// Microseconds since the first call in this process, plus one: never 0, which the atomics
/// that hold it use for "never".
pub(crate) fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}
