//! The data plane: where each statement runs (routing), what a session promises (sessions),
//! and running it (the executor). It reads the cluster snapshot and never imports the control
//! plane.

mod copy;
pub(crate) mod executor;
mod handle;
mod listener;
pub(crate) mod routing;
pub(crate) mod session;

pub use copy::CopyIn;
pub(crate) use handle::Handle;
pub use listener::Listener;

use std::sync::Arc;

use tokio_util::sync::DropGuard;

use crate::classify::Classifier;
use crate::cluster::Cluster;
use routing::{Catalog, RouterStats};
use session::{ConsistencyStats, SessionState};

/// What the data plane keeps besides the cluster snapshot.
#[derive(Debug)]
pub(crate) struct Plane {
    pub cluster: Arc<Cluster>,
    pub classifier: Classifier,
    pub catalog: Catalog,
    pub stats: RouterStats,
    /// The plain handle's own session: its watermark is every write through any clone of it.
    pub handle_session: Arc<SessionState>,
    pub consistency: ConsistencyStats,
    /// Stops the control plane's tasks once the last handle or session is gone.
    _control: DropGuard,
}

impl Plane {
    pub fn new(cluster: Arc<Cluster>, control: DropGuard) -> Self {
        let config = &cluster.config;
        let classifier =
            Classifier::new(usize::try_from(config.routing.classifier_cache_capacity).unwrap_or(usize::MAX))
                .with_read_only_functions(config.routing.read_only_functions.iter().cloned())
                .with_write_functions(config.routing.write_functions.iter().cloned());
        Plane {
            catalog: Catalog::new(&config.routing, config.health.timeout),
            classifier,
            stats: RouterStats::default(),
            handle_session: Arc::new(SessionState::new(config.consistency.handle, false)),
            consistency: ConsistencyStats::default(),
            cluster,
            _control: control,
        }
    }
}
