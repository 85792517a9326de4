//! [`QuerySet`]: builds one statement and says whether it reads or writes; a
//! [`ModelExecutor`] runs it.

use std::fmt;
use std::marker::PhantomData;

use sqlx::Row;

use super::column::{Assignment, IntoValue, Order};
use super::executor::{Access, ModelExecutor, ModelQuery};
use super::expr::{Expr, Node};
use super::model::Model;
use super::sql::SqlBuf;
use crate::config::Consistency;
use crate::data::routing::Target;

/// The state of a [`QuerySet`] that may read and write: the one `Model::objects()` returns.
#[derive(Debug)]
pub enum ReadWrite {}

/// The state of a [`QuerySet`] pinned by [`using`](QuerySet::using): it only reads, so it has no
/// `update()` or `delete()`.
#[derive(Debug)]
pub enum ReadOnly {}

/// A lazy query over the rows of model `M`: `User::objects().filter(..).order_by(..).all()`.
///
/// Builder methods take and return `self` and never touch the database; a terminal method
/// builds one SQL statement and runs it. Every value is a bound parameter and every identifier
/// quoted, so nothing a caller passes reaches the SQL text.
///
/// # Routing
/// A QuerySet knows what it does, so it routes by type and the SQL parser never sees its
/// statements: reads (`all`, `first`, `get`, `count`, `exists`) go where the pool's read
/// preference (or [`using`](Self::using)) sends them, usually a replica; writes (`update`,
/// `delete`, and the model's `save`, `insert`, `delete`) always go to the primary.
/// [`using`](Self::using) returns a `QuerySet<M, ReadOnly>`, which has no `update()` or
/// `delete()`: a query pinned to a replica cannot even be asked to write.
/// [`consistency`](Self::consistency) sets the consistency level of one query's reads.
///
/// # Handles
/// Terminals without a suffix use the global handle of
/// [`setup_replication`](crate::setup_replication) (and the session of an enclosing
/// [`Session::scope`](crate::Session::scope)); the `_on` forms take any [`ModelExecutor`]
/// (`&ReplicatedPool`, `&Session`, `&mut sqlx::Transaction`, ...). Through a `&Session`, writes move
/// the session's watermark and reads keep its promise: read-your-writes by default.
///
/// # Errors
/// Terminals return `sqlx::Error`s: the database's errors unchanged, the crate's routing errors
/// and [`Error::NotSetUp`](crate::Error::NotSetUp) boxed (get them back with
/// [`Error::from_sqlx`](crate::Error::from_sqlx)), `sqlx::Error::Encode` if a value fails to
/// encode (nothing is sent then).
///
/// ```no_run
/// # use covet_replication::Model;
/// # #[derive(Model)] #[model(table = "users")]
/// # struct User { #[model(primary_key, default)] id: Option<i64>, email: String, age: Option<i32> }
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use covet_replication::Target;
///
/// let adults = User::objects().filter(User::AGE.gte(18)).order_by(User::EMAIL).limit(10).all().await?;
/// let on_primary = User::objects().using(Target::Primary).get(42).await?;
/// let n = User::objects().filter(User::EMAIL.ends_with("@example.com")).count().await?;
/// let changed = User::objects().filter(User::AGE.is_null()).update([User::AGE.set(0)]).await?;
/// # Ok(()) }
/// ```
pub struct QuerySet<M, S = ReadWrite> {
    filters: Vec<Node>,
    order: Vec<Order<M>>,
    limit: Option<i64>,
    offset: Option<i64>,
    target: Option<Target>,
    consistency: Option<Consistency>,
    state: PhantomData<fn() -> S>,
}

impl<M: Model> QuerySet<M> {
    pub(crate) fn new() -> Self {
        QuerySet {
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: None,
            target: None,
            consistency: None,
            state: PhantomData,
        }
    }
}

impl<M: Model, S> QuerySet<M, S> {
    /// Keeps the rows matching `condition` (and every earlier filter).
    #[must_use]
    pub fn filter(mut self, condition: Expr<M>) -> Self {
        self.filters.push(condition.node);
        self
    }

    /// Drops the rows matching `condition`: `WHERE NOT (condition)`. Rows for which the
    /// condition is `NULL` (a comparison with a `NULL` column) are dropped too, as in SQL.
    #[must_use]
    pub fn exclude(mut self, condition: Expr<M>) -> Self {
        self.filters.push((!condition).node);
        self
    }

