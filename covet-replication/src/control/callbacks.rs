//! User callbacks fed from the background loops: each on its own task, in order, panics contained.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;

use futures::FutureExt;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::core::lock;

/// Registered callbacks for events of type `T`.
pub(crate) struct Callbacks<T> {
    target: &'static str,
    senders: Mutex<Vec<UnboundedSender<T>>>,
}

impl<T> std::fmt::Debug for Callbacks<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<T: Clone + Send + 'static> Callbacks<T> {
    /// `target`: the tracing target a panicking callback is logged under.
    pub fn new(target: &'static str) -> Self {
        Callbacks {
            target,
            senders: Mutex::default(),
        }
    }

    /// Runs `callback` for every later event on a task of its own: a slow callback delays only
    /// its own later events, a panicking one is logged and keeps receiving.
    pub fn register<F, Fut>(&self, callback: F)
    where
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = unbounded_channel::<T>();
        let target = self.target;
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let call = std::panic::catch_unwind(AssertUnwindSafe(|| callback(event)));
                let done = match call {
                    Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                    Err(panic) => Err(panic),
                };
                if done.is_err() {
                    tracing::error!(target: "covet::callbacks", source = target, "callback panicked");
                }
            }
        });
        lock(&self.senders).push(tx);
    }

    /// Hands `event` to every callback.
    pub fn emit(&self, event: &T) {
        lock(&self.senders).retain(|tx| tx.send(event.clone()).is_ok());
    }
}
