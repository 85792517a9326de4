//! The main demo: `cargo run --example quickstart`.
//!
//! With `COVET_CONFIG` or `COVET_PRIMARY_URL` set it uses that cluster; otherwise it starts a
//! LocalCluster (a primary and two hot standbys) itself. Then it swaps a `PgPool` for a
//! `ReplicatedPool` and prints which server answered each statement.

use covet_replication::{ReplicatedPool, Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keeps the local cluster alive until the end of main.
    println!(
        "starting: the cluster of COVET_CONFIG / COVET_PRIMARY_URL, or a local one (1 primary + 2 hot standbys) ..."
    );
    let (config, _cluster) = covet_replication::testing::configured_or_local().await?;
    if let Some(cluster) = &_cluster {
        println!("local cluster ready in {:.2?}", cluster.startup_time());
    }
    let ports: Vec<(u16, String)> = config.nodes().map(|n| (n.port, n.id.clone())).collect();
    let name = |port: i32| {
        ports
            .iter()
            .find(|(p, _)| i32::from(*p) == port)
            .map_or("?".into(), |(_, id)| id.clone())
    };
    let show = |what: &str, port: i32| println!("{what:<44} served by {} (port {port})", name(port));

    let db = ReplicatedPool::connect(config).await?;
    for node in db.manager().nodes() {
        let role = format!("{:?}", node.role);
        println!(
            "  {:<9} {role:<8} {:<8} region {}",
            node.id,
            node.state.to_string(),
            node.region.as_deref().unwrap_or("-")
        );
    }
    println!();

    // Ordinary sqlx code: only the executor changed.
    sqlx::query("CREATE TABLE IF NOT EXISTS greetings (id serial PRIMARY KEY, text text NOT NULL, written_on int)")
        .execute(&db)
        .await?;
    for text in ["hello", "hej", "hola"] {
        let port: i32 = sqlx::query_scalar(
            "INSERT INTO greetings (text, written_on) VALUES ($1, inet_server_port()) RETURNING written_on",
        )
        .bind(text)
        .fetch_one(&db)
        .await?;
        show("INSERT ... RETURNING", port);
    }
    // Give the standbys a moment to replay (sessions with read-your-writes make this exact).
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..6 {
        let (n, port, standby): (i64, i32, bool) =
            sqlx::query_as("SELECT count(*), inet_server_port(), pg_is_in_recovery() FROM greetings")
                .fetch_one(&db)
                .await?;
        show(&format!("SELECT count(*) -> {n} (standby: {standby})"), port);
    }
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db.using(Target::Primary))
        .await?;
    show("SELECT, using(Target::Primary)", port);
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db.using(Target::Region("us".into())))
        .await?;
    show("SELECT, using(Target::Region(\"us\"))", port);
    let port: i32 = sqlx::query_scalar("SELECT nextval('greetings_id_seq')::int * 0 + inet_server_port()")
        .fetch_one(&db)
        .await?;
    show("SELECT nextval(..) (a SELECT that writes)", port);

    let mut tx = db.begin().await?;
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    show("SELECT inside db.begin()", port);
    // The status report: nodes, lag, and where this run's statements went.
    println!("\n{}", db.status());
    db.close().await;
    Ok(())
}