    /// Orders by `order` (`User::AGE.desc()`, or a bare column for ascending) after any earlier
    /// `order_by`.
    #[must_use]
    pub fn order_by(mut self, order: impl Into<Order<M>>) -> Self {
        self.order.push(order.into());
        self
    }

    /// Returns at most `n` rows.
    #[must_use]
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Skips the first `n` rows (use with [`order_by`](Self::order_by) for a stable page).
    #[must_use]
    pub fn offset(mut self, n: u64) -> Self {
        self.offset = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Sends this query's reads to `target` ([`Target::Primary`], [`Target::Replica`],
    /// [`Target::Node`], [`Target::Region`], or a [`ReadPreference`](crate::ReadPreference)),
    /// overriding the pool's read preference. The result only reads: it has no `update()` or
    /// `delete()` (writes always go to the primary anyway).
    #[must_use]
    pub fn using(self, target: impl Into<Target>) -> QuerySet<M, ReadOnly> {
        QuerySet {
            filters: self.filters,
            order: self.order,
            limit: self.limit,
            offset: self.offset,
            target: Some(target.into()),
            consistency: self.consistency,
            state: PhantomData,
        }
    }

    /// Reads this query at consistency `level`, whatever the handle's or session's level.
    /// Writes ignore it: they always go to the primary.
    ///
    /// The read runs in a session at `level` derived from the one it would have used (the
    /// session given to an `_on` terminal, else the handle's): at the same level, that session
    /// itself; [`Consistency::Eventual`], a fresh session with no promise (any eligible replica,
    /// however far behind); [`Consistency::Strong`], the primary; any other level, a copy of
    /// what that session recorded (its watermark, its last write's time), so the read sees the
    /// session's own writes where `level` promises it, and, in a monotonic session, never data
    /// older than the session already wrote or read. The copy lives for this read only: it
    /// moves neither the session's watermark nor its floor.
    ///
    /// A level can only use what the session recorded: an `Eventual` session records no
    /// writes, so `.consistency(Consistency::ReadAfterWrite)` on it cannot find them (use
    /// `Strong` there). [`using`](Self::using) still applies, except that `Strong` reads from
    /// the primary whatever the target. In a transaction (`&mut sqlx::Transaction`) it changes
    /// nothing: the transaction's node answers.
    ///
    /// ```no_run
    /// # use covet_replication::Model;
    /// # #[derive(Model)] #[model(table = "users")]
    /// # struct User { #[model(primary_key, default)] id: Option<i64>, email: String }
    /// # async fn demo(session: covet_replication::Session) -> Result<(), sqlx::Error> {
    /// use covet_replication::Consistency;
    ///
    /// // The balance page: the primary, whatever the session's level.
    /// let me = User::objects().consistency(Consistency::Strong).get_on(7, &session).await?;
    /// // A dashboard count: any replica will do.
    /// let n = User::objects().consistency(Consistency::Eventual).count_on(&session).await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn consistency(mut self, level: Consistency) -> Self {
        self.consistency = Some(level);
        self
    }

    /// The `SELECT` that [`all`](Self::all) would send, values as `$n`.
    pub fn to_sql(&self) -> String {
        let mut sql = SqlBuf::new();
        self.write_select(&mut sql);
        sql.text().to_owned()
    }

