//! sqlx's `Executor` for the handle and sessions: route, run, and retry where that is safe.

mod connection;
mod statement;
mod transaction;
mod unsettled;

pub use connection::NodeConnection;
pub(crate) use connection::{acquire_primary, begin_primary, impl_acquire};
pub(crate) use statement::Statement;
pub use transaction::ReadOnlyTransaction;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use either::Either;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Executor, PgConnection, Postgres, SqlStr};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::Instrument;

use crate::cluster::{InFlight, Node, NodeId, NodeState, Role};
use crate::config::Consistency;
use crate::core::Lsn;
use crate::data::Handle;
use crate::data::routing::{Constraints, Failure, Route, Target, classify_error};
use crate::data::session::SessionState;
use crate::error::Error;
use unsettled::Unsettled;

pub(crate) type Rows = Either<PgQueryResult, PgRow>;

/// The per-query span: debug level, so the hot path pays nothing unless a subscriber asks.
fn query_span() -> tracing::Span {
    tracing::debug_span!(
        "covet.query",
        db.system = "postgresql",
        server.address = tracing::field::Empty,
        db.replica.role = tracing::field::Empty,
        covet.reason = tracing::field::Empty,
    )
}

/// Both executors share this: the pool, a per-call target, and the session.
pub(crate) fn fetch_many<'e>(
    pool: Handle,
    session: Option<Arc<SessionState>>,
    statement: Result<Statement, sqlx::Error>,
) -> BoxStream<'e, Result<Rows, sqlx::Error>> {
    // The span covers routing (where its fields are recorded); a stream cannot carry it across
    // the caller's polls without `tracing-futures`.
    let span = query_span();
    Box::pin(rows(pool, session, statement, span))
}

/// The rows of one statement, retried elsewhere while no row has been seen.
fn rows(
    pool: Handle,
    session: Option<Arc<SessionState>>,
    statement: Result<Statement, sqlx::Error>,
    span: tracing::Span,
) -> impl futures::Stream<Item = Result<Rows, sqlx::Error>> {
    async_stream::try_stream! {
        let statement = statement?;
        let mut attempt = Attempts::new(&pool, session, &statement);
        loop {
            let (route, mut in_flight, conn, abandon) = if span.is_disabled() {
                attempt.open().await?
            } else {
                attempt.open().instrument(span.clone()).await?
            };
            let mut conn = Unsettled::new(conn, &route, attempt.session.as_ref());
            // One wait for the whole statement, polled again for each row (not made anew).
            let gone = abandon.cancelled();
            tokio::pin!(gone);
            let mut rows = (&mut *conn).fetch_many(statement.clone());
            let (mut abandoned, mut yielded, mut timed_out) = (false, false, false);
            // Only a failure before the first result may be retried: after that the caller
            // has seen data. The read deadline bounds the wait for that first result.
            let deadline = attempt.read_deadline(&route);
            let first = match unless_abandoned(gone.as_mut(), within(deadline, rows.try_next())).await {
                None => None,
                Some(Err(_elapsed)) => {
                    timed_out = true;
                    None
                }
                Some(Ok(first)) => Some(first),
            };
            match first {
                None => abandoned = true,
                Some(Err(e)) => {
                    drop(rows);
                    attempt.release(&e, conn, in_flight);
                    attempt.failed(&route, e, true).await?;
                    continue;
                }
                Some(Ok(first)) => {
                    if let Some(first) = first {
                        yield first;
                        yielded = true;
                        loop {
                            let Some(next) = unless_abandoned(gone.as_mut(), rows.try_next()).await else {
                                abandoned = true;
                                break;
                            };
                            match next.inspect_err(|_| attempt.count_error())? {
                                Some(item) => yield item,
                                None => break,
                            }
                        }
                    }
                }
            }
            drop(rows);
            if abandoned && route.role == Role::Replica {
                let err = attempt.abandoned_read(&route, conn.into_inner(), timed_out);
                if yielded {
                    attempt.count_error();
                    Err(err)?;
                    break;
                }
                drop(in_flight);
                attempt.failed(&route, err, true).await?;
                continue;
            }
            in_flight.succeeded();
            if abandoned || !attempt.finish(&route, &mut conn, gone.as_mut()).await {
                Err(attempt.abandoned(&route, conn.into_inner()))?;
            } else {
                conn.settled();
            }
            break;
        }
    }
}

