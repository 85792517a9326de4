//! covet-replication: a replication-aware sqlx executor for PostgreSQL.

#[cfg(feature = "testing")]
pub mod testing;
