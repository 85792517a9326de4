//! Configuration of a replicated PostgreSQL cluster: one primary, N hot standbys, how their health
//! is checked and how statements are routed.
//!
//! A [`ReplicationConfig`] comes from a TOML file ([`ReplicationConfig::from_toml_file`]), a string
//! ([`ReplicationConfig::from_toml_str`]), the environment ([`ReplicationConfig::from_env`]), URLs
//! ([`ReplicationConfig::from_urls`]) or the [builder](ReplicationConfig::builder). Every one of them
//! validates the result ([`ReplicationConfig::validate`]); a [`ConfigError`] names the offending
//! setting by its path, e.g. `replicas[1].weight: must be > 0`.
//!
//! # File format
//!
//! ```toml
//! [primary]
//! host = "10.0.0.1"
//! port = 5432
//! database = "app"
//! user = "app"
//! password = "..."
//! region = "eu-west"
//!
//! [[replicas]]
//! host = "10.0.0.2"
//! region = "eu-west"
//! weight = 2
//! max_lag = "5s"
//!
//! [health]
//! interval = "500ms"
//!
//! [routing]
//! read_preference = "replica_preferred"
//! preferred_region = "eu-west"
//!
//! [failover]
//! automatic = true
//! audit_log = "/var/log/app/failover.jsonl"
//! ```
//!
//! - Every setting but `[primary]` is optional; unknown settings are rejected.
//! - Durations are humantime strings: `"500ms"`, `"5s"`, `"10m"`, `"1h 30m"`. `pool.idle_timeout`,
//!   `pool.max_lifetime` and `routing.max_lag_bytes` also take `"none"` to switch them off.
//! - Node ids default to `primary` and `replica1`, `replica2`, ... by position.
//! - A top-level `[pool]` table is every node's pool, but for a node with a `pool` table of its
//!   own; a node's URL may also carry `?max_connections=`, `min_connections`, `acquire_timeout`
//!   and `test_before_acquire`, over `[pool]`. A node's own `pool` table is whole on its own
//!   (what it leaves out takes the defaults, not `[pool]`'s) and its URL's pool parameters do
//!   not apply to it. Nodes that `COVET_URL` or `COVET_REPLICA_URLS` replace take their pools
//!   from their URL's parameters, not from the file. `COVET_MAX_CONNECTIONS` sets every node's
//!   `max_connections`, last. `status()` shows each node's pool (`pool_max`, `pool_size`, ...).
//! - A replica table inherits from `[primary]` every connection setting it doesn't give (itself or
//!   in its `url`): `port`, `user`, `password`, `database`, `tls`, `ssl_root_cert` and
//!   `application_name` — a hot standby has the primary's databases and roles. Not the host, nor
//!   `region`, `datacenter`, `weight`, `max_lag` or `pool`.
//! - The primary's `database` defaults to its `user`, which defaults to `postgres`.
//! - A node table may give its connection as `url = "postgres://user:password@host:port/db?sslmode=..."`
//!   instead of (or in addition to) the separate fields; **explicit fields override the URL's parts**,
//!   so `url = "postgres://app@db1/app"` with `port = 6432` connects to port 6432.
//!
//! The node settings: `id`, `url`, `host`, `port`, `database`, `user`, `password`, `tls` (`disable`,
//! `allow`, `prefer`, `require`, `verify_ca`, `verify_full`), `ssl_root_cert`, `region`, `datacenter`,
//! `weight`, `max_lag` (replicas only), `application_name` and a `pool` table (`min_connections`,
//! `max_connections`, `acquire_timeout`, `idle_timeout`, `max_lifetime`). See [`NodeConfig`],
//! [`PoolConfig`], [`HealthConfig`], [`RoutingConfig`], [`RetryConfig`] (`[routing.retry]`),
//! [`ConsistencyConfig`], [`LagConfig`] and [`FailoverConfig`] for every setting and its default.
//!
//! # Passwords
//!
//! A [`Password`] prints and serializes as `<redacted>`, so `{:?}` of any config type, a serialized
//! config ([`ReplicationConfig::to_toml_string`]) and every [`ConfigError`] are free of passwords.
//!
//! # Example
//!
//! ```rust
//! use std::time::Duration;
//! use covet_replication::{ReadPreference, ReplicationConfig};
//!
//! let config = ReplicationConfig::from_toml_str(
//!     r#"
//!     [primary]
//!     url = "postgres://app:secret@10.0.0.1/app"
//!
//!     [[replicas]]
//!     url = "postgres://app:secret@10.0.0.2/app"
//!     max_lag = "5s"
//!
//!     [routing]
//!     read_preference = "replica"
//!     "#,
//! )?;
//! assert_eq!(config.replicas[0].id, "replica1");
//! assert_eq!(config.max_lag_for(&config.replicas[0]), Duration::from_secs(5));
//! assert_eq!(config.routing.read_preference, ReadPreference::Replica);
//! # Ok::<(), covet_replication::config::ConfigError>(())
//! ```

