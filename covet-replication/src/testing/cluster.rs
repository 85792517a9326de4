//! [`LocalCluster`]: a primary and hot standbys on loopback ports, for tests and demos.

use std::fmt;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection, PgConnection};

use super::ClusterError;
use super::basebackup;
use super::binaries::{find_bindir, requested_major, server_major};
use super::netns::{Cut, Endpoint, Network};
use super::process::{self, RunAs};
use super::registry;
use crate::core::lock;

/// How long any single wait of the harness may take before it gives up with [`ClusterError::Timeout`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// Settings every node gets. Durability across an OS crash is not needed by a test cluster, speed is;
/// a SIGKILL of a postmaster (our "crash") loses nothing with `fsync = off`.
const BASE_CONF: &str = "
unix_socket_directories = ''
wal_level = replica
hot_standby = on
max_wal_senders = 16
max_replication_slots = 16
fsync = off
shared_buffers = '32MB'
max_connections = 200
wal_receiver_status_interval = '1s'
# A standby whose primary died retries every wal_retrieve_retry_interval, and pg_promote waits
# for that sleep to end: the 5 s default would be most of a failover.
wal_retrieve_retry_interval = '200ms'
hot_standby_feedback = on
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
checkpoint_timeout = '30min'
";

/// Builder for a [`LocalCluster`].
///
/// ```no_run
/// # async fn demo() -> Result<(), covet_replication::testing::ClusterError> {
/// use covet_replication::testing::LocalCluster;
/// let cluster = LocalCluster::builder().replicas(2).regions(["eu", "eu", "us"]).start().await?;
/// let primary = cluster.connect_options(0)?;
/// # let _ = primary; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct LocalClusterBuilder {
    replicas: usize,
    regions: Vec<String>,
    synchronous: bool,
    password: Option<String>,
    settings: Vec<(String, String)>,
    base_port: Option<u16>,
    distinct_hosts: bool,
    timeout: Duration,
    bindir: Option<PathBuf>,
    version: Option<u32>,
    temp_root: Option<PathBuf>,
    network_namespaces: bool,
}

impl Default for LocalClusterBuilder {
    fn default() -> Self {
        Self {
            // One primary and two standbys: the smallest cluster where selection is a choice.
            replicas: 2,
            regions: Vec::new(),
            synchronous: false,
            password: None,
            settings: Vec::new(),
            base_port: None,
            distinct_hosts: false,
            timeout: DEFAULT_TIMEOUT,
            bindir: None,
            version: None,
            temp_root: None,
            network_namespaces: false,
        }
    }
}

