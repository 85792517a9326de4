#![doc = include_str!("lib.md")]
#![deny(clippy::unwrap_used, clippy::print_stdout)]

mod callbacks;
mod classify;
mod clock;
mod config;
mod error;
mod executor;
mod failover;
mod global;
mod health;
mod lag;
mod lsn;
mod manager;
mod orm;
mod pg;
mod pool;
mod routing;
mod session;
mod status;
mod sync;
mod topology;

#[cfg(feature = "testing")]
pub mod testing;

pub use classify::{
    Classifier, ClassifierStats, DEFAULT_CACHE_CAPACITY, FunctionSafety, Hint, QueryClass, QueryKind,
    TransactionControl, TransactionOp, classify,
};
pub use config::{
    ConfigError, Consistency, ConsistencyConfig, FailoverConfig, HealthConfig, LagByteThresholds, LagConfig,
    LagThresholds, NodeConfig, ParseReadPreferenceError, Password, PoolConfig, ReadPreference, ReplicationConfig,
    ReplicationConfigBuilder, RetryConfig, RoutingConfig, TlsMode, UnknownFunctionPolicy,
};
/// The `Model` derive; see the [`Model`](trait@Model) trait.
pub use covet_replication_macros::Model;
pub use error::Error;
pub use executor::{NodeConnection, Transaction};
pub use failover::{FailoverError, FailoverEvent, FailoverKind, FailoverManager, Outcome, Step};
pub use global::{db, failover_manager, lag_monitor, replica_manager, replication_status, set_db, setup_replication};
pub use lag::{Alert, AlertKind, LagMonitor, LagStats, Severity};
pub use lsn::{Lsn, ParseLsnError};
pub use manager::{NodeStatus, ReplicaManager};
#[doc(hidden)]
pub use orm::private as __private;
pub use orm::{
    Access, Assignment, Column, ColumnDef, Expr, IntoValue, Model, ModelExecutor, ModelField, ModelQuery, Order,
    QuerySet, ReadOnly, ReadWrite, Text, migrate, prelude,
};
pub use pool::ReplicatedPool;
pub use routing::{ClassCounters, RouteReason, RouterCounters, Target, with_target};
pub use session::{CausalToken, ConsistencyCounters, Session, TokenError};
pub use status::{ClusterStatus, NodeReport};
pub use topology::{NodeId, NodeState, Role};
