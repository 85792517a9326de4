//! [`HealthConfig`]: how nodes are checked, and when they are marked down, degraded and up again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Health checking of every node.
///
/// A node is checked every `interval`; a check that fails or takes longer than `timeout` is a failure,
/// one slower than `degraded_latency` marks the node degraded. `failure_threshold` consecutive failures
/// mark it down, `success_threshold` consecutive successes bring it back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthConfig {
    /// Time between two checks of a node; at least 100ms.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Time limit of one check; must not be zero.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks after which a node is marked down; must be > 0.
    pub failure_threshold: u32,
    /// Consecutive successful checks after which a down node is marked up again; must be > 0.
    pub success_threshold: u32,
    /// A successful check slower than this marks the node degraded; must not be zero.
    #[serde(with = "humantime_serde")]
    pub degraded_latency: Duration,
}

impl HealthConfig {
    /// Smallest allowed `interval`: checks more frequent than this cost the servers more than they
    /// tell.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

    /// Sets `interval`.
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets `failure_threshold`.
    #[must_use]
    pub fn with_failure_threshold(mut self, failure_threshold: u32) -> Self {
        self.failure_threshold = failure_threshold;
        self
    }

    /// Sets `success_threshold`.
    #[must_use]
    pub fn with_success_threshold(mut self, success_threshold: u32) -> Self {
        self.success_threshold = success_threshold;
        self
    }

    /// Sets `degraded_latency`.
    #[must_use]
    pub fn with_degraded_latency(mut self, degraded_latency: Duration) -> Self {
        self.degraded_latency = degraded_latency;
        self
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            // 1s: a failed node stops getting reads within a few seconds (with failure_threshold 3),
            // at the cost of one trivial query per node per second.
            interval: Duration::from_secs(1),
            // 2s: far above a healthy check's latency, so only a stuck or unreachable node times out.
            timeout: Duration::from_secs(2),
            // 3: one lost packet or slow check doesn't take a node out of rotation.
            failure_threshold: 3,
            // 2: a flapping node must answer twice in a row before it gets traffic again.
            success_threshold: 2,
            // 500ms: a trivial query this slow means an overloaded or swapping server.
            degraded_latency: Duration::from_millis(500),
        }
    }
}
