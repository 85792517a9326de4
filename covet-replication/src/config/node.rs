//! One PostgreSQL server of the cluster: [`NodeConfig`], with its [`Password`], [`TlsMode`] and
//! [`PoolConfig`], and connection-URL parsing.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::ConfigError;
use super::serde_util::optional_duration;

/// What [`Password`] prints and serializes as.
const REDACTED: &str = "<redacted>";

/// A database password.
///
/// Its `Debug` and `Display` print `<redacted>`, and it serializes as the string `"<redacted>"`, so
/// neither a log line nor a serialized configuration ever carries it. It deserializes from a plain
/// string. [`Password::expose`] gives the secret to whoever really needs it.
///
/// ```rust
/// use covet_replication::config::Password;
///
/// let password = Password::new("hunter2");
/// assert_eq!(password.expose(), "hunter2");
/// assert_eq!(format!("{password} {password:?}"), "<redacted> <redacted>");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    #[must_use]
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Don't log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for Password {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(PasswordVisitor)
    }
}

/// Accepts strings only; its errors never quote the value (serde's default messages would, for a
/// password mistakenly written as a TOML integer).
struct PasswordVisitor;

impl Visitor<'_> for PasswordVisitor {
    type Value = Password;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Password, E> {
        Ok(Password(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Password, E> {
        Ok(Password(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Password, E> {
        Err(E::custom("invalid type: expected a string (quote the password)"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Password, E> {
        Err(E::custom("invalid type: expected a string (quote the password)"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Password, E> {
        Err(E::custom("invalid type: expected a string (quote the password)"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Password, E> {
        Err(E::custom("invalid type: expected a string (quote the password)"))
    }

    fn visit_char<E: de::Error>(self, _: char) -> Result<Password, E> {
        Err(E::custom("invalid type: expected a string (quote the password)"))
    }
}

/// TLS use of a connection: libpq's `sslmode`, mapped to sqlx's [`PgSslMode`].
///
/// Written `verify_ca` / `verify_full` in files; `verify-ca` / `verify-full` (libpq's spelling, used in
/// URLs) are accepted too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection only.
    Disable,
    /// Plain connection first; TLS if the server insists.
    Allow,
    /// TLS first; plain if the server doesn't support it. libpq's and sqlx's default.
    #[default]
    Prefer,
    /// TLS only, without verifying the certificate (unless a root certificate is configured, then as
    /// `VerifyCa`).
    Require,
    /// TLS only; the server certificate must be signed by a trusted CA.
    #[serde(alias = "verify-ca")]
    VerifyCa,
    /// TLS only; the certificate must be signed by a trusted CA and match the host name.
    #[serde(alias = "verify-full")]
    VerifyFull,
}

impl TlsMode {
    /// Every mode.
    pub const ALL: [TlsMode; 6] = [
        TlsMode::Disable,
        TlsMode::Allow,
        TlsMode::Prefer,
        TlsMode::Require,
        TlsMode::VerifyCa,
        TlsMode::VerifyFull,
    ];

    /// libpq's name of the mode (`verify-full`), as in an `sslmode` URL parameter.
    #[must_use]
    pub fn as_libpq_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    /// Parses libpq's spelling (`verify-full`) or ours (`verify_full`), ignoring ASCII case.
    fn parse(s: &str) -> Option<Self> {
        let s = s.trim().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|m| m.as_libpq_str().eq_ignore_ascii_case(&s))
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_libpq_str())
    }
}

impl From<TlsMode> for PgSslMode {
    fn from(mode: TlsMode) -> Self {
        match mode {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Allow => PgSslMode::Allow,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyCa => PgSslMode::VerifyCa,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

impl From<PgSslMode> for TlsMode {
    fn from(mode: PgSslMode) -> Self {
        match mode {
            PgSslMode::Disable => TlsMode::Disable,
            PgSslMode::Allow => TlsMode::Allow,
            PgSslMode::Prefer => TlsMode::Prefer,
            PgSslMode::Require => TlsMode::Require,
            PgSslMode::VerifyCa => TlsMode::VerifyCa,
            PgSslMode::VerifyFull => TlsMode::VerifyFull,
        }
    }
}

/// Connection pool of one node.
///
/// In files, `idle_timeout` and `max_lifetime` take a duration (`"10m"`) or `"none"` to switch them
/// off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// Upper bound on open connections; must be > 0 and >= `min_connections`.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this; `None` keeps them.
    #[serde(with = "optional_duration")]
    pub idle_timeout: Option<Duration>,
    /// Connections are closed (and replaced on demand) after this age; `None`: never.
    #[serde(with = "optional_duration")]
    pub max_lifetime: Option<Duration>,
    /// sqlx's ping of an idle connection before handing it out (one round trip). `None`: on for
    /// the primary, whose statements are not resent once they may have reached it (a dead
    /// connection found by the statement itself fails it), off for replicas, whose reads are
    /// retried elsewhere.
    pub test_before_acquire: Option<bool>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            // 0: pools are lazy, so a node that is down at start-up doesn't fail the start-up, and an
            // unused replica costs no connection.
            min_connections: 0,
            // 10: sqlx's own default; enough for most services without exhausting the server's
            // max_connections (100 by default) when several instances run.
            max_connections: 10,
            // 5s: long enough to ride out a burst, short enough for a router to fall back to another
            // node while the request is still worth answering.
            acquire_timeout: Duration::from_secs(5),
            // 10 min: sqlx's default; frees server backends after a burst.
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            // 30 min: sqlx's default; bounds per-backend memory growth and spreads connections again
            // after a failover or a load-balancer change.
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            // See the field: the role decides.
            test_before_acquire: None,
        }
    }
}

impl PoolConfig {
    /// Sets `min_connections`.
    #[must_use]
    pub fn with_min_connections(mut self, min_connections: u32) -> Self {
        self.min_connections = min_connections;
        self
    }

    /// Sets `max_connections`.
    #[must_use]
    pub fn with_max_connections(mut self, max_connections: u32) -> Self {
        self.max_connections = max_connections;
        self
    }

    /// Sets `acquire_timeout`.
    #[must_use]
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// Sets `idle_timeout` (`None`: idle connections are kept).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle_timeout: Option<Duration>) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets `max_lifetime` (`None`: connections are never recycled for age).
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime: Option<Duration>) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// Sets `test_before_acquire` (`None`: by role).
    #[must_use]
    pub fn with_test_before_acquire(mut self, test: Option<bool>) -> Self {
        self.test_before_acquire = test;
        self
    }

    /// What a URL's query parameters (`max_connections`, `min_connections`, `acquire_timeout`,
    /// `test_before_acquire`) set, over `self`.
    fn with_url(mut self, url: &PoolUrl) -> Self {
        if let Some(n) = url.max_connections {
            self.max_connections = n;
        }
        if let Some(n) = url.min_connections {
            self.min_connections = n;
        }
        if let Some(d) = url.acquire_timeout {
            self.acquire_timeout = d;
        }
        if let Some(t) = url.test_before_acquire {
            self.test_before_acquire = Some(t);
        }
        self
    }
}

/// The pool settings a URL's query may carry.
#[derive(Debug, Default, Clone, Copy)]
struct PoolUrl {
    max_connections: Option<u32>,
    min_connections: Option<u32>,
    acquire_timeout: Option<Duration>,
    test_before_acquire: Option<bool>,
}

/// One PostgreSQL server: the primary or a hot standby.
///
/// Build one with [`NodeConfig::new`], [`NodeConfig::from_url`] or
/// [`NodeConfig::from_connect_options`] and the `with_*` methods, or load it from a TOML table, where
/// either the separate fields or a `url = "postgres://..."` (or both: then the explicit fields override
/// the URL's parts) give the connection.
///
/// An empty `id` is replaced, when the node becomes part of a
/// [`ReplicationConfig`](super::ReplicationConfig), by `primary` or `replicaN` (N = 1-based position).
/// When `database` is not given, it defaults to the user name, as with libpq. In a
/// [`ReplicationConfig`](super::ReplicationConfig) file, a replica table inherits the connection
/// settings it doesn't give (all but the host) from the primary's.
///
/// ```rust
/// use std::time::Duration;
/// use covet_replication::{NodeConfig, config::TlsMode};
///
/// let node = NodeConfig::from_url("postgres://app:s%40cret@10.0.0.2:5433/shop?sslmode=verify-full")?
///     .with_region("eu-west")
///     .with_weight(2)
///     .with_max_lag(Duration::from_secs(5));
/// assert_eq!((node.host.as_str(), node.port, node.database.as_str()), ("10.0.0.2", 5433, "shop"));
/// assert_eq!(node.password.as_ref().map(|p| p.expose()), Some("s@cret"));
/// assert_eq!(node.tls, TlsMode::VerifyFull);
/// assert!(!format!("{node:?}").contains("s@cret"));
/// let options = node.connect_options(); // ready for sqlx::PgPool::connect_with
/// assert_eq!(options.get_port(), 5433);
/// # Ok::<(), covet_replication::config::ConfigError>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "RawNode")]
#[non_exhaustive]
pub struct NodeConfig {
    /// Name of the node in logs, metrics and errors; unique in the cluster.
    pub id: String,
    /// Host name or IP address; a path starting with `/` is a Unix-socket directory.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// User name.
    pub user: String,
    /// Password, if the server asks for one. When `None`, sqlx falls back to `PGPASSWORD` (never to
    /// `~/.pgpass`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Password>,
    /// TLS use.
    pub tls: TlsMode,
    /// CA certificate (PEM file) to verify the server with; `None`: `PGSSLROOTCERT` or the system roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_root_cert: Option<PathBuf>,
    /// Region of the node, matched against [`RoutingConfig::preferred_region`](super::RoutingConfig).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Datacenter / availability zone, matched against `RoutingConfig::preferred_datacenter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Relative share of the reads among eligible nodes (a node of weight 2 gets twice the reads of a
    /// node of weight 1); must be > 0.
    pub weight: u32,
    /// Replication lag above which this replica gets no reads; `None`: `RoutingConfig::max_lag`. Not
    /// allowed on the primary.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub max_lag: Option<Duration>,
    /// Connection pool of this node.
    pub pool: PoolConfig,
    /// `application_name` reported to the server (`pg_stat_activity`); `None`: `PGAPPNAME`, if set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// Not configurable: options given to `from_connect_options`, and a URL error deferred to validation.
    #[serde(skip)]
    private: NodePrivate,
}

/// The parts of a [`NodeConfig`] that are neither public nor serialized.
#[derive(Clone, Default)]
struct NodePrivate {
    /// Options given to [`NodeConfig::from_connect_options`], the base of
    /// [`NodeConfig::connect_options`], so that what has no getter (the password) survives.
    base_options: Option<PgConnectOptions>,
    /// The error of a `url` in a TOML node table (redacted), reported by `validate` with its path.
    url_error: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            // Empty: replaced by `primary` / `replicaN` by position when the node joins a config.
            id: String::new(),
            // localhost: libpq's default TCP host.
            host: "localhost".to_owned(),
            // 5432: PostgreSQL's default port.
            port: 5432,
            // postgres: the maintenance database that exists on every server.
            database: "postgres".to_owned(),
            // postgres: the superuser every server has; explicit rather than the OS user.
            user: "postgres".to_owned(),
            // None: trust/peer/cert authentication, or PGPASSWORD.
            password: None,
            // Prefer: libpq's default, TLS when the server offers it.
            tls: TlsMode::Prefer,
            // None: PGSSLROOTCERT or the system roots.
            ssl_root_cert: None,
            // None: no locality, so no region/datacenter preference applies to this node.
            region: None,
            datacenter: None,
            // 1: every node gets an equal share.
            weight: 1,
            // None: the cluster-wide RoutingConfig::max_lag applies.
            max_lag: None,
            // See PoolConfig::default.
            pool: PoolConfig::default(),
            // None: PGAPPNAME, if set.
            application_name: None,
            private: NodePrivate::default(),
        }
    }
}

impl NodeConfig {
    /// A node at `host:port`, with the defaults for everything else (user and database `postgres`,
    /// TLS `prefer`, weight 1, default pool, id assigned by position).
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            ..Self::default()
        }
    }

    /// Parses a `postgres://` or `postgresql://` URL:
    /// `postgres://user:password@host:port/database?sslmode=verify-full`.
    ///
    /// User, password and database are percent-decoded. Supported query parameters: `sslmode`,
    /// `sslrootcert`, `application_name`, `host` (also a socket directory), `port`, `user`, `password`,
    /// `dbname`; any other is rejected. Missing parts take the defaults of [`NodeConfig::new`],
    /// except the database, which defaults to the user name (as with libpq).
    ///
    /// Errors ([`ConfigError::Url`] with field `url`) never contain the URL or its password.
    pub fn from_url(url: &str) -> Result<NodeConfig, ConfigError> {
        Self::from_url_at("url", url)
    }

    /// Every node of a libpq multi-host URL, `postgres://user:password@h1:5432,h2,h3:5433/app`
    /// (a host without a port: 5432), in order; a one-host URL gives one node. Each node has
    /// everything else of the URL. Errors name `field` and the host's position, never the URL.
    pub(crate) fn all_from_url_at(field: &str, url: &str) -> Result<Vec<NodeConfig>, ConfigError> {
        let urls = split_hosts(url.trim()).map_err(|message| ConfigError::Url {
            field: field.to_owned(),
            message,
        })?;
        let many = urls.len() > 1;
        urls.iter()
            .enumerate()
            .map(|(i, url)| {
                let field = if many {
                    format!("{field}[host {}]", i + 1)
                } else {
                    field.to_owned()
                };
                Self::from_url_at(&field, url)
            })
            .collect()
    }

    /// [`NodeConfig::from_url`], with errors reported for `field` (e.g. `primary.url`).
    pub(crate) fn from_url_at(field: &str, url: &str) -> Result<NodeConfig, ConfigError> {
        match UrlParts::parse(url) {
            Ok(parts) => Ok(parts.into_node()),
            Err(message) => Err(ConfigError::Url {
                field: field.to_owned(),
                message,
            }),
        }
    }

    /// A node from sqlx connect options: host (or socket directory), port, user, database (default:
    /// the user name), TLS mode and application name are copied into the fields, and the options
    /// themselves are kept, so that [`NodeConfig::connect_options`] still carries what sqlx has no
    /// getter for (the password, certificates, statement cache size, ...).
    ///
    /// `password` and `ssl_root_cert` of the returned node are `None` (unreadable); setting them
    /// overrides the kept options' values. Changing `host` from a socket directory to a TCP host is not
    /// supported (the kept socket would win).
    ///
    /// ```rust
    /// use covet_replication::NodeConfig;
    /// use sqlx::postgres::PgConnectOptions;
    ///
    /// let options = PgConnectOptions::new_without_pgpass().host("db1").username("app").password("hunter2");
    /// let node = NodeConfig::from_connect_options("primary", &options);
    /// assert_eq!((node.id.as_str(), node.host.as_str(), node.user.as_str()), ("primary", "db1", "app"));
    /// let _options = node.connect_options(); // still has the password
    /// ```
    #[must_use]
    pub fn from_connect_options(id: impl Into<String>, options: &PgConnectOptions) -> NodeConfig {
        let user = options.get_username().to_owned();
        Self {
            id: id.into(),
            host: match options.get_socket() {
                Some(socket) => socket.to_string_lossy().into_owned(),
                None => options.get_host().to_owned(),
            },
            port: options.get_port(),
            database: options.get_database().map_or_else(|| user.clone(), str::to_owned),
            user,
            tls: options.get_ssl_mode().into(),
            application_name: options.get_application_name().map(str::to_owned),
            private: NodePrivate {
                base_options: Some(options.clone()),
                url_error: None,
            },
            ..Self::default()
        }
    }

    /// sqlx connect options for this node (pool settings are in [`NodeConfig::pool`]).
    ///
    /// Starts from the options given to [`NodeConfig::from_connect_options`], if any, otherwise from
    /// [`PgConnectOptions::new_without_pgpass`] (so `~/.pgpass` is never read, while the `PG*`
    /// environment variables still fill in what is `None` here: `PGPASSWORD`, `PGSSLROOTCERT`,
    /// `PGAPPNAME`, ...), then sets host (or socket), port, user, database, TLS mode, and the password,
    /// root certificate and application name when set.
    #[must_use]
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut options = match &self.private.base_options {
            Some(base) => base.clone(),
            None => PgConnectOptions::new_without_pgpass(),
        };
        options = if self.host.starts_with('/') {
            options.socket(&self.host)
        } else {
            options.host(&self.host)
        };
        options = options
            .port(self.port)
            .username(&self.user)
            .database(&self.database)
            .ssl_mode(self.tls.into());
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(cert) = &self.ssl_root_cert {
            options = options.ssl_root_cert(cert);
        }
        if let Some(name) = &self.application_name {
            options = options.application_name(name);
        }
        options
    }

    /// `host:port/database` (IPv6 hosts in brackets), for messages. No user, no password.
    #[must_use]
    pub fn server_address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}/{}", self.host, self.port, self.database)
        } else {
            format!("{}:{}/{}", self.host, self.port, self.database)
        }
    }

    /// The host as a key for "is this the same server": case and a trailing dot do not matter,
    /// and `localhost`, `127.0.0.1` and `::1` are one loopback host (as a standby's walreceiver
    /// reports it). Other loopback addresses stay distinct: they are how servers on one machine
    /// that all listen on one port are told apart.
    pub(crate) fn host_key(host: &str) -> String {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        match host.as_str() {
            "localhost" | "::1" | "0:0:0:0:0:0:0:1" => "127.0.0.1".to_owned(),
            _ => host,
        }
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the password.
    #[must_use]
    pub fn with_password(mut self, password: impl Into<Password>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets the region.
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sets the datacenter.
    #[must_use]
    pub fn with_datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// Sets the weight (relative share of the reads; must be > 0).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets this replica's maximum replication lag (overrides `RoutingConfig::max_lag`).
    #[must_use]
    pub fn with_max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = Some(max_lag);
        self
    }

    /// Sets the pool configuration.
    #[must_use]
    pub fn with_pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The redacted error of a `url` given in a TOML node table, if it was invalid.
    pub(crate) fn url_error(&self) -> Option<&str> {
        self.private.url_error.as_deref()
    }

    /// Replaces the connection settings (host, port, user, password, database, TLS, root certificate,
    /// application name, kept connect options) with `other`'s, keeping id, locality, weight, max lag
    /// and pool.
    pub(crate) fn set_connection_from(&mut self, other: NodeConfig) {
        self.host = other.host;
        self.port = other.port;
        self.user = other.user;
        self.password = other.password;
        self.database = other.database;
        self.tls = other.tls;
        self.ssl_root_cert = other.ssl_root_cert;
        self.application_name = other.application_name;
        self.private = other.private;
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured so that a new field can't be forgotten here.
        let Self {
            id,
            host,
            port,
            database,
            user,
            password,
            tls,
            ssl_root_cert,
            region,
            datacenter,
            weight,
            max_lag,
            pool,
            application_name,
            private: NodePrivate {
                base_options,
                url_error,
            },
        } = self;
        let mut d = f.debug_struct("NodeConfig");
        d.field("id", id)
            .field("host", host)
            .field("port", port)
            .field("database", database)
            .field("user", user)
            .field("password", password)
            .field("tls", tls)
            .field("ssl_root_cert", ssl_root_cert)
            .field("region", region)
            .field("datacenter", datacenter)
            .field("weight", weight)
            .field("max_lag", max_lag)
            .field("pool", pool)
            .field("application_name", application_name);
        // PgConnectOptions' own Debug prints the password: never show it.
        if base_options.is_some() {
            d.field("connect_options", &format_args!("PgConnectOptions {{ .. }}"));
        }
        if let Some(error) = url_error {
            d.field("url_error", error);
        }
        d.finish()
    }
}

/// A node table as written in a file: every field optional, plus `url`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawNode {
    id: Option<String>,
    url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    user: Option<String>,
    password: Option<Password>,
    tls: Option<TlsMode>,
    ssl_root_cert: Option<PathBuf>,
    region: Option<String>,
    datacenter: Option<String>,
    weight: Option<u32>,
    #[serde(with = "humantime_serde")]
    max_lag: Option<Duration>,
    pool: Option<PoolConfig>,
    application_name: Option<String>,
}

impl RawNode {
    /// The node. Connection settings come from the explicit fields, else the URL, else (when given)
    /// `inherit`'s (all but the host), else the defaults; its pool from its `pool` table, else
    /// the URL's pool parameters over `pool` (the file's `[pool]`, for every node), else the
    /// defaults. An invalid URL is kept (redacted) for `validate`, which reports it with the
    /// node's path.
    pub(super) fn into_node(self, inherit: Option<&NodeConfig>, pool: Option<&PoolConfig>) -> NodeConfig {
        let explicit = UrlParts {
            host: self.host,
            port: self.port,
            user: self.user,
            password: self.password,
            database: self.database,
            tls: self.tls,
            ssl_root_cert: self.ssl_root_cert,
            application_name: self.application_name,
            pool: PoolUrl::default(),
        };
        let (from_url, url_error) = match self.url.as_deref().map(UrlParts::parse) {
            Some(Ok(parts)) => (parts, None),
            Some(Err(message)) => (UrlParts::default(), Some(message)),
            None => (UrlParts::default(), None),
        };
        let url_pool = from_url.pool;
        let mut parts = explicit.or(from_url);
        parts.pool = url_pool;
        if let Some(other) = inherit {
            parts = parts.or(UrlParts::inherited_from(other));
        }
        let mut node = parts.into_node();
        node.id = self.id.unwrap_or_default();
        node.region = self.region;
        node.datacenter = self.datacenter;
        node.weight = self.weight.unwrap_or(node.weight);
        node.max_lag = self.max_lag;
        node.pool = match self.pool {
            Some(own) => own,
            None => pool.cloned().unwrap_or_default().with_url(&url_pool),
        };
        node.private.url_error = url_error;
        node
    }
}

impl From<RawNode> for NodeConfig {
    /// Explicit fields override the URL's parts.
    fn from(raw: RawNode) -> Self {
        raw.into_node(None, None)
    }
}

/// The connection settings a URL can carry, each optional.
#[derive(Default)]
struct UrlParts {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<Password>,
    database: Option<String>,
    tls: Option<TlsMode>,
    ssl_root_cert: Option<PathBuf>,
    application_name: Option<String>,
    pool: PoolUrl,
}

impl UrlParts {
    /// Each part from `self`, else from `other`.
    fn or(self, other: UrlParts) -> UrlParts {
        UrlParts {
            host: self.host.or(other.host),
            port: self.port.or(other.port),
            user: self.user.or(other.user),
            password: self.password.or(other.password),
            database: self.database.or(other.database),
            tls: self.tls.or(other.tls),
            ssl_root_cert: self.ssl_root_cert.or(other.ssl_root_cert),
            application_name: self.application_name.or(other.application_name),
            pool: self.pool,
        }
    }

    /// What a replica inherits from the primary: every connection setting but the host.
    fn inherited_from(node: &NodeConfig) -> UrlParts {
        UrlParts {
            host: None,
            port: Some(node.port),
            user: Some(node.user.clone()),
            password: node.password.clone(),
            database: Some(node.database.clone()),
            tls: Some(node.tls),
            ssl_root_cert: node.ssl_root_cert.clone(),
            application_name: node.application_name.clone(),
            pool: PoolUrl::default(),
        }
    }

    /// A node with these parts and the defaults for the rest (database: the user name).
    fn into_node(self) -> NodeConfig {
        let defaults = NodeConfig::default();
        let user = self.user.unwrap_or(defaults.user);
        NodeConfig {
            host: self.host.unwrap_or(defaults.host),
            port: self.port.unwrap_or(defaults.port),
            database: self.database.unwrap_or_else(|| user.clone()),
            user,
            password: self.password,
            tls: self.tls.unwrap_or(defaults.tls),
            ssl_root_cert: self.ssl_root_cert,
            application_name: self.application_name,
            pool: PoolConfig::default().with_url(&self.pool),
            ..NodeConfig::default()
        }
    }

    /// Parses a postgres URL. The error message never contains the URL, nor any part of its
    /// authority or query values.
    fn parse(input: &str) -> Result<UrlParts, String> {
        let url = url::Url::parse(input.trim()).map_err(|e| format!("invalid url: {e}"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!(
                "unsupported scheme {:?} (expected postgres:// or postgresql://)",
                url.scheme()
            ));
        }
        let mut parts = UrlParts::default();
        match url.host() {
            Some(url::Host::Ipv6(addr)) => parts.host = Some(addr.to_string()),
            Some(url::Host::Ipv4(addr)) => parts.host = Some(addr.to_string()),
            Some(url::Host::Domain(domain)) if !domain.is_empty() => {
                let host = decode(domain, "host")?;
                if host.contains(',') {
                    return Err(
                        "several hosts in a node's url (ReplicationConfig::from_url takes a list of nodes)".to_owned(),
                    );
                }
                parts.host = Some(host.into_owned());
            }
            _ => {}
        }
        parts.port = url.port();
        if !url.username().is_empty() {
            parts.user = Some(decode(url.username(), "user name")?.into_owned());
        }
        if let Some(password) = url.password().filter(|p| !p.is_empty()) {
            parts.password = Some(Password(decode(password, "password")?.into_owned()));
        }
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() {
            parts.database = Some(decode(path, "database name")?.into_owned());
        }
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match &*key {
                "sslmode" | "ssl-mode" => {
                    parts.tls = Some(TlsMode::parse(&value).ok_or_else(|| {
                        let expected: Vec<&str> = TlsMode::ALL.iter().map(|m| m.as_libpq_str()).collect();
                        // Values are never quoted: a mistyped key may have put a secret here.
                        format!("invalid sslmode (expected one of {})", expected.join(", "))
                    })?);
                }
                "sslrootcert" | "ssl-root-cert" => parts.ssl_root_cert = Some(PathBuf::from(value)),
                "application_name" | "application-name" => parts.application_name = Some(value),
                "host" | "hostaddr" => parts.host = Some(value),
                "port" => {
                    parts.port = Some(
                        value
                            .parse()
                            .map_err(|_| "invalid port (expected 1-65535)".to_owned())?,
                    );
                }
                "user" => parts.user = Some(value),
                "password" => parts.password = Some(Password(value)),
                "dbname" => parts.database = Some(value),
                "max_connections" => parts.pool.max_connections = Some(count(&value, "max_connections")?),
                "min_connections" => parts.pool.min_connections = Some(count(&value, "min_connections")?),
                "acquire_timeout" => {
                    parts.pool.acquire_timeout =
                        Some(humantime_serde::re::humantime::parse_duration(&value).map_err(|_| {
                            "invalid acquire_timeout (expected a duration, e.g. 5s or 500ms)".to_owned()
                        })?);
                }
                "test_before_acquire" => {
                    parts.pool.test_before_acquire = Some(match &*value {
                        "true" | "on" | "1" => true,
                        "false" | "off" | "0" => false,
                        _ => return Err("invalid test_before_acquire (expected true or false)".to_owned()),
                    });
                }
                other => {
                    return Err(format!(
                        "unsupported query parameter {other:?} (supported: sslmode, sslrootcert, \
                         application_name, host, port, user, password, dbname, max_connections, \
                         min_connections, acquire_timeout, test_before_acquire)"
                    ));
                }
            }
        }
        Ok(parts)
    }
}

/// A multi-host URL as one URL per host. Errors never quote the URL.
fn split_hosts(url: &str) -> Result<Vec<String>, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(vec![url.to_owned()]);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    if !hosts.contains(',') {
        return Ok(vec![url.to_owned()]);
    }
    hosts
        .split(',')
        .enumerate()
        .map(|(i, host)| {
            if host.is_empty() || host.starts_with(':') {
                Err(format!("host {} of the url is empty", i + 1))
            } else {
                Ok(format!("{scheme}://{userinfo}{host}{tail}"))
            }
        })
        .collect()
}

/// A connection count of a URL's query; the error names `what`, never the value.
fn count(value: &str, what: &str) -> Result<u32, String> {
    value
        .parse()
        .map_err(|_| format!("invalid {what} (expected a whole number)"))
}

/// Percent-decodes `s` as UTF-8; the error names `what`, never the value.
fn decode<'a>(s: &'a str, what: &str) -> Result<Cow<'a, str>, String> {
    percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| format!("{what} is not valid utf-8 once percent-decoded"))
}