pub(crate) fn fetch_optional<'e>(
    pool: Handle,
    session: Option<Arc<SessionState>>,
    statement: Result<Statement, sqlx::Error>,
) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>> {
    let span = query_span();
    let run = optional_row(pool, session, statement);
    // Entering a disabled span on every poll still costs; skip it when nobody listens.
    if span.is_disabled() {
        Box::pin(run)
    } else {
        Box::pin(run.instrument(span))
    }
}

/// At most one row of one statement, retried where that is safe.
async fn optional_row(
    pool: Handle,
    session: Option<Arc<SessionState>>,
    statement: Result<Statement, sqlx::Error>,
) -> Result<Option<PgRow>, sqlx::Error> {
    let statement = statement?;
    let mut attempt = Attempts::new(&pool, session, &statement);
    loop {
        let (route, mut in_flight, conn, abandon) = attempt.open().await?;
        let mut conn = Unsettled::new(conn, &route, attempt.session.as_ref());
        let gone = abandon.cancelled();
        tokio::pin!(gone);
        let deadline = attempt.read_deadline(&route);
        let fetch = within(deadline, (&mut *conn).fetch_optional(statement.clone()));
        let (fetched, timed_out) = match unless_abandoned(gone.as_mut(), fetch).await {
            None => (None, false),
            Some(Err(_elapsed)) => (None, true),
            Some(Ok(result)) => (Some(result), false),
        };
        match fetched {
            None if route.role == Role::Replica => {
                let err = attempt.abandoned_read(&route, conn.into_inner(), timed_out);
                drop(in_flight);
                attempt.failed(&route, err, true).await?;
            }
            None => return Err(attempt.abandoned(&route, conn.into_inner())),
            Some(Ok(row)) => {
                in_flight.succeeded();
                if !attempt.finish(&route, &mut conn, gone.as_mut()).await {
                    return Err(attempt.abandoned(&route, conn.into_inner()));
                }
                conn.settled();
                return Ok(row);
            }
            Some(Err(e)) => {
                attempt.release(&e, conn, in_flight);
                attempt.failed(&route, e, true).await?;
            }
        }
    }
}

/// sqlx's `Executor` for a handle type (as sqlx's `impl_executor_for_pool_connection!`):
/// `$parts` turns `self` into the data handle and the session its statements belong to.
macro_rules! impl_executor {
    ($ty:ty, |$this:ident| $parts:expr) => {
        impl<'h> ::sqlx::Executor<'h> for &'_ $ty {
            type Database = ::sqlx::Postgres;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> ::futures::stream::BoxStream<'e, Result<$crate::data::executor::Rows, ::sqlx::Error>>
            where
                'h: 'e,
                E: 'q + ::sqlx::Execute<'q, ::sqlx::Postgres>,
            {
                let $this = self;
                let (handle, session) = $parts;
                $crate::data::executor::fetch_many(
                    handle,
                    session,
                    $crate::data::executor::Statement::from_execute(query),
                )
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> ::futures::future::BoxFuture<'e, Result<Option<::sqlx::postgres::PgRow>, ::sqlx::Error>>
            where
                'h: 'e,
                E: 'q + ::sqlx::Execute<'q, ::sqlx::Postgres>,
            {
                let $this = self;
                let (handle, session) = $parts;
                $crate::data::executor::fetch_optional(
                    handle,
                    session,
                    $crate::data::executor::Statement::from_execute(query),
                )
            }

            fn prepare_with<'e>(
                self,
                sql: ::sqlx::SqlStr,
                parameters: &'e [::sqlx::postgres::PgTypeInfo],
            ) -> ::futures::future::BoxFuture<'e, Result<::sqlx::postgres::PgStatement, ::sqlx::Error>>
            where
                'h: 'e,
            {
                let $this = self;
                let (handle, _) = $parts;
                $crate::data::executor::prepare_on_primary(&handle, sql, parameters)
            }

            #[doc(hidden)]
            fn describe<'e>(
                self,
                sql: ::sqlx::SqlStr,
            ) -> ::futures::future::BoxFuture<'e, Result<::sqlx::Describe<::sqlx::Postgres>, ::sqlx::Error>>
            where
                'h: 'e,
            {
                let $this = self;
                let (handle, _) = $parts;
                $crate::data::executor::describe_on_primary(&handle, sql)
            }
        }
    };
}
pub(crate) use impl_executor;

