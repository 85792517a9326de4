//! The main demo: `cargo run --example quickstart`.
//!
//! With no database configured it starts a LocalCluster (a primary and two hot standbys) and
//! shows where each statement runs.

use covet_replication::testing::LocalCluster;
use sqlx::{Connection, PgConnection};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("starting a local cluster: 1 primary + 2 hot standbys ...");
    let cluster = LocalCluster::builder().replicas(2).start().await?;
    println!(
        "ready in {:?} under {}",
        cluster.startup_time(),
        cluster.dir().display()
    );
    for node in cluster.nodes() {
        println!("  node {} {:<9} 127.0.0.1:{}", node.index, node.name, node.port);
    }

    let mut primary = PgConnection::connect_with(&cluster.connect_options(0)?).await?;
    sqlx::query("CREATE TABLE greetings (id serial PRIMARY KEY, text text NOT NULL)")
        .execute(&mut primary)
        .await?;
    sqlx::query("INSERT INTO greetings (text) VALUES ('hello from the primary')")
        .execute(&mut primary)
        .await?;
    cluster.wait_streaming().await?;

    for node in cluster.replicas() {
        let mut conn = PgConnection::connect_with(&cluster.connect_options(node)?).await?;
        let (text, port, standby): (String, i32, bool) =
            sqlx::query_as("SELECT text, inet_server_port(), pg_is_in_recovery() FROM greetings LIMIT 1")
                .fetch_one(&mut conn)
                .await?;
        println!("read {text:?} from port {port} (standby: {standby})");
    }
    Ok(())
}
