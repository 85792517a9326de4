//! The axum feature: `SessionLayer` and the `Session` extractor, with a standby that replays
//! nothing, so a read that does not continue the writer's session misses its row.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use covet_replication::axum::SessionLayer;
use covet_replication::testing::LocalCluster;
use covet_replication::{ReplicatedPool, Session};
use covet_tests::{connect, node_name, test_config};
use tower::ServiceExt;

/// Writes through the plain handle: the layer's session is in scope.
async fn add(State(db): State<ReplicatedPool>) -> String {
    let id: i32 = sqlx::query_scalar("INSERT INTO t DEFAULT VALUES RETURNING id")
        .fetch_one(&db)
        .await
        .unwrap();
    id.to_string()
}

/// Reads through the extracted session; answers whether the row is there, and where.
async fn has(session: Session, Path(id): Path<i32>) -> String {
    let (seen, port): (bool, i32) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM t WHERE id = $1), inet_server_port()")
        .bind(id)
        .fetch_one(&session)
        .await
        .unwrap();
    format!("{seen} {port}")
}

fn app(db: &ReplicatedPool, layer: SessionLayer) -> Router {
    Router::new()
        .route("/add", post(add))
        .route("/has/{id}", get(has))
        .with_state(db.clone())
        .layer(layer)
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_continues_the_session_its_token_names() {
    let cluster = LocalCluster::builder().replicas(1).start().await.unwrap();
    cluster
        .execute(0, "CREATE TABLE t (id serial PRIMARY KEY)")
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let mut config = test_config(&cluster);
    config.consistency.max_wait = std::time::Duration::ZERO;
    let db = connect(config).await;
    cluster.pause_replay(1).await.unwrap();
    let where_ = |body: &str| {
        let (seen, port) = body.split_once(' ').unwrap();
        (seen.to_owned(), node_name(&cluster, port.parse().unwrap()))
    };

    let headers = app(&db, SessionLayer::new(db.clone()));
    let (status, response, id) = send(&headers, "POST", "/add", &[]).await;
    assert_eq!(status, StatusCode::OK, "{id}");
    let token = response["x-covet-token"].to_str().unwrap().to_owned();
    let (_, _, body) = send(&headers, "GET", &format!("/has/{id}"), &[("x-covet-token", &token)]).await;
    assert_eq!(where_(&body), ("true".into(), "primary".into()), "with the token");
    // The control: a request of a new session reads the standby, which lacks the row.
    let (_, response, body) = send(&headers, "GET", &format!("/has/{id}"), &[]).await;
    assert_eq!(where_(&body), ("false".into(), "replica1".into()), "without a token");
    assert!(
        response.contains_key("x-covet-token"),
        "every response carries its session's token"
    );

    let (status, _, body) = send(&headers, "GET", &format!("/has/{id}"), &[("x-covet-token", "nonsense")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("bad causal token in x-covet-token"), "{body}");

    let cookies = app(&db, SessionLayer::new(db.clone()).cookie("covet"));
    let (_, response, id) = send(&cookies, "POST", "/add", &[]).await;
    let set = response["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("covet=") && set.contains("HttpOnly"), "{set}");
    let cookie = format!("theme=dark; {}", set.split(';').next().unwrap());
    let (_, _, body) = send(&cookies, "GET", &format!("/has/{id}"), &[("cookie", &cookie)]).await;
    assert_eq!(where_(&body), ("true".into(), "primary".into()), "with the cookie");

    let bare = Router::new().route("/has/{id}", get(has));
    let (status, _, body) = send(&bare, "GET", "/has/1", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("no covet_replication::axum::SessionLayer"), "{body}");
    cluster.resume_replay(1).await.unwrap();
}