mod builder;
mod consistency;
mod env;
mod error;
mod etcd;
mod failover;
mod health;
mod lag;
mod node;
mod routing;
mod serde_util;
#[cfg(test)]
mod tests;
mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use builder::ReplicationConfigBuilder;
pub use consistency::{Consistency, ConsistencyConfig};
pub use error::ConfigError;
pub use etcd::EtcdConfig;
pub use failover::{FailoverConfig, FailoverMode};
pub use health::HealthConfig;
pub use lag::{LagByteThresholds, LagConfig, LagThresholds};
pub use node::{NodeConfig, Password, PoolConfig, TlsMode};
pub use routing::ParseReadPreferenceError;
pub use routing::{ReadPreference, RetryConfig, RoutingConfig, UnknownFunctionPolicy};

/// The configuration of a replicated cluster: its primary, its hot standbys, health checking and
/// routing.
///
/// Load it with [`from_toml_file`](Self::from_toml_file), [`from_toml_str`](Self::from_toml_str),
/// [`from_env`](Self::from_env) or [`from_urls`](Self::from_urls), or build it with
/// [`builder`](Self::builder); all of them validate. After changing fields by hand, call
/// [`validate`](Self::validate).
///
/// ```rust
/// use covet_replication::{ReadPreference, ReplicationConfig};
///
/// let config = ReplicationConfig::from_urls(
///     "postgres://app:secret@db1:5432/app",
///     &["postgres://app:secret@db2:5432/app", "postgres://app:secret@db3:5432/app"],
/// )?;
/// assert_eq!(config.primary.id, "primary");
/// assert_eq!(config.replicas[1].id, "replica2");
/// assert_eq!(config.routing.read_preference, ReadPreference::ReplicaPreferred);
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), covet_replication::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "RawReplicationConfig")]
#[non_exhaustive]
pub struct ReplicationConfig {
    /// The primary: all writes, and reads as the read preference says.
    pub primary: NodeConfig,
    /// The hot standbys, in the order of the file (which gives their default ids).
    pub replicas: Vec<NodeConfig>,
    /// Health checking of every node.
    pub health: HealthConfig,
    /// Routing of statements.
    pub routing: RoutingConfig,
    /// What reads promise after writes.
    pub consistency: ConsistencyConfig,
    /// Lag alerts, history and readmission.
    pub lag: LagConfig,
    /// Failover and fencing.
    pub failover: FailoverConfig,
    /// Patroni's REST API of the cluster's members (`http://db1:8008`, ...): Patroni manages
    /// the cluster, so this process follows (whatever `failover.mode` says), learning the
    /// leader and the members from `GET /cluster` every health round, and falls back to asking
    /// PostgreSQL while the API does not answer.
    pub patroni: Vec<String>,
    /// The etcd cluster a fleet of processes coordinates failover through (`[etcd]`); with
    /// endpoints, `failover.mode` `own` means `coordinated`. See [`EtcdConfig`].
    pub etcd: EtcdConfig,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            // A local server with PostgreSQL's defaults: convenient for development, and replaced by
            // every loader (a file must have a [primary] table).
            primary: NodeConfig::default().with_id("primary"),
            // None: a single server is a valid (if unreplicated) cluster.
            replicas: Vec::new(),
            // See HealthConfig::default.
            health: HealthConfig::default(),
            // See RoutingConfig::default.
            routing: RoutingConfig::default(),
            // See ConsistencyConfig::default.
            consistency: ConsistencyConfig::default(),
            // See LagConfig::default.
            lag: LagConfig::default(),
            // See FailoverConfig::default.
            failover: FailoverConfig::default(),
            // None: nothing else manages the cluster.
            patroni: Vec::new(),
            // None: no fleet to coordinate.
            etcd: EtcdConfig::default(),
        }
    }
}

