//! Loading from environment variables: [`ReplicationConfig::from_env`].

use std::path::Path;

use humantime_serde::re::humantime;

use super::{ConfigError, NodeConfig, ReadPreference, ReplicationConfig};

/// Path of a TOML file to load first.
const CONFIG: &str = "COVET_CONFIG";
/// Every node, as one (multi-host) URL.
const URL: &str = "COVET_URL";
/// URL of the primary.
const PRIMARY_URL: &str = "COVET_PRIMARY_URL";
/// Comma-separated URLs of the replicas.
const REPLICA_URLS: &str = "COVET_REPLICA_URLS";
/// Comma-separated REST API URLs of the Patroni members.
const PATRONI: &str = "COVET_PATRONI";
/// Comma-separated etcd client URLs: the fleet coordinates failover through them.
const ETCD: &str = "COVET_ETCD";
/// `etcd.prefix`.
const ETCD_PREFIX: &str = "COVET_ETCD_PREFIX";
/// Every node's `pool.max_connections`.
const MAX_CONNECTIONS: &str = "COVET_MAX_CONNECTIONS";
/// A [`ReadPreference`].
const READ_PREFERENCE: &str = "COVET_READ_PREFERENCE";
/// `health.interval`, as a humantime duration.
const HEALTH_INTERVAL: &str = "COVET_HEALTH_INTERVAL";