/// Statement metadata is the same on every node; the primary always has the schema.
pub(crate) fn prepare_on_primary<'e>(
    pool: &Handle,
    sql: SqlStr,
    parameters: &'e [PgTypeInfo],
) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>> {
    let pool = pool.cluster().primary().pool.clone();
    Box::pin(async move { pool.acquire().await?.prepare_with(sql, parameters).await })
}

pub(crate) fn describe_on_primary<'e>(
    pool: &Handle,
    sql: SqlStr,
) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>> {
    let pool = pool.cluster().primary().pool.clone();
    Box::pin(async move { pool.acquire().await?.describe(sql).await })
}

/// A replica given up on by the health check while a read waited for it.
fn unresponsive() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "the node stopped answering health checks while this statement waited for a connection",
    ))
}

/// `fut`, unless `deadline` passes first.
async fn within<F: Future>(
    deadline: Option<std::time::Duration>,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match deadline {
        Some(limit) => tokio::time::timeout(limit, fut).await,
        None => Ok(fut.await),
    }
}

/// `fut`, unless `gone` (the wait on its node's token, see `Node::abandon_in_flight`) ends
/// first (`None`).
async fn unless_abandoned<F: Future>(gone: Pin<&mut WaitForCancellationFuture<'_>>, fut: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        () = gone => None,
        out = fut => Some(out),
    }
}

/// How long a primary connection may take before the health loop is asked for a round now.
const PRIMARY_CONNECT_SLOW: std::time::Duration = std::time::Duration::from_millis(50);

/// A connection from `node`. Waiting for a replica is bounded by the health-check timeout, so a
/// dead replica costs a retry, not the pool's full acquire timeout.
async fn acquire(pool: &Handle, route: &Route) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let node = &route.node;
    if let Some(conn) = idle_connection(&node.pool, &pool.cluster().hooks) {
        return Ok(conn);
    }
    // sqlx's acquire future is ~14 KiB: held inline, it would make every statement's future that
    // big, and it is moved (copied) several times per query. On the heap it is built only here.
    if route.role == Role::Primary {
        // A dead primary's pool keeps trying to connect until its acquire timeout; a failover
        // that replaces it ends the wait (nothing was sent, so the statement can go on).
        let cluster = pool.cluster();
        let mut switched = cluster.gate.switches();
        return Box::pin(async move {
            let acquire = node.pool.acquire();
            tokio::pin!(acquire);
            let slow = tokio::time::sleep(PRIMARY_CONNECT_SLOW);
            tokio::pin!(slow);
            loop {
                tokio::select! {
                    biased;
                    conn = &mut acquire => return conn,
                    _ = switched.changed() => return Err(sqlx::Error::PoolClosed),
                    // sqlx retries a refused connection until the acquire timeout: the
                    // primary may be gone (a switchover its manager runs), so have every node
                    // asked now, and again while this waits, rather than at the next tick.
                    () = &mut slow => {
                        cluster.wake.notify_one();
                        slow.as_mut().reset(tokio::time::Instant::now() + PRIMARY_CONNECT_SLOW);
                    }
                }
            }
        })
        .await;
    }
    // The replica pool's own acquire timeout is short (see `manager::pool_for`).
    Box::pin(node.pool.acquire()).await
}

/// An idle connection, when taking one is all `PgPool::acquire` would do: the pool does not
/// ping connections before handing them out (replica pools; see `cluster::pool_for`) and has no
/// `before_acquire` hook (which `try_acquire` would skip).
fn idle_connection(pool: &sqlx::PgPool, hooks: &crate::cluster::PoolHooks) -> Option<PoolConnection<Postgres>> {
    if pool.options().get_test_before_acquire() || hooks.before_acquire.is_some() {
        return None;
    }
    pool.try_acquire()
}

