//! A cheap monotonic clock for values kept in atomics.

use std::sync::OnceLock;
use std::time::Instant;

/// Where the clock starts: never 0, which the atomics that hold it use for "never", and far
/// enough from it that "an hour before the first call" is a value too (an age set in a test).
const START_US: u64 = 24 * 3600 * 1_000_000;

/// Microseconds since the first call in this process, plus [`START_US`].
pub(crate) fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + START_US
}
