//! [`ReplicationConfig::validate`]: every rule, each error naming its field path.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::{
    ConfigError, FailoverMode, HealthConfig, NodeConfig, PoolConfig, ReadPreference, ReplicationConfig, RoutingConfig,
};

impl ReplicationConfig {
    /// Checks every setting; every loader and [`ReplicationConfigBuilder::build`](super::ReplicationConfigBuilder::build)
    /// call it. Reports all problems: a single one as itself, several as [`ConfigError::Multiple`].
    ///
    /// Rules (`<node>` is `primary` or `replicas[N]`):
    /// - `<node>.id`, `.host`, `.database`, `.user` must not be empty, `.region`, `.datacenter` and
    ///   `.application_name` not empty when set; ids are unique (`replicas[2].id: duplicate id "replica1"`);
    /// - `<node>.port` must not be 0, `<node>.weight` must be > 0;
    /// - `<node>.max_lag` must not be zero, and is not allowed on the primary;
    /// - `<node>.pool`: `max_connections` > 0 and >= `min_connections`, non-zero timeouts;
    /// - no two nodes are the same server (host, port and database): `replicas[0]: same server as the
    ///   primary (127.0.0.1:5432/app)`;
    /// - a `url` given in a node table must be valid (`primary.url: ...`);
    /// - `health.interval` >= 100ms, `health.timeout` and `health.degraded_latency` not zero,
    ///   `health.failure_threshold` and `health.success_threshold` > 0;
    /// - `routing.max_lag` not zero, `routing.max_lag_bytes` > 0 when set, `routing.read_timeout`
    ///   not zero,
    ///   `routing.retry.max_attempts` > 0, `routing.retry.max_backoff` >= `initial_backoff`, no empty
    ///   function name and no function in both `read_only_functions` and `write_functions`,
    ///   `preferred_region` / `preferred_datacenter` not empty when set, and
    ///   `read_preference = "replica"` needs a replica;
    /// - `failover.exclude` names configured replicas, `failover.max_data_loss_bytes` > 0 when
    ///   set, and the failover timeouts are not zero;
    /// - `etcd.endpoints` are http(s) URLs, `etcd.prefix` starts with `/` and does not end with
    ///   one, `etcd.lease_ttl` >= 2s; `failover.mode = "coordinated"` needs endpoints (and the
    ///   `etcd` feature), and endpoints go neither with `patroni` nor with `supervised`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        validate_node(&self.primary, "primary", true, &mut errors);
        for (i, replica) in self.replicas.iter().enumerate() {
            validate_node(replica, &format!("replicas[{i}]"), false, &mut errors);
        }
        self.validate_uniqueness(&mut errors);
        validate_health(&self.health, &mut errors);
        validate_routing(&self.routing, self.replicas.len(), &mut errors);
        validate_consistency(&self.consistency, &mut errors);
        validate_lag(&self.lag, &mut errors);
        self.validate_failover(&mut errors);
        self.validate_etcd(&mut errors);
        ConfigError::from_errors(errors)
    }

    /// Unique ids, and no server twice.
    fn validate_uniqueness(&self, errors: &mut Vec<ConfigError>) {
        let nodes = std::iter::once(("primary".to_owned(), "the primary".to_owned(), &self.primary)).chain(
            self.replicas
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("replicas[{i}]"), format!("replicas[{i}]"), r)),
        );
        let mut ids: HashSet<&str> = HashSet::new();
        let mut servers: HashMap<(String, u16, &str), String> = HashMap::new();
        for (path, name, node) in nodes {
            if !node.id.is_empty() && !ids.insert(&node.id) {
                errors.push(ConfigError::invalid(
                    format!("{path}.id"),
                    format!("duplicate id {:?}", node.id),
                ));
            }
            if node.host.is_empty() || node.port == 0 || node.url_error().is_some() {
                continue; // already reported
            }
            let key = (NodeConfig::host_key(&node.host), node.port, node.database.as_str());
            match servers.get(&key) {
                Some(first) => errors.push(ConfigError::invalid(
                    path,
                    format!("same server as {first} ({})", node.server_address()),
                )),
                None => {
                    servers.insert(key, name);
                }
            }
        }
    }
}

