//! sqlx's pool hooks, given once and set on every node's pool (also those made later: a
//! replica added, a node rebuilt after a failover).

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use sqlx::PgConnection;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::postgres::PgPoolOptions;

/// `after_connect`'s callback, as sqlx's `PoolOptions::after_connect` takes it.
pub(crate) type AfterConnect = dyn for<'c> Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, Result<(), sqlx::Error>>
    + Send
    + Sync;
/// `before_acquire`'s and `after_release`'s: `Ok(false)` closes the connection.
pub(crate) type Check = dyn for<'c> Fn(&'c mut PgConnection, PoolConnectionMetadata) -> BoxFuture<'c, Result<bool, sqlx::Error>>
    + Send
    + Sync;

#[derive(Clone, Default)]
pub(crate) struct PoolHooks {
    pub after_connect: Option<Arc<AfterConnect>>,
    pub before_acquire: Option<Arc<Check>>,
    pub after_release: Option<Arc<Check>>,
}

impl PoolHooks {
    pub fn apply(&self, mut options: PgPoolOptions) -> PgPoolOptions {
        if let Some(f) = self.after_connect.clone() {
            options = options.after_connect(move |conn, meta| f(conn, meta));
        }
        if let Some(f) = self.before_acquire.clone() {
            options = options.before_acquire(move |conn, meta| f(conn, meta));
        }
        if let Some(f) = self.after_release.clone() {
            options = options.after_release(move |conn, meta| f(conn, meta));
        }
        options
    }
}

impl fmt::Debug for PoolHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHooks")
            .field("after_connect", &self.after_connect.is_some())
            .field("before_acquire", &self.before_acquire.is_some())
            .field("after_release", &self.after_release.is_some())
            .finish()
    }
}
