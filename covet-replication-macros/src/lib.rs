//! Macros for covet-replication: `#[derive(Model)]` and `#[covet_replication::test]`. Use them through the runtime crate
//! (`covet_replication::Model`), whose paths the generated code names.
//!
//! Where to find things: `parse.rs` checks the struct and its attributes and builds a
//! `ModelDef`; `generate.rs` turns it into the `Model` impl and the column constants.

mod generate;
mod parse;
mod test_attr;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// Maps a struct to a table: row mapping, typed column handles and `Model::objects()`.
///
/// ```
/// use covet_replication::Model;
///
/// #[derive(Debug, Model)]
/// #[model(table = "users")]
/// pub struct User {
///     /// `bigserial`: `None` until the row is inserted, then the server's value.
///     #[model(primary_key, default)]
///     pub id: Option<i64>,
///     pub email: String,
///     #[model(column = "full_name")]
///     pub name: String,
///     pub age: Option<i32>,
///     /// Not a column: `Default::default()` when a row is loaded.
///     #[model(skip)]
///     pub cache: Vec<String>,
/// }
///
/// // Typed column handles, one associated constant per mapped field:
/// let adults = User::objects().filter(User::AGE.gte(18) & User::EMAIL.ends_with("@example.com"));
/// assert_eq!(
///     adults.to_sql(),
///     r#"SELECT "id", "email", "full_name", "age" FROM "users" WHERE ("age" >= $1 AND "email" LIKE $2)"#
/// );
/// ```
///
/// # Attributes
/// On the struct:
/// - `#[model(table = "users")]` (required): the table; `#[model(schema = "app")]` qualifies it.
///
/// On a field:
/// - `#[model(primary_key)]`: exactly one field, the table's single-column primary key.
/// - `#[model(column = "name")]`: the column's name when it differs from the field's.
/// - `#[model(default)]`: the server fills the column on insert (a `DEFAULT`, a sequence, a
///   trigger). The field must be an `Option<_>`: `None` leaves the column out of `INSERT` (and out of
///   `save()`'s update), and the row the server returns fills it in.
/// - `#[model(skip)]`: not a column; filled with `Default::default()` when a row is loaded.
///
/// Every other field is a column named like the field (without `r#`). A field type must implement
/// sqlx's `Encode`, `Decode` and `Type` for PostgreSQL (`i16`, `i32`, `i64`, `f32`, `f64`, `bool`,
/// `String`, `Vec<u8>`, `serde_json::Value`, `sqlx::types::Json<T>`, `Option` of those, your own
/// `#[derive(sqlx::Type)]` types, ...).
///
/// # Generated items
/// - `impl covet_replication::Model for User` (row mapping, `User::objects()`, `save`, `insert`,
///   `delete`).
/// - One `Column<User, T>` constant per mapped field, named after the field in upper case
///   (`User::EMAIL`), with the field's visibility.
///
/// # Not supported (compile errors)
/// Composite primary keys (a second `primary_key`), a struct without a primary key, generic
/// structs, tuple and unit structs, enums and unions, unknown or repeated `#[model(..)]`
/// attributes, `default` on a field that is not an `Option<_>`, field types without sqlx's
/// PostgreSQL `Encode`/`Decode`/`Type`.
#[proc_macro_derive(Model, attributes(model))]
pub fn derive_model(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Parses the derive input into a model, then generates its code.
fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: syn::DeriveInput = syn::parse2(input)?;
    let model = parse::parse(&input)?;
    Ok(generate::generate(&model))
}

/// An `async fn(db: ReplicatedPool)` test on a database of its own: the counterpart of
/// `#[sqlx::test]`, with its arguments. Needs the runtime crate's `testing` feature.
///
/// The cluster is the one `COVET_CONFIG` or `COVET_PRIMARY_URL` configures, else a local one
/// (a primary and two hot standbys from the system's PostgreSQL binaries) started once per test
/// binary. Each test gets a new database, created on the primary and replayed by every standby
/// before the test starts; the migrations and fixtures are applied through the test's handle, so
/// its reads see them even on a standby far behind. The database is dropped when the test passes
/// and kept (its name printed) when it fails.
///
/// ```no_run
/// use covet_replication::ReplicatedPool;
///
/// // Migrations from `./migrations` when the crate has that directory, then the fixtures
/// // `fixtures/users.sql` and `fixtures/posts.sql`, next to this source file.
/// #[covet_replication::test(fixtures("users", "posts"))]
/// async fn lists_users(db: ReplicatedPool) -> sqlx::Result<()> {
///     let names: Vec<String> = sqlx::query_scalar("SELECT name FROM users ORDER BY name")
///         .fetch_all(&db)
///         .await?;
///     assert_eq!(names, ["alice", "bob"]);
///     Ok(())
/// }
/// ```
///
/// # Arguments
/// - `migrations = "dir"`: the migrations in `dir` (relative to the crate); `migrations = false`:
///   none; `migrator = "path::TO::MIGRATOR"`: a `sqlx::migrate::Migrator` of your own. By default
///   the crate's `migrations` directory, if it has one. Migrations use `sqlx::migrate!`, so the
///   crate depends on sqlx with its `migrate` feature, as for `#[sqlx::test]`.
/// - `fixtures("name", "dir/file.sql")`: a bare name is `fixtures/<name>.sql`, next to the test's
///   source file; `fixtures(path = "dir", scripts("a", "b"))`: `dir/a.sql`, `dir/b.sql`.
///
/// The test returns `()` or a `Result`, and may carry other attributes (`#[ignore]`,
/// `#[should_panic]`).
#[proc_macro_attribute]
pub fn test(args: proc_macro::TokenStream, item: proc_macro::TokenStream) -> proc_macro::TokenStream {
    test_attr::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