impl ReplicationConfig {
    /// Loads the config from the process environment; see [`from_env_map`](Self::from_env_map).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_map(|name| std::env::var(name).ok())
    }

    /// Loads the config from environment variables read through `get` (`None` or an empty value:
    /// not set), then validates it:
    ///
    /// - `COVET_CONFIG`: path of a TOML file, loaded first; the variables below override it.
    /// - `COVET_URL`: every node, as one libpq URL with one host or several
    ///   (`postgres://app:secret@db1,db2,db3/app`; see [`from_url`](Self::from_url)): the servers
    ///   say which is the primary. Replaces the file's nodes; not with `COVET_PRIMARY_URL` or
    ///   `COVET_REPLICA_URLS`.
    /// - `COVET_PRIMARY_URL`: URL of the primary. Required without `COVET_CONFIG`. With it, it replaces
    ///   the connection settings of the file's primary (host, port, user, password, database, TLS,
    ///   root certificate, application name) and keeps the rest (id, region, datacenter, weight, pool).
    /// - `COVET_REPLICA_URLS`: comma-separated URLs of the replicas; replaces the file's replicas
    ///   (ids `replica1`, `replica2`, ...). Without it, the file's replicas keep the connection settings
    ///   they inherited from the file's primary, whatever `COVET_PRIMARY_URL` says.
    /// - `COVET_PATRONI`: comma-separated REST API URLs of the Patroni members (`patroni`).
    /// - `COVET_ETCD`: comma-separated etcd client URLs (`etcd.endpoints`): the processes that
    ///   share them coordinate failover (`coordinated` mode); `COVET_ETCD_PREFIX`: `etcd.prefix`.
    /// - `COVET_MAX_CONNECTIONS`: every node's `pool.max_connections` (per node, a URL's
    ///   `?max_connections=` does the same).
    /// - `COVET_READ_PREFERENCE`: `primary`, `primary_preferred`, `replica`, `replica_preferred` or
    ///   `nearest` (kebab-case too).
    /// - `COVET_HEALTH_INTERVAL`: `health.interval`, e.g. `500ms`.
    ///
    /// Errors name the variable (`COVET_READ_PREFERENCE: unknown read preference "x" (...)`,
    /// `COVET_REPLICA_URLS[1]: invalid url: ...`), never a URL's password.
    ///
    /// ```rust
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    /// use covet_replication::{ReadPreference, ReplicationConfig};
    ///
    /// let env = HashMap::from([
    ///     ("COVET_PRIMARY_URL", "postgres://app:secret@db1/app"),
    ///     ("COVET_REPLICA_URLS", "postgres://app:secret@db2/app, postgres://app:secret@db3/app"),
    ///     ("COVET_READ_PREFERENCE", "primary-preferred"),
    ///     ("COVET_HEALTH_INTERVAL", "250ms"),
    /// ]);
    /// let config = ReplicationConfig::from_env_map(|name| env.get(name).map(|v| v.to_string()))?;
    /// assert_eq!(config.replicas.len(), 2);
    /// assert_eq!(config.routing.read_preference, ReadPreference::PrimaryPreferred);
    /// assert_eq!(config.health.interval, Duration::from_millis(250));
    /// # Ok::<(), covet_replication::config::ConfigError>(())
    /// ```
    pub fn from_env_map(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        let mut config = match get(CONFIG) {
            Some(path) => Some(Self::read_toml_file(Path::new(path.trim()))?),
            None => None,
        };

        if let Some(url) = get(URL) {
            if let Some(other) = [PRIMARY_URL, REPLICA_URLS].into_iter().find(|v| get(v).is_some()) {
                return Err(ConfigError::Env {
                    var: URL.to_owned(),
                    message: format!("set together with {other}: give the nodes one way"),
                });
            }
            let nodes = Self::of_nodes(NodeConfig::all_from_url_at(URL, &url)?);
            let settings = config.take().unwrap_or_default();
            config = Some(Self {
                primary: nodes.primary,
                replicas: nodes.replicas,
                ..settings
            });
        }
        if let Some(url) = get(PRIMARY_URL) {
            let node = NodeConfig::from_url_at(PRIMARY_URL, &url)?;
            match &mut config {
                Some(config) => config.primary.set_connection_from(node),
                None => {
                    config = Some(Self {
                        primary: node,
                        ..Self::default()
                    });
                }
            }
        }
        let Some(mut config) = config else {
            return Err(ConfigError::Env {
                var: PRIMARY_URL.to_owned(),
                message: format!("not set (set it, {URL}, or {CONFIG} to a config file)"),
            });
        };

        if let Some(urls) = get(REPLICA_URLS) {
            config.replicas = urls
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .enumerate()
                .map(|(i, url)| NodeConfig::from_url_at(&format!("{REPLICA_URLS}[{i}]"), url))
                .collect::<Result<_, _>>()?;
        }

        let list = |value: String| -> Vec<String> {
            value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect()
        };
        if let Some(urls) = get(PATRONI) {
            config.patroni = list(urls);
        }
        if let Some(urls) = get(ETCD) {
            config.etcd.endpoints = list(urls);
        }
        if let Some(prefix) = get(ETCD_PREFIX) {
            config.etcd.prefix = prefix.trim().to_owned();
        }

        if let Some(value) = get(MAX_CONNECTIONS) {
            let max = value.trim().parse::<u32>().map_err(|_| ConfigError::Env {
                var: MAX_CONNECTIONS.to_owned(),
                message: "invalid number (expected a whole number of connections per node)".to_owned(),
            })?;
            config.primary.pool.max_connections = max;
            for replica in &mut config.replicas {
                replica.pool.max_connections = max;
            }
        }

        if let Some(value) = get(READ_PREFERENCE) {
            config.routing.read_preference = value.parse::<ReadPreference>().map_err(|e| ConfigError::Env {
                var: READ_PREFERENCE.to_owned(),
                message: e.to_string(),
            })?;
        }

        if let Some(value) = get(HEALTH_INTERVAL) {
            config.health.interval = humantime::parse_duration(value.trim()).map_err(|e| ConfigError::Env {
                var: HEALTH_INTERVAL.to_owned(),
                message: format!("invalid duration {value:?}: {e} (expected e.g. \"500ms\" or \"2s\")"),
            })?;
        }

        config.assign_default_ids();
        config.validate()?;
        Ok(config)
    }
}