    /// Every matching row.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn all(self) -> Result<Vec<M>, sqlx::Error> {
        self.all_on(&crate::global::db_for_orm()?).await
    }

    /// [`all`](Self::all) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn all_on<E: ModelExecutor>(self, db: E) -> Result<Vec<M>, sqlx::Error> {
        let mut sql = SqlBuf::new();
        self.write_select(&mut sql);
        let rows = db.fetch_all(self.read(sql)?).await?;
        rows.iter().map(M::from_row).collect()
    }

    /// The first matching row in the query's order (by primary key when none is given), if any.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn first(self) -> Result<Option<M>, sqlx::Error> {
        self.first_on(&crate::global::db_for_orm()?).await
    }

    /// [`first`](Self::first) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn first_on<E: ModelExecutor>(mut self, db: E) -> Result<Option<M>, sqlx::Error> {
        if self.order.is_empty() {
            self.order.push(Order::pk());
        }
        self.limit = Some(self.limit.map_or(1, |n| n.min(1)));
        Ok(self.all_on(db).await?.into_iter().next())
    }

    /// The row whose primary key is `pk` (and that matches the filters).
    ///
    /// # Errors
    /// `sqlx::Error::RowNotFound` when there is none; see [`QuerySet`].
    pub async fn get(self, pk: impl IntoValue<M::PrimaryKey>) -> Result<M, sqlx::Error> {
        self.get_on(pk, &crate::global::db_for_orm()?).await
    }

    /// [`get`](Self::get) through `db`.
    ///
    /// # Errors
    /// `sqlx::Error::RowNotFound` when there is none; see [`QuerySet`].
    pub async fn get_on<E: ModelExecutor>(self, pk: impl IntoValue<M::PrimaryKey>, db: E) -> Result<M, sqlx::Error> {
        let this = self.filter_pk(pk.into_value());
        this.first_on(db).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// How many rows match (within `limit`/`offset`, if given).
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn count(self) -> Result<i64, sqlx::Error> {
        self.count_on(&crate::global::db_for_orm()?).await
    }

    /// [`count`](Self::count) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn count_on<E: ModelExecutor>(self, db: E) -> Result<i64, sqlx::Error> {
        let mut sql = SqlBuf::new();
        if self.limit.is_some() || self.offset.is_some() {
            sql.push("SELECT count(*) FROM (SELECT 1 FROM ")
                .table(M::SCHEMA, M::TABLE);
            self.write_tail(&mut sql);
            sql.push(") AS \"q\"");
        } else {
            sql.push("SELECT count(*) FROM ").table(M::SCHEMA, M::TABLE);
            self.write_where(&mut sql);
        }
        scalar(db.fetch_all(self.read(sql)?).await?)
    }

    /// Whether any row matches.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn exists(self) -> Result<bool, sqlx::Error> {
        self.exists_on(&crate::global::db_for_orm()?).await
    }

    /// [`exists`](Self::exists) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn exists_on<E: ModelExecutor>(self, db: E) -> Result<bool, sqlx::Error> {
        let mut sql = SqlBuf::new();
        sql.push("SELECT EXISTS (SELECT 1 FROM ").table(M::SCHEMA, M::TABLE);
        self.write_tail(&mut sql);
        sql.push(")");
        scalar(db.fetch_all(self.read(sql)?).await?)
    }

    pub(crate) fn filter_pk(self, pk: M::PrimaryKey) -> Self {
        let column = M::COLUMNS[M::PRIMARY_KEY].name();
        self.filter(Expr::new(Node::Compare {
            column,
            op: super::expr::Cmp::Eq,
            value: std::sync::Arc::new(pk),
        }))
    }

    fn read(&self, sql: SqlBuf) -> Result<ModelQuery, sqlx::Error> {
        ModelQuery::new(
            sql,
            Access::Read {
                target: self.target.clone(),
                consistency: self.consistency,
            },
        )
    }

    fn write_select(&self, sql: &mut SqlBuf) {
        sql.push("SELECT ");
        push_columns::<M>(sql);
        sql.push(" FROM ").table(M::SCHEMA, M::TABLE);
        self.write_tail(sql);
    }

    /// `WHERE .. ORDER BY .. LIMIT .. OFFSET ..`, each only if given.
    fn write_tail(&self, sql: &mut SqlBuf) {
        self.write_where(sql);
        for (i, order) in self.order.iter().enumerate() {
            sql.push(if i == 0 { " ORDER BY " } else { ", " });
            sql.ident(order.column)
                .push(if order.descending { " DESC" } else { " ASC" });
        }
        if let Some(n) = self.limit {
            sql.push(" LIMIT ").bind_i64(n);
        }
        if let Some(n) = self.offset {
            sql.push(" OFFSET ").bind_i64(n);
        }
    }

    fn write_where(&self, sql: &mut SqlBuf) {
        match self.filters.as_slice() {
            [] => {}
            [one] => {
                sql.push(" WHERE ");
                one.write(sql);
            }
            many => {
                sql.push(" WHERE ");
                Node::And(many.to_vec()).write(sql);
            }
        }
    }

    /// `WHERE` for `UPDATE`/`DELETE`: with `limit`, `offset` or `order_by` (which PostgreSQL's
    /// `UPDATE` and `DELETE` lack) the rows are picked by primary key in a subquery.
    fn write_write_where(&self, sql: &mut SqlBuf) {
        if self.limit.is_none() && self.offset.is_none() && self.order.is_empty() {
            self.write_where(sql);
            return;
        }
        let pk = M::COLUMNS[M::PRIMARY_KEY].name();
        sql.push(" WHERE ").ident(pk).push(" IN (SELECT ").ident(pk);
        sql.push(" FROM ").table(M::SCHEMA, M::TABLE);
        self.write_tail(sql);
        sql.push(")");
    }
}

