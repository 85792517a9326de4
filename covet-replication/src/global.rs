//! The process-wide handle, a convenience at the edge: `setup_replication` once at startup,
//! then `db()` (and the ORM's suffix-less terminals) anywhere: `db()?.manager()`,
//! `db()?.status()`, `db()?.failover()` reach the rest. Library internals never use it;
//! everything also takes an explicit handle.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::config::ReplicationConfig;
use crate::error::Error;
use crate::pool::ReplicatedPool;

static GLOBAL: ArcSwapOption<ReplicatedPool> = ArcSwapOption::const_empty();

/// Connects a [`ReplicatedPool`] (pools, manager, health loop) and installs it as the global
/// handle that [`db()`] and the ORM's terminals (`User::objects().all()`) use. Returns it too.
///
/// Calling it again connects a new pool and replaces the global handle; handles obtained
/// before keep working on the old pool until they are dropped.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use covet_replication::ReplicationConfig;
/// covet_replication::setup_replication(ReplicationConfig::from_env()?).await?;
/// let db = covet_replication::db()?; // anywhere, later
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`ReplicatedPool::connect`]: an invalid configuration, or an unreachable primary.
pub async fn setup_replication(config: ReplicationConfig) -> Result<ReplicatedPool, Error> {
    let db = ReplicatedPool::connect(config).await?;
    set_db(db.clone());
    Ok(db)
}

/// Installs an existing pool as the global handle (replacing any), e.g. one built with
/// [`ReplicatedPool::connect_lazy`] or a test's.
///
/// ```no_run
/// # fn demo(pool: covet_replication::ReplicatedPool) {
/// covet_replication::set_db(pool);
/// # }
/// ```
pub fn set_db(db: ReplicatedPool) {
    GLOBAL.store(Some(Arc::new(db)));
}

/// The global handle (a cheap clone).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&covet_replication::db()?).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::NotSetUp`] before [`setup_replication`] or [`set_db`].
pub fn db() -> Result<ReplicatedPool, Error> {
    GLOBAL
        .load_full()
        .map(|db| ReplicatedPool::clone(&db))
        .ok_or(Error::NotSetUp)
}

/// [`db()`] for the ORM's terminals, which return `sqlx::Error`s.
pub(crate) fn db_for_orm() -> Result<ReplicatedPool, sqlx::Error> {
    db().map_err(Error::into_sqlx)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lib's unit tests never install a global handle.
    #[test]
    fn db_before_setup_is_a_typed_error() {
        assert!(matches!(db(), Err(Error::NotSetUp)));
        let err = db_for_orm().unwrap_err();
        assert!(matches!(Error::from_sqlx(&err), Some(Error::NotSetUp)), "{err:?}");
        assert!(err.to_string().contains("setup_replication"), "{err}");
    }
}