/// The top level of a file: `[primary]` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplicationConfig {
    primary: node::RawNode,
    #[serde(default)]
    replicas: Vec<node::RawNode>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    routing: RoutingConfig,
    #[serde(default)]
    consistency: ConsistencyConfig,
    #[serde(default)]
    lag: LagConfig,
    #[serde(default)]
    failover: FailoverConfig,
    #[serde(default)]
    patroni: Vec<String>,
    #[serde(default)]
    etcd: EtcdConfig,
    /// Every node's pool, but where a node's own `pool` table (or URL) says otherwise.
    pool: Option<PoolConfig>,
}

impl From<RawReplicationConfig> for ReplicationConfig {
    fn from(raw: RawReplicationConfig) -> Self {
        let pool = raw.pool.as_ref();
        let primary = raw.primary.into_node(None, pool);
        let replicas = raw
            .replicas
            .into_iter()
            .map(|r| r.into_node(Some(&primary), pool))
            .collect();
        let mut config = Self {
            primary,
            replicas,
            health: raw.health,
            routing: raw.routing,
            consistency: raw.consistency,
            lag: raw.lag,
            failover: raw.failover,
            patroni: raw.patroni,
            etcd: raw.etcd,
        };
        config.assign_default_ids();
        config
    }
}

/// What [`ReplicatedPool::connect`](crate::ReplicatedPool::connect) takes: a whole
/// configuration, or a URL (`&str`, `String`) as `PgPool::connect` does, read by
/// [`ReplicationConfig::from_url`] (one host, or libpq's several).
pub trait IntoReplicationConfig {
    /// The configuration.
    ///
    /// # Errors
    /// [`ConfigError`] for a URL that is not valid.
    fn into_replication_config(self) -> Result<ReplicationConfig, ConfigError>;
}

impl IntoReplicationConfig for ReplicationConfig {
    fn into_replication_config(self) -> Result<ReplicationConfig, ConfigError> {
        Ok(self)
    }
}

impl IntoReplicationConfig for &str {
    fn into_replication_config(self) -> Result<ReplicationConfig, ConfigError> {
        ReplicationConfig::from_url(self)
    }
}

impl IntoReplicationConfig for &String {
    fn into_replication_config(self) -> Result<ReplicationConfig, ConfigError> {
        ReplicationConfig::from_url(self)
    }
}

impl IntoReplicationConfig for String {
    fn into_replication_config(self) -> Result<ReplicationConfig, ConfigError> {
        ReplicationConfig::from_url(&self)
    }
}

impl ReplicationConfig {
    /// A builder; see [`ReplicationConfigBuilder`].
    pub fn builder() -> ReplicationConfigBuilder {
        ReplicationConfigBuilder::default()
    }

