//! What the derive's generated code names. Not public API: names and signatures may change.

pub use sqlx;
pub use sqlx::error::BoxDynError;

/// The error for a column index the model does not have (a bug in the caller).
///
/// # Errors
/// Always.
pub fn no_column<M>(index: usize) -> Result<(), BoxDynError> {
    Err(format!("{} has no column {index}", std::any::type_name::<M>()).into())
}
