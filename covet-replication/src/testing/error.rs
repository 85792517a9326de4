use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while starting or driving a [`LocalCluster`](super::LocalCluster).
///
/// Every variant says what to do about it: these errors are read by people setting up a machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No PostgreSQL server binaries (`initdb`, `postgres`) were found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}); install them \
         (`apt-get install -y postgresql`) or set COVET_PG_BINDIR to the directory holding `initdb` and `postgres`"
    )]
    BinariesNotFound {
        /// The directories that were searched, comma separated.
        searched: String,
    },
    /// The binaries of the requested major version were not found.
    #[error(
        "PostgreSQL {major} server binaries not found (looked in: {searched}); fetch them with \
         `scripts/fetch-postgres.sh {major}` or set COVET_PG_BINDIR"
    )]
    VersionNotFound {
        /// The major version asked for.
        major: u32,
        /// The directories that were searched, comma separated.
        searched: String,
    },
    /// `COVET_PG_VERSION` is not a major version number.
    #[error("COVET_PG_VERSION={value:?} is not a PostgreSQL major version (e.g. 13 or 18)")]
    BadVersion {
        /// The value found.
        value: String,
    },
    /// The servers started are not of the major version asked for.
    #[error("asked for PostgreSQL {expected}, but the binaries in {bindir} run PostgreSQL {found}")]
    VersionMismatch {
        /// The major asked for.
        expected: u32,
        /// The major of the binaries found.
        found: u32,
        /// The binaries used.
        bindir: PathBuf,
    },
    /// Running as root, PostgreSQL must run as another OS user, and that user does not exist.
    #[error(
        "running as root, but the OS user `{user}` to run PostgreSQL as does not exist; \
         create it (`useradd --system {user}`, or install the postgresql package) or run as a normal user"
    )]
    NoServerUser {
        /// The user name that was looked up.
        user: String,
    },
    /// Network namespaces were asked for without root (creating them and entering them needs it).
    #[error("a cluster in network namespaces needs root (ip netns, nftables); run as root or leave them off")]
    NetworkNeedsRoot,
    /// A network fault was asked of a cluster started without network namespaces.
    #[error("this cluster has no network of its own: start it with LocalClusterBuilder::network_namespaces(true)")]
    NoNetwork,
    /// The temporary directory for the cluster could not be created or prepared.
    #[error("cannot prepare the cluster directory under {path}: {source}; set TMPDIR to a writable directory")]
    TempDir {
        /// The directory that could not be used.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL tool (initdb) could not be run or failed.
    #[error("`{program}` failed ({status}): {output}")]
    Tool {
        /// The program that failed.
        program: String,
        /// Its exit status, or why it did not run.
        status: String,
        /// The end of what it printed.
        output: String,
    },
    /// A requested port is already taken by another process.
    #[error(
        "port {port} on a loopback address is already in use; choose another base port or leave ports unset to pick free ones"
    )]
    PortInUse {
        /// The port that was busy.
        port: u16,
    },
    /// A server process exited while it was expected to run.
    #[error("PostgreSQL node {node} exited unexpectedly; end of its log:\n{log_tail}")]
    ServerExited {
        /// The node's index.
        node: usize,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// A wait did not see its condition in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// A SQL command used to drive a node failed.
    #[error("SQL on node {node} failed: {source}")]
    Sql {
        /// The node's index.
        node: usize,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The node index does not exist in this cluster.
    #[error("no node {node} in this cluster (it has nodes 0..{count})")]
    UnknownNode {
        /// The index asked for.
        node: usize,
        /// How many nodes the cluster has.
        count: usize,
    },
    /// The operation needs the node in another state (e.g. `start` of a running node).
    #[error("node {node}: {reason}")]
    InvalidState {
        /// The node's index.
        node: usize,
        /// Why the operation cannot run.
        reason: String,
    },
    /// The configured cluster (`COVET_CONFIG`, `COVET_PRIMARY_URL`) could not be loaded.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A handle on the cluster (or on a test database) could not be connected.
    #[error("cannot connect a handle to the cluster: {source}")]
    Handle {
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// A test database's migrations failed.
    #[error("migrations failed on the test database: {source}")]
    Migrate {
        /// sqlx's migration error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A test database's fixture script failed.
    #[error("fixture {path} failed on the test database: {source}")]
    Fixture {
        /// The fixture's file.
        path: &'static str,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Any other I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
