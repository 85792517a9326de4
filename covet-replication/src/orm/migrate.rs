//! Running sqlx migrations on the primary.

use sqlx::migrate::{MigrateError, Migrator};

use crate::pool::ReplicatedPool;

/// Applies `migrator`'s pending migrations on the primary (replicas get them by replication);
/// the same as `migrator.run(db)` through sqlx's `Acquire`. The handle's reads afterwards go
/// to replicas that have replayed the migrations.
///
/// Build the migrator with sqlx's macro in your crate, whose path is relative to *your*
/// `Cargo.toml`; it takes sqlx's advisory lock, so concurrent callers apply each migration once.
///
/// ```no_run
/// # async fn demo(db: covet_replication::ReplicatedPool) -> Result<(), Box<dyn std::error::Error>> {
/// covet_replication::orm::migrate(&db, &sqlx::migrate!("../migrations")).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`MigrateError::Execute`] when the primary cannot be reached, or whatever the migration
/// reports.
pub async fn migrate(db: &ReplicatedPool, migrator: &Migrator) -> Result<(), MigrateError> {
    migrator.run(db).await
}
