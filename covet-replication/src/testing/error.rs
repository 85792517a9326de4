use std::path::PathBuf;
use std::time::Duration;

/// What went wrong while starting or driving a [`LocalCluster`](super::LocalCluster).
///
/// Every variant says what to do about it: these errors are read by people setting up a machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No PostgreSQL server binaries (`initdb`, `postgres`, `pg_basebackup`) were found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {searched}); install them \
         (`apt-get install -y postgresql`) or set COVET_PG_BINDIR to the directory holding `initdb` and `postgres`"
    )]
    BinariesNotFound {
        /// The directories that were searched, comma separated.
        searched: String,
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
    /// The temporary directory for the cluster could not be created or prepared.
    #[error("cannot prepare the cluster directory under {path}: {source}; set TMPDIR to a writable directory")]
    TempDir {
        /// The directory that could not be used.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PostgreSQL tool (initdb, pg_basebackup) could not be run or failed.
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
    Config(#[from] crate::ConfigError),
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
