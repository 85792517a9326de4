//! [`LagConfig`]: alert thresholds, history, and when a lagging replica may serve again.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::optional_u64;

/// Lag at which each alert severity is raised, in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LagThresholds {
    /// `Info` from this lag on.
    #[serde(with = "humantime_serde")]
    pub info: Duration,
    /// `Warning` from this lag on.
    #[serde(with = "humantime_serde")]
    pub warning: Duration,
    /// `Error` from this lag on.
    #[serde(with = "humantime_serde")]
    pub error: Duration,
    /// `Critical` from this lag on.
    #[serde(with = "humantime_serde")]
    pub critical: Duration,
}

impl Default for LagThresholds {
    fn default() -> Self {
        // Ordinary streaming replication stays well under a second; these mark trouble growing.
        Self {
            info: Duration::from_secs(1),
            warning: Duration::from_secs(5),
            error: Duration::from_secs(10),
            critical: Duration::from_secs(30),
        }
    }
}

/// Lag at which each alert severity is raised, in bytes of WAL not yet replayed (`none` turns a
/// level off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LagByteThresholds {
    /// `Info` from this many bytes on.
    #[serde(with = "optional_u64")]
    pub info: Option<u64>,
    /// `Warning` from this many bytes on.
    #[serde(with = "optional_u64")]
    pub warning: Option<u64>,
    /// `Error` from this many bytes on.
    #[serde(with = "optional_u64")]
    pub error: Option<u64>,
    /// `Critical` from this many bytes on.
    #[serde(with = "optional_u64")]
    pub critical: Option<u64>,
}

impl Default for LagByteThresholds {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        // A 16 MiB WAL segment behind is worth knowing; a gigabyte means hours of catching up.
        Self {
            info: Some(16 * MIB),
            warning: Some(64 * MIB),
            error: Some(256 * MIB),
            critical: Some(1024 * MIB),
        }
    }
}

/// Replication lag monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LagConfig {
    /// Alert thresholds in time.
    pub thresholds: LagThresholds,
    /// Alert thresholds in bytes.
    pub byte_thresholds: LagByteThresholds,
    /// An alert is lowered or cleared only once lag falls this fraction below its threshold, so
    /// lag hovering at a threshold does not flap.
    pub hysteresis: f64,
    /// How much history the statistics cover.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Samples kept per replica at most (memory bound), oldest dropped first.
    pub max_samples: usize,
    /// A replica removed from rotation for lag serves again after its lag stayed within
    /// `max_lag` this long.
    #[serde(with = "humantime_serde")]
    pub readmit_after: Duration,
}

impl Default for LagConfig {
    fn default() -> Self {
        Self {
            thresholds: LagThresholds::default(),
            byte_thresholds: LagByteThresholds::default(),
            // 20%: a 5 s warning clears below 4 s.
            hysteresis: 0.2,
            // Ten minutes: enough for a trend, little memory.
            window: Duration::from_secs(600),
            // 10 minutes at 1 check per 150 ms; 16 bytes each.
            max_samples: 4096,
            // A few health intervals: one good sample after a spike is not recovery.
            readmit_after: Duration::from_secs(5),
        }
    }
}
