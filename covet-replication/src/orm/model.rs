//! The [`Model`] trait the derive implements, and the instance operations (`save`, `insert`,
//! `delete`).

use std::future::Future;

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Decode, Encode, Postgres, Type};

use super::executor::{Access, ModelExecutor, ModelQuery};
use super::queryset::QuerySet;
use super::sql::SqlBuf;

/// A field type a model can map: sqlx can encode, decode and describe it for PostgreSQL.
///
/// Implemented for every such type (`i16`, `i32`, `i64`, `f32`, `f64`, `bool`, `String`,
/// `Vec<u8>`, `serde_json::Value`, `Option<T>` of those, your own `#[derive(sqlx::Type)]` types,
/// ...); you never implement it yourself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a model field: it does not implement sqlx's `Encode`, `Decode` and `Type` for PostgreSQL",
    label = "unsupported field type",
    note = "use a type sqlx maps for PostgreSQL, or mark the field #[model(skip)] if it is not a column"
)]
// No supertraits: a type lacking several of sqlx's traits is then one error at the field, not
// one per missing trait and use.
pub trait ModelField: Sized + Send + Sync + 'static {
    #[doc(hidden)]
    fn __decode(row: &PgRow, column: &str) -> Result<Self, sqlx::Error>;

    #[doc(hidden)]
    fn __encode(&self, args: &mut PgArguments) -> Result<(), BoxDynError>;
}

impl<T> ModelField for T
where
    T: for<'r> Decode<'r, Postgres> + for<'q> Encode<'q, Postgres> + Type<Postgres> + Send + Sync + 'static,
{
    #[inline]
    fn __decode(row: &PgRow, column: &str) -> Result<Self, sqlx::Error> {
        sqlx::Row::try_get(row, column)
    }

    #[inline]
    fn __encode(&self, args: &mut PgArguments) -> Result<(), BoxDynError> {
        sqlx::Arguments::add(args, self)
    }
}

/// A mapped column, as the derive describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    name: &'static str,
    primary_key: bool,
    default: bool,
}

impl ColumnDef {
    #[doc(hidden)]
    pub const fn __new(name: &'static str, primary_key: bool, default: bool) -> Self {
        ColumnDef {
            name,
            primary_key,
            default,
        }
    }

    /// The column's name (unquoted).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Whether it is the primary key.
    pub const fn is_primary_key(&self) -> bool {
        self.primary_key
    }

    /// Whether the server fills it on insert (`#[model(default)]`).
    pub const fn has_default(&self) -> bool {
        self.default
    }
}

