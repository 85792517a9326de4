//! `impl Executor for &ReplicatedPool`: route, run, and retry where that is safe.

mod statement;
mod transaction;

pub(crate) use statement::Statement;
pub use transaction::Transaction;

use either::Either;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Execute, Executor, Postgres, SqlStr};

use crate::pool::ReplicatedPool;
use crate::routing::{Failure, Route, classify_error};
use crate::topology::{Node, NodeId, NodeState};

impl<'p> Executor<'p> for &'_ ReplicatedPool {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        let statement = Statement::from_execute(query);
        Box::pin(async_stream::try_stream! {
            let statement = statement?;
            let mut attempt = Attempts::new(&pool, &statement);
            loop {
                let route = attempt.route().await?;
                let mut in_flight = route.node.start_query();
                let mut conn = match acquire(&pool, &route.node).await {
                    Ok(conn) => { in_flight.connected(); conn }
                    Err(e) => { attempt.failed(&route, e).await?; continue; }
                };
                let mut rows = conn.fetch_many(statement.clone());
                // Only a failure before the first result may be retried: after that the
                // caller has seen data.
                match rows.try_next().await {
                    Err(e) => { drop(rows); attempt.failed(&route, e).await?; continue; }
                    Ok(None) => { in_flight.succeeded(); break; }
                    Ok(Some(first)) => {
                        yield first;
                        while let Some(item) = rows.try_next().await.inspect_err(|_| attempt.count_error())? {
                            yield item;
                        }
                        in_flight.succeeded();
                        break;
                    }
                }
            }
        })
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        let pool = self.clone();
        let statement = Statement::from_execute(query);
        Box::pin(async move {
            let statement = statement?;
            let mut attempt = Attempts::new(&pool, &statement);
            loop {
                let route = attempt.route().await?;
                let mut in_flight = route.node.start_query();
                let result = match acquire(&pool, &route.node).await {
                    Ok(mut conn) => {
                        in_flight.connected();
                        conn.fetch_optional(statement.clone()).await
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(row) => {
                        in_flight.succeeded();
                        return Ok(row);
                    }
                    Err(e) => attempt.failed(&route, e).await?,
                }
            }
        })
    }

    fn prepare_with<'e>(
        self,
        sql: SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'p: 'e,
    {
        // Statement metadata is the same on every node; the primary always has the schema.
        let pool = self.inner.primary().pool.clone();
        Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        let pool = self.inner.primary().pool.clone();
        Box::pin(async move { pool.acquire().await?.describe(sql).await })
    }
}

/// A connection from `node`. Waiting for a replica is bounded by the health-check timeout, so a
/// dead replica costs a retry, not the pool's full acquire timeout.
async fn acquire(pool: &ReplicatedPool, node: &Node) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    if node.role() == crate::topology::Role::Primary {
        return node.pool.acquire().await;
    }
    // An idle connection needs no timer.
    if let Some(conn) = node.pool.try_acquire() {
        return Ok(conn);
    }
    let wait = pool.inner.config.health.timeout.min(node.config.pool.acquire_timeout);
    tokio::time::timeout(wait, node.pool.acquire())
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// The attempts of one statement: routing, and what a failure allows next.
struct Attempts<'a> {
    pool: &'a ReplicatedPool,
    statement: &'a Statement,
    kind: crate::classify::QueryKind,
    target: Option<crate::routing::Target>,
    exclude: Vec<NodeId>,
    force_primary: bool,
    attempt: u32,
    last_error: Option<sqlx::Error>,
}

impl<'a> Attempts<'a> {
    fn new(pool: &'a ReplicatedPool, statement: &'a Statement) -> Self {
        Attempts {
            kind: pool.inner.classifier.classify(statement.as_str()),
            target: pool.target.clone().or_else(crate::routing::scoped_target),
            pool,
            statement,
            exclude: Vec::new(),
            force_primary: false,
            attempt: 0,
            last_error: None,
        }
    }

    async fn route(&mut self) -> Result<Route, sqlx::Error> {
        self.attempt += 1;
        let constraints = crate::routing::Constraints {
            target: self.target.as_ref(),
            exclude: &self.exclude,
            force_primary: self.force_primary,
        };
        let inner = &self.pool.inner;
        match crate::routing::route(inner, &self.kind, constraints).await {
            Ok(route) => {
                inner
                    .stats
                    .record(route.node.role() == crate::topology::Role::Primary, route.reason);
                tracing::debug!(target: "covet::route", node = %route.node.id, reason = ?route.reason, attempt = self.attempt, "routed");
                Ok(route)
            }
            // Out of nodes while retrying: the caller wants the failure that started it.
            Err(e) => {
                inner.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(self.last_error.take().unwrap_or_else(|| e.into_sqlx()))
            }
        }
    }

    fn count_error(&self) {
        self.pool
            .inner
            .stats
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Decides whether `err` on `route` allows another attempt (after a backoff); returns the
    /// error otherwise.
    async fn failed(&mut self, route: &Route, err: sqlx::Error) -> Result<(), sqlx::Error> {
        use std::sync::atomic::Ordering::Relaxed;
        let inner = &self.pool.inner;
        let failure = classify_error(&err);
        let node = &route.node;
        if !crate::routing::may_retry_elsewhere(node) || failure == Failure::Other {
            self.count_error();
            return Err(err);
        }
        if failure == Failure::ReadOnlyRefused {
            // The standby refused it, so nothing was written: the classifier missed a write.
            inner.classifier.remember_write(self.statement.as_str());
            inner.stats.refused_writes.fetch_add(1, Relaxed);
            tracing::warn!(target: "covet::route", node = %node.id, "standby refused a statement as a write; running it on the primary");
            self.force_primary = true;
            inner.stats.retries.fetch_add(1, Relaxed);
            return Ok(());
        }
        let retry = &inner.config.routing.retry;
        if self.attempt >= retry.max_attempts || matches!(self.target, Some(crate::routing::Target::Node(_))) {
            self.count_error();
            return Err(err);
        }
        if failure == Failure::Connection && node.state().serves_reads() {
            // Don't wait for the health loop to notice: it brings the node back when it answers.
            node.set_state(NodeState::Unhealthy);
            tracing::warn!(target: "covet::health", node = %node.id, error = %err, "replica failed a query; marked unhealthy");
        }
        tracing::debug!(target: "covet::route", node = %node.id, ?failure, attempt = self.attempt, "retrying elsewhere");
        self.exclude.push(node.id.clone());
        self.last_error = Some(err);
        inner.stats.retries.fetch_add(1, Relaxed);
        tokio::time::sleep(crate::routing::backoff(retry, self.attempt)).await;
        Ok(())
    }
}
