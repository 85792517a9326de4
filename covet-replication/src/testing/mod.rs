//! A real PostgreSQL streaming-replication cluster on loopback ports, for tests and demos.
//!
//! [`LocalCluster`] starts a primary and hot standbys from the system's server binaries (see
//! [`BINDIR_ENV`]), in a temporary directory. As root it runs every server as the `postgres` OS
//! user, since PostgreSQL refuses to run as root. Enabled by the `testing` feature.

mod basebackup;
mod binaries;
mod cluster;
mod database;
mod error;
mod etcd;
mod netns;
mod patroni;
mod process;
mod registry;

pub use binaries::{BINDIR_ENV, CACHE_ENV, VERSION_ENV};
pub use cluster::{LocalCluster, LocalClusterBuilder, NodeInfo};
pub use database::{TestArgs, TestDatabase, TestFixture, TestOutcome, run_test};
pub use error::ClusterError;
pub use etcd::EtcdServer;
pub use netns::{Cut, Endpoint};
pub use patroni::PatroniCluster;

/// The cluster the examples and demos use: the one `COVET_CONFIG` or `COVET_PRIMARY_URL`
/// configures (see [`ReplicationConfig::from_env`](crate::ReplicationConfig::from_env)), else a
/// [`LocalCluster`] started here: a primary and two standbys, regions `eu`, `eu`, `us`. Keep the
/// returned cluster alive as long as the config is used.
///
/// # Errors
/// [`ClusterError::Config`] for a bad configuration, or why the local cluster did not start.
pub async fn configured_or_local() -> Result<(crate::ReplicationConfig, Option<LocalCluster>), ClusterError> {
    if std::env::var_os("COVET_CONFIG").is_some() || std::env::var_os("COVET_PRIMARY_URL").is_some() {
        tracing::info!(target: "covet::testing", "using the cluster from the environment");
        return Ok((crate::ReplicationConfig::from_env()?, None));
    }
    tracing::info!(target: "covet::testing", "no COVET_CONFIG or COVET_PRIMARY_URL: starting a local cluster");
    let cluster = LocalCluster::builder()
        .replicas(2)
        .regions(["eu", "eu", "us"])
        .start()
        .await?;
    Ok((cluster.replication_config(), Some(cluster)))
}
