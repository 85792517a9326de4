//! Unit tests of the configuration: no database needed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::postgres::PgSslMode;

use super::*;

const EXAMPLE: &str = r#"
[primary]
host = "10.0.0.1"
port = 5432
database = "app"
user = "app"
password = "hunter2"
region = "eu-west"

[[replicas]]
host = "10.0.0.2"
region = "eu-west"
weight = 2
max_lag = "5s"

[health]
interval = "500ms"

[routing]
read_preference = "replica_preferred"
preferred_region = "eu-west"
"#;

/// A minimal valid document with `extra` appended to the `[primary]` table.
fn primary_with(extra: &str) -> String {
    format!("[primary]\nhost = \"db1\"\n{extra}\n")
}

fn load(toml: &str) -> ReplicationConfig {
    match ReplicationConfig::from_toml_str(toml) {
        Ok(config) => config,
        Err(e) => panic!("config should load: {e}"),
    }
}

fn load_err(toml: &str) -> ConfigError {
    match ReplicationConfig::from_toml_str(toml) {
        Ok(config) => panic!("config should be rejected: {config:?}"),
        Err(e) => e,
    }
}

/// Every error message of `err`.
fn messages(err: &ConfigError) -> Vec<String> {
    err.errors().map(ToString::to_string).collect()
}

/// Asserts that validating `config` yields exactly one error, `expected`, with field `field`.
fn assert_single(config: &ReplicationConfig, field: &str, expected: &str) {
    let err = config.validate().expect_err("config should be invalid");
    assert_eq!(messages(&err), vec![expected.to_owned()], "{err}");
    assert_eq!(err.field(), Some(field));
}

/// A change making [`valid`] invalid, the field path and the message expected.
type Case = (fn(&mut ReplicationConfig), &'static str, &'static str);

fn valid() -> ReplicationConfig {
    ReplicationConfig::from_urls(
        "postgres://app@127.0.0.1:5432/app",
        &["postgres://app@127.0.0.2:5432/app", "postgres://app@127.0.0.3:5432/app"],
    )
    .expect("valid")
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults() {
    let pool = PoolConfig::default();
    assert_eq!(pool.min_connections, 0);
    assert_eq!(pool.max_connections, 10);
    assert_eq!(pool.acquire_timeout, Duration::from_secs(5));
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(pool.max_lifetime, Some(Duration::from_secs(1800)));

    let health = HealthConfig::default();
    assert_eq!(health.interval, Duration::from_secs(1));
    assert_eq!(health.timeout, Duration::from_secs(2));
    assert_eq!(health.failure_threshold, 3);
    assert_eq!(health.success_threshold, 2);
    assert_eq!(health.degraded_latency, Duration::from_millis(500));

    let routing = RoutingConfig::default();
    assert_eq!(routing.read_preference, ReadPreference::ReplicaPreferred);
    assert_eq!(routing.preferred_region, None);
    assert_eq!(routing.preferred_datacenter, None);
    assert_eq!(routing.max_lag, Duration::from_secs(10));
    assert_eq!(routing.max_lag_bytes, Some(16 * 1024 * 1024));
    assert_eq!(routing.classifier_cache_capacity, 10_000);
    assert!(routing.read_only_functions.is_empty() && routing.write_functions.is_empty());
    assert_eq!(routing.unknown_functions, UnknownFunctionPolicy::LookupVolatility);
    assert_eq!(routing.catalog_ttl, Duration::from_secs(60));
    assert_eq!(routing.retry, RetryConfig::default());

    let retry = RetryConfig::default();
    assert_eq!(retry.max_attempts, 3);
    assert_eq!(retry.initial_backoff, Duration::from_millis(5));
    assert_eq!(retry.max_backoff, Duration::from_millis(100));

    let node = NodeConfig::default();
    assert_eq!(node.id, "");
    assert_eq!((node.host.as_str(), node.port), ("localhost", 5432));
    assert_eq!((node.user.as_str(), node.database.as_str()), ("postgres", "postgres"));
    assert_eq!(node.tls, TlsMode::Prefer);
    assert_eq!(node.weight, 1);
    assert_eq!(node.max_lag, None);
    assert!(node.password.is_none() && node.region.is_none() && node.application_name.is_none());

    let config = ReplicationConfig::default();
    assert_eq!(config.primary.id, "primary");
    assert!(config.replicas.is_empty());
    config.validate().expect("the default config is valid");
}

#[test]
fn minimal_toml_takes_defaults() {
    let config = load("[primary]\nhost = \"db1\"\nuser = \"app\"\n");
    assert_eq!(config.primary.id, "primary");
    assert_eq!(config.primary.port, 5432);
    assert_eq!(
        config.primary.database, "app",
        "database defaults to the user, as with libpq"
    );
    assert_eq!(config.health, HealthConfig::default());
    assert_eq!(config.routing, RoutingConfig::default());
    assert_eq!(config.primary.pool, PoolConfig::default());
}

#[test]
fn missing_primary_is_rejected() {
    let err = load_err("[[replicas]]\nhost = \"db2\"\n");
    assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
    assert!(err.to_string().contains("missing field `primary`"), "{err}");
}

// ---------------------------------------------------------------- TOML

#[test]
fn example_loads() {
    let config = load(EXAMPLE);
    let p = &config.primary;
    assert_eq!(p.id, "primary");
    assert_eq!(
        (p.host.as_str(), p.port, p.database.as_str(), p.user.as_str()),
        ("10.0.0.1", 5432, "app", "app")
    );
    assert_eq!(p.password.as_ref().map(Password::expose), Some("hunter2"));
    assert_eq!(p.region.as_deref(), Some("eu-west"));
    assert_eq!(config.replicas.len(), 1);
    let r = &config.replicas[0];
    assert_eq!(r.id, "replica1");
    assert_eq!((r.host.as_str(), r.port, r.weight), ("10.0.0.2", 5432, 2));
    // Inherited from the primary.
    assert_eq!((r.database.as_str(), r.user.as_str()), ("app", "app"));
    assert_eq!(r.password.as_ref().map(Password::expose), Some("hunter2"));
    assert_eq!(r.region.as_deref(), Some("eu-west"));
    assert_eq!(r.max_lag, Some(Duration::from_secs(5)));
    assert_eq!(config.max_lag_for(r), Duration::from_secs(5));
    assert_eq!(config.max_lag_for(p), Duration::from_secs(10));
    assert_eq!(config.health.interval, Duration::from_millis(500));
    assert_eq!(config.health.timeout, Duration::from_secs(2));
    assert_eq!(config.routing.read_preference, ReadPreference::ReplicaPreferred);
    assert_eq!(config.routing.preferred_region.as_deref(), Some("eu-west"));
    assert_eq!(
        config.nodes().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["primary", "replica1"]
    );
}

/// Serialize, parse again, serialize again: the same document, and the same config (the password
/// excepted, which serializes as `<redacted>`).
#[test]
fn toml_round_trip() {
    let config = load(EXAMPLE);
    let text = config.to_toml_string().expect("serializes");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("password = \"<redacted>\""), "{text}");
    assert!(text.contains("max_lag = \"5s\""), "{text}");
    assert!(text.contains("interval = \"500ms\""), "{text}");
    assert!(text.contains("idle_timeout = \"10m\""), "{text}");
    let again = load(&text);
    assert_eq!(again.to_toml_string().expect("serializes"), text);
    assert_eq!(
        again.primary.password.as_ref().map(Password::expose),
        Some("<redacted>")
    );
    assert_eq!(again.health, config.health);
    assert_eq!(again.routing, config.routing);
    for (a, b) in again.nodes().zip(config.nodes()) {
        assert_eq!(
            (
                &a.id,
                &a.host,
                a.port,
                &a.database,
                &a.user,
                a.tls,
                &a.region,
                a.weight,
                a.max_lag,
                &a.pool
            ),
            (
                &b.id,
                &b.host,
                b.port,
                &b.database,
                &b.user,
                b.tls,
                &b.region,
                b.weight,
                b.max_lag,
                &b.pool
            ),
        );
    }
}

