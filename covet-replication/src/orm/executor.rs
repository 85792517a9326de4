//! Running what a [`QuerySet`](crate::orm::QuerySet) built: [`ModelExecutor`] and its
//! implementations. The statement carries its [`Access`], so routing needs no SQL parser.

use std::fmt;
use std::future::Future;

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, AssertSqlSafe, PgConnection, Postgres};

use super::sql::SqlBuf;
use crate::classify::{QueryClass, QueryKind};
use crate::config::Consistency;
use crate::data::Handle;
use crate::data::executor::ReadOnlyTransaction;
use crate::data::routing::Target;
use crate::data::session::Session;
use crate::pool::ReplicatedPool;

/// Whether a [`ModelQuery`] reads or writes, known from the method that built it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// A read (`all`, `first`, `get`, `count`, `exists`), with the target of
    /// [`QuerySet::using`](crate::orm::QuerySet::using) and the level of
    /// [`QuerySet::consistency`](crate::orm::QuerySet::consistency) if they were given.
    #[non_exhaustive]
    Read {
        /// Where the read should run; `None` leaves it to the handle.
        target: Option<Target>,
        /// The consistency of this read only; `None` leaves it to the handle or session.
        consistency: Option<Consistency>,
    },
    /// A write (`update`, `delete`, `save`, `insert`): runs on the primary.
    Write,
}

/// One statement a QuerySet or a model built: SQL text, bound arguments, and its [`Access`].
pub struct ModelQuery {
    sql: String,
    args: PgArguments,
    access: Access,
}

impl ModelQuery {
    pub(crate) fn new(sql: SqlBuf, access: Access) -> Result<Self, sqlx::Error> {
        let (sql, args) = sql.finish()?;
        Ok(ModelQuery { sql, args, access })
    }

    /// The SQL text, values as `$n`.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Whether it reads or writes.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The parts, for an executor to run: `sqlx::query_with(AssertSqlSafe(sql), args)`. The SQL
    /// holds no caller input, only quoted identifiers and `$n` placeholders.
    pub fn into_parts(self) -> (String, PgArguments, Access) {
        (self.sql, self.args, self.access)
    }

    fn into_query(self) -> (sqlx::query::Query<'static, sqlx::Postgres, PgArguments>, Access) {
        (sqlx::query_with(AssertSqlSafe(self.sql), self.args), self.access)
    }
}

impl fmt::Debug for ModelQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bind values are never shown (they may be personal data).
        f.debug_struct("ModelQuery")
            .field("sql", &self.sql)
            .field("arguments", &self.args.len())
            .field("access", &self.access)
            .finish()
    }
}

/// Something that runs the statements of QuerySets and models: the `_on` terminals
/// (`all_on`, `save_on`, ...) take one.
///
/// Implemented for `&ReplicatedPool` (reads routed by the handle's read preference or the
/// QuerySet's target, writes on the primary), `&Session` (the same, keeping the session's
/// consistency: its writes move its watermark, its reads see them) and `&mut sqlx::Transaction`
/// (everything in the transaction, on its node). Implement it for another handle by running
/// [`ModelQuery::into_parts`] with sqlx, honouring [`Access`]: a [`Access::Write`] must reach
/// the primary.
pub trait ModelExecutor: Send {
    /// Runs `query` and returns its rows.
    fn fetch_all(self, query: ModelQuery) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send;

    /// Runs `query` and returns the number of rows it affected.
    fn execute(self, query: ModelQuery) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// `ModelExecutor` for a handle type: `$via` says which session its statements belong to.
macro_rules! impl_model_executor {
    ($ty:ty, $via:path) => {
        impl ModelExecutor for &$ty {
            fn fetch_all(self, query: ModelQuery) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send {
                let (query, access) = query.into_query();
                let via = $via(self, &access);
                async move { via.fetch_all(query).await }
            }

            fn execute(self, query: ModelQuery) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
                let (query, access) = query.into_query();
                let via = $via(self, &access);
                async move { via.execute(query).await }
            }
        }
    };
}

impl_model_executor!(ReplicatedPool, Via::pool);
impl_model_executor!(Session, Via::session);

type Query = sqlx::query::Query<'static, sqlx::Postgres, PgArguments>;

/// The sqlx executor a built statement runs through.
pub(super) enum Via {
    Pool(ReplicatedPool),
    Session(Session),
}

impl Via {
    /// Through a plain handle: its own session, unless the read asks for another level.
    pub(super) fn pool(db: &ReplicatedPool, access: &Access) -> Via {
        let routed = db.map_data(|h| routed(h, access));
        match read_level(access) {
            None => Via::Pool(routed),
            Some(level) => Via::Session(routed.data.session_at(level)),
        }
    }

    /// Through a session: its state (so its watermark), the statement's route and known kind.
    pub(super) fn session(session: &Session, access: &Access) -> Via {
        let session = match read_level(access) {
            None => session.clone(),
            Some(level) => session.at_level(level),
        };
        let handle = routed(&session.handle, access);
        Via::Session(session.with_handle(handle))
    }

    async fn fetch_all(&self, query: Query) -> Result<Vec<PgRow>, sqlx::Error> {
        match self {
            Via::Pool(db) => query.fetch_all(db).await,
            Via::Session(session) => query.fetch_all(session).await,
        }
    }

    async fn execute(&self, query: Query) -> Result<u64, sqlx::Error> {
        let done = match self {
            Via::Pool(db) => query.execute(db).await?,
            Via::Session(session) => query.execute(session).await?,
        };
        Ok(done.rows_affected())
    }
}

fn read_level(access: &Access) -> Option<Consistency> {
    match access {
        Access::Read { consistency, .. } => *consistency,
        Access::Write => None,
    }
}

/// The handle a statement runs through: writes pinned to the primary, reads to the QuerySet's
/// target (else the handle's own), and the class given so the executor skips the parser.
pub(super) fn routed(db: &Handle, access: &Access) -> Handle {
    let (db, class) = match access {
        Access::Write => (db.using(Target::Primary), QueryClass::Write),
        Access::Read {
            target: Some(target), ..
        } => (db.using(target.clone()), QueryClass::Read),
        Access::Read { target: None, .. } => (db.clone(), QueryClass::Read),
    };
    db.with_known_kind(QueryKind::known(class, "built by the ORM"))
}

/// In a transaction from [`ReplicatedPool::begin`](crate::ReplicatedPool::begin) (sqlx's own):
/// everything runs in it, on its node.
impl ModelExecutor for &mut sqlx::Transaction<'_, Postgres> {
    fn fetch_all(self, query: ModelQuery) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send {
        in_transaction_fetch(self, query)
    }

    fn execute(self, query: ModelQuery) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        in_transaction_execute(self, query)
    }
}

impl ModelExecutor for &mut ReadOnlyTransaction {
    fn fetch_all(self, query: ModelQuery) -> impl Future<Output = Result<Vec<PgRow>, sqlx::Error>> + Send {
        in_transaction_fetch(self, query)
    }

    fn execute(self, query: ModelQuery) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        in_transaction_execute(self, query)
    }
}

async fn in_transaction_fetch(conn: &mut PgConnection, query: ModelQuery) -> Result<Vec<PgRow>, sqlx::Error> {
    query.into_query().0.fetch_all(conn).await
}

async fn in_transaction_execute(conn: &mut PgConnection, query: ModelQuery) -> Result<u64, sqlx::Error> {
    Ok(query.into_query().0.execute(conn).await?.rows_affected())
}
