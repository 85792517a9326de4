//! [`Listener`]: sqlx's `PgListener` on the primary, that follows the primary.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use sqlx::Postgres;
use sqlx::postgres::{PgListener, PgNotification, PgRow, PgStatement, PgTypeInfo};
use tokio::sync::watch;

use super::Handle;
use crate::cluster::NodeId;

/// `LISTEN` on the primary, across failovers and switchovers: from
/// [`ReplicatedPool::listener`](crate::ReplicatedPool::listener), used like sqlx's
/// `PgListener`.
///
/// `NOTIFY` runs on the primary, so that is where it listens. When the primary is replaced
/// (a failover, a switchover, one made by an HA manager), or its connection is lost, it
/// listens again on the current primary, on every channel it listened on, and
/// [`try_recv`](Self::try_recv) says so by returning `Ok(None)` once, as `PgListener` does
/// for a lost connection. **Notifications sent in the gap are lost** (PostgreSQL keeps none
/// for a session that is not listening): reload what they would have told you after a
/// `None`. [`recv`](Self::recv) passes over the `None`s.
///
/// ```no_run
/// # async fn f(db: covet_replication::ReplicatedPool) -> Result<(), sqlx::Error> {
/// let mut listener = db.listener().await?;
/// listener.listen("orders").await?;
/// loop {
///     match listener.try_recv().await? {
///         Some(notification) => println!("{}", notification.payload()),
///         None => println!("listening again on {}: reload", listener.node()),
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Listener {
    db: Handle,
    inner: Option<PgListener>,
    node: NodeId,
    channels: Vec<String>,
    switches: watch::Receiver<u64>,
    reconnects: u64,
}

impl Listener {
    pub(crate) async fn connect(db: Handle) -> Result<Self, sqlx::Error> {
        let switches = db.cluster().gate.switches();
        let primary = db.cluster().primary_for_write().await;
        let inner = PgListener::connect_with(&primary.pool).await?;
        Ok(Listener {
            node: primary.id.clone(),
            db,
            inner: Some(inner),
            channels: Vec::new(),
            switches,
            reconnects: 0,
        })
    }

    /// The node it listens on now.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// How many times it listened again on a new connection (a replaced primary, a lost
    /// connection).
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// `LISTEN channel`, now and after every reconnection.
    ///
    /// # Errors
    /// The database error of `LISTEN` (the channel is remembered anyway).
    pub async fn listen(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        if !self.channels.iter().any(|c| c == channel) {
            self.channels.push(channel.to_owned());
        }
        match &mut self.inner {
            Some(inner) => inner.listen(channel).await,
            None => Ok(()),
        }
    }

    /// `LISTEN` on each of `channels`.
    ///
    /// # Errors
    /// As [`listen`](Self::listen).
    pub async fn listen_all(&mut self, channels: impl IntoIterator<Item = &str>) -> Result<(), sqlx::Error> {
        for channel in channels {
            self.listen(channel).await?;
        }
        Ok(())
    }

    /// `UNLISTEN channel`, also for later reconnections.
    ///
    /// # Errors
    /// The database error of `UNLISTEN`.
    pub async fn unlisten(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        self.channels.retain(|c| c != channel);
        match &mut self.inner {
            Some(inner) => inner.unlisten(channel).await,
            None => Ok(()),
        }
    }

    /// The next notification; `Ok(None)` once each time it starts listening again (the primary
    /// was replaced or the connection lost: notifications in between are lost).
    ///
    /// # Errors
    /// The database error if the current primary cannot be reached to listen again (the next
    /// call tries again).
    pub async fn try_recv(&mut self) -> Result<Option<PgNotification>, sqlx::Error> {
        loop {
            let Some(inner) = &mut self.inner else {
                self.listen_again().await?;
                return Ok(None);
            };
            tokio::select! {
                received = inner.try_recv() => match received {
                    Ok(Some(notification)) => return Ok(Some(notification)),
                    // The connection was lost: listen again on whoever is primary now.
                    Ok(None) | Err(_) => self.inner = None,
                },
                // The primary was replaced (the handle never closes this while it lives).
                Ok(()) = self.switches.changed() => {
                    if self.db.cluster().primary().id != self.node {
                        self.inner = None;
                    }
                }
            }
        }
    }

    /// The next notification, listening again on the new primary when it changes.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub async fn recv(&mut self) -> Result<PgNotification, sqlx::Error> {
        loop {
            if let Some(notification) = self.try_recv().await? {
                return Ok(notification);
            }
        }
    }

    /// The notifications as a stream, as `PgListener::into_stream` (reconnections pass
    /// unseen, as with [`recv`](Self::recv)).
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<PgNotification, sqlx::Error>> + Unpin {
        Box::pin(futures::stream::unfold(self, |mut listener| async move {
            let next = listener.recv().await;
            Some((next, listener))
        }))
    }

    async fn listen_again(&mut self) -> Result<(), sqlx::Error> {
        let primary = self.db.cluster().primary_for_write().await;
        let mut inner = PgListener::connect_with(&primary.pool).await?;
        inner.listen_all(self.channels.iter().map(String::as_str)).await?;
        tracing::warn!(
            target: "covet::listener",
            from = %self.node,
            to = %primary.id,
            "listening again on the primary: notifications sent meanwhile are lost"
        );
        self.node = primary.id.clone();
        self.inner = Some(inner);
        self.reconnects += 1;
        Ok(())
    }
}

/// Statements on the listener's own connection, as `&mut PgListener` runs them (sqlx's
/// `listen` example sleeps there to show that notifications wait in its buffer).
impl<'c> sqlx::Executor<'c> for &'c mut Listener {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> BoxStream<'e, Result<super::executor::Rows, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        match &mut self.inner {
            Some(inner) => inner.fetch_many(query),
            None => Box::pin(futures::stream::once(std::future::ready(Err(reconnecting())))),
        }
    }

    fn fetch_optional<'e, 'q: 'e, E>(self, query: E) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        match &mut self.inner {
            Some(inner) => inner.fetch_optional(query),
            None => Box::pin(std::future::ready(Err(reconnecting()))),
        }
    }

    fn prepare_with<'e>(
        self,
        sql: sqlx::SqlStr,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement, sqlx::Error>>
    where
        'c: 'e,
    {
        match &mut self.inner {
            Some(inner) => inner.prepare_with(sql, parameters),
            None => Box::pin(std::future::ready(Err(reconnecting()))),
        }
    }

    #[doc(hidden)]
    fn describe<'e>(self, sql: sqlx::SqlStr) -> BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        match &mut self.inner {
            Some(inner) => inner.describe(sql),
            None => Box::pin(std::future::ready(Err(reconnecting()))),
        }
    }
}

/// Between a lost connection and the `try_recv` that listens again there is none to run on.
fn reconnecting() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the listener lost its connection: try_recv or recv listens again on the primary",
    ))
}
