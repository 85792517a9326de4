//! A small web service on the ORM, one session per request: `cargo run --example web`.
//!
//! With `COVET_CONFIG` or `COVET_PRIMARY_URL` set it uses that cluster; otherwise it starts a
//! LocalCluster (a primary and two hot standbys) itself. It applies `migrations/` and serves:
//!
//! - `POST /users` with `{"email": .., "name": .., "age": ..}`: saves the user (on the primary)
//!   in the request's session; answers `201` with the user, and the session's causal token in
//!   the `x-covet-token` header.
//! - `GET /users/{id}`: reads the user in the session the request's `x-covet-token` header
//!   continues (a new one without the header) and says which server answered. With the token of
//!   the `POST`, the read sees the user even while the replicas lag: it goes to a replica that
//!   has replayed the write, or to the primary.
//!
//! `cargo run --example web -- --self-test` (or `COVET_WEB_SELF_TEST=1`) serves on a free
//! port, delays the standbys' replay by 1 s if it started the cluster itself, makes 20
//! create-then-read round trips over HTTP, prints a summary and exits non-zero if any read with
//! the token missed its write. Otherwise the service listens on `COVET_WEB_ADDR` (default
//! `127.0.0.1:3000`) until Ctrl-C.

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use covet_replication::{Model, ReplicatedPool, Role, Session, Target};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The header that carries a session's causal token between requests.
use covet_replication::axum::{SessionLayer, TOKEN_HEADER};
/// The self-test's users; it deletes them when done.
const DOMAIN: &str = "@web-example.test";
const ROUNDS: usize = 20;

#[derive(Debug, Clone, Serialize, Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key, default)]
    id: Option<i64>,
    email: String,
    name: String,
    age: Option<i32>,
}

/// The users through a view that adds the port of the server that read them: where a read ran
/// is part of its answer.
#[derive(Debug, Model)]
#[model(table = "web_users")]
struct UserRead {
    #[model(primary_key)]
    id: i64,
    email: String,
    name: String,
    age: Option<i32>,
    served_by: i32,
}

const VIEW: &str =
    "CREATE OR REPLACE VIEW web_users AS SELECT id, email, name, age, inet_server_port() AS served_by FROM users";

#[derive(Debug, Deserialize)]
struct NewUser {
    email: String,
    name: String,
    age: Option<i32>,
}

#[derive(Debug, Clone)]
struct App {
    db: ReplicatedPool,
    /// Port and name of each node, to name the server that answered.
    nodes: Arc<Vec<(u16, String)>>,
}

impl App {
    fn node_name(&self, port: i32) -> String {
        self.nodes
            .iter()
            .find(|(p, _)| i32::from(*p) == port)
            .map_or_else(|| format!("port {port}"), |(_, id)| id.clone())
    }
}

