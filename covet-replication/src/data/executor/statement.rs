//! A statement taken apart so it can be sent again: sqlx 0.9's `Execute::sql` consumes the
//! query, so the arguments and the persistence flag are taken first (both are `Clone`).

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgStatement};
use sqlx::{Execute, Postgres, SqlStr};

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub sql: SqlStr,
    args: Option<PgArguments>,
    persistent: bool,
}

impl Statement {
    /// Takes `query` apart; an argument that failed to encode is an error before any routing.
    pub fn from_execute<'q, E: Execute<'q, Postgres>>(mut query: E) -> Result<Self, sqlx::Error> {
        let args = query.take_arguments().map_err(sqlx::Error::Encode)?;
        let persistent = query.persistent();
        Ok(Statement {
            sql: query.sql(),
            args,
            persistent,
        })
    }

    pub fn as_str(&self) -> &str {
        self.sql.as_str()
    }
}

impl Execute<'_, Postgres> for Statement {
    fn sql(self) -> SqlStr {
        self.sql
    }

    fn statement(&self) -> Option<&PgStatement> {
        // A prepared statement from another connection is not reused; sqlx re-prepares by SQL
        // text on the chosen node (and caches it there when `persistent`).
        None
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        Ok(self.args.take())
    }

    fn persistent(&self) -> bool {
        self.persistent
    }
}