/// Waits (up to `consistency.max_wait`) until the replica behind `conn` has replayed `lsn`.
/// Each answer also refreshes the node's cached position for everyone else.
pub(crate) async fn caught_up(
    pool: &Handle,
    node: &Node,
    conn: &mut PgConnection,
    lsn: Lsn,
) -> Result<bool, sqlx::Error> {
    let cfg = &pool.cluster().config.consistency;
    let stats = &pool.plane.consistency;
    // Since routing, another read's check (or the health loop) may have seen the replica past
    // `lsn`: the position is the server's, whichever connection read it, so no round trip.
    if node.replay_lsn() >= lsn {
        return Ok(true);
    }
    let replayed = crate::pg::wait_replayed(conn, lsn, cfg.max_wait, cfg.poll_interval, |seen| {
        stats.replay_checks.fetch_add(1, Relaxed);
        node.observe_lsn(seen);
    })
    .await?;
    // A wait is a wait once it slept: the first read answering is the common, free case.
    if replayed.caught_up && replayed.waited > cfg.poll_interval / 2 || !replayed.caught_up && !cfg.max_wait.is_zero() {
        stats.waited(replayed.waited);
    }
    Ok(replayed.caught_up)
}

/// A replica did not replay the session's position in time: an error if `target` keeps the
/// read off the primary (never the primary in its place), else the primary may serve it
/// (counted as a fallback).
pub(crate) fn behind_session(pool: &Handle, target: Option<&Target>, node: &Node, lsn: Lsn) -> Result<(), Error> {
    // A node target names a replica here: the primary would not have been checked.
    let primary_allowed = !matches!(target, Some(Target::Node(_)))
        && crate::data::routing::target_allows_primary(target, &pool.cluster().primary());
    if !primary_allowed {
        return Err(Error::NotCaughtUp {
            node: node.id.clone(),
            needed: lsn,
            replayed: node.replay_lsn(),
        });
    }
    pool.plane.consistency.fallbacks.fetch_add(1, Relaxed);
    Ok(())
}

/// The attempts of one statement: routing, and what a failure allows next.
struct Attempts<'a> {
    pool: &'a Handle,
    session: Option<Arc<SessionState>>,
    statement: &'a Statement,
    kind: crate::classify::QueryKind,
    target: Option<Target>,
    exclude: Vec<NodeId>,
    force_primary: bool,
    consistency_fallback: bool,
    attempt: u32,
    last_error: Option<sqlx::Error>,
    /// Already waited once for a failover that began after routing.
    stepped_back: bool,
}

impl<'a> Attempts<'a> {
    fn new(pool: &'a Handle, session: Option<Arc<SessionState>>, statement: &'a Statement) -> Self {
        Attempts {
            kind: pool
                .known_kind
                .clone()
                .unwrap_or_else(|| pool.plane.classifier.classify(statement.as_str())),
            target: pool.target(),
            pool,
            session,
            statement,
            exclude: Vec::new(),
            force_primary: false,
            consistency_fallback: false,
            attempt: 0,
            last_error: None,
            stepped_back: false,
        }
    }

    async fn route(&mut self) -> Result<Route, sqlx::Error> {
        self.attempt += 1;
        let constraints = Constraints {
            target: self.target.as_ref(),
            exclude: &self.exclude,
            force_primary: self.force_primary,
            consistency_fallback: self.consistency_fallback,
            session: self.session.as_deref(),
        };
        let inner = &*self.pool.plane;
        match crate::data::routing::route(inner, &self.kind, constraints).await {
            Ok(route) => {
                inner
                    .stats
                    .record(route.node.role() == Role::Primary, route.reason, self.kind.class());
                let span = tracing::Span::current();
                if !span.is_disabled() {
                    span.record("server.address", route.node.id.as_str());
                    span.record(
                        "db.replica.role",
                        if route.node.role() == Role::Primary {
                            "primary"
                        } else {
                            "replica"
                        },
                    );
                    span.record("covet.reason", route.reason.name());
                }
                tracing::debug!(target: "covet::route", node = %route.node.id, reason = ?route.reason, attempt = self.attempt, "routed");
                Ok(route)
            }
            // Out of nodes while retrying: the caller wants the failure that started it.
            Err(e) => {
                self.count_error();
                Err(self.last_error.take().unwrap_or_else(|| e.into_sqlx()))
            }
        }
    }

