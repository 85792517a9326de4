//! Explicit routing: per call (`db.using(..)`) and for a block of code (`with_target`).

use std::future::Future;

use crate::config::ReadPreference;

/// Where a statement should run, overriding the configured read preference.
///
/// Statements that need the primary (writes, transaction control, session state) ignore
/// `Primary`-compatible targets and fail with [`Error::WriteOnReplica`](crate::Error::WriteOnReplica)
/// under a replica-only target: nothing is ever sent to a replica that could write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Target {
    /// The primary.
    Primary,
    /// Any eligible replica; an error if there is none.
    Replica,
    /// This node, by id (`primary`, `replica1`, ...), if it can take queries.
    Node(String),
    /// Nodes in this region: replicas first, then the primary if it is in the region.
    Region(String),
    /// A read preference for this call.
    Preference(ReadPreference),
}

impl From<ReadPreference> for Target {
    fn from(p: ReadPreference) -> Self {
        Target::Preference(p)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Primary => f.write_str("primary"),
            Target::Replica => f.write_str("replica"),
            Target::Node(id) => write!(f, "node {id:?}"),
            Target::Region(r) => write!(f, "region {r:?}"),
            Target::Preference(p) => write!(f, "preference {p:?}"),
        }
    }
}

tokio::task_local! {
    static SCOPED: Target;
}

/// Runs `fut` with `target` as the routing override of every statement it sends through a
/// `ReplicatedPool` (unless a statement has its own `using`).
///
/// ```no_run
/// # async fn demo(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
/// use covet_replication::{Target, with_target};
/// let n: i64 = with_target(Target::Primary, async {
///     sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&db).await
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn with_target<F: Future>(target: Target, fut: F) -> F::Output {
    SCOPED.scope(target, fut).await
}

/// The override of the enclosing [`with_target`] block, if any.
pub(crate) fn scoped() -> Option<Target> {
    SCOPED.try_with(Clone::clone).ok()
}
