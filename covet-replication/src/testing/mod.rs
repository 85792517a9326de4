//! A real PostgreSQL streaming-replication cluster on loopback ports, for tests and demos.
//!
//! [`LocalCluster`] starts a primary and hot standbys from the system's server binaries (see
//! [`BINDIR_ENV`]), in a temporary directory. As root it runs every server as the `postgres` OS
//! user, since PostgreSQL refuses to run as root. Enabled by the `testing` feature.

mod binaries;
mod cluster;
mod error;
mod process;
mod registry;

pub use binaries::BINDIR_ENV;
pub use cluster::{LocalCluster, LocalClusterBuilder, NodeInfo};
pub use error::ClusterError;