    /// Routes and connects, retrying where that is allowed, until a connection is in hand.
    /// The token returned is the one the statement answers to (see `Node::abandon_in_flight`):
    /// a replica's is taken before waiting for its connection, so a read that was routed to it
    /// before it hung moves on too; the primary's once connected, so that only a statement that
    /// may have been sent ends with an unknown outcome. A wait for a primary connection is cut
    /// short as well (nothing was sent: it waits for the primary as an unreachable one's do).
    async fn open(
        &mut self,
    ) -> Result<(Route, InFlight, PoolConnection<Postgres>, Arc<CancellationToken>), sqlx::Error> {
        loop {
            let route = self.route().await?;
            let mut in_flight = route.node.start_query();
            if route.role == Role::Primary && self.pool.cluster().gate.holding() && !self.stepped_back {
                // A switchover began after routing: it waits for queries in flight, so
                // step back (once) and wait for the new primary instead.
                drop(in_flight);
                self.attempt -= 1;
                self.stepped_back = true;
                continue;
            }
            let abandon = route.node.abandon_token();
            let connected = unless_abandoned(std::pin::pin!(abandon.cancelled()), self.connect(&route))
                .await
                .unwrap_or_else(|| Err(unresponsive()));
            let connected = if route.role == Role::Replica {
                connected.map(|conn| conn.map(|c| (c, abandon)))
            } else {
                connected.map(|conn| conn.map(|c| (c, route.node.abandon_token())))
            };
            match connected {
                Ok(Some((conn, abandon))) => {
                    in_flight.connected();
                    self.record_route(&route);
                    return Ok((route, in_flight, conn, abandon));
                }
                Ok(None) => {}
                Err(e) => {
                    drop(in_flight);
                    self.failed(&route, e, false).await?;
                }
            }
        }
    }

    /// `Session::last_route`: the node a session's statement is sent to. Not for the plain
    /// handle's own session, which every task shares (there, the tracing span says it).
    fn record_route(&self, route: &Route) {
        if let Some(session) = self
            .session
            .as_ref()
            .filter(|s| !Arc::ptr_eq(s, &self.pool.plane.handle_session))
        {
            session.routed(crate::data::routing::Routed {
                node: route.node.id.clone(),
                role: route.role,
                reason: route.reason,
            });
        }
    }

    /// A connection for `route`, after its replay check. `None`: the replica was behind the
    /// session; route again (to the primary).
    async fn connect(&mut self, route: &Route) -> Result<Option<PoolConnection<Postgres>>, sqlx::Error> {
        let mut conn = acquire(self.pool, route).await?;
        if let Some(bound) = route.bound
            && route.node.staleness() > bound
        {
            // The wait for a connection aged the replica past the session's bound.
            let node_target = matches!(self.target, Some(Target::Node(_)));
            if node_target
                || !crate::data::routing::target_allows_primary(self.target.as_ref(), &self.pool.cluster().primary())
            {
                return Err(Error::StalenessUnknown {
                    node: route.node.id.clone(),
                    bound,
                }
                .into_sqlx());
            }
            self.consistency_fallback = true;
            return Ok(None);
        }
        let Some(lsn) = route.check else { return Ok(Some(conn)) };
        if caught_up(self.pool, &route.node, &mut conn, lsn).await? {
            return Ok(Some(conn));
        }
        behind_session(self.pool, self.target.as_ref(), &route.node, lsn).map_err(Error::into_sqlx)?;
        self.consistency_fallback = true;
        Ok(None)
    }

    /// A failover abandoned the node while the statement ran on `conn`: the connection is
    /// closed unread, and the caller learns that the outcome is unknown (never retried: it may
    /// have committed there).
    fn abandoned(&self, route: &Route, mut conn: PoolConnection<Postgres>) -> sqlx::Error {
        conn.close_on_drop();
        drop(conn);
        self.count_error();
        tracing::warn!(target: "covet::route", node = %route.node.id, "statement abandoned by a failover; its outcome is unknown");
        Error::OutcomeUnknown {
            node: route.node.id.clone(),
        }
        .into_sqlx()
    }