impl LocalClusterBuilder {
    /// Number of hot standbys (default 2).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Region label per node, primary first; nodes without one get `"local"`.
    pub fn regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.regions = regions.into_iter().map(Into::into).collect();
        self
    }

    /// Makes every standby synchronous (`synchronous_standby_names = 'ANY 1 (...)'`).
    pub fn synchronous(mut self, on: bool) -> Self {
        self.synchronous = on;
        self
    }

    /// Requires SCRAM password authentication for TCP connections, with this password for `postgres`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// An extra `postgresql.conf` setting for every node.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Uses ports `base..base + nodes` instead of free ports chosen by the OS.
    pub fn base_port(mut self, port: u16) -> Self {
        self.base_port = Some(port);
        self
    }

    /// Puts node `i` on its own loopback address, `127.0.0.{i + 1}`, all on one port: like
    /// servers on separate machines that all listen on 5432, where only the host tells them
    /// apart. (Default: all on 127.0.0.1, one port each.)
    pub fn distinct_hosts(mut self, on: bool) -> Self {
        self.distinct_hosts = on;
        self
    }

    /// Puts every node in a network namespace of its own, on a bridge with this process (root
    /// only), so that [`cut`](LocalCluster::cut), [`isolate`](LocalCluster::isolate) and
    /// [`set_loss`](LocalCluster::set_loss) can fault any link: node `i` listens on
    /// `10.X.Y.(10 + i)`, port 5432, like servers on machines of their own. The harness itself
    /// reaches the servers over Unix sockets, which no fault touches;
    /// [`connect_options`](LocalCluster::connect_options) and [`url`](LocalCluster::url) are the
    /// application's way, through the faults.
    pub fn network_namespaces(mut self, on: bool) -> Self {
        self.network_namespaces = on;
        self
    }

    /// Upper bound for every wait (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Directory holding `initdb` and `postgres` (default: [`BINDIR_ENV`](super::BINDIR_ENV),
    /// `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`).
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Runs PostgreSQL `major` (13 to 18): Debian's binaries of that major, else those that
    /// `scripts/fetch-postgres.sh <major>` fetched (default: [`VERSION_ENV`](super::VERSION_ENV),
    /// else whatever [`bindir`](Self::bindir) finds). [`start`](Self::start) checks that the
    /// servers are of that major.
    pub fn version(mut self, major: u32) -> Self {
        self.version = Some(major);
        self
    }

    /// Where the cluster directory is created (default: the system temporary directory).
    pub fn temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = Some(dir.into());
        self
    }

    /// Creates the primary, makes the standbys from base backups of it and waits until each one streams.
    ///
    /// # Errors
    /// [`ClusterError`] says what is missing (binaries, the `postgres` OS user, a writable
    /// temporary directory, a free port) or which node failed, with the end of its log.
    pub async fn start(self) -> Result<LocalCluster, ClusterError> {
        let started = Instant::now();
        // COVET_PG_VERSION picks binaries; a directory the code names is not second-guessed by it.
        let major = if self.bindir.is_some() && self.version.is_none() {
            None
        } else {
            requested_major(self.version)?
        };
        let bindir = find_bindir(self.bindir.as_deref(), major)?;
        let found = server_major(&bindir)?;
        if let Some(expected) = major.filter(|m| *m != found) {
            return Err(ClusterError::VersionMismatch {
                expected,
                found,
                bindir,
            });
        }
        let run_as = RunAs::detect()?;
        let temp_root = self.temp_root.clone().unwrap_or_else(std::env::temp_dir);
        registry::sweep_stale(&temp_root);
        let network = if self.network_namespaces {
            if matches!(run_as, RunAs::Current) {
                return Err(ClusterError::NetworkNeedsRoot);
            }
            super::netns::sweep_stale();
            Some(Network::create(self.replicas + 1)?)
        } else {
            None
        };
        let dir = registry::create_dir(&temp_root)?;
        run_as.give(dir.path())?;
        let hosts: Vec<String> = (0..=self.replicas)
            .map(|i| {
                if let Some(network) = &network {
                    network.host(i)
                } else if self.distinct_hosts {
                    format!("127.0.0.{}", i + 1)
                } else {
                    "127.0.0.1".to_owned()
                }
            })
            .collect();
        let ports = match network {
            // Each node has its addresses to itself.
            Some(_) => vec![5432; hosts.len()],
            None => self.ports(&hosts)?,
        };
        let nodes = (0..=self.replicas)
            .map(|i| Node {
                host: hosts[i].clone(),
                name: if i == 0 {
                    "primary".into()
                } else {
                    format!("replica{i}")
                },
                port: ports[i],
                region: self.regions.get(i).cloned().unwrap_or_else(|| "local".into()),
                child: None,
            })
            .collect();
        let cluster = LocalCluster {
            bindir,
            run_as,
            dir,
            password: self.password.clone(),
            timeout: self.timeout,
            nodes: Mutex::new(nodes),
            primary: Mutex::new(0),
            startup: Duration::ZERO,
            server_version_num: 0,
            network,
        };
        registry::register(&cluster);
        let mut cluster = cluster;
        cluster.init_primary(&self, found).await?;
        cluster.start_node(0).await?;
        cluster.server_version_num = cluster.read_server_version().await?;
        futures::future::try_join_all((1..=self.replicas).map(|i| cluster.clone_standby(i))).await?;
        futures::future::try_join_all((1..=self.replicas).map(|i| cluster.start_node(i))).await?;
        if self.synchronous && self.replicas > 0 {
            let names: Vec<String> = (1..=self.replicas).map(|i| format!("replica{i}")).collect();
            let sql = format!(
                "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({})'",
                names.join(", ")
            );
            cluster.execute(0, &sql).await?;
            cluster.execute(0, "SELECT pg_reload_conf()").await?;
        }
        cluster.wait_streaming().await?;
        cluster.startup = started.elapsed();
        tracing::info!(target: "covet::testing", nodes = self.replicas + 1, startup = ?cluster.startup, "local cluster ready");
        Ok(cluster)
    }

    /// A port per node: free ones chosen by the OS, or from `base_port`; with distinct hosts
    /// one port, free on every host.
    fn ports(&self, hosts: &[String]) -> Result<Vec<u16>, ClusterError> {
        if self.distinct_hosts {
            let port = match self.base_port {
                Some(port) => port,
                None => free_port(hosts)?,
            };
            return hosts.iter().map(|h| bindable(h, port)).collect();
        }
        // Each free port stays bound until all are chosen: released at once, the OS may hand
        // the same one out again, and two nodes would share it.
        let mut held = Vec::new();
        let mut ports = Vec::with_capacity(hosts.len());
        for (i, host) in hosts.iter().enumerate() {
            ports.push(match self.base_port {
                Some(base) => bindable(
                    host,
                    base.checked_add(i as u16)
                        .ok_or(ClusterError::PortInUse { port: base })?,
                )?,
                None => {
                    let listener = TcpListener::bind((host.as_str(), 0))
                        .map_err(ClusterError::io("binding a free loopback port"))?;
                    let port = listener
                        .local_addr()
                        .map_err(ClusterError::io("reading a bound port"))?
                        .port();
                    held.push(listener);
                    port
                }
            });
        }
        Ok(ports)
    }
}