    /// Parses and validates a TOML document: a `[primary]` table and optional `[[replicas]]`, `[health]`
    /// and `[routing]` tables, with the fields of [`NodeConfig`], [`HealthConfig`] and [`RoutingConfig`].
    /// A node table may give `url = "postgres://..."` instead of (or besides) the connection fields,
    /// which then override the URL's parts. Replica tables inherit the primary's connection settings
    /// (all but the host) that they don't give. Unknown fields are rejected.
    ///
    /// ```rust
    /// use covet_replication::ReplicationConfig;
    ///
    /// let err = ReplicationConfig::from_toml_str("[primary]\nhost = \"db1\"\n[[replicas]]\nhost = \"db2\"\nweight = 0\n")
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "replicas[0].weight: must be > 0");
    /// ```
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        let config = Self::parse_toml(toml, None)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Read and parse errors name the file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let config = Self::read_toml_file(path.as_ref())?;
        config.validate()?;
        Ok(config)
    }

    /// A validated config of every node of a libpq URL, one host or several
    /// (`postgres://app:secret@db1,db2,db3:5433/app`), with the default settings otherwise.
    /// Which node is the primary is the servers' to say: the one that is not in recovery (the
    /// first host is only where the search starts). With several hosts the ids are `node1`,
    /// `node2`, ... in the URL's order; with one it is `primary`.
    ///
    /// ```rust
    /// use covet_replication::ReplicationConfig;
    /// let config = ReplicationConfig::from_url("postgres://app:secret@db1,db2:5433,[::1]/app?sslmode=disable")?;
    /// let nodes: Vec<_> = config.nodes().map(|n| (n.id.as_str(), n.host.as_str(), n.port)).collect();
    /// assert_eq!(nodes, [("node1", "db1", 5432), ("node2", "db2", 5433), ("node3", "::1", 5432)]);
    /// assert!(config.nodes().all(|n| n.database == "app" && n.user == "app"));
    /// # Ok::<(), covet_replication::config::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// [`ConfigError::Url`] naming the host's position (never the URL), or a validation error.
    pub fn from_url(url: &str) -> Result<Self, ConfigError> {
        let config = Self::of_nodes(NodeConfig::all_from_url_at("url", url)?);
        config.validate()?;
        Ok(config)
    }

    /// The first node as the primary (a hint: see [`from_url`](Self::from_url)), the rest as
    /// replicas; ids `node1`, `node2`, ... where there are several and none is set.
    pub(crate) fn of_nodes(nodes: Vec<NodeConfig>) -> Self {
        let many = nodes.len() > 1;
        let mut nodes = nodes.into_iter().enumerate().map(|(i, node)| {
            if many && node.id.is_empty() {
                node.with_id(format!("node{}", i + 1))
            } else {
                node
            }
        });
        let mut config = Self {
            primary: nodes.next().unwrap_or_default(),
            replicas: nodes.collect(),
            ..Self::default()
        };
        config.assign_default_ids();
        config
    }

    /// A validated config of `primary` and `replicas` (ids `primary`, `replica1`, ...), with the default
    /// health and routing settings. URL errors are reported as `primary.url` / `replicas[N].url`.
    pub fn from_urls(primary: &str, replicas: &[&str]) -> Result<Self, ConfigError> {
        replicas
            .iter()
            .fold(Self::builder().primary_url(primary), |builder, url| {
                builder.replica_url(url)
            })
            .build()
    }

    /// The config as TOML. The passwords are written as `"<redacted>"`, so the result can be logged
    /// or shown, but not loaded back as is without putting them back.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(ConfigError::Serialize)
    }

    /// The primary, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeConfig> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// The lag limit of `node`: its own `max_lag`, else `routing.max_lag`.
    #[must_use]
    pub fn max_lag_for(&self, node: &NodeConfig) -> Duration {
        node.max_lag.unwrap_or(self.routing.max_lag)
    }

    /// Parses without validating.
    fn parse_toml(toml: &str, path: Option<&Path>) -> Result<Self, ConfigError> {
        toml::from_str(toml).map_err(|e| ConfigError::toml(e, toml, path))
    }

    /// Reads and parses without validating.
    fn read_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_toml(&text, Some(path))
    }

    /// Gives nodes without an id their default one: `primary`, `replica1`, `replica2`, ...
    fn assign_default_ids(&mut self) {
        if self.primary.id.is_empty() {
            self.primary.id = "primary".to_owned();
        }
        for (i, replica) in self.replicas.iter_mut().enumerate() {
            if replica.id.is_empty() {
                replica.id = format!("replica{}", i + 1);
            }
        }
    }
}
