//! [`EtcdConfig`]: the etcd cluster a fleet of processes shares its failover decisions through.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[etcd]`: with endpoints, the processes that share this configuration coordinate failover
/// through etcd (`failover.mode = "coordinated"`): the one holding the fleet's lease (an etcd
/// election under `prefix`) is the only one that promotes, fences or repoints; it publishes each
/// new primary under `prefix`, and every process switches when it sees it. A process that
/// cannot reach etcd never promotes.
///
/// ```toml
/// [etcd]
/// endpoints = ["http://etcd1:2379", "http://etcd2:2379", "http://etcd3:2379"]
/// prefix = "/covet/orders"
/// lease_ttl = "5s"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// etcd's client URLs (`http://host:2379`). Empty: no coordination.
    pub endpoints: Vec<String>,
    /// Where the fleet's keys live: `<prefix>/leader` (the election), `<prefix>/primary` (the
    /// last primary a lease holder promoted or adopted) and `<prefix>/failover` (a promotion
    /// under way). One prefix per PostgreSQL cluster.
    pub prefix: String,
    /// The lease's time to live: how long after the lease holder dies (or loses etcd) another
    /// process may take over. etcd refuses less than about 2 s.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// This process's name in the election and in what it publishes; default `<hostname>:<pid>`.
    pub instance: Option<String>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: "/covet".to_owned(),
            // A dead lease holder delays a failover by up to this; shorter leases cost more
            // keep-alives and make a slow etcd depose a live holder.
            lease_ttl: Duration::from_secs(5),
            instance: None,
        }
    }
}

impl EtcdConfig {
    /// Whether coordination is configured.
    pub fn is_enabled(&self) -> bool {
        !self.endpoints.is_empty()
    }

    /// Sets `endpoints`.
    #[must_use]
    pub fn with_endpoints<I: IntoIterator<Item = S>, S: Into<String>>(mut self, endpoints: I) -> Self {
        self.endpoints = endpoints.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `prefix`.
    #[must_use]
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets `lease_ttl`.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Sets `instance`.
    #[must_use]
    pub fn with_instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }
}