/// `port`, if nothing listens on it at `host`.
fn bindable(host: &str, port: u16) -> Result<u16, ClusterError> {
    TcpListener::bind((host, port)).map_err(|_| ClusterError::PortInUse { port })?;
    Ok(port)
}

/// A port the OS calls free on the first host that is free on the others too.
pub(crate) fn free_port(hosts: &[String]) -> Result<u16, ClusterError> {
    let mut last = None;
    for _ in 0..20 {
        let listener =
            TcpListener::bind((hosts[0].as_str(), 0)).map_err(ClusterError::io("binding a free loopback port"))?;
        let port = listener
            .local_addr()
            .map_err(ClusterError::io("reading a bound port"))?
            .port();
        match hosts[1..].iter().try_for_each(|h| bindable(h, port).map(drop)) {
            Ok(()) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ClusterError::PortInUse { port: 0 }))
}

struct Node {
    name: String,
    host: String,
    port: u16,
    region: String,
    child: Option<Child>,
}

/// What the harness knows about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeInfo {
    /// Index used by every [`LocalCluster`] operation; 0 is the node started as primary.
    pub index: usize,
    /// `primary`, `replica1`, ... (the standby's `application_name`).
    pub name: String,
    /// Loopback address it listens on (127.0.0.1 unless
    /// [`distinct_hosts`](LocalClusterBuilder::distinct_hosts)).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Region label from the builder.
    pub region: String,
    /// Whether its server process is running.
    pub running: bool,
}

/// A real PostgreSQL primary with streaming hot standbys, in a temporary directory.
///
/// Dropping it stops every server it started and removes the directory; if the process dies
/// without unwinding, the servers die with it and the next cluster removes the directory.
pub struct LocalCluster {
    bindir: PathBuf,
    run_as: RunAs,
    dir: tempfile::TempDir,
    password: Option<String>,
    timeout: Duration,
    nodes: Mutex<Vec<Node>>,
    primary: Mutex<usize>,
    startup: Duration,
    server_version_num: u32,
    /// Last: removed after `Drop` stopped the servers in it.
    network: Option<Network>,
}