fn validate_node(node: &NodeConfig, path: &str, is_primary: bool, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(format!("{path}.{field}"), message));
    if node.id.trim().is_empty() {
        fail("id", "must not be empty");
    }
    if let Some(message) = node.url_error() {
        // The connection fields are meaningless without the URL: report only it for them.
        fail("url", message);
    } else {
        for (field, value) in [("host", &node.host), ("database", &node.database), ("user", &node.user)] {
            if value.trim().is_empty() {
                fail(field, "must not be empty");
            } else if value.chars().any(char::is_control) {
                // libpq's strings end at NUL; a control character is no name anyone meant.
                fail(field, "must not contain control characters (NUL, newline, ...)");
            }
        }
        if node.port == 0 {
            fail("port", "must not be 0");
        }
    }
    for (field, value) in [
        ("region", &node.region),
        ("datacenter", &node.datacenter),
        ("application_name", &node.application_name),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            fail(field, "must not be empty (leave it out instead)");
        }
    }
    if node.weight == 0 {
        fail("weight", "must be > 0");
    }
    match node.max_lag {
        Some(_) if is_primary => fail("max_lag", "not allowed on the primary (only replicas lag)"),
        Some(Duration::ZERO) => fail("max_lag", "must not be zero"),
        _ => {}
    }
    validate_pool(&node.pool, &format!("{path}.pool"), errors);
}

fn validate_pool(pool: &PoolConfig, path: &str, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(format!("{path}.{field}"), message));
    if pool.max_connections == 0 {
        fail("max_connections", "must be > 0");
    } else if pool.max_connections < pool.min_connections {
        fail("max_connections", "must be >= min_connections");
    }
    if pool.acquire_timeout.is_zero() {
        fail("acquire_timeout", "must not be zero");
    }
    if pool.idle_timeout.is_some_and(|d| d.is_zero()) {
        fail("idle_timeout", "must not be zero (use \"none\" to disable it)");
    }
    if pool.max_lifetime.is_some_and(|d| d.is_zero()) {
        fail("max_lifetime", "must not be zero (use \"none\" to disable it)");
    }
}

fn validate_health(health: &HealthConfig, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(format!("health.{field}"), message));
    if health.interval < HealthConfig::MIN_INTERVAL {
        fail("interval", "must be at least 100ms");
    }
    if health.timeout.is_zero() {
        fail("timeout", "must not be zero");
    }
    if health.failure_threshold == 0 {
        fail("failure_threshold", "must be > 0");
    }
    if health.success_threshold == 0 {
        fail("success_threshold", "must be > 0");
    }
    if health.degraded_latency.is_zero() {
        fail("degraded_latency", "must not be zero");
    }
}

fn validate_routing(routing: &RoutingConfig, replica_count: usize, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(format!("routing.{field}"), message));
    if routing.read_preference == ReadPreference::Replica && replica_count == 0 {
        fail("read_preference", "\"replica\" needs at least one replica");
    }
    for (field, value) in [
        ("preferred_region", &routing.preferred_region),
        ("preferred_datacenter", &routing.preferred_datacenter),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            fail(field, "must not be empty (leave it out instead)");
        }
    }
    if routing.max_lag.is_zero() {
        fail("max_lag", "must not be zero");
    }
    if routing.max_lag_bytes == Some(0) {
        fail("max_lag_bytes", "must be > 0 (use \"none\" for no byte limit)");
    }
    if routing.read_timeout == Some(Duration::ZERO) {
        fail(
            "read_timeout",
            "must not be zero (use \"none\" for no client-side deadline)",
        );
    }
    if routing.retry.max_attempts == 0 {
        fail("retry.max_attempts", "must be > 0");
    }
    if routing.retry.max_backoff < routing.retry.initial_backoff {
        fail("retry.max_backoff", "must be >= initial_backoff");
    }
    for (i, name) in routing.read_only_functions.iter().enumerate() {
        if name.trim().is_empty() {
            fail(&format!("read_only_functions[{i}]"), "must not be empty");
        }
    }
    for (i, name) in routing.write_functions.iter().enumerate() {
        if name.trim().is_empty() {
            fail(&format!("write_functions[{i}]"), "must not be empty");
        } else if routing
            .read_only_functions
            .iter()
            .any(|r| r.trim().eq_ignore_ascii_case(name.trim()))
        {
            fail(
                &format!("write_functions[{i}]"),
                &format!("{name:?} is also in routing.read_only_functions"),
            );
        }
    }
}

fn validate_consistency(c: &super::ConsistencyConfig, errors: &mut Vec<ConfigError>) {
    let mut fail =
        |field: &str, message: &str| errors.push(ConfigError::invalid(format!("consistency.{field}"), message));
    if c.poll_interval.is_zero() {
        fail("poll_interval", "must be > 0");
    }
    if c.max_wait > std::time::Duration::from_secs(60) {
        fail(
            "max_wait",
            "must be at most 60s (a read waiting longer should go to the primary)",
        );
    }
    for (field, level) in [("session", c.session), ("handle", c.handle)] {
        if let super::Consistency::BoundedStaleness(d) | super::Consistency::WriteWindow(d) = level
            && d.is_zero()
        {
            fail(field, "the duration must be > 0");
        }
    }
}

