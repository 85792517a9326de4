//! [`RoutingConfig`]: where reads go ([`ReadPreference`], locality, lag limits), retries, and how
//! statements calling functions are classified.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::serde_util::{optional_duration, optional_u64};

/// Which nodes serve reads (statements classified read-only). Writes always go to the primary.
///
/// "Eligible" replicas are those that are up and within their lag limits (and, when a preferred
/// region or datacenter is set, preferably the ones there).
///
/// Written in snake_case in files (`replica_preferred`); [`FromStr`] also accepts kebab-case
/// (`replica-preferred`), for environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReadPreference {
    /// Primary only: reads never go to a replica (and fail if the primary is unavailable).
    Primary,
    /// The primary; replicas only if the primary is unavailable.
    #[serde(alias = "primary-preferred")]
    PrimaryPreferred,
    /// Replicas only; an error if no replica is eligible.
    Replica,
    /// Replicas; the primary if no replica is eligible.
    #[default]
    #[serde(alias = "replica-preferred")]
    ReplicaPreferred,
    /// The eligible node with the lowest latency, the primary included.
    Nearest,
}

impl ReadPreference {
    /// Every read preference.
    pub const ALL: [ReadPreference; 5] = [
        ReadPreference::Primary,
        ReadPreference::PrimaryPreferred,
        ReadPreference::Replica,
        ReadPreference::ReplicaPreferred,
        ReadPreference::Nearest,
    ];

    /// The snake_case name, as in files: `replica_preferred`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPreference::Primary => "primary",
            ReadPreference::PrimaryPreferred => "primary_preferred",
            ReadPreference::Replica => "replica",
            ReadPreference::ReplicaPreferred => "replica_preferred",
            ReadPreference::Nearest => "nearest",
        }
    }
}

impl fmt::Display for ReadPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReadPreference {
    type Err = ParseReadPreferenceError;

    /// Parses `replica_preferred`, `replica-preferred` (ASCII case ignored, surrounding spaces too).
    ///
    /// ```rust
    /// use covet_replication::ReadPreference;
    ///
    /// assert_eq!("primary-preferred".parse(), Ok(ReadPreference::PrimaryPreferred));
    /// assert_eq!("NEAREST".parse(), Ok(ReadPreference::Nearest));
    /// assert!("x".parse::<ReadPreference>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(&normalized))
            .ok_or_else(|| ParseReadPreferenceError { input: s.to_owned() })
    }
}

/// A string that is not a [`ReadPreference`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseReadPreferenceError {
    input: String,
}

impl ParseReadPreferenceError {
    /// The string that was not understood.
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseReadPreferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown read preference {:?} (expected one of ", self.input)?;
        for (i, p) in ReadPreference::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.as_str())?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for ParseReadPreferenceError {}

/// What to do with a statement calling a function that is in neither
/// [`RoutingConfig::read_only_functions`] nor [`RoutingConfig::write_functions`] nor the built-in
/// list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnknownFunctionPolicy {
    /// Ask the primary's `pg_proc` for the function's volatility (cached): `volatile` functions go to
    /// the primary, `stable` and `immutable` ones may go to a replica.
    #[default]
    LookupVolatility,
    /// Always send such statements to the primary (safe, no lookup).
    Primary,
    /// Trust that the function doesn't write: such statements may go to a replica. This also
    /// trusts the application's views (their definitions are not looked up).
    Replica,
}

/// Retries of a read that failed on a replica for a transient reason (connection lost, node went
/// down, recovery conflict), on another eligible node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first one included (1 = no retry); must be > 0.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries; must be >= `initial_backoff`.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            // 3: rides out one replica failing, and a second one, without hammering a sick cluster.
            max_attempts: 3,
            // 5ms: another node is usually healthy right away; a short pause avoids a retry storm.
            initial_backoff: Duration::from_millis(5),
            // 100ms: retries must stay well under a typical request deadline.
            max_backoff: Duration::from_millis(100),
        }
    }
}

impl RetryConfig {
    /// Sets `max_attempts`.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets `initial_backoff` and `max_backoff`.
    #[must_use]
    pub fn with_backoff(mut self, initial_backoff: Duration, max_backoff: Duration) -> Self {
        self.initial_backoff = initial_backoff;
        self.max_backoff = max_backoff;
        self
    }
}