impl fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// A builder with the defaults: one primary, two standbys, trust authentication.
    pub fn builder() -> LocalClusterBuilder {
        LocalClusterBuilder::default()
    }

    /// The cluster's directory (data directories and server logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long [`LocalClusterBuilder::start`] took, until every standby streamed.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The servers' `server_version_num` (e.g. `130023` for 13.23, `180004` for 18.4).
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// The servers' major version (e.g. 13 or 18).
    pub fn major_version(&self) -> u32 {
        self.server_version_num / 10_000
    }

    /// All nodes, primary first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes = lock(&self.nodes);
        nodes
            .iter_mut()
            .enumerate()
            .map(|(index, n)| NodeInfo {
                index,
                name: n.name.clone(),
                host: n.host.clone(),
                port: n.port,
                region: n.region.clone(),
                running: n.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))),
            })
            .collect()
    }

    /// Index of the current primary (0 until [`promote`](Self::promote) names another).
    pub fn primary(&self) -> usize {
        *lock(&self.primary)
    }

    /// Indexes of the nodes started as standbys.
    pub fn replicas(&self) -> Vec<usize> {
        let primary = self.primary();
        (0..lock(&self.nodes).len()).filter(|&i| i != primary).collect()
    }

    /// Process ids of the running postmasters.
    pub fn server_pids(&self) -> Vec<u32> {
        lock(&self.nodes)
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Connection options for `node` (database `postgres`, user `postgres`, TLS off).
    ///
    /// # Errors
    /// [`ClusterError::UnknownNode`] for an index out of range.
    pub fn connect_options(&self, node: usize) -> Result<PgConnectOptions, ClusterError> {
        let (host, port) = self.address(node)?;
        let opts = PgConnectOptions::new_without_pgpass()
            .host(&host)
            .port(port)
            .username("postgres")
            .database("postgres")
            .ssl_mode(PgSslMode::Disable);
        Ok(match &self.password {
            Some(pw) => opts.password(pw),
            None => opts,
        })
    }

    /// A [`ReplicationConfig`](crate::ReplicationConfig) for this cluster: the current primary,
    /// every other node as a replica, ids and regions from the builder, other settings default.
    pub fn replication_config(&self) -> crate::ReplicationConfig {
        let primary = self.primary();
        let node_config = |n: &NodeInfo| {
            let opts = self
                .connect_options(n.index)
                .unwrap_or_else(|_| PgConnectOptions::new_without_pgpass());
            crate::NodeConfig::from_connect_options(n.name.clone(), &opts).with_region(n.region.clone())
        };
        let nodes = self.nodes();
        crate::ReplicationConfig {
            primary: node_config(&nodes[primary]),
            replicas: nodes.iter().filter(|n| n.index != primary).map(node_config).collect(),
            ..Default::default()
        }
    }

    /// A `postgres://` URL for `node`, with the password if the cluster has one.
    ///
    /// # Errors
    /// [`ClusterError::UnknownNode`] for an index out of range.
    pub fn url(&self, node: usize) -> Result<String, ClusterError> {
        let (host, port) = self.address(node)?;
        let auth = self
            .password
            .as_ref()
            .map(|pw| {
                format!(
                    ":{}",
                    percent_encoding::utf8_percent_encode(pw, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .unwrap_or_default();
        Ok(format!(
            "postgres://postgres{auth}@{host}:{port}/postgres?sslmode=disable"
        ))
    }

    /// Crashes `node`: SIGKILL of its postmaster. Returns once the process is gone.
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] if it is not running.
    pub async fn kill(&self, node: usize) -> Result<(), ClusterError> {
        self.stop_with(node, libc::SIGKILL).await
    }

    /// Freezes `node`, postmaster and every server process (SIGSTOP): a hung server, whose
    /// connections stay open and whose answers are only late.
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] if it is not running.
    pub fn pause(&self, node: usize) -> Result<(), ClusterError> {
        self.signal_all(node, libc::SIGSTOP)
    }

    /// Lets a [`pause`](Self::pause)d `node` run on (SIGCONT): it answers what it had received.
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] if it is not running.
    pub fn resume(&self, node: usize) -> Result<(), ClusterError> {
        self.signal_all(node, libc::SIGCONT)
    }

    fn signal_all(&self, node: usize, sig: libc::c_int) -> Result<(), ClusterError> {
        self.port(node)?;
        let nodes = lock(&self.nodes);
        let Some(child) = nodes[node].child.as_ref() else {
            return Err(ClusterError::InvalidState {
                node,
                reason: "not running".into(),
            });
        };
        process::signal_tree(child.id(), sig);
        Ok(())
    }

    /// Stops `node` with a fast shutdown (SIGINT). Returns once the process has exited.
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] if it is not running.
    pub async fn stop(&self, node: usize) -> Result<(), ClusterError> {
        self.stop_with(node, libc::SIGINT).await
    }

    /// Starts a stopped or killed `node` and waits until it accepts connections
    /// (and, for a standby, until the primary sees it streaming again).
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] if it is running; [`ClusterError::ServerExited`] with the
    /// log if it does not come up.
    pub async fn start(&self, node: usize) -> Result<(), ClusterError> {
        if self.nodes().get(node).is_some_and(|n| n.running) {
            return Err(ClusterError::InvalidState {
                node,
                reason: "already running".into(),
            });
        }
        self.start_node(node).await?;
        if node != self.primary() && self.is_standby(node).await? {
            self.wait_streaming().await?;
        }
        Ok(())
    }

    /// Sets `recovery_min_apply_delay` on standby `node`: real, configurable replication lag.
    /// Returns once the server reports the new value.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] if the node cannot be reached.
    pub async fn set_apply_delay(&self, node: usize, delay: Duration) -> Result<(), ClusterError> {
        let ms = delay.as_millis();
        self.execute(node, &format!("ALTER SYSTEM SET recovery_min_apply_delay = '{ms}ms'"))
            .await?;
        self.execute(node, "SELECT pg_reload_conf()").await?;
        let expected = ms.to_string();
        self.wait_for(node, "the new recovery_min_apply_delay", move |conn| {
            let expected = expected.clone();
            Box::pin(async move {
                let v: String =
                    sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'")
                        .fetch_one(conn)
                        .await?;
                Ok(v == expected)
            })
        })
        .await
    }

    /// Pauses WAL replay on standby `node`; returns once replay is paused.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] if the node cannot be reached or is not a standby.
    pub async fn pause_replay(&self, node: usize) -> Result<(), ClusterError> {
        self.execute(node, "SELECT pg_wal_replay_pause()").await?;
        self.wait_for(node, "replay to pause", |conn| {
            Box::pin(async move {
                // 13 only says a pause was requested: replay stops before its next record.
                let sql = if conn.server_version_num().unwrap_or(0) >= 140_000 {
                    "SELECT pg_get_wal_replay_pause_state() = 'paused'"
                } else {
                    "SELECT pg_is_wal_replay_paused()"
                };
                sqlx::query_scalar(sql).fetch_one(conn).await
            })
        })
        .await
    }

    /// Resumes WAL replay on standby `node`; returns once replay runs.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] if the node cannot be reached or is not a standby.
    pub async fn resume_replay(&self, node: usize) -> Result<(), ClusterError> {
        self.execute(node, "SELECT pg_wal_replay_resume()").await?;
        self.wait_for(node, "replay to resume", |conn| {
            Box::pin(async move {
                let paused: bool = sqlx::query_scalar("SELECT pg_is_wal_replay_paused()")
                    .fetch_one(conn)
                    .await?;
                Ok(!paused)
            })
        })
        .await
    }

    /// Promotes standby `node` (`pg_promote`); returns once it accepts writes.
    /// The other standbys keep following the old primary: repointing them is failover's job.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] if the node cannot be reached or promotion fails.
    pub async fn promote(&self, node: usize) -> Result<(), ClusterError> {
        let secs = self.timeout.as_secs().max(1);
        self.execute(node, &format!("SELECT pg_promote(true, {secs})")).await?;
        self.wait_for(node, "promotion", |conn| {
            Box::pin(async move {
                let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(conn).await?;
                Ok(!recovering)
            })
        })
        .await?;
        *lock(&self.primary) = node;
        Ok(())
    }

    /// Tells the harness which node is the primary after something else (a
    /// [`FailoverManager`](crate::failover::FailoverManager)) promoted one; [`promote`](Self::promote)
    /// keeps track by itself.
    ///
    /// # Errors
    /// [`ClusterError::UnknownNode`] for an index out of range.
    pub fn set_primary(&self, node: usize) -> Result<(), ClusterError> {
        self.port(node)?;
        *lock(&self.primary) = node;
        Ok(())
    }

    /// Cuts the link between `a` and `b`, both ways, until [`heal`](Self::heal): packets
    /// dropped ([`Cut::Blackhole`]) or refused ([`Cut::Reject`]). Connections across it stay
    /// open (a blackhole) or are reset when they next send (a reject).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), covet_replication::testing::ClusterError> {
    /// use covet_replication::testing::{Cut, Endpoint, LocalCluster};
    /// let cluster = LocalCluster::builder().network_namespaces(true).start().await?;
    /// // The application loses the primary; the standbys still stream from it.
    /// cluster.cut(Endpoint::App, Endpoint::Node(0), Cut::Blackhole)?;
    /// cluster.heal(Endpoint::App, Endpoint::Node(0))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ClusterError::NoNetwork`] without [`network_namespaces`](LocalClusterBuilder::network_namespaces);
    /// [`ClusterError::UnknownNode`]; [`ClusterError::Tool`] if nftables failed.
    pub fn cut(&self, a: Endpoint, b: Endpoint, how: Cut) -> Result<(), ClusterError> {
        self.network()?.cut(a, b, how)
    }

    /// Cuts `node` from the application and from every other node.
    ///
    /// # Errors
    /// As [`cut`](Self::cut).
    pub fn isolate(&self, node: usize, how: Cut) -> Result<(), ClusterError> {
        let network = self.network()?;
        let count = lock(&self.nodes).len();
        network.cut(Endpoint::Node(node), Endpoint::App, how)?;
        (0..count)
            .filter(|&i| i != node)
            .try_for_each(|i| network.cut(Endpoint::Node(node), Endpoint::Node(i), how))
    }

    /// Restores the link between `a` and `b`.
    ///
    /// # Errors
    /// As [`cut`](Self::cut).
    pub fn heal(&self, a: Endpoint, b: Endpoint) -> Result<(), ClusterError> {
        self.network()?.heal(a, b)
    }

    /// Restores every link and ends every loss.
    ///
    /// # Errors
    /// As [`cut`](Self::cut).
    pub fn heal_all(&self) -> Result<(), ClusterError> {
        self.network()?.heal_all()
    }

    /// Drops `percent` of the packets between the application and `node`, each way, at random
    /// (0 ends it). TCP retransmits them: the link is slow and uneven rather than broken.
    ///
    /// # Errors
    /// As [`cut`](Self::cut).
    pub fn set_loss(&self, node: usize, percent: u8) -> Result<(), ClusterError> {
        self.network()?.set_loss(node, percent)
    }

    /// The application's address as the nodes see it, in network namespaces.
    ///
    /// # Errors
    /// [`ClusterError::NoNetwork`] without them.
    pub fn app_address(&self) -> Result<String, ClusterError> {
        Ok(self.network()?.app_address())
    }

    fn network(&self) -> Result<&Network, ClusterError> {
        self.network.as_ref().ok_or(ClusterError::NoNetwork)
    }

    /// Rebuilds `node` as a standby of the current primary: stops it if it runs, replaces its
    /// data directory with a fresh base backup, starts it and waits until it streams. This is
    /// how a former primary rejoins after a failover.
    ///
    /// # Errors
    /// [`ClusterError::InvalidState`] for the current primary; tool or SQL errors.
    pub async fn rebuild_standby(&self, node: usize) -> Result<(), ClusterError> {
        self.port(node)?;
        if node == self.primary() {
            return Err(ClusterError::InvalidState {
                node,
                reason: "it is the primary".into(),
            });
        }
        if self.nodes().get(node).is_some_and(|n| n.running) {
            self.stop(node).await?;
        }
        let name = lock(&self.nodes)[node].name.clone();
        // A slot left from an earlier life would make creating it fail.
        self.execute(
            self.primary(),
            &format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}'"),
        )
        .await?;
        let data = self.data_dir(node);
        std::fs::remove_dir_all(&data).map_err(ClusterError::io(format!("removing {}", data.display())))?;
        self.clone_standby(node).await?;
        self.start_node(node).await?;
        self.wait_streaming().await
    }

    /// Waits until every running standby of the current primary is `streaming` in
    /// `pg_stat_replication` and has replayed everything the primary had written when called.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] naming the standbys that did not catch up.
    pub async fn wait_streaming(&self) -> Result<(), ClusterError> {
        let primary = self.primary();
        let standbys: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| n.index != primary && n.running)
            .map(|n| n.name)
            .collect();
        let what = format!("standbys {standbys:?} to stream from the primary");
        self.wait_for(primary, &what, move |conn| {
            let standbys = standbys.clone();
            Box::pin(async move {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
                     AND application_name = ANY($1) AND replay_lsn >= pg_current_wal_lsn()",
                )
                .bind(&standbys)
                .fetch_one(conn)
                .await?;
                Ok(n as usize == standbys.len())
            })
        })
        .await
    }

    /// Runs one statement on `node` on a fresh connection (no result).
    ///
    /// # Errors
    /// [`ClusterError::Sql`] with the node.
    pub async fn execute(&self, node: usize, sql: &str) -> Result<(), ClusterError> {
        let mut conn = self.connect(node).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map_err(|source| ClusterError::Sql { node, source })?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Opens a connection to `node`, retrying until the cluster timeout while it starts up.
    ///
    /// # Errors
    /// [`ClusterError::Sql`] with the last connection error.
    pub async fn connect(&self, node: usize) -> Result<PgConnection, ClusterError> {
        let opts = self.admin_options(node)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match PgConnection::connect_with(&opts).await {
                Ok(conn) => return Ok(conn),
                Err(source) if Instant::now() >= deadline => return Err(ClusterError::Sql { node, source }),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// How the harness reaches `node`: as the application does, or, in network namespaces,
    /// over its Unix socket, which no network fault cuts.
    fn admin_options(&self, node: usize) -> Result<PgConnectOptions, ClusterError> {
        let opts = self.connect_options(node)?;
        Ok(match self.network {
            Some(_) => opts.socket(self.socket_dir(node)),
            None => opts,
        })
    }

    fn socket_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("sock{node}"))
    }

    fn address(&self, node: usize) -> Result<(String, u16), ClusterError> {
        let nodes = lock(&self.nodes);
        nodes
            .get(node)
            .map(|n| (n.host.clone(), n.port))
            .ok_or(ClusterError::UnknownNode {
                node,
                count: nodes.len(),
            })
    }

    fn port(&self, node: usize) -> Result<u16, ClusterError> {
        self.address(node).map(|(_, port)| port)
    }

    fn data_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node{node}"))
    }

    fn log_path(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node{node}.log"))
    }

    async fn is_standby(&self, node: usize) -> Result<bool, ClusterError> {
        let mut conn = self.connect(node).await?;
        sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut conn)
            .await
            .map_err(|source| ClusterError::Sql { node, source })
    }

    /// Polls `check` on a connection to `node` until it returns true or the timeout passes.
    async fn wait_for<F>(&self, node: usize, what: &str, check: F) -> Result<(), ClusterError>
    where
        F: for<'c> Fn(&'c mut PgConnection) -> futures::future::BoxFuture<'c, Result<bool, sqlx::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connect(node).await?;
        loop {
            match check(&mut conn).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(source) => return Err(ClusterError::Sql { node, source }),
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("{what} on node {node}"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The primary's `server_version_num`.
    async fn read_server_version(&self) -> Result<u32, ClusterError> {
        let conn = self.connect(0).await?;
        let num = conn.server_version_num().unwrap_or(0);
        let _ = conn.close().await;
        Ok(num)
    }

    async fn init_primary(&self, opts: &LocalClusterBuilder, major: u32) -> Result<(), ClusterError> {
        let data = self.data_dir(0);
        let mut cmd = self.run_as.command(&self.bindir.join("initdb"), self.dir.path());
        cmd.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C", "-N"]);
        if self.password.is_some() {
            let pwfile = self.dir.path().join("pwfile");
            let password = self.password.as_deref().unwrap_or_default();
            std::fs::write(&pwfile, password).map_err(ClusterError::io("writing the password file"))?;
            self.run_as.give(&pwfile)?;
            cmd.arg("--pwfile")
                .arg(&pwfile)
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"]);
        } else {
            cmd.arg("--auth=trust");
        }
        process::run_tool(cmd, self.timeout).await?;
        let _ = std::fs::remove_file(self.dir.path().join("pwfile"));
        // initdb allows 127.0.0.1 only; distinct hosts connect from all of 127.0.0.0/8.
        let method = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let mut hba = format!("host all all 127.0.0.0/8 {method}\nhost replication all 127.0.0.0/8 {method}\n");
        if let Some(network) = &self.network {
            let cidr = network.cidr();
            hba.push_str(&format!(
                "host all all {cidr} {method}\nhost replication all {cidr} {method}\n"
            ));
        }
        append(&data.join("pg_hba.conf"), &hba)?;
        let mut conf = String::from(BASE_CONF);
        // WAL kept for standbys that fall behind (slots keep what they need beyond it); 13
        // counts it in bytes, older servers (only for the unsupported-version test) in segments.
        conf.push_str(if major >= 13 {
            "wal_keep_size = '256MB'\n"
        } else {
            "wal_keep_segments = 16\n"
        });
        for (name, value) in &opts.settings {
            conf.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
        }
        append(&data.join("postgresql.conf"), &conf)
    }

    /// A base backup of the current primary into `node`'s (new) data directory, set up to
    /// stream from it through a slot of the standby's name.
    async fn clone_standby(&self, node: usize) -> Result<(), ClusterError> {
        let primary = self.primary();
        let (primary_host, primary_port, name) = {
            let nodes = lock(&self.nodes);
            (
                nodes[primary].host.clone(),
                nodes[primary].port,
                nodes[node].name.clone(),
            )
        };
        let conninfo = self.conninfo(&primary_host, primary_port, &name);
        let data = self.data_dir(node);
        let mut conn = self.connect(primary).await?;
        // Created first, reserving WAL: the standby streams from the backup's start through it.
        sqlx::query("SELECT pg_create_physical_replication_slot($1, true)")
            .bind(&name)
            .execute(&mut conn)
            .await
            .map_err(|source| ClusterError::Sql { node: primary, source })?;
        basebackup::base_backup(&mut conn, primary, &self.data_dir(primary), &data, self.run_as).await?;
        let _ = conn.close().await;
        basebackup::write_owned(&data.join("standby.signal"), "", self.run_as)?;
        // Later lines win: this overrides whatever the primary's own file said.
        append(
            &data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = '{}'\nprimary_slot_name = '{name}'\n",
                conninfo.replace('\'', "''")
            ),
        )
    }

    fn conninfo(&self, host: &str, port: u16, name: &str) -> String {
        let mut s = format!("host={host} port={port} user=postgres application_name={name}");
        if let Some(pw) = &self.password {
            // Quoted: a password may hold spaces or quotes.
            s.push_str(&format!(
                " password='{}'",
                pw.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
        s
    }

    /// Starts the postmaster of `node` and waits until it accepts connections.
    async fn start_node(&self, node: usize) -> Result<(), ClusterError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.try_start(node).await {
                // A crashed postmaster's backends may still hold its shared memory for a moment.
                Err(ClusterError::ServerExited { log_tail, .. })
                    if log_tail.contains("is still in use") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_start(&self, node: usize) -> Result<(), ClusterError> {
        let (host, port) = self.address(node)?;
        let log_path = self.log_path(node);
        let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(ClusterError::io(format!("opening {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(ClusterError::io("cloning the log handle"))?;
        let postgres = self.bindir.join("postgres");
        let mut cmd = match &self.network {
            Some(network) => {
                let sockets = self.socket_dir(node);
                if !sockets.exists() {
                    std::fs::create_dir(&sockets)
                        .map_err(ClusterError::io(format!("creating {}", sockets.display())))?;
                    self.run_as.give(&sockets)?;
                }
                let mut cmd = self
                    .run_as
                    .command_in(&postgres, self.dir.path(), &network.namespace_path(node))?;
                cmd.arg("-c")
                    .arg(format!("unix_socket_directories={}", sockets.display()));
                cmd
            }
            None => self.run_as.command(&postgres, self.dir.path()),
        };
        cmd.arg("-D").arg(self.data_dir(node)).arg("-p").arg(port.to_string());
        cmd.arg("-c").arg(format!("listen_addresses={host}"));
        cmd.stdout(Stdio::from(log)).stderr(Stdio::from(log_err));
        // Own process group: a Ctrl-C in the terminal reaches us, and we shut the servers down.
        cmd.process_group(0);
        let child = process::spawn_tied(cmd).map_err(|source| ClusterError::Tool {
            program: "postgres".into(),
            status: format!("could not start: {source}"),
            output: String::new(),
        })?;
        lock(&self.nodes)[node].child = Some(child);
        let opts = self.admin_options(node)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(status) = self.exit_status(node) {
                let text = std::fs::read(&log_path).unwrap_or_default();
                let text = String::from_utf8_lossy(&text[(log_start as usize).min(text.len())..]).into_owned();
                lock(&self.nodes)[node].child = None;
                if text.contains("could not bind") || text.contains("Address already in use") {
                    return Err(ClusterError::PortInUse { port });
                }
                let log_tail = format!("({status})\n{}", process::tail(&text, 15));
                return Err(ClusterError::ServerExited { node, log_tail });
            }
            if PgConnection::connect_with(&opts).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Timeout {
                    what: format!("node {node} to accept connections"),
                    after: self.timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn exit_status(&self, node: usize) -> Option<std::process::ExitStatus> {
        lock(&self.nodes)[node]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    async fn stop_with(&self, node: usize, sig: libc::c_int) -> Result<(), ClusterError> {
        self.port(node)?;
        let child = lock(&self.nodes)[node].child.take();
        let Some(mut child) = child else {
            return Err(ClusterError::InvalidState {
                node,
                reason: "not running".into(),
            });
        };
        process::signal(child.id(), sig);
        if process::wait_exit(&mut child, self.timeout).await.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Stops every server now; used by `Drop` and the exit handler.
    pub(crate) fn shutdown_all(&self) {
        let mut nodes = lock(&self.nodes);
        let mut children: Vec<Child> = nodes.iter_mut().filter_map(|n| n.child.take()).collect();
        // Signal all first so the servers shut down in parallel.
        for child in &children {
            process::signal(child.id(), libc::SIGQUIT);
        }
        for child in &mut children {
            process::terminate_blocking(child);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown_all();
        registry::unregister(self.dir.path());
    }
}

fn append(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(ClusterError::io(format!("opening {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(ClusterError::io(format!("writing {}", path.display())))
}