fn validate_lag(lag: &super::LagConfig, errors: &mut Vec<ConfigError>) {
    let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(format!("lag.{field}"), message));
    let t = &lag.thresholds;
    if !(t.info <= t.warning && t.warning <= t.error && t.error <= t.critical) {
        fail("thresholds", "must rise from info to warning to error to critical");
    }
    let b = &lag.byte_thresholds;
    let set: Vec<u64> = [b.info, b.warning, b.error, b.critical].into_iter().flatten().collect();
    if set.windows(2).any(|w| w[0] > w[1]) {
        fail("byte_thresholds", "must rise from info to warning to error to critical");
    }
    if !(0.0..1.0).contains(&lag.hysteresis) {
        fail("hysteresis", "must be at least 0 and below 1");
    }
    if lag.max_samples < 2 {
        fail("max_samples", "must be at least 2");
    }
    if lag.window.is_zero() {
        fail("window", "must be > 0");
    }
}

impl ReplicationConfig {
    fn validate_failover(&self, errors: &mut Vec<ConfigError>) {
        let f = &self.failover;
        let mut fail =
            |field: &str, message: &str| errors.push(ConfigError::invalid(format!("failover.{field}"), message));
        for (i, id) in f.exclude.iter().enumerate() {
            if !self.replicas.iter().any(|r| r.id == *id) {
                fail(&format!("exclude[{i}]"), &format!("{id:?} is not a configured replica"));
            }
        }
        if f.max_data_loss_bytes == Some(0) {
            fail("max_data_loss_bytes", "must be > 0 (use \"none\" for no limit)");
        }
        for (i, endpoint) in self.patroni.iter().enumerate() {
            if !is_http_url(endpoint) {
                errors.push(ConfigError::invalid(
                    format!("patroni[{i}]"),
                    "must be an http:// or https:// URL of a member's REST API",
                ));
            }
        }
        let mut fail =
            |field: &str, message: &str| errors.push(ConfigError::invalid(format!("failover.{field}"), message));
        for (field, d) in [
            ("promote_timeout", f.promote_timeout),
            ("catchup_timeout", f.catchup_timeout),
            ("repoint_timeout", f.repoint_timeout),
            ("approval_timeout", f.approval_timeout),
        ] {
            if d.is_zero() {
                fail(field, "must be > 0");
            }
        }
    }
}

fn is_http_url(endpoint: &str) -> bool {
    let scheme = url::Url::parse(endpoint).map(|u| u.scheme().to_owned());
    matches!(scheme.as_deref(), Ok("http" | "https"))
}

impl ReplicationConfig {
    /// `[etcd]`, and the modes it goes with: coordination is for fleets nothing else manages.
    fn validate_etcd(&self, errors: &mut Vec<ConfigError>) {
        let etcd = &self.etcd;
        let mut fail = |field: &str, message: &str| errors.push(ConfigError::invalid(field, message));
        for (i, endpoint) in etcd.endpoints.iter().enumerate() {
            if !is_http_url(endpoint) {
                fail(
                    &format!("etcd.endpoints[{i}]"),
                    "must be an http:// or https:// URL of an etcd member",
                );
            }
        }
        if !etcd.prefix.starts_with('/') || etcd.prefix.len() < 2 || etcd.prefix.ends_with('/') {
            fail(
                "etcd.prefix",
                "must start with '/', and not end with one (e.g. \"/covet/orders\")",
            );
        }
        if etcd.lease_ttl < Duration::from_secs(2) {
            fail("etcd.lease_ttl", "must be >= 2s (etcd's shortest lease)");
        }
        if etcd.instance.as_deref().is_some_and(|name| name.trim().is_empty()) {
            fail("etcd.instance", "must not be empty");
        }
        let mode = self.failover.mode;
        if !etcd.is_enabled() && mode == FailoverMode::Coordinated {
            fail("failover.mode", "coordinated needs etcd.endpoints");
        }
        if etcd.is_enabled() {
            if !self.patroni.is_empty() {
                fail(
                    "etcd",
                    "Patroni manages this cluster: it is followed, not coordinated (remove [etcd])",
                );
            }
            if mode == FailoverMode::Supervised {
                fail(
                    "failover.mode",
                    "supervised is not coordinated: with [etcd], use coordinated or follow",
                );
            }
            if !cfg!(feature = "etcd") && matches!(mode, FailoverMode::Own | FailoverMode::Coordinated) {
                fail("failover.mode", "coordinated needs covet-replication's `etcd` feature");
            }
        }
    }
}
