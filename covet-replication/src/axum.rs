//! Sessions per HTTP request for axum (feature `axum`): [`SessionLayer`] gives each request the
//! session its causal token continues (a header, or a cookie), runs the handler in it, and
//! writes the session's token back on the response; handlers take the [`Session`] as an
//! extractor, or keep their plain `&ReplicatedPool`.
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use covet_replication::{ReplicatedPool, Session, axum::SessionLayer};
//!
//! async fn count(session: Session) -> Result<String, String> {
//!     let n: i64 = sqlx::query_scalar("SELECT count(*) FROM todos")
//!         .fetch_one(&session)
//!         .await
//!         .map_err(|e| e.to_string())?;
//!     Ok(n.to_string())
//! }
//!
//! # fn f(db: ReplicatedPool) {
//! let app: Router = Router::new()
//!     .route("/todos/count", get(count))
//!     .layer(SessionLayer::new(db)); // header `x-covet-token`; `.cookie("covet")` for a cookie
//! # }
//! ```
//!
//! A request without a token gets a new session; one with a token another process issued reads
//! what that session wrote (see [`ReplicatedPool::session_from_token`]); a token that is not
//! one, or is of another cluster, gets `400 Bad Request` saying why, and the handler does not
//! run.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};

use crate::data::session::Session;
use crate::pool::ReplicatedPool;

/// The header a causal token travels in by default.
pub const TOKEN_HEADER: &str = "x-covet-token";

/// A `tower::Layer` that runs each request in a [`Session`]: see the [module](self).
#[derive(Debug, Clone)]
pub struct SessionLayer {
    carrier: Arc<Carrier>,
}

#[derive(Debug, Clone)]
struct Carrier {
    db: ReplicatedPool,
    header: HeaderName,
    cookie: Option<String>,
}

impl SessionLayer {
    /// Tokens in the `x-covet-token` header, both ways.
    pub fn new(db: ReplicatedPool) -> Self {
        SessionLayer {
            carrier: Arc::new(Carrier {
                db,
                header: HeaderName::from_static(TOKEN_HEADER),
                cookie: None,
            }),
        }
    }

    /// Tokens in header `name` instead.
    #[must_use]
    pub fn header(self, name: HeaderName) -> Self {
        self.with(|c| c.header = name)
    }

    /// Tokens also in cookie `name` (read when the header is absent, and set on every response:
    /// `Path=/; HttpOnly; SameSite=Lax`), for browsers.
    #[must_use]
    pub fn cookie(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|c| c.cookie = Some(name))
    }

    fn with(self, f: impl FnOnce(&mut Carrier)) -> Self {
        let mut carrier = Carrier::clone(&self.carrier);
        f(&mut carrier);
        SessionLayer {
            carrier: Arc::new(carrier),
        }
    }
}

impl Carrier {
    /// The request's session, or why its token was refused.
    fn session_for<B>(&self, req: &Request<B>) -> Result<Session, String> {
        let token = match req.headers().get(&self.header) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| format!("the {} header is not text", self.header))?
                    .to_owned(),
            ),
            None => self.cookie.as_deref().and_then(|name| cookie_value(req, name)),
        };
        match token {
            None => Ok(self.db.session()),
            Some(token) => self
                .db
                .session_from_token(token.trim())
                .map_err(|e| format!("bad causal token in {}: {e}", self.header)),
        }
    }

    fn write_token<B>(&self, session: &Session, res: &mut Response<B>) {
        let token = session.token();
        if let Ok(value) = HeaderValue::from_str(&token) {
            res.headers_mut().insert(self.header.clone(), value);
        }
        if let Some(name) = &self.cookie
            && let Ok(value) = HeaderValue::from_str(&format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax"))
        {
            res.headers_mut().append(SET_COOKIE, value);
        }
    }
}

fn cookie_value<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl<S> tower_layer::Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> SessionService<S> {
        SessionService {
            inner,
            carrier: Arc::clone(&self.carrier),
        }
    }
}

/// The service [`SessionLayer`] wraps around an inner one.
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    inner: S,
    carrier: Arc<Carrier>,
}

impl<S, B, R> tower_service::Service<Request<B>> for SessionService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: From<String> + Send + 'static,
{
    type Response = Response<R>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let session = match self.carrier.session_for(&req) {
            Ok(session) => session,
            Err(why) => {
                let mut res = Response::new(R::from(why));
                *res.status_mut() = StatusCode::BAD_REQUEST;
                return Box::pin(std::future::ready(Ok(res)));
            }
        };
        req.extensions_mut().insert(session.clone());
        // The clone that was made ready is the one to call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let carrier = Arc::clone(&self.carrier);
        Box::pin(async move {
            let mut res = session.scope(inner.call(req)).await?;
            carrier.write_token(&session, &mut res);
            Ok(res)
        })
    }
}

/// Why a handler could not have its [`Session`]: no [`SessionLayer`] in front of it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no covet_replication::axum::SessionLayer in front of this handler")]
pub struct MissingSessionLayer;

impl axum_core::response::IntoResponse for MissingSessionLayer {
    fn into_response(self) -> axum_core::response::Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The request's session, from [`SessionLayer`].
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut http::request::Parts, _: &S) -> Result<Self, MissingSessionLayer> {
        parts.extensions.get::<Session>().cloned().ok_or(MissingSessionLayer)
    }
}