/// Routing of statements: read preference, locality, lag limits, retries, classification.
///
/// In files, `max_lag_bytes` takes an integer or `"none"` (no byte limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RoutingConfig {
    /// Which nodes serve reads.
    pub read_preference: ReadPreference,
    /// Eligible replicas with this [`NodeConfig::region`](super::NodeConfig) are preferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_region: Option<String>,
    /// Eligible replicas with this [`NodeConfig::datacenter`](super::NodeConfig) are preferred (within
    /// the preferred region, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_datacenter: Option<String>,
    /// A replica lagging more than this gets no reads; a replica's own `max_lag` overrides it.
    /// Must not be zero.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// A replica whose replay position is more than this many bytes of WAL behind gets no reads;
    /// `None`: no byte limit. Must be > 0 when set.
    #[serde(with = "optional_u64")]
    pub max_lag_bytes: Option<u64>,
    /// Capacity (in statements) of the cache of statement classifications; 0 disables the cache.
    pub classifier_cache_capacity: u64,
    /// Functions known not to write (also volatile ones such as `random`), so statements calling them
    /// may go to a replica. Names as in SQL, optionally schema-qualified; compared case-insensitively.
    pub read_only_functions: Vec<String>,
    /// Functions known to write (or otherwise needing the primary), so statements calling them always
    /// go to the primary.
    pub write_functions: Vec<String>,
    /// What to do with other functions that are not in the built-in list.
    pub unknown_functions: UnknownFunctionPolicy,
    /// How long a function's volatility or a view's definition learned from the catalog is
    /// trusted; DDL through the handle forgets them at once. `0s`: looked up for every statement.
    #[serde(with = "humantime_serde")]
    pub catalog_ttl: Duration,
    /// A read on a replica that has no first result after this is abandoned (its connection
    /// closed) and retried on another node: a hung standby costs this, not as long as it
    /// hangs. `none` (the default): only the health checks give up on a hung standby's reads
    /// (after `health.timeout` times `health.failure_threshold`). Reads inside a transaction are
    /// never abandoned; pair it with the server's `statement_timeout`, which ends the statement
    /// on the standby too.
    #[serde(with = "optional_duration")]
    pub read_timeout: Option<Duration>,
    /// Retries of reads failing on a replica.
    pub retry: RetryConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            // ReplicaPreferred: the point of replicas is to take the reads, and the primary still
            // answers when none is usable.
            read_preference: ReadPreference::ReplicaPreferred,
            // None: no locality preference until nodes are tagged.
            preferred_region: None,
            preferred_datacenter: None,
            // 10s: stale enough to tolerate a burst of writes, fresh enough for most read-after-write
            // expectations across requests.
            max_lag: Duration::from_secs(10),
            // 16 MiB: one WAL segment; a replica further behind is replaying a large backlog.
            max_lag_bytes: Some(16 * 1024 * 1024),
            // 10_000: an application's distinct statements fit, at a few hundred bytes each.
            classifier_cache_capacity: 10_000,
            // Empty: the built-in list covers PostgreSQL's own functions; these are for yours.
            read_only_functions: Vec::new(),
            write_functions: Vec::new(),
            // LookupVolatility: correct without configuration, one cached catalog lookup per function.
            unknown_functions: UnknownFunctionPolicy::LookupVolatility,
            // 60s: DDL made elsewhere (a migration run by another process) is seen within a
            // minute, at one lookup per function and relation a minute.
            catalog_ttl: Duration::from_secs(60),
            // None: a slow report on a standby is not a hung standby; set it for a tight bound.
            read_timeout: None,
            // See RetryConfig::default.
            retry: RetryConfig::default(),
        }
    }
}

impl RoutingConfig {
    /// Sets `read_preference`.
    #[must_use]
    pub fn with_read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.read_preference = read_preference;
        self
    }

    /// Sets `preferred_region`.
    #[must_use]
    pub fn with_preferred_region(mut self, region: impl Into<String>) -> Self {
        self.preferred_region = Some(region.into());
        self
    }

    /// Sets `preferred_datacenter`.
    #[must_use]
    pub fn with_preferred_datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.preferred_datacenter = Some(datacenter.into());
        self
    }

    /// Sets `max_lag`.
    #[must_use]
    pub fn with_max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = max_lag;
        self
    }

    /// Sets `max_lag_bytes` (`None`: no byte limit).
    #[must_use]
    pub fn with_max_lag_bytes(mut self, max_lag_bytes: Option<u64>) -> Self {
        self.max_lag_bytes = max_lag_bytes;
        self
    }

    /// Sets `classifier_cache_capacity`.
    #[must_use]
    pub fn with_classifier_cache_capacity(mut self, capacity: u64) -> Self {
        self.classifier_cache_capacity = capacity;
        self
    }

    /// Adds a function to `read_only_functions`.
    #[must_use]
    pub fn with_read_only_function(mut self, name: impl Into<String>) -> Self {
        self.read_only_functions.push(name.into());
        self
    }

    /// Adds a function to `write_functions`.
    #[must_use]
    pub fn with_write_function(mut self, name: impl Into<String>) -> Self {
        self.write_functions.push(name.into());
        self
    }

    /// Sets `unknown_functions`.
    #[must_use]
    pub fn with_unknown_functions(mut self, policy: UnknownFunctionPolicy) -> Self {
        self.unknown_functions = policy;
        self
    }

    /// Sets `read_timeout`.
    #[must_use]
    pub fn with_read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets `catalog_ttl`.
    #[must_use]
    pub fn with_catalog_ttl(mut self, ttl: Duration) -> Self {
        self.catalog_ttl = ttl;
        self
    }

    /// Sets `retry`.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }
}
