#![doc = include_str!("lib.md")]
#![deny(clippy::unwrap_used, clippy::print_stdout)]

// Layers, bottom up (docs/ARCHITECTURE.md): `core`, `config`, `classify` and `error` are the
// shared vocabulary; `pg` holds the queries the library sends; `cluster` is the snapshot where
// the `data` plane and the `control` plane meet (neither imports the other); the handle
// (`pool`, `manager`, `status`, `global`) and the ORM sit on top.
mod classify;
mod cluster;
mod config;
mod control;
mod core;
mod data;
mod error;
mod global;
mod manager;
mod orm;
mod pg;
mod pool;
mod status;

#[cfg(test)]
mod layers_tests;
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
pub use control::failover::{FailoverEvent, FailoverKind, FailoverManager, Outcome, Step};
pub use control::lag::{Alert, AlertKind, LagMonitor, LagStats, Severity};
pub use core::{Lsn, NodeId, NodeState, ParseLsnError, Role};
/// The `Model` derive; see the [`Model`](trait@Model) trait.
pub use covet_replication_macros::Model;
pub use data::executor::{NodeConnection, Transaction};
pub use data::routing::{ClassCounters, RouteReason, RouterCounters, Target, with_target};
pub use data::session::{CausalToken, ConsistencyCounters, Session, TokenError};
pub use error::{Error, FailoverError};
pub use global::{db, failover_manager, lag_monitor, replica_manager, replication_status, set_db, setup_replication};
pub use manager::{NodeStatus, ReplicaManager};
#[doc(hidden)]
pub use orm::private as __private;
pub use orm::{
    Access, Assignment, Column, ColumnDef, Expr, IntoValue, Model, ModelExecutor, ModelField, ModelQuery, Order,
    QuerySet, ReadOnly, ReadWrite, Text, migrate, prelude,
};
pub use pool::ReplicatedPool;
pub use status::{ClusterStatus, NodeReport};