#[derive(Debug)]
enum ApiError {
    Database(sqlx::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Database(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message): (StatusCode, String) = match &self {
            ApiError::Database(sqlx::Error::RowNotFound) => (StatusCode::NOT_FOUND, "no such user".into()),
            ApiError::Database(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                (StatusCode::CONFLICT, "email already taken".into())
            }
            ApiError::Database(sqlx::Error::Database(e)) if e.is_check_violation() => {
                (StatusCode::UNPROCESSABLE_ENTITY, "age must not be negative".into())
            }
            ApiError::Database(e) => {
                eprintln!("database error: {e}");
                (StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// `session`: the one the request's `x-covet-token` header continues, else a new one
/// (`SessionLayer`, which also writes its token back on the response).
async fn create_user(session: Session, Json(new): Json<NewUser>) -> Result<Response, ApiError> {
    let mut user = User {
        id: None,
        email: new.email,
        name: new.name,
        age: new.age,
    };
    user.save_on(&session).await?; // the primary; moves the session's watermark
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

async fn get_user(State(app): State<App>, session: Session, Path(id): Path<i64>) -> Result<Response, ApiError> {
    // A replica that has replayed the session's writes, or the primary.
    let u = UserRead::objects().get_on(id, &session).await?;
    let body = json!({
        "user": { "id": u.id, "email": u.email, "name": u.name, "age": u.age },
        "served_by": app.node_name(u.served_by),
        "port": u.served_by,
    });
    Ok(Json(body).into_response())
}

fn router(app: App) -> Router {
    Router::new()
        .route("/users", post(create_user))
        .route("/users/{id}", get(get_user))
        .layer(SessionLayer::new(app.db.clone()))
        .with_state(app)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let started = Instant::now();
    let self_test = std::env::args().skip(1).any(|a| a == "--self-test")
        || std::env::var("COVET_WEB_SELF_TEST").is_ok_and(|v| v == "1");
    // Keeps the local cluster alive until the end of main.
    println!(
        "starting: the cluster of COVET_CONFIG / COVET_PRIMARY_URL, or a local one (1 primary + 2 hot standbys) ..."
    );
    let (config, cluster) = covet_replication::testing::configured_or_local().await?;
    let nodes = config.nodes().map(|n| (n.port, n.id.clone())).collect();
    let db = ReplicatedPool::connect(config).await?;
    covet_replication::orm::migrate(&db, &sqlx::migrate!("../migrations")).await?;
    sqlx::query(VIEW).execute(&db).await?;
    wait_replicated(&db).await;
    let app = App {
        db: db.clone(),
        nodes: Arc::new(nodes),
    };

    let result = if self_test {
        let delayed = match &cluster {
            Some(cluster) => {
                for r in cluster.replicas() {
                    cluster.set_apply_delay(r, Duration::from_secs(1)).await?;
                }
                true
            }
            None => false,
        };
        run_self_test(app, delayed).await
    } else {
        serve(app).await
    };
    if result.is_ok() && self_test {
        println!(
            "done in {:.1?} (cluster start and migrations included)",
            started.elapsed()
        );
    }
    db.close().await;
    result
}

/// Waits (up to 10 s) until each replica has the view: the first tokenless reads may go there.
async fn wait_replicated(db: &ReplicatedPool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in db.manager().nodes().into_iter().filter(|n| n.role == Role::Replica) {
        let on = db.using(Target::Node(node.id.to_string()));
        while sqlx::query("SELECT 1 FROM web_users LIMIT 0")
            .execute(&on)
            .await
            .is_err()
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn serve(app: App) -> Result<(), Box<dyn Error>> {
    let addr: SocketAddr = std::env::var("COVET_WEB_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:3000".into())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("listening on {base}; Ctrl-C stops it. Try:");
    println!(
        "  curl -si -X POST {base}/users -H 'content-type: application/json' \\\n    -d '{{\"email\": \"ana@example.com\", \"name\": \"Ana\", \"age\": 31}}'"
    );
    println!("  curl -s {base}/users/1 -H '{TOKEN_HEADER}: <the token the POST returned>'");
    println!("  curl -s {base}/users/1    # no token: a new session, any replica");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Serves on a free port and makes [`ROUNDS`] create-then-read round trips over HTTP. Fails on
/// any read with the token that missed its write, and, when the replicas were `delayed`, if no
/// read without the token missed its write (the check could not have failed).
async fn run_self_test(app: App, delayed: bool) -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router(app.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let started = Instant::now();
    let outcome = round_trips(addr).await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    server.await??;
    // Remove this run's users (orders would go with them).
    User::objects()
        .filter(User::EMAIL.ends_with(DOMAIN))
        .delete_on(&app.db)
        .await?;

    let tally = outcome?;
    let seen = ROUNDS - tally.stale;
    println!("self-test on http://{addr}: {ROUNDS} create-then-read round trips over HTTP in {elapsed:.1?}");
    println!(
        "  GET with the POST's token: {seen} of {ROUNDS} saw their write, served by {:?}",
        tally.served_by
    );
    println!(
        "  GET without a token:       {} of {ROUNDS} missed it{}",
        tally.tokenless_missed,
        if delayed {
            " (the standbys replay 1 s behind)"
        } else {
            ""
        }
    );
    if tally.stale > 0 {
        return Err(format!("{} of {ROUNDS} reads with the token missed their write", tally.stale).into());
    }
    if delayed && tally.tokenless_missed == 0 {
        return Err(
            "no read without the token missed its write although the standbys lag 1 s: \
                    this run proved nothing"
                .into(),
        );
    }
    println!("ok: every read with the token saw its write");
    Ok(())
}

#[derive(Debug, Default)]
struct Tally {
    stale: usize,
    tokenless_missed: usize,
    served_by: BTreeMap<String, usize>,
}

async fn round_trips(addr: SocketAddr) -> Result<Tally, Box<dyn Error>> {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let run = format!("{}-{}", std::process::id(), since_epoch.as_millis());
    let mut tally = Tally::default();
    for i in 0..ROUNDS {
        let body = json!({ "email": format!("u{i}-{run}{DOMAIN}"), "name": format!("User {i}"), "age": 20 + i });
        let created = http(addr, "POST", "/users", None, Some(body.to_string())).await?;
        if created.status != 201 {
            return Err(format!("POST /users: {} {}", created.status, created.json).into());
        }
        let token = created.token.ok_or("POST /users: no x-covet-token header")?;
        let id = created.json["id"].as_i64().ok_or("POST /users: no id")?;
        let path = format!("/users/{id}");
        // Without the token: a new session, which may read a replica that has not replayed the
        // write yet.
        let plain = http(addr, "GET", &path, None, None).await?;
        tally.tokenless_missed += usize::from(plain.status == 404);
        let read = http(addr, "GET", &path, Some(&token), None).await?;
        match read.status {
            200 if read.json["user"]["id"].as_i64() == Some(id) => {
                let server = read.json["served_by"].as_str().unwrap_or("?").to_owned();
                *tally.served_by.entry(server).or_default() += 1;
            }
            404 => tally.stale += 1,
            status => return Err(format!("GET {path}: {status} {}", read.json).into()),
        }
    }
    Ok(tally)
}

struct Reply {
    status: u16,
    token: Option<String>,
    json: Value,
}

/// One HTTP/1.1 request on a new connection, with hyper's client.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<Reply, Box<dyn Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(TOKEN_HEADER, token);
    }
    if body.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let token = response
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.into_body().collect().await?.to_bytes();
    drop(sender);
    conn.await??;
    Ok(Reply {
        status,
        token,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    })
}
