//! What the derive's generated code calls. Not public API: names and signatures may change.

use sqlx::Row;
use sqlx::postgres::{PgArguments, PgRow};

pub use sqlx;
pub use sqlx::error::BoxDynError;

use super::model::ModelField;

/// The value of `column` in `row`.
///
/// # Errors
/// The row lacks the column or its value does not decode as a `T`.
#[inline]
pub fn get<T: ModelField>(row: &PgRow, column: &str) -> Result<T, sqlx::Error> {
    row.try_get(column)
}

/// Binds `value` as the next argument.
///
/// # Errors
/// The value failed to encode.
#[inline]
pub fn bind<T: ModelField>(args: &mut PgArguments, value: &T) -> Result<(), BoxDynError> {
    sqlx::Arguments::add(args, value)
}

/// The error for a column index the model does not have (a bug in the caller).
///
/// # Errors
/// Always.
pub fn no_column<M>(index: usize) -> Result<(), BoxDynError> {
    Err(format!("{} has no column {index}", std::any::type_name::<M>()).into())
}