#[test]
fn full_toml_with_every_setting() {
    let config = load(
        r#"
        [primary]
        id = "pg-main"
        host = "db1"
        port = 6432
        database = "shop"
        user = "app"
        tls = "verify_full"
        ssl_root_cert = "/etc/ssl/ca.pem"
        datacenter = "az1"
        application_name = "shop-api"
        pool = { min_connections = 2, max_connections = 20, acquire_timeout = "1s", idle_timeout = "none", max_lifetime = "1h" }

        [[replicas]]
        id = "pg-r1"
        host = "db2"
        tls = "verify-ca"

        [[replicas]]
        host = "db3"

        [health]
        interval = "2s"
        timeout = "750ms"
        failure_threshold = 5
        success_threshold = 1
        degraded_latency = "250ms"

        [routing]
        read_preference = "nearest"
        preferred_datacenter = "az1"
        max_lag = "30s"
        max_lag_bytes = "none"
        classifier_cache_capacity = 0
        read_only_functions = ["app.slow_report"]
        write_functions = ["app.bump_counter"]
        unknown_functions = "primary"
        catalog_ttl = "5s"
        read_timeout = "2s"

        [routing.retry]
        max_attempts = 1
        initial_backoff = "1ms"
        max_backoff = "1ms"
        "#,
    );
    let p = &config.primary;
    assert_eq!((p.id.as_str(), p.port, p.tls), ("pg-main", 6432, TlsMode::VerifyFull));
    assert_eq!(p.ssl_root_cert, Some(PathBuf::from("/etc/ssl/ca.pem")));
    assert_eq!(p.datacenter.as_deref(), Some("az1"));
    assert_eq!(p.application_name.as_deref(), Some("shop-api"));
    assert_eq!(
        p.pool,
        PoolConfig::default()
            .with_min_connections(2)
            .with_max_connections(20)
            .with_acquire_timeout(Duration::from_secs(1))
            .with_idle_timeout(None)
            .with_max_lifetime(Some(Duration::from_secs(3600)))
    );
    assert_eq!(config.replicas[0].id, "pg-r1");
    assert_eq!(config.replicas[0].tls, TlsMode::VerifyCa);
    assert_eq!(config.replicas[1].id, "replica2", "default ids follow the position");
    assert_eq!(
        config.health,
        HealthConfig::default()
            .with_interval(Duration::from_secs(2))
            .with_timeout(Duration::from_millis(750))
            .with_failure_threshold(5)
            .with_success_threshold(1)
            .with_degraded_latency(Duration::from_millis(250))
    );
    assert_eq!(
        config.routing,
        RoutingConfig::default()
            .with_read_preference(ReadPreference::Nearest)
            .with_preferred_datacenter("az1")
            .with_max_lag(Duration::from_secs(30))
            .with_max_lag_bytes(None)
            .with_classifier_cache_capacity(0)
            .with_read_only_function("app.slow_report")
            .with_write_function("app.bump_counter")
            .with_unknown_functions(UnknownFunctionPolicy::Primary)
            .with_catalog_ttl(Duration::from_secs(5))
            .with_read_timeout(Some(Duration::from_secs(2)))
            .with_retry(
                RetryConfig::default()
                    .with_max_attempts(1)
                    .with_backoff(Duration::from_millis(1), Duration::from_millis(1))
            )
    );
    // "none" survives a round trip.
    let text = config.to_toml_string().expect("serializes");
    assert!(text.contains("idle_timeout = \"none\""), "{text}");
    assert!(text.contains("max_lag_bytes = \"none\""), "{text}");
    assert_eq!(load(&text).routing, config.routing);
}

