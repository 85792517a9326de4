//! [`ReplicationConfigBuilder`].

use std::time::Duration;

use super::{ConfigError, HealthConfig, NodeConfig, ReadPreference, ReplicationConfig, RoutingConfig};

/// Builds a [`ReplicationConfig`] step by step; see [`ReplicationConfig::builder`].
///
/// Setters never fail nor panic: a URL that doesn't parse is kept as an error and reported by
/// [`build`](Self::build), which also validates. Replicas without an id get `replica1`, `replica2`, ...
/// by position, the primary `primary`. [`health`](Self::health) and [`routing`](Self::routing) replace
/// the whole section: call them before the setters of single fields.
///
/// ```rust
/// use std::time::Duration;
/// use covet_replication::{NodeConfig, ReadPreference, ReplicationConfig};
///
/// let config = ReplicationConfig::builder()
///     .primary_url("postgres://app:secret@10.0.0.1:5432/app")
///     .replica_url("postgres://app:secret@10.0.0.2:5432/app")
///     .replica(NodeConfig::new("10.0.0.3", 5432).with_id("analytics").with_region("us-east"))
///     .read_preference(ReadPreference::Nearest)
///     .preferred_region("eu-west")
///     .health_interval(Duration::from_millis(500))
///     .build()?;
/// assert_eq!(config.replicas[0].id, "replica1");
/// assert_eq!(config.replicas[1].id, "analytics");
///
/// let err = ReplicationConfig::builder().primary_url("mysql://db").build().unwrap_err();
/// assert_eq!(err.field(), Some("primary.url"));
/// # Ok::<(), covet_replication::config::ConfigError>(())
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ReplicationConfigBuilder {
    primary: Option<Result<NodeConfig, ConfigError>>,
    replicas: Vec<Result<NodeConfig, ConfigError>>,
    health: HealthConfig,
    routing: RoutingConfig,
    consistency: super::ConsistencyConfig,
    lag: super::LagConfig,
    failover: super::FailoverConfig,
    patroni: Vec<String>,
    etcd: super::EtcdConfig,
    pool: Option<super::PoolConfig>,
}

impl ReplicationConfigBuilder {
    /// Sets `patroni`: the REST API URLs of the Patroni members.
    pub fn patroni<I: IntoIterator<Item = S>, S: Into<String>>(mut self, endpoints: I) -> Self {
        self.patroni = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Sets every node's pool (replacing what each node's config says).
    pub fn pool(mut self, pool: super::PoolConfig) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Sets `etcd`: the etcd cluster a fleet coordinates failover through.
    pub fn etcd(mut self, etcd: super::EtcdConfig) -> Self {
        self.etcd = etcd;
        self
    }

    /// Sets failover and fencing.
    pub fn failover(mut self, failover: super::FailoverConfig) -> Self {
        self.failover = failover;
        self
    }

    /// Sets lag monitoring.
    pub fn lag(mut self, lag: super::LagConfig) -> Self {
        self.lag = lag;
        self
    }

    /// Sets what reads promise after writes.
    pub fn consistency(mut self, consistency: super::ConsistencyConfig) -> Self {
        self.consistency = consistency;
        self
    }

    /// Sets the primary (replacing any set before).
    pub fn primary(mut self, node: NodeConfig) -> Self {
        self.primary = Some(Ok(node));
        self
    }

    /// Sets the primary from a URL (see [`NodeConfig::from_url`]); an invalid one is reported by `build`
    /// as `primary.url`.
    pub fn primary_url(mut self, url: &str) -> Self {
        self.primary = Some(NodeConfig::from_url_at("primary.url", url));
        self
    }

    /// Adds a replica.
    pub fn replica(mut self, node: NodeConfig) -> Self {
        self.replicas.push(Ok(node));
        self
    }

    /// Adds a replica from a URL (see [`NodeConfig::from_url`]); an invalid one is reported by `build`
    /// as `replicas[N].url`.
    pub fn replica_url(mut self, url: &str) -> Self {
        let field = format!("replicas[{}].url", self.replicas.len());
        self.replicas.push(NodeConfig::from_url_at(&field, url));
        self
    }

    /// Sets `routing.read_preference`.
    pub fn read_preference(mut self, read_preference: ReadPreference) -> Self {
        self.routing.read_preference = read_preference;
        self
    }

    /// Sets `routing.preferred_region`.
    pub fn preferred_region(mut self, region: impl Into<String>) -> Self {
        self.routing.preferred_region = Some(region.into());
        self
    }

    /// Sets `routing.preferred_datacenter`.
    pub fn preferred_datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.routing.preferred_datacenter = Some(datacenter.into());
        self
    }

    /// Sets `routing.max_lag`, the default lag limit of the replicas.
    pub fn max_lag(mut self, max_lag: Duration) -> Self {
        self.routing.max_lag = max_lag;
        self
    }

    /// Sets `health.interval`.
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health.interval = interval;
        self
    }

    /// Replaces the health section.
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// Replaces the routing section.
    pub fn routing(mut self, routing: RoutingConfig) -> Self {
        self.routing = routing;
        self
    }

    /// The validated config. Reports every URL error if there are any (as `primary.url`,
    /// `replicas[N].url`), `primary: must be set` without a primary, otherwise the
    /// [validation](ReplicationConfig::validate) errors.
    pub fn build(self) -> Result<ReplicationConfig, ConfigError> {
        let mut errors = Vec::new();
        let primary = match self.primary {
            Some(Ok(node)) => Some(node),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => {
                errors.push(ConfigError::invalid(
                    "primary",
                    "must be set (call .primary() or .primary_url())",
                ));
                None
            }
        };
        let mut replicas = Vec::with_capacity(self.replicas.len());
        for replica in self.replicas {
            match replica {
                Ok(node) => replicas.push(node),
                Err(e) => errors.push(e),
            }
        }
        ConfigError::from_errors(errors)?;
        let Some(primary) = primary else {
            // Unreachable: a missing or invalid primary pushed an error above.
            return Err(ConfigError::invalid("primary", "must be set"));
        };
        let mut config = ReplicationConfig {
            primary,
            replicas,
            health: self.health,
            routing: self.routing,
            consistency: self.consistency,
            lag: self.lag,
            failover: self.failover,
            patroni: self.patroni,
            etcd: self.etcd,
        };
        if let Some(pool) = self.pool {
            config.primary.pool = pool.clone();
            for replica in &mut config.replicas {
                replica.pool = pool.clone();
            }
        }
        config.assign_default_ids();
        config.validate()?;
        Ok(config)
    }
}