impl<M: Model> QuerySet<M, ReadWrite> {
    /// Sets columns on every matching row, on the primary; returns how many rows changed.
    /// No assignment at all changes nothing and sends nothing.
    ///
    /// ```no_run
    /// # use covet_replication::Model;
    /// # #[derive(Model)] #[model(table = "users")]
    /// # struct User { #[model(primary_key)] id: i64, name: String, age: Option<i32> }
    /// # async fn demo() -> Result<(), sqlx::Error> {
    /// let n = User::objects()
    ///     .filter(User::NAME.eq("ana"))
    ///     .update([User::NAME.set("Ana"), User::AGE.set(None)])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn update(self, assignments: impl IntoIterator<Item = Assignment<M>>) -> Result<u64, sqlx::Error> {
        let assignments: Vec<_> = assignments.into_iter().collect();
        if assignments.is_empty() {
            return Ok(0);
        }
        self.update_on(assignments, &crate::global::db_for_orm()?).await
    }

    /// [`update`](Self::update) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn update_on<E: ModelExecutor>(
        self,
        assignments: impl IntoIterator<Item = Assignment<M>>,
        db: E,
    ) -> Result<u64, sqlx::Error> {
        let mut sql = SqlBuf::new();
        sql.push("UPDATE ").table(M::SCHEMA, M::TABLE).push(" SET ");
        let mut any = false;
        for (i, a) in assignments.into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.ident(a.column).push(" = ").bind(&*a.value);
            any = true;
        }
        if !any {
            return Ok(0);
        }
        self.write_write_where(&mut sql);
        db.execute(ModelQuery::new(sql, Access::Write)?).await
    }

    /// Deletes every matching row (all rows without a filter), on the primary; returns how many.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn delete(self) -> Result<u64, sqlx::Error> {
        self.delete_on(&crate::global::db_for_orm()?).await
    }

    /// [`delete`](Self::delete) through `db`.
    ///
    /// # Errors
    /// See [`QuerySet`].
    pub async fn delete_on<E: ModelExecutor>(self, db: E) -> Result<u64, sqlx::Error> {
        let mut sql = SqlBuf::new();
        sql.push("DELETE FROM ").table(M::SCHEMA, M::TABLE);
        self.write_write_where(&mut sql);
        db.execute(ModelQuery::new(sql, Access::Write)?).await
    }
}

impl<M, S> Clone for QuerySet<M, S> {
    fn clone(&self) -> Self {
        QuerySet {
            filters: self.filters.clone(),
            order: self.order.clone(),
            limit: self.limit,
            offset: self.offset,
            target: self.target.clone(),
            consistency: self.consistency,
            state: PhantomData,
        }
    }
}

impl<M: Model, S> fmt::Debug for QuerySet<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuerySet")
            .field("sql", &self.to_sql())
            .field("target", &self.target)
            .field("consistency", &self.consistency)
            .finish()
    }
}

impl<M: Model> Order<M> {
    /// Ascending by primary key.
    fn pk() -> Order<M> {
        crate::orm::Column::<M, ()>::__new(M::COLUMNS[M::PRIMARY_KEY].name()).asc()
    }
}

/// The mapped columns, quoted, comma-separated.
pub(crate) fn push_columns<M: Model>(sql: &mut SqlBuf) {
    for (i, column) in M::COLUMNS.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.ident(column.name());
    }
}

/// The first column of the only row.
fn scalar<T>(rows: Vec<sqlx::postgres::PgRow>) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    rows.first().ok_or(sqlx::Error::RowNotFound)?.try_get(0)
}