#[test]
fn unknown_fields_are_rejected_and_named() {
    for (toml, field) in [
        (primary_with("hots = \"x\""), "hots"),
        (
            format!("{}[[replicas]]\nhost = \"db2\"\nwieght = 2\n", primary_with("")),
            "wieght",
        ),
        (
            format!("{}[health]\nintervall = \"1s\"\n", primary_with("")),
            "intervall",
        ),
        (
            format!("{}[routing]\nread_pref = \"primary\"\n", primary_with("")),
            "read_pref",
        ),
        (
            format!("{}[routing.retry]\nattempts = 2\n", primary_with("")),
            "attempts",
        ),
        (primary_with("pool = { max_conns = 2 }"), "max_conns"),
        (format!("{}[extra]\nx = 1\n", primary_with("")), "extra"),
    ] {
        let err = load_err(&toml);
        assert!(matches!(err, ConfigError::Toml { path: None, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("invalid toml at line "), "{message}");
        assert!(message.contains(&format!("unknown field `{field}`")), "{message}");
    }
}

#[test]
fn bad_values_are_toml_errors() {
    for (toml, needle) in [
        (primary_with("port = 70000"), "port"),
        (primary_with("tls = \"maybe\""), "maybe"),
        (format!("{}[health]\ninterval = \"soon\"\n", primary_with("")), "soon"),
        (
            format!("{}[routing]\nread_preference = \"closest\"\n", primary_with("")),
            "closest",
        ),
        (primary_with("pool = { idle_timeout = \"a while\" }"), "a while"),
        (format!("{}[routing]\nmax_lag_bytes = -1\n", primary_with("")), "-1"),
    ] {
        let err = load_err(&toml);
        assert!(matches!(err, ConfigError::Toml { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

#[test]
fn toml_error_position() {
    let err = load_err("[primary]\nhost = \"db1\"\nbogus = 1\n");
    let ConfigError::Toml { line, column, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!((*line, *column), (Some(3), Some(1)), "{err}");
}

#[test]
fn toml_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("covet-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let good = dir.join("good.toml");
    std::fs::write(&good, EXAMPLE).expect("write");
    let config = ReplicationConfig::from_toml_file(&good).expect("loads");
    assert_eq!(config.replicas[0].weight, 2);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[primary]\nhost = \"db1\"\nnope = true\n").expect("write");
    let err = ReplicationConfig::from_toml_file(&bad).expect_err("unknown field");
    assert!(
        matches!(&err, ConfigError::Toml { path: Some(p), .. } if *p == bad),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("invalid toml in {} at line 3", bad.display())),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());

    let missing = dir.join("missing.toml");
    let err = ReplicationConfig::from_toml_file(&missing).expect_err("missing file");
    assert!(
        matches!(&err, ConfigError::Io { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replicas_inherit_the_primary_connection_settings() {
    let config = load(
        r#"
        [primary]
        url = "postgres://app:secret@db1:6432/shop?sslmode=verify-full&application_name=api"
        ssl_root_cert = "/ca.pem"
        region = "eu"
        weight = 3
        pool = { max_connections = 50 }

        [[replicas]]
        host = "db2"

        [[replicas]]
        url = "postgres://reader@db3:5432"
        tls = "require"
        "#,
    );
    let r = &config.replicas[0];
    assert_eq!(
        (r.host.as_str(), r.port, r.user.as_str(), r.database.as_str()),
        ("db2", 6432, "app", "shop")
    );
    assert_eq!(r.password.as_ref().map(Password::expose), Some("secret"));
    assert_eq!(r.tls, TlsMode::VerifyFull);
    assert_eq!(r.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
    assert_eq!(r.application_name.as_deref(), Some("api"));
    // Not inherited: locality, weight, pool.
    assert_eq!((r.region.as_deref(), r.weight), (None, 1));
    assert_eq!(r.pool, PoolConfig::default());

    // Own settings (in the table or the url) win.
    let r = &config.replicas[1];
    assert_eq!(
        (r.host.as_str(), r.port, r.user.as_str(), r.database.as_str()),
        ("db3", 5432, "reader", "shop")
    );
    assert_eq!(r.password.as_ref().map(Password::expose), Some("secret"));
    assert_eq!(r.tls, TlsMode::Require);
}

#[test]
fn url_in_node_table() {
    let config = load(
        r#"
        [primary]
        url = "postgresql://app:p%40ss@db1:5433/shop?sslmode=require"

        [[replicas]]
        url = "postgres://app:p%40ss@db2/shop"
        "#,
    );
    let p = &config.primary;
    assert_eq!(
        (p.host.as_str(), p.port, p.database.as_str(), p.user.as_str()),
        ("db1", 5433, "shop", "app")
    );
    assert_eq!(p.password.as_ref().map(Password::expose), Some("p@ss"));
    assert_eq!(p.tls, TlsMode::Require);
    assert_eq!(config.replicas[0].port, 5433, "inherited from the primary");
    assert_eq!(config.replicas[0].id, "replica1");
}

#[test]
fn explicit_fields_override_the_url() {
    let config = load(
        r#"
        [primary]
        url = "postgres://app:secret@db1:5433/shop?sslmode=require"
        port = 6432
        database = "other"
        password = "explicit"
        tls = "disable"
        "#,
    );
    let p = &config.primary;
    assert_eq!((p.host.as_str(), p.user.as_str()), ("db1", "app"), "kept from the url");
    assert_eq!(
        (p.port, p.database.as_str(), p.tls),
        (6432, "other", TlsMode::Disable),
        "overridden"
    );
    assert_eq!(p.password.as_ref().map(Password::expose), Some("explicit"));
}

#[test]
fn invalid_url_in_node_table_names_the_node_without_the_password() {
    let err = load_err(
        r#"
        [primary]
        url = "postgres://app:hunter2@db1:99999/app"

        [[replicas]]
        url = "mysql://app:hunter2@db2/app"
        weight = 0
        "#,
    );
    assert_eq!(
        messages(&err),
        [
            "primary.url: invalid url: invalid port number",
            "replicas[0].url: unsupported scheme \"mysql\" (expected postgres:// or postgresql://)",
            "replicas[0].weight: must be > 0",
        ]
    );
    assert_eq!(err.field(), Some("primary.url"));
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

// ---------------------------------------------------------------- URLs

#[test]
fn url_parsing() {
    let node = NodeConfig::from_url(
        "postgres://app%20user:p%40ss%3Aw%2Fo%23rd@db.example.com:6543/my%20db?sslmode=verify-full&application_name=api&sslrootcert=/ca.pem",
    )
    .expect("valid url");
    assert_eq!(node.id, "", "assigned by position later");
    assert_eq!(node.host, "db.example.com");
    assert_eq!(node.port, 6543);
    assert_eq!(node.user, "app user");
    assert_eq!(node.password.as_ref().map(Password::expose), Some("p@ss:w/o#rd"));
    assert_eq!(node.database, "my db");
    assert_eq!(node.tls, TlsMode::VerifyFull);
    assert_eq!(node.application_name.as_deref(), Some("api"));
    assert_eq!(node.ssl_root_cert, Some(PathBuf::from("/ca.pem")));

    let node = NodeConfig::from_url("postgresql://db1").expect("valid url");
    assert_eq!((node.host.as_str(), node.port), ("db1", 5432));
    assert_eq!((node.user.as_str(), node.database.as_str()), ("postgres", "postgres"));
    assert!(node.password.is_none());
    assert_eq!(node.tls, TlsMode::Prefer);

    let node = NodeConfig::from_url("postgres://bob@db1").expect("valid url");
    assert_eq!(node.database, "bob", "database defaults to the user");

    let node = NodeConfig::from_url("postgres://[::1]:5433/app").expect("valid url");
    assert_eq!((node.host.as_str(), node.port), ("::1", 5433));
    assert_eq!(node.server_address(), "[::1]:5433/app");

    let node = NodeConfig::from_url("postgres:///app?host=/var/run/postgresql&user=me&port=5434").expect("socket");
    assert_eq!(
        (node.host.as_str(), node.port, node.user.as_str()),
        ("/var/run/postgresql", 5434, "me")
    );

    for (mode, expected) in [
        ("disable", TlsMode::Disable),
        ("allow", TlsMode::Allow),
        ("prefer", TlsMode::Prefer),
        ("require", TlsMode::Require),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify_full", TlsMode::VerifyFull),
    ] {
        let node = NodeConfig::from_url(&format!("postgres://db1/app?sslmode={mode}")).expect("valid sslmode");
        assert_eq!(node.tls, expected, "{mode}");
    }
}

#[test]
fn url_errors_never_contain_the_password() {
    for (url, expected) in [
        ("not a url hunter2", "url: invalid url: relative URL without a base"),
        (
            "mysql://app:hunter2@db1/app",
            "url: unsupported scheme \"mysql\" (expected postgres:// or postgresql://)",
        ),
        (
            "postgres://app:hunter2@db1:notaport/app",
            "url: invalid url: invalid port number",
        ),
        (
            "postgres://app:hunter2@db1/app?sslmode=sometimes",
            "url: invalid sslmode (expected one of disable, allow, prefer, require, verify-ca, verify-full)",
        ),
        // A value is never quoted: a misplaced secret must not reach a log.
        (
            "postgres://app@db1/app?sslmode=hunter2",
            "url: invalid sslmode (expected one of disable, allow, prefer, require, verify-ca, verify-full)",
        ),
        (
            "postgres://app@db1/app?port=hunter2",
            "url: invalid port (expected 1-65535)",
        ),
        (
            "postgres://app:hunter2@db1/app?connect_timeout=3",
            "url: unsupported query parameter \"connect_timeout\" (supported: sslmode, sslrootcert, application_name, \
             host, port, user, password, dbname, max_connections, min_connections, acquire_timeout, \
             test_before_acquire)",
        ),
        (
            "postgres://app:hunter2@db1,db2/app",
            "url: several hosts in a node's url (ReplicationConfig::from_url takes a list of nodes)",
        ),
        (
            "postgres://app:hunter2%ff@db1/app",
            "url: password is not valid utf-8 once percent-decoded",
        ),
    ] {
        let err = NodeConfig::from_url(url).expect_err(url);
        assert_eq!(err.to_string(), expected, "{url}");
        assert_eq!(err.field(), Some("url"));
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}

#[test]
fn connect_options_carry_every_field() {
    let node = NodeConfig::from_url("postgres://app:hunter2@db1:5433/shop?sslmode=verify-ca&application_name=api")
        .expect("valid url");
    let options = node.connect_options();
    assert_eq!(options.get_host(), "db1");
    assert_eq!(options.get_port(), 5433);
    assert_eq!(options.get_username(), "app");
    assert_eq!(options.get_database(), Some("shop"));
    assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyCa));
    assert_eq!(options.get_application_name(), Some("api"));
    // No getter for the password: sqlx's Debug shows it.
    assert!(format!("{options:?}").contains("hunter2"));

    let socket = NodeConfig::new("/var/run/postgresql", 5432).connect_options();
    assert_eq!(socket.get_socket(), Some(&PathBuf::from("/var/run/postgresql")));
}

#[test]
fn from_connect_options_keeps_the_password() {
    let options = sqlx::postgres::PgConnectOptions::new_without_pgpass()
        .host("db9")
        .port(5439)
        .username("svc")
        .password("hunter2")
        .database("orders")
        .ssl_mode(PgSslMode::Require)
        .application_name("svc-app");
    let node = NodeConfig::from_connect_options("main", &options)
        .with_region("eu")
        .with_weight(3);
    assert_eq!(node.id, "main");
    assert_eq!(
        (node.host.as_str(), node.port, node.user.as_str()),
        ("db9", 5439, "svc")
    );
    assert_eq!(node.database, "orders");
    assert_eq!(node.tls, TlsMode::Require);
    assert_eq!(node.application_name.as_deref(), Some("svc-app"));
    assert!(!format!("{node:?} {node:#?}").contains("hunter2"));

    let rebuilt = node.connect_options();
    assert!(format!("{rebuilt:?}").contains("hunter2"), "the password survives");
    assert_eq!(rebuilt.get_host(), "db9");

    let overridden = node.clone().with_password("other").connect_options();
    let debug = format!("{overridden:?}");
    assert!(debug.contains("other") && !debug.contains("hunter2"));

    // Changed fields win over the kept options.
    let mut moved = node;
    moved.port = 6000;
    moved.database = "archive".to_owned();
    let options = moved.connect_options();
    assert_eq!((options.get_port(), options.get_database()), (6000, Some("archive")));
}

#[test]
fn tls_mode_maps_to_pg_ssl_mode() {
    for mode in TlsMode::ALL {
        let pg: PgSslMode = mode.into();
        assert_eq!(TlsMode::from(pg), mode);
        assert_eq!(
            mode.as_libpq_str().parse::<PgSslMode>().map(TlsMode::from).ok(),
            Some(mode)
        );
    }
}

// ---------------------------------------------------------------- builder

#[test]
fn builder() {
    let config = ReplicationConfig::builder()
        .primary(NodeConfig::new("db1", 5432).with_password("hunter2").with_region("eu"))
        .replica_url("postgres://app@db2/app")
        .replica(
            NodeConfig::new("db3", 5432)
                .with_id("analytics")
                .with_datacenter("az2")
                .with_max_lag(Duration::from_secs(60))
                .with_pool(PoolConfig::default().with_max_connections(2)),
        )
        .replica_url("postgres://app@db4/app")
        .read_preference(ReadPreference::Nearest)
        .preferred_region("eu")
        .preferred_datacenter("az1")
        .max_lag(Duration::from_secs(3))
        .health_interval(Duration::from_millis(200))
        .build()
        .expect("valid");
    assert_eq!(config.primary.id, "primary");
    let ids: Vec<&str> = config.replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["replica1", "analytics", "replica3"]);
    assert_eq!(config.routing.read_preference, ReadPreference::Nearest);
    assert_eq!(config.routing.preferred_region.as_deref(), Some("eu"));
    assert_eq!(config.routing.preferred_datacenter.as_deref(), Some("az1"));
    assert_eq!(config.health.interval, Duration::from_millis(200));
    assert_eq!(config.max_lag_for(&config.replicas[0]), Duration::from_secs(3));
    assert_eq!(config.max_lag_for(&config.replicas[1]), Duration::from_secs(60));
    assert_eq!(config.replicas[1].pool.max_connections, 2);
}

#[test]
fn builder_sections_and_errors() {
    let config = ReplicationConfig::builder()
        .primary_url("postgres://db1/app")
        .health(HealthConfig::default().with_failure_threshold(7))
        .routing(RoutingConfig::default().with_read_preference(ReadPreference::Primary))
        .build()
        .expect("valid");
    assert_eq!(config.health.failure_threshold, 7);
    assert_eq!(config.routing.read_preference, ReadPreference::Primary);

    let err = ReplicationConfig::builder().build().expect_err("no primary");
    assert_eq!(
        err.to_string(),
        "primary: must be set (call .primary() or .primary_url())"
    );

    let err = ReplicationConfig::builder()
        .primary_url("postgres://app:hunter2@db1:0x/app")
        .replica_url("postgres://db2/app")
        .replica_url("http://app:hunter2@db3/app")
        .build()
        .expect_err("bad urls");
    assert_eq!(
        messages(&err),
        [
            "primary.url: invalid url: invalid port number",
            "replicas[1].url: unsupported scheme \"http\" (expected postgres:// or postgresql://)",
        ]
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"));

    let err = ReplicationConfig::builder()
        .primary_url("postgres://db1/app")
        .health_interval(Duration::ZERO)
        .build()
        .expect_err("validated");
    assert_eq!(err.to_string(), "health.interval: must be at least 100ms");
}

#[test]
fn from_urls() {
    let config = ReplicationConfig::from_urls("postgres://db1/app", &["postgres://db2/app"]).expect("valid");
    assert_eq!(config.replicas[0].id, "replica1");
    let err = ReplicationConfig::from_urls("postgres://db1/app", &["postgres://db2/app", "nope"]).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "replicas[1].url: invalid url: relative URL without a base"
    );
}

// ---------------------------------------------------------------- validation

#[test]
fn valid_config_validates() {
    valid().validate().expect("valid");
}

#[test]
fn node_rules() {
    let cases: Vec<Case> = vec![
        (
            |c| c.primary.host = String::new(),
            "primary.host",
            "primary.host: must not be empty",
        ),
        (
            |c| c.replicas[0].port = 0,
            "replicas[0].port",
            "replicas[0].port: must not be 0",
        ),
        (
            |c| c.replicas[1].weight = 0,
            "replicas[1].weight",
            "replicas[1].weight: must be > 0",
        ),
        (
            |c| c.primary.weight = 0,
            "primary.weight",
            "primary.weight: must be > 0",
        ),
        (
            |c| c.replicas[0].database = " ".into(),
            "replicas[0].database",
            "replicas[0].database: must not be empty",
        ),
        (
            |c| c.replicas[0].user = String::new(),
            "replicas[0].user",
            "replicas[0].user: must not be empty",
        ),
        (
            |c| c.replicas[1].id = String::new(),
            "replicas[1].id",
            "replicas[1].id: must not be empty",
        ),
        (
            |c| c.replicas[0].region = Some(String::new()),
            "replicas[0].region",
            "replicas[0].region: must not be empty (leave it out instead)",
        ),
        (
            |c| c.primary.datacenter = Some(String::new()),
            "primary.datacenter",
            "primary.datacenter: must not be empty (leave it out instead)",
        ),
        (
            |c| c.primary.application_name = Some(String::new()),
            "primary.application_name",
            "primary.application_name: must not be empty (leave it out instead)",
        ),
        (
            |c| c.replicas[1].max_lag = Some(Duration::ZERO),
            "replicas[1].max_lag",
            "replicas[1].max_lag: must not be zero",
        ),
        (
            |c| c.primary.max_lag = Some(Duration::from_secs(1)),
            "primary.max_lag",
            "primary.max_lag: not allowed on the primary (only replicas lag)",
        ),
        (
            |c| c.replicas[0].pool.min_connections = 11,
            "replicas[0].pool.max_connections",
            "replicas[0].pool.max_connections: must be >= min_connections",
        ),
        (
            |c| c.primary.pool.max_connections = 0,
            "primary.pool.max_connections",
            "primary.pool.max_connections: must be > 0",
        ),
        (
            |c| c.primary.pool.acquire_timeout = Duration::ZERO,
            "primary.pool.acquire_timeout",
            "primary.pool.acquire_timeout: must not be zero",
        ),
        (
            |c| c.replicas[1].pool.idle_timeout = Some(Duration::ZERO),
            "replicas[1].pool.idle_timeout",
            "replicas[1].pool.idle_timeout: must not be zero (use \"none\" to disable it)",
        ),
        (
            |c| c.replicas[1].pool.max_lifetime = Some(Duration::ZERO),
            "replicas[1].pool.max_lifetime",
            "replicas[1].pool.max_lifetime: must not be zero (use \"none\" to disable it)",
        ),
        (
            |c| c.replicas[1].id = "replica1".into(),
            "replicas[1].id",
            "replicas[1].id: duplicate id \"replica1\"",
        ),
        (
            |c| c.replicas[0].id = "primary".into(),
            "replicas[0].id",
            "replicas[0].id: duplicate id \"primary\"",
        ),
        (
            |c| c.replicas[0].host = "127.0.0.1".into(),
            "replicas[0]",
            "replicas[0]: same server as the primary (127.0.0.1:5432/app)",
        ),
        (
            |c| c.replicas[1].host = "127.0.0.2".into(),
            "replicas[1]",
            "replicas[1]: same server as replicas[0] (127.0.0.2:5432/app)",
        ),
        // Aliases of one server, as failover treats them.
        (
            |c| c.replicas[0].host = "localhost".into(),
            "replicas[0]",
            "replicas[0]: same server as the primary (localhost:5432/app)",
        ),
        (
            |c| c.replicas[0].host = "::1".into(),
            "replicas[0]",
            "replicas[0]: same server as the primary ([::1]:5432/app)",
        ),
        (
            |c| {
                c.replicas[0].host = "db1.example".into();
                c.replicas[1].host = "DB1.example.".into();
            },
            "replicas[1]",
            "replicas[1]: same server as replicas[0] (DB1.example.:5432/app)",
        ),
        (
            |c| c.replicas[0].host = "db2\0evil".into(),
            "replicas[0].host",
            "replicas[0].host: must not contain control characters (NUL, newline, ...)",
        ),
        (
            |c| c.replicas[0].user = "app\n".into(),
            "replicas[0].user",
            "replicas[0].user: must not contain control characters (NUL, newline, ...)",
        ),
    ];
    for (mutate, field, expected) in cases {
        let mut config = valid();
        mutate(&mut config);
        assert_single(&config, field, expected);
    }
}

#[test]
fn same_host_other_port_or_database_is_another_server() {
    let mut config = valid();
    config.replicas[0].host = "127.0.0.1".into();
    config.replicas[0].port = 5433;
    config.replicas[1].host = "127.0.0.1".into();
    config.replicas[1].database = "other".into();
    config.validate().expect("different servers");
}

#[test]
fn duplicate_id_in_toml() {
    let err = load_err(
        r#"
        [primary]
        host = "db1"
        [[replicas]]
        host = "db2"
        [[replicas]]
        host = "db3"
        [[replicas]]
        host = "db4"
        id = "replica1"
        "#,
    );
    assert_eq!(err.to_string(), "replicas[2].id: duplicate id \"replica1\"");
    assert_eq!(err.field(), Some("replicas[2].id"));
}

#[test]
fn health_and_routing_rules() {
    let cases: Vec<Case> = vec![
        (
            |c| c.health.interval = Duration::ZERO,
            "health.interval",
            "health.interval: must be at least 100ms",
        ),
        (
            |c| c.health.interval = Duration::from_millis(99),
            "health.interval",
            "health.interval: must be at least 100ms",
        ),
        (
            |c| c.health.timeout = Duration::ZERO,
            "health.timeout",
            "health.timeout: must not be zero",
        ),
        (
            |c| c.health.failure_threshold = 0,
            "health.failure_threshold",
            "health.failure_threshold: must be > 0",
        ),
        (
            |c| c.health.success_threshold = 0,
            "health.success_threshold",
            "health.success_threshold: must be > 0",
        ),
        (
            |c| c.health.degraded_latency = Duration::ZERO,
            "health.degraded_latency",
            "health.degraded_latency: must not be zero",
        ),
        (
            |c| c.routing.retry.max_attempts = 0,
            "routing.retry.max_attempts",
            "routing.retry.max_attempts: must be > 0",
        ),
        (
            |c| c.routing.retry.initial_backoff = Duration::from_secs(1),
            "routing.retry.max_backoff",
            "routing.retry.max_backoff: must be >= initial_backoff",
        ),
        (
            |c| c.routing.max_lag = Duration::ZERO,
            "routing.max_lag",
            "routing.max_lag: must not be zero",
        ),
        (
            |c| c.routing.max_lag_bytes = Some(0),
            "routing.max_lag_bytes",
            "routing.max_lag_bytes: must be > 0 (use \"none\" for no byte limit)",
        ),
        (
            |c| c.routing.read_timeout = Some(Duration::ZERO),
            "routing.read_timeout",
            "routing.read_timeout: must not be zero (use \"none\" for no client-side deadline)",
        ),
        (
            |c| c.routing.preferred_region = Some(" ".into()),
            "routing.preferred_region",
            "routing.preferred_region: must not be empty (leave it out instead)",
        ),
        (
            |c| c.routing.preferred_datacenter = Some(String::new()),
            "routing.preferred_datacenter",
            "routing.preferred_datacenter: must not be empty (leave it out instead)",
        ),
        (
            |c| c.routing.read_only_functions = vec!["f".into(), String::new()],
            "routing.read_only_functions[1]",
            "routing.read_only_functions[1]: must not be empty",
        ),
        (
            |c| c.routing.write_functions = vec![String::new()],
            "routing.write_functions[0]",
            "routing.write_functions[0]: must not be empty",
        ),
        (
            |c| {
                c.routing.read_only_functions = vec!["app.f".into()];
                c.routing.write_functions = vec!["g".into(), "App.F".into()];
            },
            "routing.write_functions[1]",
            "routing.write_functions[1]: \"App.F\" is also in routing.read_only_functions",
        ),
        (
            |c| {
                c.replicas.clear();
                c.routing.read_preference = ReadPreference::Replica;
            },
            "routing.read_preference",
            "routing.read_preference: \"replica\" needs at least one replica",
        ),
    ];
    for (mutate, field, expected) in cases {
        let mut config = valid();
        mutate(&mut config);
        assert_single(&config, field, expected);
    }
}

#[test]
fn all_errors_are_collected_in_field_order() {
    let err = load_err(
        r#"
        [primary]
        host = ""
        port = 0

        [[replicas]]
        host = "db2"
        port = 5432
        weight = 0

        [health]
        interval = "10ms"
        failure_threshold = 0

        [routing.retry]
        max_attempts = 0
        "#,
    );
    assert!(matches!(err, ConfigError::Multiple(ref v) if v.len() == 6), "{err:?}");
    assert_eq!(
        messages(&err),
        [
            "primary.host: must not be empty",
            "primary.port: must not be 0",
            "replicas[0].weight: must be > 0",
            "health.interval: must be at least 100ms",
            "health.failure_threshold: must be > 0",
            "routing.retry.max_attempts: must be > 0",
        ]
    );
    assert_eq!(err.field(), Some("primary.host"));
    assert!(
        err.to_string()
            .starts_with("6 configuration errors: primary.host: must not be empty; "),
        "{err}"
    );
}

// ---------------------------------------------------------------- environment

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    move |name| map.get(name).cloned()
}

#[test]
fn env_urls() {
    let config = ReplicationConfig::from_env_map(env(&[
        ("COVET_PRIMARY_URL", "postgres://app:hunter2@db1/app"),
        ("COVET_REPLICA_URLS", "postgres://app@db2/app, postgres://app@db3/app,"),
        ("COVET_READ_PREFERENCE", "primary-preferred"),
        ("COVET_HEALTH_INTERVAL", "250ms"),
    ]))
    .expect("valid");
    assert_eq!(config.primary.id, "primary");
    assert_eq!(config.primary.password.as_ref().map(Password::expose), Some("hunter2"));
    let hosts: Vec<(&str, &str)> = config
        .replicas
        .iter()
        .map(|r| (r.id.as_str(), r.host.as_str()))
        .collect();
    assert_eq!(hosts, [("replica1", "db2"), ("replica2", "db3")]);
    assert_eq!(config.routing.read_preference, ReadPreference::PrimaryPreferred);
    assert_eq!(config.health.interval, Duration::from_millis(250));
}

#[test]
fn env_requires_a_primary() {
    let err = ReplicationConfig::from_env_map(env(&[("COVET_PRIMARY_URL", " ")])).expect_err("nothing set");
    assert_eq!(
        err.to_string(),
        "COVET_PRIMARY_URL: not set (set it, COVET_URL, or COVET_CONFIG to a config file)"
    );
    assert_eq!(err.field(), Some("COVET_PRIMARY_URL"));
}

#[test]
fn env_errors_name_the_variable() {
    let primary = ("COVET_PRIMARY_URL", "postgres://db1/app");
    let err = ReplicationConfig::from_env_map(env(&[primary, ("COVET_READ_PREFERENCE", "x")])).expect_err("bad");
    assert_eq!(
        err.to_string(),
        "COVET_READ_PREFERENCE: unknown read preference \"x\" (expected one of primary, primary_preferred, replica, \
         replica_preferred, nearest)"
    );
    assert!(matches!(err, ConfigError::Env { ref var, .. } if var == "COVET_READ_PREFERENCE"));

    let err = ReplicationConfig::from_env_map(env(&[primary, ("COVET_HEALTH_INTERVAL", "often")])).expect_err("bad");
    assert!(
        err.to_string()
            .starts_with("COVET_HEALTH_INTERVAL: invalid duration \"often\""),
        "{err}"
    );

    let err = ReplicationConfig::from_env_map(env(&[("COVET_PRIMARY_URL", "postgres://app:hunter2@db1:x/app")]))
        .expect_err("bad");
    assert_eq!(err.to_string(), "COVET_PRIMARY_URL: invalid url: invalid port number");

    let err = ReplicationConfig::from_env_map(env(&[
        primary,
        ("COVET_REPLICA_URLS", "postgres://db2/app,mysql://app:hunter2@db3/app"),
    ]))
    .expect_err("bad");
    assert_eq!(
        err.to_string(),
        "COVET_REPLICA_URLS[1]: unsupported scheme \"mysql\" (expected postgres:// or postgresql://)"
    );

    // Validation still applies to the result.
    let err = ReplicationConfig::from_env_map(env(&[primary, ("COVET_HEALTH_INTERVAL", "50ms")])).expect_err("bad");
    assert_eq!(err.to_string(), "health.interval: must be at least 100ms");
}

#[test]
fn env_overrides_a_config_file() {
    let dir = std::env::temp_dir().join(format!("covet-config-env-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("cluster.toml");
    std::fs::write(&path, EXAMPLE).expect("write");
    let path_str = path.display().to_string();

    let from_file = ReplicationConfig::from_env_map(env(&[("COVET_CONFIG", &path_str)])).expect("valid");
    assert_eq!(from_file.replicas[0].host, "10.0.0.2");

    let config = ReplicationConfig::from_env_map(env(&[
        ("COVET_CONFIG", &path_str),
        (
            "COVET_PRIMARY_URL",
            "postgres://other:pw@db9:6000/otherdb?sslmode=require",
        ),
        ("COVET_REPLICA_URLS", "postgres://other@db10/otherdb"),
        ("COVET_READ_PREFERENCE", "nearest"),
    ]))
    .expect("valid");
    let p = &config.primary;
    assert_eq!(
        (p.host.as_str(), p.port, p.user.as_str(), p.database.as_str()),
        ("db9", 6000, "other", "otherdb")
    );
    assert_eq!(p.password.as_ref().map(Password::expose), Some("pw"));
    assert_eq!(p.tls, TlsMode::Require);
    assert_eq!(p.region.as_deref(), Some("eu-west"), "kept from the file");
    assert_eq!(config.replicas.len(), 1);
    assert_eq!(
        (config.replicas[0].id.as_str(), config.replicas[0].host.as_str()),
        ("replica1", "db10")
    );
    assert_eq!(config.routing.read_preference, ReadPreference::Nearest);
    assert_eq!(
        config.routing.preferred_region.as_deref(),
        Some("eu-west"),
        "kept from the file"
    );
    assert_eq!(config.health.interval, Duration::from_millis(500), "kept from the file");

    let missing = dir.join("missing.toml").display().to_string();
    let err = ReplicationConfig::from_env_map(env(&[("COVET_CONFIG", &missing)])).expect_err("missing file");
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn read_preference_parsing() {
    for p in ReadPreference::ALL {
        assert_eq!(p.as_str().parse::<ReadPreference>(), Ok(p));
        assert_eq!(p.as_str().replace('_', "-").parse::<ReadPreference>(), Ok(p));
        assert_eq!(p.to_string(), p.as_str());
        let toml = format!("{}[routing]\nread_preference = \"{}\"\n", primary_with(""), p.as_str());
        let expected = p;
        let config = if p == ReadPreference::Replica {
            load(&format!("{toml}[[replicas]]\nhost = \"db2\"\n"))
        } else {
            load(&toml)
        };
        assert_eq!(config.routing.read_preference, expected);
    }
    assert_eq!(
        " Replica_Preferred ".parse::<ReadPreference>(),
        Ok(ReadPreference::ReplicaPreferred)
    );
    let err = "secondary".parse::<ReadPreference>().expect_err("unknown");
    assert_eq!(err.input(), "secondary");
}

// ---------------------------------------------------------------- redaction

#[test]
fn password_is_redacted() {
    let password = Password::new("hunter2");
    assert_eq!(password.expose(), "hunter2");
    assert_eq!(format!("{password}"), "<redacted>");
    assert_eq!(format!("{password:?}"), "<redacted>");
    assert_eq!(format!("{password:#?}"), "<redacted>");
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Wrapper {
        password: Password,
    }
    let text = toml::to_string(&Wrapper {
        password: password.clone(),
    })
    .expect("serializes");
    assert_eq!(text.trim(), "password = \"<redacted>\"");
    let back: Wrapper = toml::from_str("password = \"hunter2\"").expect("deserializes");
    assert_eq!(back.password, password);
}

#[test]
fn debug_of_configs_never_shows_the_password() {
    let from_url = ReplicationConfig::from_urls(
        "postgres://app:hunter2@db1/app",
        &["postgres://app:hunter2@db2/app?password=hunter2"],
    )
    .expect("valid");
    let from_toml = load(EXAMPLE);
    let from_toml_url = load("[primary]\nurl = \"postgres://app:hunter2@db1/app\"\n");
    let from_options = ReplicationConfig::builder()
        .primary(NodeConfig::from_connect_options(
            "p",
            &sqlx::postgres::PgConnectOptions::new_without_pgpass()
                .host("db1")
                .password("hunter2"),
        ))
        .build()
        .expect("valid");
    for config in [&from_url, &from_toml, &from_toml_url, &from_options] {
        for text in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{:?}", config.primary),
            format!("{:#?}", config.replicas),
            config.to_toml_string().expect("serializes"),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
        }
        if config.primary.password.is_some() {
            assert!(format!("{config:?}").contains("<redacted>"));
        }
    }
    let node = NodeConfig::from_url("postgres://app:hunter2@db1/app").expect("valid");
    assert!(!format!("{node:?} {node:#?}").contains("hunter2"));
}

#[test]
fn toml_errors_never_quote_the_password() {
    for toml in [
        // Syntax error on the password's line: toml would show the line.
        "[primary]\nhost = \"db1\"\npassword = \"hunter2\" oops\n",
        // A password that is not a string: serde would show the value.
        "[primary]\nhost = \"db1\"\npassword = 12345\n",
        // Unterminated string.
        "[primary]\nhost = \"db1\"\nurl = \"postgres://app:hunter2@db1/app\n",
    ] {
        let err = load_err(toml);
        let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
        assert!(!text.contains("hunter2") && !text.contains("12345"), "{text}");
    }
}

// ---------------------------------------------------------------- failover

#[test]
fn failover_section_loads_round_trips_and_validates() {
    let text = format!(
        "{}[[replicas]]\nhost = \"db2\"\n[[replicas]]\nhost = \"db3\"\n\n[failover]\nautomatic = false\n\
         min_replicas = 2\nmax_data_loss_bytes = 1048576\nexclude = [\"replica2\"]\npromote_timeout = \"10s\"\n\
         hold_writes = \"3s\"\naudit_log = \"/var/log/covet/failover.jsonl\"\nmode = \"supervised\"\n\
         approval_timeout = \"5m\"\n",
        primary_with("")
    );
    let config = load(&text);
    let f = &config.failover;
    assert!(!f.automatic);
    assert_eq!(
        (f.mode, f.approval_timeout),
        (crate::config::FailoverMode::Supervised, Duration::from_secs(300))
    );
    assert_eq!(
        (f.min_replicas, f.max_data_loss_bytes, f.exclude.as_slice()),
        (2, Some(1_048_576), ["replica2".to_owned()].as_slice())
    );
    assert_eq!(
        (f.promote_timeout, f.hold_writes),
        (Duration::from_secs(10), Duration::from_secs(3))
    );
    assert_eq!(
        f.audit_log.as_deref(),
        Some(std::path::Path::new("/var/log/covet/failover.jsonl"))
    );
    let again = load(&config.to_toml_string().expect("serializes"));
    assert_eq!(again.failover, config.failover);
    assert_eq!(
        load(&primary_with("")).failover,
        crate::config::FailoverConfig::default()
    );

    let mut bad = config.clone();
    bad.failover.exclude = vec!["replica9".into()];
    assert_single(
        &bad,
        "failover.exclude[0]",
        "failover.exclude[0]: \"replica9\" is not a configured replica",
    );
    let mut bad = config.clone();
    bad.failover.promote_timeout = Duration::ZERO;
    assert_single(
        &bad,
        "failover.promote_timeout",
        "failover.promote_timeout: must be > 0",
    );
    let mut bad = config;
    bad.failover.max_data_loss_bytes = Some(0);
    assert_single(
        &bad,
        "failover.max_data_loss_bytes",
        "failover.max_data_loss_bytes: must be > 0 (use \"none\" for no limit)",
    );
    let err = load_err(&format!("{}[failover]\nautomatc = true\n", primary_with("")));
    assert!(err.to_string().contains("automatc"), "{err}");
    let err = load_err(&format!("{}[failover]\nmode = \"patroni\"\n", primary_with("")));
    assert!(
        err.to_string()
            .contains("unknown variant `patroni`, expected one of `own`, `supervised`, `follow`, `coordinated`"),
        "{err}"
    );
}

#[test]
fn a_multi_host_url_is_a_list_of_nodes() {
    let config =
        ReplicationConfig::from_url("postgresql://app:hunter2@db1:5433,db2,[fe80::1]:6000/shop?sslmode=require")
            .unwrap();
    let nodes: Vec<_> = config
        .nodes()
        .map(|n| (n.id.as_str(), n.host.as_str(), n.port, n.database.as_str(), n.tls))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node1", "db1", 5433, "shop", TlsMode::Require),
            ("node2", "db2", 5432, "shop", TlsMode::Require),
            ("node3", "fe80::1", 6000, "shop", TlsMode::Require),
        ]
    );
    assert!(
        config
            .nodes()
            .all(|n| n.password.as_ref().is_some_and(|p| p.expose() == "hunter2"))
    );
    // One host: the usual single node.
    let one = ReplicationConfig::from_url("postgres://app@db1/app").unwrap();
    assert_eq!((one.primary.id.as_str(), one.replicas.len()), ("primary", 0));
    for (url, expected) in [
        ("postgres://app:hunter2@db1,,db3/app", "url: host 2 of the url is empty"),
        (
            "postgres://app:hunter2@db1,:5432/app",
            "url: host 2 of the url is empty",
        ),
        (
            "postgres://app:hunter2@db1,db2:x/app",
            "url[host 2]: invalid url: invalid port number",
        ),
    ] {
        let err = ReplicationConfig::from_url(url).expect_err(url);
        assert_eq!(err.to_string(), expected, "{url}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }
}

#[test]
fn env_takes_every_node_in_one_url() {
    let config = ReplicationConfig::from_env_map(env(&[
        ("COVET_URL", "postgres://app:pw@db1,db2,db3/app"),
        ("COVET_READ_PREFERENCE", "primary"),
    ]))
    .unwrap();
    let hosts: Vec<_> = config.nodes().map(|n| (n.id.as_str(), n.host.as_str())).collect();
    assert_eq!(hosts, [("node1", "db1"), ("node2", "db2"), ("node3", "db3")]);
    assert_eq!(config.routing.read_preference, ReadPreference::Primary);
    let err = ReplicationConfig::from_env_map(env(&[
        ("COVET_URL", "postgres://app:pw@db1,db2/app"),
        ("COVET_PRIMARY_URL", "postgres://app:pw@db1/app"),
    ]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "COVET_URL: set together with COVET_PRIMARY_URL: give the nodes one way"
    );
}

#[test]
fn an_etcd_table_makes_the_fleet_coordinate_and_is_checked() {
    let config = ReplicationConfig::from_toml_str(&format!(
        "{}[etcd]\nendpoints = [\"http://etcd1:2379\", \"https://etcd2:2379\"]\nprefix = \"/covet/orders\"\n\
         lease_ttl = \"3s\"\ninstance = \"web-7\"\n",
        primary_with("")
    ));
    if cfg!(feature = "etcd") {
        let config = config.unwrap();
        assert_eq!(config.etcd.endpoints, ["http://etcd1:2379", "https://etcd2:2379"]);
        assert_eq!(config.etcd.prefix, "/covet/orders");
        assert_eq!(config.etcd.lease_ttl, Duration::from_secs(3));
        assert_eq!(config.etcd.instance.as_deref(), Some("web-7"));
        // Serialized and read back, it is the same.
        let again = ReplicationConfig::from_toml_str(&config.to_toml_string().unwrap()).unwrap();
        assert_eq!(again.etcd, config.etcd);
    } else {
        let err = config.unwrap_err();
        assert_eq!(
            messages(&err),
            ["failover.mode: coordinated needs covet-replication's `etcd` feature"]
        );
    }

    let etcd = |f: fn(&mut ReplicationConfig)| {
        let mut config = valid();
        config.etcd = EtcdConfig::default().with_endpoints(["http://etcd1:2379"]);
        config.failover.mode = FailoverMode::Coordinated;
        f(&mut config);
        config
    };
    let cases: [Case; 8] = [
        (
            |c| c.etcd.endpoints = vec!["etcd1:2379".into()],
            "etcd.endpoints[0]",
            "etcd.endpoints[0]: must be an http:// or https:// URL of an etcd member",
        ),
        (
            |c| c.etcd.prefix = "covet".into(),
            "etcd.prefix",
            "etcd.prefix: must start with '/', and not end with one (e.g. \"/covet/orders\")",
        ),
        (
            |c| c.etcd.prefix = "/covet/".into(),
            "etcd.prefix",
            "etcd.prefix: must start with '/', and not end with one (e.g. \"/covet/orders\")",
        ),
        (
            |c| c.etcd.lease_ttl = Duration::from_millis(1500),
            "etcd.lease_ttl",
            "etcd.lease_ttl: must be >= 2s (etcd's shortest lease)",
        ),
        (
            |c| c.etcd.instance = Some(" ".into()),
            "etcd.instance",
            "etcd.instance: must not be empty",
        ),
        (
            |c| c.etcd.endpoints.clear(),
            "failover.mode",
            "failover.mode: coordinated needs etcd.endpoints",
        ),
        (
            |c| c.patroni = vec!["http://db1:8008".into()],
            "etcd",
            "etcd: Patroni manages this cluster: it is followed, not coordinated (remove [etcd])",
        ),
        (
            |c| c.failover.mode = FailoverMode::Supervised,
            "failover.mode",
            "failover.mode: supervised is not coordinated: with [etcd], use coordinated or follow",
        ),
    ];
    for (change, field, message) in cases {
        let config = etcd(change);
        let err = config.validate().expect_err(message);
        // Without the feature, the missing feature is reported too (after the others).
        assert_eq!(messages(&err)[0], message, "{err}");
        assert_eq!(err.field(), Some(field));
    }
    // `follow` with endpoints is valid with or without the feature: it never asks etcd to act.
    let follow = etcd(|c| c.failover.mode = FailoverMode::Follow);
    follow.validate().unwrap();
}

#[test]
fn covet_etcd_names_the_fleets_etcd() {
    let env = std::collections::HashMap::from([
        ("COVET_URL", "postgres://app@db1,db2/app"),
        ("COVET_ETCD", "http://etcd1:2379, http://etcd2:2379"),
        ("COVET_ETCD_PREFIX", "/covet/shop"),
    ]);
    let config = ReplicationConfig::from_env_map(|name| env.get(name).map(|v| v.to_string()));
    if !cfg!(feature = "etcd") {
        assert!(config.unwrap_err().to_string().contains("`etcd` feature"));
        return;
    }
    let config = config.unwrap();
    assert_eq!(config.etcd.endpoints, ["http://etcd1:2379", "http://etcd2:2379"]);
    assert_eq!(config.etcd.prefix, "/covet/shop");
    let env = std::collections::HashMap::from([
        ("COVET_URL", "postgres://app@db1,db2/app"),
        ("COVET_ETCD", "http://etcd1:2379"),
        ("COVET_ETCD_PREFIX", "covet"),
    ]);
    let err = ReplicationConfig::from_env_map(|name| env.get(name).map(|v| v.to_string())).unwrap_err();
    assert_eq!(err.field(), Some("etcd.prefix"));
}

#[test]
fn pool_sizes_reach_every_node_from_a_url_a_pool_table_the_builder_and_the_environment() {
    // A URL's query: for every host of a multi-host URL.
    let config = ReplicationConfig::from_url(
        "postgres://app@db1,db2,db3/app?max_connections=32&min_connections=2&acquire_timeout=750ms&test_before_acquire=false",
    )
    .unwrap();
    for node in config.nodes() {
        assert_eq!(
            (
                node.pool.max_connections,
                node.pool.min_connections,
                node.pool.acquire_timeout
            ),
            (32, 2, Duration::from_millis(750)),
            "{}",
            node.id
        );
        assert_eq!(node.pool.test_before_acquire, Some(false));
    }
    // A [pool] table: every node without a pool of its own; a node's URL parameters over it.
    let config = load(
        "[pool]\nmax_connections = 24\n\n[primary]\nurl = \"postgres://app@db1/app?max_connections=40\"\n\n\
         [[replicas]]\nhost = \"db2\"\n\n[[replicas]]\nhost = \"db3\"\npool = { max_connections = 4 }\n",
    );
    let max: Vec<u32> = config.nodes().map(|n| n.pool.max_connections).collect();
    assert_eq!(max, [40, 24, 4]);
    assert_eq!(config.replicas[1].pool.test_before_acquire, None);
    // The builder: every node.
    let config = ReplicationConfig::builder()
        .primary_url("postgres://app@db1/app")
        .replica_url("postgres://app@db2/app")
        .pool(PoolConfig::default().with_max_connections(16))
        .build()
        .unwrap();
    assert!(config.nodes().all(|n| n.pool.max_connections == 16));
    // The environment: every node.
    let env = HashMap::from([
        ("COVET_URL", "postgres://app@db1,db2/app"),
        ("COVET_MAX_CONNECTIONS", "20"),
    ]);
    let config = ReplicationConfig::from_env_map(|name| env.get(name).map(|v| v.to_string())).unwrap();
    assert!(config.nodes().all(|n| n.pool.max_connections == 20));
    let env = HashMap::from([
        ("COVET_URL", "postgres://app@db1/app"),
        ("COVET_MAX_CONNECTIONS", "lots"),
    ]);
    let err = ReplicationConfig::from_env_map(|name| env.get(name).map(|v| v.to_string())).unwrap_err();
    assert_eq!(err.field(), Some("COVET_MAX_CONNECTIONS"));
    // Bad values name the parameter, never the URL.
    for (query, message) in [
        (
            "max_connections=many",
            "invalid max_connections (expected a whole number)",
        ),
        (
            "acquire_timeout=soon",
            "invalid acquire_timeout (expected a duration, e.g. 5s or 500ms)",
        ),
        (
            "test_before_acquire=maybe",
            "invalid test_before_acquire (expected true or false)",
        ),
    ] {
        let err = ReplicationConfig::from_url(&format!("postgres://app:hunter2@db1/app?{query}")).unwrap_err();
        assert!(err.to_string().ends_with(message), "{err}");
        assert!(!err.to_string().contains("hunter2"));
    }
    // Zero is refused by validation, as in a pool table.
    let err = ReplicationConfig::from_url("postgres://app@db1/app?max_connections=0").unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}