    /// The health check gave up on the replica while this read waited on `conn`, or (with
    /// `timed_out`) the read's deadline passed: closed unread, and (nothing having been
    /// returned) free to run elsewhere.
    fn abandoned_read(&self, route: &Route, mut conn: PoolConnection<Postgres>, timed_out: bool) -> sqlx::Error {
        conn.close_on_drop();
        drop(conn);
        if !timed_out {
            return unresponsive();
        }
        self.pool.plane.stats.read_timeouts.fetch_add(1, Relaxed);
        // The node may be hung: a health round now tells the other reads sooner.
        self.pool.cluster().wake.notify_one();
        tracing::warn!(target: "covet::route", node = %route.node.id, "read abandoned at routing.read_timeout; retrying elsewhere");
        sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the replica sent nothing within routing.read_timeout",
        ))
    }

    /// The client-side deadline of a read on `route`: replicas only (`routing.read_timeout`).
    fn read_deadline(&self, route: &Route) -> Option<std::time::Duration> {
        (route.role == Role::Replica)
            .then_some(self.pool.cluster().config.routing.read_timeout)
            .flatten()
    }

    fn count_error(&self) {
        self.pool.plane.stats.errors.fetch_add(1, Relaxed);
    }

    /// [`succeeded`](Self::succeeded); false if a failover abandoned the primary meanwhile:
    /// the bookkeeping reads the primary's position on this connection, and a pause there must
    /// not turn into a late acknowledgment. (A replica's read has been answered: whatever
    /// health decides now changes nothing for it.)
    async fn finish(
        &self,
        route: &Route,
        conn: &mut PgConnection,
        gone: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> bool {
        if route.role == Role::Replica {
            self.succeeded(route, conn).await;
            return true;
        }
        unless_abandoned(gone, self.succeeded(route, conn)).await.is_some()
    }

    /// Bookkeeping after success: a write moves the session's watermark (read on the same
    /// connection, right after the write); a read is counted and keeps the session monotonic.
    async fn succeeded(&self, route: &Route, conn: &mut PgConnection) {
        if self.kind.changes_catalog() {
            // DDL: functions and views may have changed, so what was learned of them may not hold.
            self.pool.plane.catalog.forget();
        }
        let Some(session) = &self.session else { return };
        if route.writes {
            if session.tracks_writes() {
                let epoch = session.epoch();
                match crate::pg::primary_lsn(&mut *conn).await {
                    Ok(lsn) => session.wrote_since(epoch, lsn),
                    Err(_) => session.wrote_unknown(),
                }
            }
            return;
        }
        let on_replica = route.node.role() == Role::Replica;
        if on_replica {
            session.read_from(
                &route.node.id,
                route.node.replay_lsn().max(route.check.unwrap_or(Lsn::ZERO)),
            );
        } else if session.monotonic && session.level != Consistency::Strong {
            // The primary showed its latest data: later replica reads must not show older.
            match crate::pg::primary_lsn(&mut *conn).await {
                Ok(lsn) => session.raise_floor(lsn),
                Err(_) => session.pin(),
            }
        }
        if session.monotonic || session.level != Consistency::Eventual {
            self.pool
                .plane
                .consistency
                .read(session.level, session.watermark().is_some(), on_replica);
        }
    }

    /// Lets go of a failed attempt's connection, before [`failed`](Self::failed) may wait (up to
    /// `failover.hold_writes`) for a new primary: a statement waiting is in flight nowhere, and
    /// one the primary refused as read-only wrote nothing, so its session need not settle it.
    fn release(&self, err: &sqlx::Error, mut conn: Unsettled, in_flight: InFlight) {
        if classify_error(err) == Failure::ReadOnlyRefused && self.kind.is_atomic() {
            conn.settled();
        }
        drop((conn, in_flight));
    }

    /// Decides whether `err` on `route` allows another attempt (after a backoff); returns the
    /// error otherwise. `sent`: the statement may have reached the server.
    async fn failed(&mut self, route: &Route, err: sqlx::Error, sent: bool) -> Result<(), sqlx::Error> {
        let inner = &*self.pool.plane;
        let failure = match classify_error(&err) {
            // No connection, so nothing was sent: whatever the server refused us with (a
            // pg_hba reject, a database that does not exist there), another node may serve it.
            Failure::Other if !sent => Failure::Connection,
            failure => failure,
        };
        let node = &route.node;
        if route.role == Role::Primary {
            // Nothing ran on the primary if it was never reached, or if it refused a text that
            // runs as one transaction as read-only (it was demoted or fenced, by us or by
            // whoever manages the cluster): the statement waits for the new primary. A primary
            // connection lost mid-statement is never resent, but every node is probed now.
            let nothing_ran = (!sent && failure == Failure::Connection)
                || (failure == Failure::ReadOnlyRefused && self.kind.is_atomic());
            if nothing_ran && self.attempt < inner.cluster.config.routing.retry.max_attempts {
                if inner.cluster.gate.holding() {
                    inner.cluster.gate.wait(inner.cluster.config.failover.hold_writes).await;
                }
                let replaced = !Arc::ptr_eq(&inner.cluster.primary(), node);
                if replaced || inner.cluster.new_primary_after(node).await.is_some() {
                    tracing::info!(target: "covet::route", node = %node.id, ?failure, "nothing ran on the primary; sending the statement again");
                    inner.stats.retries.fetch_add(1, Relaxed);
                    return Ok(());
                }
                if node.state() == NodeState::Down {
                    // Rather than "pool timed out": what it is, and that nothing was sent.
                    self.count_error();
                    return Err(Error::PrimaryUnreachable {
                        node: node.id.clone(),
                        waited: inner.cluster.config.failover.hold_writes,
                    }
                    .into_sqlx());
                }
            } else if failure == Failure::Connection {
                inner.cluster.wake.notify_one();
            }
        }
        if !crate::data::routing::may_retry_elsewhere(route) || failure == Failure::Other {
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
        let retry = &inner.cluster.config.routing.retry;
        if self.attempt >= retry.max_attempts || matches!(self.target, Some(Target::Node(_))) {
            self.count_error();
            return Err(err);
        }
        // Don't wait for the health loop's next round: it judges the node now, and brings it
        // back when it answers. Our own refusals (a replica behind the session) say nothing
        // about the node's health.
        let ours = Error::from_sqlx(&err).is_some();
        if failure == Failure::Connection && !ours && inner.cluster.report_failure(node) {
            tracing::warn!(target: "covet::health", node = %node.id, error = %err, "replica failed a query; marked unhealthy");
        }
        tracing::debug!(target: "covet::route", node = %node.id, ?failure, attempt = self.attempt, "retrying elsewhere");
        self.exclude.push(node.id.clone());
        self.last_error = Some(err);
        inner.stats.retries.fetch_add(1, Relaxed);
        tokio::time::sleep(crate::data::routing::backoff(retry, self.attempt)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Every statement's future is allocated and moved per query: sqlx's acquire future
    /// (~14 KiB) held inline made it 15.5 KiB, copied three times per query (a measured 3% of
    /// a point select's latency). Waiting for a connection lives on the heap instead.
    #[tokio::test]
    async fn a_statements_future_stays_small() {
        let config = crate::config::ReplicationConfig::from_urls(
            "postgres://u@127.0.0.1:1/db",
            &["postgres://u@127.0.0.1:2/db"],
        )
        .unwrap();
        let cluster = std::sync::Arc::new(crate::cluster::Cluster::new(config, Default::default()));
        let shutdown = tokio_util::sync::CancellationToken::new().drop_guard();
        let db = crate::data::Handle::new(crate::data::Plane::new(cluster, shutdown));
        let statement = || super::Statement::from_execute(sqlx::query("SELECT 1"));
        let one = super::optional_row(db.clone(), db.effective_session(), statement());
        let size = std::mem::size_of_val(&one);
        assert!(size < 4096, "fetch_optional's future is {size} bytes");
        let many = super::rows(db.clone(), db.effective_session(), statement(), tracing::Span::none());
        let size = std::mem::size_of_val(&many);
        assert!(size < 4096, "fetch_many's stream is {size} bytes");
    }
}