#[doc = include_str!("model.md")]
pub trait Model: Sized + Send + Sync + Unpin + 'static {
    /// The primary key's type (`T` of an `Option<T>` field marked `default`).
    type PrimaryKey: ModelField + Clone;
    /// The table's name (unquoted).
    const TABLE: &'static str;
    /// The table's schema, if `#[model(schema = "..")]` names one.
    const SCHEMA: Option<&'static str>;
    /// The mapped columns, in field order.
    const COLUMNS: &'static [ColumnDef];
    /// The index of the primary key in [`COLUMNS`](Self::COLUMNS).
    const PRIMARY_KEY: usize;

    /// Builds a value from a row holding (at least) the mapped columns.
    ///
    /// # Errors
    /// `sqlx::Error::ColumnNotFound` or `ColumnDecode` when the row does not fit.
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error>;

    /// The primary key's value; `None` for a `default` key not yet inserted.
    fn primary_key(&self) -> Option<Self::PrimaryKey>;

    #[doc(hidden)]
    fn __load(&mut self, row: &PgRow) -> Result<(), sqlx::Error>;

    #[doc(hidden)]
    fn __bind(&self, column: usize, args: &mut PgArguments) -> Result<(), BoxDynError>;

    /// `false` for a `default` column holding `None`.
    #[doc(hidden)]
    fn __is_set(&self, column: usize) -> bool;

    /// A [`QuerySet`] over every row of the table.
    fn objects() -> QuerySet<Self> {
        QuerySet::new()
    }

    /// Inserts the row if its primary key is not set yet (a `default` key holding `None`),
    /// else inserts or updates it by primary key (`INSERT .. ON CONFLICT (pk) DO UPDATE`), on
    /// the primary, through the global handle. `self` is then refreshed from the row the
    /// server returns (server defaults, triggers).
    ///
    /// `default` columns holding `None` are left as they are on update.
    ///
    /// # Errors
    /// [`Error::NotSetUp`](crate::Error::NotSetUp) (boxed, see
    /// [`Error::from_sqlx`](crate::Error::from_sqlx)) before [`setup_replication`](crate::setup_replication);
    /// the database's error otherwise (a constraint, a value PostgreSQL refuses, ...).
    fn save(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move { self.save_on(&crate::global::db_for_orm()?).await }
    }

    /// [`save`](Self::save) through `db` (a pool, a transaction, ...).
    ///
    /// # Errors
    /// The database's error.
    fn save_on<E: ModelExecutor>(&mut self, db: E) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            // A key that is set may name an existing row: insert or update in one statement.
            let query = insert_sql(self, self.primary_key().is_some())?;
            load_returned(self, db.fetch_all(query).await?)
        }
    }

    /// Inserts the row (`INSERT .. RETURNING`) on the primary, through the global handle, and
    /// refreshes `self` from the returned row: `default` columns holding `None` get the
    /// server's values.
    ///
    /// # Errors
    /// As [`save`](Self::save); a duplicate key is the database's unique violation.
    fn insert(&mut self) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move { self.insert_on(&crate::global::db_for_orm()?).await }
    }

    /// [`insert`](Self::insert) through `db`.
    ///
    /// # Errors
    /// The database's error.
    fn insert_on<E: ModelExecutor>(&mut self, db: E) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            let query = insert_sql(self, false)?;
            load_returned(self, db.fetch_all(query).await?)
        }
    }

    /// Deletes the row by primary key on the primary, through the global handle. `Ok(false)`
    /// when there was no such row (or the key was never set).
    ///
    /// # Errors
    /// As [`save`](Self::save).
    fn delete(&self) -> impl Future<Output = Result<bool, sqlx::Error>> + Send {
        async move { self.delete_on(&crate::global::db_for_orm()?).await }
    }

    /// [`delete`](Self::delete) through `db`.
    ///
    /// # Errors
    /// The database's error.
    fn delete_on<E: ModelExecutor>(&self, db: E) -> impl Future<Output = Result<bool, sqlx::Error>> + Send {
        let pk = self.primary_key();
        async move {
            let Some(pk) = pk else { return Ok(false) };
            let deleted = Self::objects().filter_pk(pk).delete_on(db).await?;
            Ok(deleted > 0)
        }
    }
}

/// `INSERT INTO t (set columns) VALUES (..) [ON CONFLICT (pk) DO UPDATE SET ..] RETURNING cols`.
fn insert_sql<M: Model>(row: &M, upsert: bool) -> Result<ModelQuery, sqlx::Error> {
    let set: Vec<usize> = (0..M::COLUMNS.len()).filter(|&i| row.__is_set(i)).collect();
    let mut sql = SqlBuf::new();
    sql.push("INSERT INTO ").table(M::SCHEMA, M::TABLE);
    if set.is_empty() {
        sql.push(" DEFAULT VALUES");
    } else {
        sql.push(" (");
        for (n, &i) in set.iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.ident(M::COLUMNS[i].name);
        }
        sql.push(") VALUES (");
        for (n, &i) in set.iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.bind_with(|args| row.__bind(i, args));
        }
        sql.push(")");
    }
    if upsert {
        sql.push(" ON CONFLICT (").ident(M::COLUMNS[M::PRIMARY_KEY].name);
        sql.push(") DO UPDATE SET ");
        // Only what the INSERT carried: `EXCLUDED` holds server defaults for the rest, which
        // would overwrite the stored values. The key itself keeps the statement valid when it
        // is the only column.
        let updated: Vec<usize> = set.iter().copied().filter(|&i| i != M::PRIMARY_KEY).collect();
        let updated = if updated.is_empty() {
            vec![M::PRIMARY_KEY]
        } else {
            updated
        };
        for (n, &i) in updated.iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            let name = M::COLUMNS[i].name;
            sql.ident(name).push(" = EXCLUDED.").ident(name);
        }
    }
    sql.push(" RETURNING ");
    super::queryset::push_columns::<M>(&mut sql);
    ModelQuery::new(sql, Access::Write)
}

fn load_returned<M: Model>(row: &mut M, rows: Vec<PgRow>) -> Result<(), sqlx::Error> {
    let returned = rows.first().ok_or(sqlx::Error::RowNotFound)?;
    row.__load(returned)
}
