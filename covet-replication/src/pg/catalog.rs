//! What routing asks the primary's catalog about names a statement uses.

use sqlx::{Executor, Postgres};

/// A relation of that name, in some schema.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Relation {
    pub schema: String,
    pub name: String,
    /// `pg_get_viewdef`, for a view.
    pub view_definition: Option<String>,
}

/// A function (one overload) of that name, in some schema.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Function {
    pub schema: String,
    pub name: String,
    /// `pg_proc.provolatile`: `i`, `s` or `v`.
    pub volatility: String,
}

/// Every relation named one of `names` (unqualified), in any schema.
pub(crate) async fn relations<'c, E>(executor: E, names: &[&str]) -> Result<Vec<Relation>, sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
{
    sqlx::query_as(
        "SELECT n.nspname::text AS schema, c.relname::text AS name, \
         CASE WHEN c.relkind = 'v' THEN pg_catalog.pg_get_viewdef(c.oid) END AS view_definition \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = ANY($1)",
    )
    .bind(names)
    .fetch_all(executor)
    .await
}

/// Every function named one of `names` (unqualified), each overload in any schema.
pub(crate) async fn functions<'c, E>(executor: E, names: &[&str]) -> Result<Vec<Function>, sqlx::Error>
where
    E: Executor<'c, Database = Postgres>,
{
    sqlx::query_as(
        "SELECT n.nspname::text AS schema, p.proname::text AS name, p.provolatile::text AS volatility \
         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.proname = ANY($1)",
    )
    .bind(names)
    .fetch_all(executor)
    .await
}
