//! The crate's error types: the public vocabulary of what went wrong, shared by every layer
//! (as sqlx keeps one `error.rs`).

mod failover;
mod ha;
mod pg;

pub use failover::FailoverError;
pub use ha::HaError;
pub use pg::{ConninfoError, PgError};

use crate::config::{ConfigError, ReadPreference};
use crate::core::NodeId;

/// Everything that can go wrong in routing, managing nodes or talking to them.
///
/// Errors returned through sqlx's `Executor` are `sqlx::Error`s: database errors pass through
/// unchanged, routing errors arrive boxed in `sqlx::Error::AnyDriverError` and
/// [`Error::from_sqlx`] gets them back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No replica can serve the read and the read preference does not allow the primary.
    #[error("no eligible replica for a read with preference {preference:?}{}", region.as_ref().map(|r| format!(" in region {r:?}")).unwrap_or_default())]
    NoEligibleReplica {
        /// The read preference in force.
        preference: ReadPreference,
        /// The region that was required, if any.
        region: Option<String>,
    },
    /// A target named a node that is not in the cluster.
    #[error("no node {id:?} in the cluster")]
    UnknownNode {
        /// The id asked for.
        id: String,
    },
    /// A target named a node that cannot take queries now.
    #[error("node {id} is {state} and cannot take queries")]
    NodeUnavailable {
        /// The node.
        id: NodeId,
        /// Its state.
        state: crate::core::NodeState,
    },
    /// The primary answered no health check (it is down) for `failover.hold_writes`, and no
    /// other node took its place: a partition between this process and the primary, or a
    /// primary that is gone with no failover allowed. Nothing was sent.
    #[error("the primary {node} could not be reached for {waited:?} and no node replaced it; nothing was sent")]
    PrimaryUnreachable {
        /// The primary.
        node: NodeId,
        /// How long the statement waited for it (`failover.hold_writes`).
        waited: std::time::Duration,
    },
    /// A statement that needs the primary was explicitly targeted at a replica; nothing was sent.
    #[error("statement needs the primary ({reason}) but was targeted at {target}; it was not sent")]
    WriteOnReplica {
        /// Why it needs the primary.
        reason: String,
        /// The replica target.
        target: String,
    },
    /// A read kept off the primary (by its target) needs a position the replica had not
    /// replayed within `consistency.max_wait`; or, when no replica was close enough to be
    /// asked, the most advanced one and its last known position.
    #[error("node {node} had replayed {replayed}, the session needs {needed}")]
    NotCaughtUp {
        /// The replica.
        node: NodeId,
        /// The session's position.
        needed: crate::core::Lsn,
        /// The replica's position at the last check.
        replayed: crate::core::Lsn,
    },
    /// A `BoundedStaleness` read targeted at a replica whose staleness cannot be shown to be
    /// within the bound: its lag was last measured too long ago, and so was the primary's
    /// position it would have to prove it has replayed (a bound shorter than about a health
    /// interval). Nothing was sent.
    #[error("{node} cannot be shown to be less than {bound:?} behind the primary; nothing was sent")]
    StalenessUnknown {
        /// The replica.
        node: NodeId,
        /// The session's bound.
        bound: std::time::Duration,
    },
    /// A read targeted away from the primary in a session whose position is unknown (a write
    /// whose position could not be read, a token from another timeline or from the future):
    /// no replica can be shown to have it, and the primary does not serve it in the replica's
    /// place. Nothing was sent. Read without the target, or start a new session.
    #[error("the session's position is unknown, so a read targeted at {target} cannot be served; nothing was sent")]
    SessionPositionUnknown {
        /// The target.
        target: String,
    },
    /// A node id is already in use.
    #[error("a node with id {id:?} already exists")]
    DuplicateNode {
        /// The id.
        id: String,
    },
    /// Removing the node would leave the operation impossible (e.g. removing the primary).
    #[error("cannot remove node {id}: {reason}")]
    CannotRemove {
        /// The node.
        id: NodeId,
        /// Why.
        reason: &'static str,
    },
    /// A database call on a node failed.
    #[error("node {node}: {source}")]
    Database {
        /// The node that answered.
        node: NodeId,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// The statement's connection to the primary was closed without reading the answer, so it
    /// may or may not have committed there: a failover promoted another node while it ran (the
    /// old primary's timeline is left behind), or the primary answered no health check for
    /// `failover.hold_writes` (a partition). It was not retried.
    #[error(
        "the statement's outcome on {node} is unknown: it was abandoned while it ran (a failover, or the node unreachable)"
    )]
    OutcomeUnknown {
        /// The former primary.
        node: NodeId,
    },
    /// A node runs a PostgreSQL major older than the library supports; nothing was sent to it.
    #[error("node {node} runs PostgreSQL {version}; covet-replication needs PostgreSQL 13 or newer")]
    UnsupportedServerVersion {
        /// The node.
        node: NodeId,
        /// Its `server_version` (major.minor).
        version: String,
    },
    /// A drain did not finish in time; the node was closed anyway.
    #[error("node {node} still had {in_flight} queries in flight after {waited:?}")]
    DrainTimeout {
        /// The node.
        node: NodeId,
        /// Queries still running.
        in_flight: u32,
        /// How long the drain waited.
        waited: std::time::Duration,
    },
    /// A failover or switchover did not happen or stopped; see the event history for its steps.
    #[error(transparent)]
    Failover(#[from] crate::error::FailoverError),
    /// The global handle was asked for before [`setup_replication`](crate::setup_replication)
    /// or [`set_db`](crate::set_db) installed one.
    #[error("no global database handle: call covet_replication::setup_replication() first")]
    NotSetUp,
}

