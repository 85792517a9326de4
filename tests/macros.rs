//! sqlx's compile-time checked macros run unchanged through `&ReplicatedPool`.
//!
//! They compile offline from `tests/.sqlx` (regenerate with `scripts/sqlx-prepare.sh`).

use covet_replication::Target;
use covet_tests::{connect, node_name, shared_cluster, test_config};

struct Who {
    port: i32,
    standby: bool,
}

#[tokio::test]
async fn query_macros_are_routed_like_any_statement() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;

    let row = sqlx::query!(r#"SELECT inet_server_port() AS "port!", pg_is_in_recovery() AS "standby!""#)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(row.standby);
    assert_ne!(node_name(cluster, row.port), "primary");

    let who = sqlx::query_as!(
        Who,
        r#"SELECT inet_server_port() AS "port!", pg_is_in_recovery() AS "standby!" WHERE $1::int > 0"#,
        1
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(who.len(), 1);
    assert!(who[0].standby);
    assert_ne!(node_name(cluster, who[0].port), "primary");

    let port = sqlx::query_scalar!(r#"SELECT inet_server_port() AS "port!""#)
        .fetch_one(&db.using(Target::Primary))
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), "primary");

    // A SELECT that writes (it assigns a transaction id) goes to the primary.
    let row = sqlx::query!(r#"SELECT txid_current() AS "xid!", inet_server_port() AS "port!""#)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(row.xid > 0);
    assert_eq!(node_name(cluster, row.port), "primary");
}
