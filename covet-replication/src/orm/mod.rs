//! The ORM: `#[derive(Model)]` (in `covet-replication-macros`), [`QuerySet`] and friends.
//!
//! Where to find things: `model.rs` is the trait the derive implements and the instance
//! operations; `column.rs` the typed column handles; `expr.rs` conditions; `queryset.rs` the
//! builder and its terminals; `sql.rs` writes the SQL text of QuerySets (quoting, parameters; `model.rs` and `queryset.rs`
//! add the statements of instance operations and terminals through it);
//! `executor.rs` how a built statement is run and routed; `migrate.rs` sqlx migrations on the
//! primary. The guide is `model.md`, on the [`Model`] trait.

mod column;
mod executor;
mod expr;
mod migrate;
mod model;
#[doc(hidden)]
pub mod private;
mod queryset;
mod sql;
#[cfg(test)]
mod tests;

pub use column::{Assignment, Column, IntoValue, Order, Text};
pub use executor::{Access, ModelExecutor, ModelQuery};
pub use expr::Expr;
pub use migrate::migrate;
pub use model::{ColumnDef, Model, ModelField};
pub use queryset::{QuerySet, ReadOnly, ReadWrite};

/// The ORM's traits, to glob-import: `use covet_replication::prelude::*;`.
pub mod prelude {
    pub use super::{IntoValue, Model, ModelExecutor};
}