impl Error {
    /// The covet error inside an `sqlx::Error` returned by the executor, if it is one.
    ///
    /// Errors of sqlx's own kinds come as themselves: a database error (`sqlx::Error::Database`,
    /// with its SQLSTATE), `PoolTimedOut` when a node's pool had no connection within
    /// `pool.acquire_timeout`, `PoolClosed` after [`close`](crate::ReplicatedPool::close).
    /// Routing errors come boxed in `sqlx::Error::AnyDriverError`:
    ///
    /// ```rust
    /// use covet_replication::Error;
    ///
    /// fn describe(err: &sqlx::Error) -> String {
    ///     match (err, Error::from_sqlx(err)) {
    ///         (_, Some(Error::NoEligibleReplica { .. })) => "no replica can serve it".into(),
    ///         (_, Some(Error::NotCaughtUp { node, .. })) => format!("{node} is behind the session"),
    ///         (_, Some(other)) => format!("routing: {other}"),
    ///         (sqlx::Error::PoolTimedOut, None) => "no connection in time".into(),
    ///         (sqlx::Error::Database(db), None) => format!("server said {:?}", db.code()),
    ///         (other, None) => other.to_string(),
    ///     }
    /// }
    /// let boxed: sqlx::Error = Error::NotSetUp.into();
    /// assert_eq!(describe(&boxed), "routing: no global database handle: call covet_replication::setup_replication() first");
    /// assert_eq!(describe(&sqlx::Error::PoolTimedOut), "no connection in time");
    /// ```
    pub fn from_sqlx(err: &sqlx::Error) -> Option<&Error> {
        match err {
            sqlx::Error::AnyDriverError(inner) => inner.downcast_ref::<Error>(),
            _ => None,
        }
    }

    pub(crate) fn into_sqlx(self) -> sqlx::Error {
        match self {
            Error::Database { source, .. } => source,
            other => sqlx::Error::AnyDriverError(Box::new(other)),
        }
    }
}

/// For `?` in code that returns `sqlx::Error`: routing errors arrive boxed in
/// `sqlx::Error::AnyDriverError` ([`Error::from_sqlx`] gets them back), a database error as
/// itself.
impl From<Error> for sqlx::Error {
    fn from(err: Error) -> Self {
        err.into_sqlx()
    }
}
