//! Sessions against real replication lag: stale reads counted per consistency level.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use covet_replication::testing::LocalCluster;
use covet_replication::{Consistency, ReplicatedPool, ReplicationConfig, Session, Target, TokenError};
use covet_tests::{child_result, connect, eventually, node_name, test_config, until_reads_reach_replicas, wait_state};

async fn cluster_with_table() -> LocalCluster {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    cluster
        .execute(0, "CREATE TABLE t (id serial PRIMARY KEY, v int); CREATE TABLE counter (v int); INSERT INTO counter VALUES (0)")
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    cluster
}

/// Reads never wait for a replica: a read that cannot be served by one goes to the primary at once.
/// Standbys paused by a test stay in rotation however long it runs (past the default 10 s
/// `max_lag` they would leave it, on a loaded machine within one test).
fn no_wait(cluster: &LocalCluster) -> ReplicationConfig {
    let mut config = test_config(cluster);
    config.consistency.max_wait = Duration::ZERO;
    config.routing.max_lag = Duration::from_secs(3600);
    config
}

async fn write(executor: impl sqlx::Executor<'_, Database = sqlx::Postgres>) -> i32 {
    sqlx::query_scalar("INSERT INTO t (v) VALUES (1) RETURNING id")
        .fetch_one(executor)
        .await
        .unwrap()
}

async fn sees(executor: impl sqlx::Executor<'_, Database = sqlx::Postgres>, id: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM t WHERE id = $1)")
        .bind(id)
        .fetch_one(executor)
        .await
        .unwrap()
}

/// Write-then-read cycles in fresh sessions at `level`; returns how many reads missed the write.
async fn stale_reads(db: &ReplicatedPool, level: Consistency, cycles: usize, pause: Duration) -> usize {
    let mut stale = 0;
    for _ in 0..cycles {
        let session = db.session_with(level);
        let id = write(&session).await;
        tokio::time::sleep(pause).await;
        stale += usize::from(!sees(&session, id).await);
    }
    stale
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_two_seconds_of_lag_only_eventual_reads_are_stale() {
    let cluster = cluster_with_table().await;
    for r in cluster.replicas() {
        cluster.set_apply_delay(r, Duration::from_secs(2)).await.unwrap();
    }
    let db = connect(no_wait(&cluster)).await;
    let other = connect(no_wait(&cluster)).await; // a second process, as far as routing goes

    let now = Duration::ZERO;
    assert_eq!(
        stale_reads(&db, Consistency::ReadAfterWrite, 1000, now).await,
        0,
        "read-after-write"
    );
    assert_eq!(stale_reads(&db, Consistency::Strong, 1000, now).await, 0, "strong");
    let eventual = stale_reads(&db, Consistency::Eventual, 1000, now).await;
    assert!(
        eventual > 900,
        "eventual reads must miss writes under 2 s of lag (the checker can fail): {eventual}"
    );
    let window = |ms| Consistency::WriteWindow(Duration::from_millis(ms));
    assert_eq!(stale_reads(&db, window(5_000), 200, now).await, 0, "window > lag");
    // Read 20 ms after the write: past a 10 ms window, long before 2 s of lag are replayed.
    let short_window = stale_reads(&db, window(10), 50, Duration::from_millis(20)).await;
    assert!(
        short_window > 40,
        "a window shorter than the lag reads stale data: {short_window}"
    );

    // Tokens carry the guarantee to another pool.
    let mut stale = 0;
    for _ in 0..1000 {
        let writer = db.session();
        let id = write(&writer).await;
        let reader = other.session_from_token(&writer.token()).unwrap();
        stale += usize::from(!sees(&reader, id).await);
    }
    assert_eq!(stale, 0, "tokens between pools");

    // The plain handle keeps read-after-write for its own writes (its default).
    let mut stale = 0;
    for _ in 0..200 {
        let id = write(&db).await;
        stale += usize::from(!sees(&db, id).await);
    }
    assert_eq!(stale, 0, "plain handle");
    let c = db.consistency_counters();
    println!("{c:?}");
    assert!(c.read_after_write_reads >= 1000 && c.strong_reads == 1000);
    assert!(c.reads_after_write_on_primary >= 2000, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_lag_reads_20ms_after_a_write_are_served_by_replicas() {
    let cluster = cluster_with_table().await;
    let db = connect(test_config(&cluster)).await;
    let (mut on_replica, mut stale) = (0, 0);
    const CYCLES: usize = 200;
    for _ in 0..CYCLES {
        let session = db.session();
        let id = write(&session).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (seen, port): (bool, i32) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM t WHERE id = $1), inet_server_port()")
                .bind(id)
                .fetch_one(&session)
                .await
                .unwrap();
        stale += usize::from(!seen);
        on_replica += usize::from(node_name(&cluster, port) != "primary");
    }
    println!("{on_replica}/{CYCLES} on replicas; {:?}", db.consistency_counters());
    assert_eq!(stale, 0);
    assert!(
        on_replica * 100 >= CYCLES * 90,
        "only {on_replica} of {CYCLES} reads on replicas"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monotonic_reads_survive_losing_the_fast_replica() {
    let cluster = Arc::new(cluster_with_table().await);
    cluster.set_apply_delay(2, Duration::from_secs(1)).await.unwrap();
    let mut config = test_config(&cluster);
    config.replicas[0].weight = 10_000; // the session starts on the fast replica1
    let db = connect(config).await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cluster.execute(0, "UPDATE counter SET v = v + 1").await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let session = db.session();
    let (mut last, mut backwards, mut killed) = (-1, 0, false);
    let mut nodes = std::collections::BTreeMap::<String, usize>::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (v, port): (i32, i32) = sqlx::query_as("SELECT v, inet_server_port() FROM counter")
            .fetch_one(&session)
            .await
            .unwrap();
        backwards += usize::from(v < last);
        last = last.max(v);
        *nodes.entry(node_name(&cluster, port)).or_default() += 1;
        if !killed && started.elapsed() > Duration::from_secs(1) {
            cluster.kill(1).await.unwrap();
            killed = true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    println!("served by {nodes:?}; {:?}", db.consistency_counters());
    assert!(
        nodes.get("replica1").copied().unwrap_or(0) > 10,
        "started on the fast replica: {nodes:?}"
    );
    assert_eq!(backwards, 0, "a session read older data than it had read before");
    assert!(db.consistency_counters().replica_switches >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_staleness_excludes_a_paused_replica() {
    let cluster = Arc::new(cluster_with_table().await);
    let db = connect(test_config(&cluster)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                cluster.execute(0, "UPDATE counter SET v = v + 1").await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    cluster.pause_replay(1).await.unwrap();
    // The health loop measures the lag growing past the bound.
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.manager().node("replica1").unwrap().lag < Duration::from_millis(800) {
        assert!(
            Instant::now() < deadline,
            "lag of a paused replica must grow: {:?}",
            db.manager().node("replica1")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let session = db.session_with(Consistency::BoundedStaleness(Duration::from_millis(500)));
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&session)
            .await
            .unwrap();
        *on.entry(node_name(&cluster, port)).or_default() += 1;
    }
    assert_eq!(on.get("replica1"), None, "{on:?}");
    // Eventual still uses it: the exclusion is the bound's doing.
    let mut eventual_on_1 = 0;
    for _ in 0..100 {
        let session = db.session_with(Consistency::Eventual);
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&session)
            .await
            .unwrap();
        eventual_on_1 += usize::from(node_name(&cluster, port) == "replica1");
    }
    assert!(eventual_on_1 > 0);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    cluster.resume_replay(1).await.unwrap();
}

/// `BoundedStaleness(d)` is a bound, also between two health checks: a replica whose replay
/// stopped right after a check (its lag then within `d`) is not read once it may be more than
/// `d` behind. Staleness is measured by the server that answers: the age of the newest
/// timestamp a writer sets every 5 ms on the primary (one machine, one clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_read_is_never_older_than_its_bound_between_health_checks() {
    let cluster = Arc::new(cluster_with_table().await);
    cluster
        .execute(
            0,
            "CREATE TABLE clock (id int PRIMARY KEY, at timestamptz); INSERT INTO clock VALUES (1, now())",
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let mut config = test_config(&cluster);
    // Checks a second apart: a replica that stops replaying just after one keeps its lag
    // reading for a whole second.
    config.health.interval = Duration::from_secs(1);
    let db = connect(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conn = cluster.connect(0).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("UPDATE clock SET at = clock_timestamp() WHERE id = 1")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bound = Duration::from_secs(2);
    // Slack for the writer's period and its commit.
    let over = bound.as_secs_f64() + 0.05;
    let read = |level: Consistency| {
        let session = db.session_with(level);
        let cluster = &cluster;
        async move {
            let (age, port): (f64, i32) = sqlx::query_as(
                "SELECT EXTRACT(EPOCH FROM clock_timestamp() - at)::float8, inet_server_port() FROM clock",
            )
            .fetch_one(&session)
            .await
            .unwrap();
            (age, node_name(cluster, port))
        }
    };
    cluster.pause_replay(1).await.unwrap();
    let paused = Instant::now();
    let (mut bounded, mut eventual) = (Vec::new(), Vec::new());
    while paused.elapsed() < Duration::from_secs(6) {
        bounded.push(read(Consistency::BoundedStaleness(bound)).await);
        eventual.push(read(Consistency::Eventual).await);
    }
    cluster.resume_replay(1).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let late = |reads: &[(f64, String)]| -> Vec<(f64, String)> {
        reads.iter().filter(|(age, _)| *age > over).cloned().collect()
    };
    let on_paused = bounded.iter().filter(|(_, n)| n == "replica1").count();
    println!(
        "{} bounded reads ({on_paused} on the paused replica), {} over {over} s; eventual: {} of {} over",
        bounded.len(),
        late(&bounded).len(),
        late(&eventual).len(),
        eventual.len()
    );
    // The check can fail: Eventual reads of the paused replica are older than the bound.
    assert!(
        !late(&eventual).is_empty(),
        "the paused replica never served a stale read"
    );
    let late = late(&bounded);
    assert!(
        late.is_empty(),
        "{} bounded reads older than {bound:?}: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    assert!(
        on_paused > 0,
        "the paused replica served no bounded read while it was within the bound"
    );
}

#[tokio::test]
async fn tokens_from_elsewhere_are_refused_or_sent_to_the_primary() {
    let cluster = cluster_with_table().await;
    let db = connect(test_config(&cluster)).await;
    for bad in ["", "hello", "c1.zz.1.1", "c1.1.1.1.1", "c9.1.1.1"] {
        assert!(
            matches!(db.session_from_token(bad), Err(TokenError::Malformed { .. })),
            "{bad:?}"
        );
    }
    let session = db.session();
    write(&session).await;
    let token = session.token();
    let parts: Vec<&str> = token.split('.').collect();
    let foreign = format!("c1.{}.{}.{}", "1234", parts[2], parts[3]);
    assert!(matches!(
        db.session_from_token(&foreign),
        Err(TokenError::ForeignCluster { .. })
    ));
    // Another timeline: the token predates a failover (or this process has not seen it yet).
    let timeline: u32 = u32::from_str_radix(parts[2], 16).unwrap();
    let old = format!("c1.{}.{:x}.{}", parts[1], timeline + 1, parts[3]);
    let pinned: Session = db.session_from_token(&old).unwrap();
    for _ in 0..10 {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&pinned)
            .await
            .unwrap();
        assert_eq!(node_name(&cluster, port), "primary");
    }
    // A token of the current timeline continues on replicas.
    let ok = db.session_from_token(&token).unwrap();
    assert_eq!(ok.watermark(), session.watermark());
    wait_state(
        &db,
        "replica1",
        covet_replication::NodeState::Healthy,
        Duration::from_secs(5),
    )
    .await;
}

/// What sqlx code written for `Acquire` (like `Migrator::run`) does: take a connection, write.
async fn insert_via_acquire<'a>(db: impl sqlx::Acquire<'a, Database = sqlx::Postgres>) -> (i32, i32) {
    let mut conn = db.acquire().await.unwrap();
    sqlx::query_as("INSERT INTO t (v) VALUES (1) RETURNING id, inet_server_port()")
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_acquired_connections_and_sqlx_transactions_are_read_back() {
    // Standbys that replay nothing: a read that does not know about a write misses its row.
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    // A replica connection writes nothing, so it moves nothing: reads stay on the replicas.
    let replica = db.acquire_on(covet_replication::Target::Replica).await.unwrap();
    assert!(replica.node().as_str().starts_with("replica"), "{replica:?}");
    drop(replica);
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_ne!(node_name(&cluster, port), "primary");

    let (id, port) = insert_via_acquire(&db).await;
    assert_eq!(node_name(&cluster, port), "primary");
    assert!(sees(&db, id).await, "a write through sqlx::Acquire was not read back");

    let mut conn = db.acquire_on(covet_replication::Target::Primary).await.unwrap();
    assert_eq!(conn.node().as_str(), "primary");
    let id = write(&mut *conn).await;
    drop(conn);
    assert!(
        sees(&db, id).await,
        "a write on an acquired primary connection was not read back"
    );

    let mut tx = sqlx::Acquire::begin(&db).await.unwrap();
    let id = write(&mut *tx).await;
    tx.commit().await.unwrap();
    assert!(sees(&db, id).await, "a write in a sqlx transaction was not read back");

    // The same through a session: its own watermark, not the handle's.
    let session = db.session();
    let (id, _) = insert_via_acquire(&session).await;
    assert!(
        sees(&session, id).await,
        "a session's write through sqlx::Acquire was not read back"
    );
    let mut conn = session.acquire_on(covet_replication::Target::Primary).await.unwrap();
    let id = write(&mut *conn).await;
    drop(conn);
    assert!(
        sees(&session, id).await,
        "a session's write on an acquired connection was not read back"
    );
    let mut tx = sqlx::Acquire::begin(&session).await.unwrap();
    let id = write(&mut *tx).await;
    tx.commit().await.unwrap();
    assert!(
        sees(&session, id).await,
        "a session's write in a sqlx transaction was not read back"
    );

    // Asked for a replica that has not replayed the session's writes: an error, not the
    // primary in its place (as for statements). Usually NotCaughtUp; SessionPositionUnknown
    // when the settling of the sqlx transaction above took a later transaction on the same
    // pooled connection for it (seen once on PostgreSQL 16): the position is not known then.
    let err = db.acquire_on(covet_replication::Target::Replica).await.unwrap_err();
    assert!(
        matches!(
            covet_replication::Error::from_sqlx(&err),
            Some(
                covet_replication::Error::NotCaughtUp { .. } | covet_replication::Error::SessionPositionUnknown { .. }
            )
        ),
        "{err}"
    );
    let err = sqlx::query("SELECT 1")
        .execute(&db.using(covet_replication::ReadPreference::Replica))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the session needs"), "{err}");
    // Once the standbys replay again, reads after a tracked write go back to them.
    let id = write(&db).await;
    for i in cluster.replicas() {
        cluster.resume_replay(i).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        || "reads never returned to the replicas".into(),
        || async {
            let (seen, port): (bool, i32) =
                sqlx::query_as("SELECT EXISTS (SELECT 1 FROM t WHERE id = $1), inet_server_port()")
                    .bind(id)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            assert!(seen);
            node_name(&cluster, port) != "primary"
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_an_open_sqlx_transaction_does_not_hide_its_commit() {
    // sqlx's transaction cannot report its commit; a write through the handle while it is open
    // records a position from *before* that commit. Standbys that replayed that write, but not
    // the commit, must not serve the read that follows the commit.
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    let mut tx = sqlx::Acquire::begin(&db).await.unwrap();
    let in_tx = write(&mut *tx).await;
    let outside = write(&db).await;
    cluster.wait_streaming().await.unwrap();
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(sees(&db, outside).await);
    assert!(
        sees(&db, in_tx).await,
        "the read after the commit missed the transaction's row"
    );
    for i in cluster.replicas() {
        cluster.resume_replay(i).await.unwrap();
    }
}

/// `db.begin()` hands out sqlx's own `Transaction`, so the shapes of sqlx's `transaction`
/// example keep their types: a helper taking `&mut sqlx::Transaction<'_, Postgres>`, a struct
/// holding a `Transaction<'static, Postgres>`. Its commit is read back at once, through the
/// handle and a session, with standbys that replay nothing; once it is seen to have ended,
/// reads return to the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_hands_out_sqlx_transactions_whose_commits_are_read_back() {
    async fn insert_and_verify(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> i32 {
        let id = write(&mut **tx).await;
        assert!(sees(&mut **tx, id).await, "its own row, inside");
        id
    }
    struct Unit {
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
    }
    async fn served_by(cluster: &LocalCluster, db: impl sqlx::Executor<'_, Database = sqlx::Postgres>) -> String {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(db)
            .await
            .unwrap();
        node_name(cluster, port)
    }
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let mut tx = db.begin().await.unwrap();
    let id = insert_and_verify(&mut tx).await;
    assert_eq!(served_by(&cluster, &mut *tx).await, "primary");
    tx.commit().await.unwrap();
    assert!(sees(&db, id).await, "the commit of db.begin() was not read back");

    let session = db.session();
    let mut unit = Unit {
        tx: session.begin().await.unwrap(),
    };
    let id = insert_and_verify(&mut unit.tx).await;
    unit.tx.commit().await.unwrap();
    assert!(
        sees(&session, id).await,
        "the commit of session.begin() was not read back"
    );

    let mut tx = db.begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    let id = insert_and_verify(&mut tx).await;
    tx.commit().await.unwrap();
    assert!(sees(&db, id).await, "the commit of db.begin_with() was not read back");

    // A transaction that wrote nothing the replicas lack: reads leave the primary again.
    let mut tx = db.begin().await.unwrap();
    assert!(sees(&mut *tx, id).await);
    tx.commit().await.unwrap();
    for i in cluster.replicas() {
        cluster.resume_replay(i).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        || "reads never returned to the replicas".into(),
        || async { served_by(&cluster, &db).await != "primary" },
    )
    .await;
}

/// After a WAL segment switch (`archive_timeout` on an idle primary, a base backup) the primary's
/// insert position sits past the new segment's page header, a position no standby reports until
/// the next write. A watermark taken there kept every later read of the handle on the primary
/// (all 20 here) until someone wrote again.
#[tokio::test]
async fn reads_after_a_segment_switch_still_reach_replicas() {
    let cluster = LocalCluster::builder().replicas(1).start().await.unwrap();
    let db = connect(test_config(&cluster)).await;
    // A write of the handle's, as far as the router knows, which leaves the WAL at a segment start.
    let switched: String = sqlx::query_scalar("SELECT pg_switch_wal()::text")
        .fetch_one(&db)
        .await
        .unwrap();
    let insert: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&db.using(covet_replication::Target::Primary))
        .await
        .unwrap();
    let insert: covet_replication::Lsn = insert.parse().unwrap();
    assert_eq!(
        insert.0 % (16 << 20),
        40,
        "the insert position {insert} is past a segment's first page header (switched at {switched})"
    );
    cluster.wait_streaming().await.unwrap();
    let mut on_primary = 0;
    for _ in 0..20 {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&db)
            .await
            .unwrap();
        on_primary += usize::from(node_name(&cluster, port) == "primary");
    }
    assert_eq!(on_primary, 0, "reads after the switch served by the primary");
}

/// `sqlx::Acquire::begin` ran a query of ours inside the user's transaction before the user's
/// first statement, so `SET TRANSACTION ISOLATION LEVEL SERIALIZABLE` failed with 25001 where
/// the same code works on `&PgPool`. Through the handle and a session alike, the transaction
/// is the user's from its first statement, and its write is still read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlx_transaction_can_set_its_isolation_level_first() {
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let session = db.session();
    for (who, mut tx) in [
        ("handle", sqlx::Acquire::begin(&db).await.unwrap()),
        ("session", sqlx::Acquire::begin(&session).await.unwrap()),
    ] {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        let level: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(level, "serializable", "{who}");
        let id = write(&mut *tx).await;
        tx.commit().await.unwrap();
        let seen = if who == "handle" {
            sees(&db, id).await
        } else {
            sees(&session, id).await
        };
        assert!(seen, "{who}: the transaction's write was not read back");
    }
}

/// A monotonic session whose reads carry a target (`with_target`, the ORM's `.using()`) went
/// backwards: 200 of 3,461 reads with one standby 1 s behind, because only untargeted reads kept
/// to the session's replica. Targets that leave a choice keep to it now, and a node target
/// elsewhere moves the floor first: 0 backwards, whatever the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_reads_in_a_session_never_go_backwards() {
    use covet_replication::{Error, ReadPreference, Target, with_target};
    let cluster = cluster_with_table().await;
    cluster.set_apply_delay(1, Duration::from_secs(1)).await.unwrap();
    // At the default health interval a cached replay position is up to 1 s old: as old as the
    // lagging standby's data, which is what let a targeted read go back.
    let mut config = test_config(&cluster);
    config.health.interval = Duration::from_secs(1);
    let db = connect(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut conn) = (stop.clone(), cluster.connect(0).await.unwrap());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("UPDATE counter SET v = v + 1")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut reads, mut backwards, mut not_caught_up) = (0, 0, 0);
    let mut served = std::collections::HashMap::<String, usize>::new();
    for round in 0..60 {
        // A fresh session now and then: each starts from nothing and must still never go back.
        let session = db.session();
        let mut last = 0;
        for i in 0..25 {
            let target = match i % 5 {
                0 | 1 => Target::Replica,
                2 => Target::Preference(ReadPreference::ReplicaPreferred),
                3 => Target::Region("local".into()),
                _ => Target::Node(if round % 2 == 0 { "replica1" } else { "replica2" }.into()),
            };
            let read = with_target(target, async {
                sqlx::query_as::<_, (i32, i32)>("SELECT v, inet_server_port() FROM counter")
                    .fetch_one(&session)
                    .await
            })
            .await;
            match read {
                Ok((v, port)) => {
                    reads += 1;
                    backwards += usize::from(v < last);
                    last = last.max(v);
                    *served.entry(node_name(&cluster, port)).or_default() += 1;
                }
                // Refusing is allowed; going back is not.
                Err(e) if matches!(Error::from_sqlx(&e), Some(Error::NotCaughtUp { .. })) => not_caught_up += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(
        backwards, 0,
        "of {reads} reads ({not_caught_up} not caught up), served by {served:?}"
    );
    assert!(reads >= 1_000, "{reads} reads, {not_caught_up} not caught up");
    // Before, 723 of 1,500 went back, half served by the lagging replica1. Now it serves only
    // sessions that have seen nothing newer (a node target there is refused, not answered
    // older), and the rest stay on replica2.
    assert!(served.get("replica2").copied().unwrap_or(0) >= 700, "{served:?}");
    assert!(not_caught_up > 0, "replica1 was asked for and refused: {not_caught_up}");
    // A refusal is not a failure of the node: replica1 was marked unhealthy by each of them,
    // and served nothing at all, before.
    assert!(served.get("replica1").copied().unwrap_or(0) > 0, "{served:?}");
}

/// A session whose position is unknown (a token from another timeline: any token from before a
/// failover) was served by the primary for reads targeted at a replica, contrary to "never
/// the primary in its place". They are refused now, nothing sent; untargeted reads and
/// primary targets go to the primary.
#[tokio::test]
async fn a_session_of_unknown_position_refuses_reads_kept_off_the_primary() {
    use covet_replication::{Error, ReadPreference, Target, with_target};
    let cluster = covet_tests::shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let token = db.session().token();
    let parts: Vec<&str> = token.split('.').collect();
    let timeline = u32::from_str_radix(parts[2], 16).unwrap();
    let stale = format!("c1.{}.{:x}.{}", parts[1], timeline + 1, parts[3]);
    let session = db.session_from_token(&stale).unwrap();
    let before = db.counters();
    for target in [
        Target::Replica,
        Target::Node("replica1".into()),
        Target::Preference(ReadPreference::Replica),
        Target::Region("us".into()),
    ] {
        let err = with_target(target.clone(), async {
            sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                .fetch_one(&session)
                .await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(Error::from_sqlx(&err), Some(Error::SessionPositionUnknown { .. })),
            "{target:?}: {err}"
        );
    }
    assert_eq!(db.counters().to_primary, before.to_primary, "nothing was sent");
    for target in [None, Some(Target::Primary), Some(Target::Region("eu".into()))] {
        let port: i32 = match target {
            None => sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(&session)
                .await
                .unwrap(),
            Some(t) => with_target(t, async {
                sqlx::query_scalar("SELECT inet_server_port()")
                    .fetch_one(&session)
                    .await
            })
            .await
            .unwrap(),
        };
        assert_eq!(node_name(cluster, port), "primary");
    }
}

/// A write counts for its session and the handle however its statement ends. Taking the first
/// row of an `INSERT ... RETURNING` stream and dropping it, a statement that fails after its
/// COMMIT, a procedure that commits then raises, a future dropped mid-flight: the next read
/// missed the row (25 of 25, served by a replica) while it was committed on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_count_however_their_statement_ends() {
    use futures::StreamExt;
    let cluster = cluster_with_table().await;
    cluster
        .execute(
            0,
            "CREATE PROCEDURE commit_then_fail(marker int) LANGUAGE plpgsql AS $$ \
             BEGIN INSERT INTO t (v) VALUES (marker); COMMIT; RAISE EXCEPTION 'after the commit'; END $$",
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let db = connect(no_wait(&cluster)).await;
    // Standbys that replay nothing: a read that does not know about a write misses it.
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    async fn count(executor: impl sqlx::Executor<'_, Database = sqlx::Postgres>, marker: i32) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM t WHERE v = $1")
            .bind(marker)
            .fetch_one(executor)
            .await
            .unwrap()
    }
    let session = db.session();
    let primary = db.using(Target::Primary);
    let (mut missed, mut dropped_writes) = (Vec::new(), 0);
    for round in 0..10 {
        for (who, on_session) in [("handle", false), ("session", true)] {
            let base = 1_000 * round + if on_session { 500 } else { 0 };
            // 1. A stream dropped after its first row.
            let marker = base + 1;
            {
                let query = sqlx::query_scalar::<_, i32>("INSERT INTO t (v) VALUES ($1) RETURNING id").bind(marker);
                let mut rows = if on_session {
                    query.fetch(&session)
                } else {
                    query.fetch(&db)
                };
                assert!(rows.next().await.unwrap().is_ok());
            }
            // 2. An error after the COMMIT, in one multi-statement text.
            let sql = format!("INSERT INTO t (v) VALUES ({}); COMMIT; SELECT 1/0", base + 2);
            let raw = sqlx::raw_sql(sqlx::AssertSqlSafe(sql));
            let failed = if on_session {
                raw.execute(&session).await
            } else {
                raw.execute(&db).await
            };
            assert!(failed.is_err(), "{who}: the division by zero");
            // 3. A procedure that commits, then raises.
            let call = sqlx::query("CALL commit_then_fail($1)").bind(base + 3);
            let failed = if on_session {
                call.execute(&session).await
            } else {
                call.execute(&db).await
            };
            assert!(failed.is_err(), "{who}: the procedure raised");
            // 4. A future dropped before it finished (a timeout that fired at once).
            let slow = sqlx::query("INSERT INTO t (v) SELECT $1 FROM pg_sleep(0.05)").bind(base + 4);
            let dropped = if on_session {
                tokio::time::timeout(Duration::from_millis(5), slow.execute(&session)).await
            } else {
                tokio::time::timeout(Duration::from_millis(5), slow.execute(&db)).await
            };
            assert!(dropped.is_err(), "{who}: the timeout fired");
            for (case, marker) in [
                ("stream dropped", base + 1),
                ("error after commit", base + 2),
                ("procedure", base + 3),
                ("future dropped", base + 4),
            ] {
                let seen = if on_session {
                    count(&session, marker).await
                } else {
                    count(&db, marker).await
                };
                // A timeout that fired before the statement was even sent (a slow acquire
                // under load) wrote nothing: the primary says what was committed.
                let committed = count(&primary, marker).await;
                if case == "future dropped" {
                    dropped_writes += committed;
                } else {
                    assert_eq!(committed, 1, "{who}, {case}: committed on the primary");
                }
                if seen != committed {
                    missed.push(format!("{who}, {case}: {seen} rows, {committed} committed"));
                }
            }
        }
    }
    assert_eq!(missed, Vec::<String>::new());
    assert!(
        dropped_writes >= 10,
        "only {dropped_writes} of 20 dropped futures had sent their write"
    );
}

/// A standby replaced at its address by an older copy of itself (restored from a snapshot, a
/// pod rescheduled with an older volume) kept the position its predecessor had reported, since
/// cached positions only went up: 40 of 40 token reads were stale while `status()` showed the
/// old, higher position. A position holds only for the server incarnation that reported it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_restored_from_an_older_copy_is_not_trusted_with_its_old_position() {
    // A short harness timeout: the restored copy is started but never streams.
    let cluster = LocalCluster::builder()
        .replicas(1)
        .timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    cluster
        .execute(0, "CREATE TABLE t (id serial PRIMARY KEY, v int)")
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let data = cluster.dir().join("node1");
    let snapshot = cluster.dir().join("node1.snapshot");
    cluster.stop(1).await.unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&snapshot)
        .status()
        .unwrap();
    assert!(copied.success());
    cluster.start(1).await.unwrap();
    let db = connect(test_config(&cluster)).await;
    let session = db.session();
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(write(&session).await);
    }
    let token = session.token();
    let wanted: covet_replication::Lsn = token
        .rsplit('.')
        .next()
        .map(|l| covet_replication::Lsn(u64::from_str_radix(l, 16).unwrap()))
        .unwrap();
    eventually(
        Duration::from_secs(10),
        || "the health loop never saw replica1 replay the writes".into(),
        || async { db.manager().node("replica1").unwrap().lsn >= wanted },
    )
    .await;
    // The older copy comes back in its place, cut off from the primary (it stays behind).
    cluster.stop(1).await.unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&snapshot, &data).unwrap();
    let mut auto = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.auto.conf"))
        .unwrap();
    std::io::Write::write_all(&mut auto, b"primary_conninfo = 'host=127.0.0.1 port=1'\n").unwrap();
    let started = cluster.start(1).await;
    assert!(
        matches!(started, Err(covet_replication::testing::ClusterError::Timeout { .. })),
        "it runs, and does not stream: {started:?}"
    );
    assert!(cluster.nodes()[1].running);
    wait_state(
        &db,
        "replica1",
        covet_replication::NodeState::Healthy,
        Duration::from_secs(10),
    )
    .await;
    let last = *ids.last().unwrap();
    let mut stale = 0;
    for _ in 0..40 {
        let reader = db.session_from_token(&token).unwrap();
        stale += usize::from(!sees(&reader, last).await);
    }
    assert_eq!(
        stale,
        0,
        "of 40 token reads; replica1 now: {:?}",
        db.manager().node("replica1")
    );
    assert!(
        db.manager().node("replica1").unwrap().lsn < wanted,
        "status shows what the copy has replayed"
    );
}

/// A write on a primary connection the code still holds (`sqlx::Acquire::acquire(&db)`,
/// `db.acquire()`) counted only once the connection went back: a read through
/// the handle meanwhile returned 0 rows from a lagging standby, where `PgPool` sees the row.
/// Reads go to the primary from the moment such a connection is handed out, and back to the
/// replicas once it is returned and they have replayed its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_held_primary_connection_is_read_back_at_once() {
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let session = db.session();
    let mut acquired = sqlx::Acquire::acquire(&db).await.unwrap();
    let id = write(&mut *acquired).await;
    assert!(sees(&db, id).await, "sqlx::Acquire: not read back while held");
    let mut held = db.acquire_on(covet_replication::Target::Primary).await.unwrap();
    let id = write(&mut *held).await;
    assert!(sees(&db, id).await, "acquire(Primary): not read back while held");
    let mut on_session = session.acquire_on(covet_replication::Target::Primary).await.unwrap();
    let id = write(&mut *on_session).await;
    assert!(sees(&session, id).await, "a session's held connection: not read back");
    drop((acquired, held, on_session));
    for i in cluster.replicas() {
        cluster.resume_replay(i).await.unwrap();
    }
    until_reads_reach_replicas(&db, &cluster).await;
}

/// `Session::using(target)`: the session's target, with its promises. Targeting inside a
/// session needed `with_target` or the ORM before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_targets_with_using_and_keeps_its_promises() {
    use covet_replication::{Error, Target};
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    let session = db.session();
    let cluster = &cluster;
    let who = |s: covet_replication::Session| async move {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
            .fetch_one(&s)
            .await
            .unwrap();
        node_name(cluster, port)
    };
    assert_eq!(who(session.using(Target::Primary)).await, "primary");
    assert_eq!(who(session.using(Target::Node("replica2".into()))).await, "replica2");
    assert!(who(session.using(Target::Replica)).await.starts_with("replica"));
    // A write the replicas have not replayed: the session's read through a replica target is
    // refused, and the same session untargeted reads it back (from the primary).
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let id = write(&session).await;
    let err = sqlx::query_scalar::<_, bool>("SELECT true FROM t WHERE id = $1")
        .bind(id)
        .fetch_optional(&session.using(Target::Replica))
        .await
        .unwrap_err();
    assert!(
        matches!(Error::from_sqlx(&err), Some(Error::NotCaughtUp { .. })),
        "{err}"
    );
    assert!(sees(&session, id).await);
    assert!(sees(&session.using(Target::Primary), id).await);
}

/// `COPY` through the handle (`PgPoolCopyExt`'s methods): on the primary, and its rows read back
/// at once with the standbys replaying nothing, also when the stream is dropped after its first
/// chunk; a `COPY` that only reads does not keep the session off the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_count_as_writes_however_they_end() {
    use futures::StreamExt;
    let cluster = cluster_with_table().await;
    let db = connect(no_wait(&cluster)).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let count = |v: i32| {
        let db = db.clone();
        async move {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE v = $1")
                .bind(v)
                .fetch_one(&db)
                .await
                .unwrap();
            n
        }
    };

    let mut copy = db.copy_in_raw("COPY t (v) FROM STDIN").await.unwrap();
    assert_eq!((copy.num_columns(), copy.is_textual()), (1, true));
    copy.send("7\n7\n7\n".as_bytes()).await.unwrap();
    assert_eq!(copy.finish().await.unwrap(), 3);
    assert_eq!(count(7).await, 3, "finished COPY FROM not read back");

    // Aborted, and dropped half-way: nothing written, the handle still reads correctly.
    let mut copy = db.copy_in_raw("COPY t (v) FROM STDIN").await.unwrap();
    copy.send("8\n".as_bytes()).await.unwrap();
    copy.abort("changed my mind").await.unwrap();
    let mut copy = db.copy_in_raw("COPY t (v) FROM STDIN").await.unwrap();
    copy.send("8\n".as_bytes()).await.unwrap();
    drop(copy);
    assert_eq!(count(8).await, 0);
    let bad = db.copy_in_raw("COPY no_such_table FROM STDIN").await.unwrap_err();
    assert!(bad.to_string().contains("no_such_table"), "{bad}");

    // A COPY TO that deletes, its stream dropped after the first chunk: the delete is read back.
    let mut out = db
        .copy_out_raw("COPY (DELETE FROM t WHERE v = 7 RETURNING id) TO STDOUT")
        .await
        .unwrap();
    assert!(out.next().await.unwrap().unwrap().ends_with(b"\n"));
    drop(out);
    assert_eq!(count(7).await, 0, "the dropped COPY TO's delete not read back");

    // One that reads leaves a session on the replicas.
    let session = db.session();
    let rows: Vec<_> = session
        .scope(async {
            db.copy_out_raw("COPY t TO STDOUT")
                .await
                .unwrap()
                .collect::<Vec<_>>()
                .await
        })
        .await;
    assert!(rows.iter().all(Result::is_ok));
    let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&session).await.unwrap();
    assert_eq!(
        session.last_route().map(|r| r.role),
        Some(covet_replication::Role::Replica),
        "a reading COPY TO pinned the session"
    );
}

/// The file holding `token id` for `child_lists_with_a_token`, run by
/// `a_todo_added_in_one_process_is_listed_by_another_with_its_token` in a child process.
const CHILD_TOKEN: &str = "COVET_TEST_TOKEN";

/// sqlx's todos example across processes: one adds a row, a second process lists with the
/// first's causal token while the standbys replay nothing; without the token (the negative
/// control) the same list misses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_todo_added_in_one_process_is_listed_by_another_with_its_token() {
    let cluster = cluster_with_table().await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }
    let db = connect(no_wait(&cluster)).await;
    let session = db.session();
    let id = write(&session).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("covet.toml");
    std::fs::write(&config, test_config(&cluster).to_toml_string().unwrap()).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{} {id}", session.token())).unwrap();
    let line = child_result(
        "child_lists_with_a_token",
        &config,
        (CHILD_TOKEN, token.as_os_str()),
        "LISTED ",
    );
    let [with_token, with_token_on, without_token, without_token_on]: [&str; 4] =
        line.split(' ').collect::<Vec<_>>().try_into().unwrap();
    assert_eq!(with_token, "true", "the token's list missed the todo");
    // The token cannot be met by the standbys: its list is the primary's.
    assert_eq!(node_name(&cluster, with_token_on.parse().unwrap()), "primary");
    assert_eq!(
        without_token, "false",
        "the negative control saw the todo: the standbys are not behind"
    );
    assert_ne!(node_name(&cluster, without_token_on.parse().unwrap()), "primary");
}

#[tokio::test]
#[ignore = "run by a_todo_added_in_one_process_is_listed_by_another_with_its_token"]
async fn child_lists_with_a_token() {
    let given = std::fs::read_to_string(std::env::var(CHILD_TOKEN).unwrap()).unwrap();
    let (token, id) = given.split_once(' ').unwrap();
    let id: i32 = id.parse().unwrap();
    let db = ReplicatedPool::connect(ReplicationConfig::from_env().unwrap())
        .await
        .unwrap();
    covet_tests::wait_states(&db, covet_replication::NodeState::Healthy, Duration::from_secs(20)).await;
    let list = |executor| async move {
        let (seen, port): (bool, i32) =
            sqlx::query_as("SELECT EXISTS (SELECT 1 FROM t WHERE id = $1), inet_server_port()")
                .bind(id)
                .fetch_one(executor)
                .await
                .unwrap();
        (seen, port)
    };
    let session = db.session_from_token(token).unwrap();
    let (with, with_on) = list(&session).await;
    let (without, without_on) = list(&db.session()).await;
    println!("LISTED {with} {with_on} {without} {without_on}");
}

/// A function learned as `STABLE`, then replaced by a `VOLATILE` one that inserts: through the
/// handle the DDL makes the router forget what it learned; made elsewhere, the learned verdict
/// is stale until `routing.catalog_ttl`, and a call served by the primary meanwhile still
/// counts as a write, so the handle's next read (the standbys replay nothing) sees its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_replaced_by_a_writing_one_is_not_taken_for_a_read() {
    use covet_replication::RouteReason;
    let cluster = cluster_with_table().await;
    let stable = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1'";
    let writing = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE \
                   AS 'INSERT INTO t (v) VALUES (42) RETURNING 1'";
    cluster.execute(0, stable).await.unwrap();
    let mut config = no_wait(&cluster);
    config.routing.catalog_ttl = Duration::from_secs(2);
    let db = connect(config).await;
    let explain = || async { db.explain("SELECT f()").await.unwrap().1 };
    assert_eq!(explain().await, RouteReason::ReadPreference);

    // Through the handle: forgotten at once.
    sqlx::raw_sql(writing).execute(&db).await.unwrap();
    assert_eq!(explain().await, RouteReason::Write);
    sqlx::raw_sql(stable).execute(&db).await.unwrap();
    assert_eq!(explain().await, RouteReason::ReadPreference);
    // The standbys replay the handle's DDL, then nothing more.
    until_reads_reach_replicas(&db, &cluster).await;
    for i in cluster.replicas() {
        cluster.pause_replay(i).await.unwrap();
    }

    // Elsewhere: the learned verdict holds until the TTL; calls served by the primary meanwhile
    // are read back all the same.
    cluster.execute(0, writing).await.unwrap();
    let mut missed = 0;
    for round in 1..=3 {
        let one: i32 = sqlx::query_scalar("SELECT f()")
            .fetch_one(&db.using(Target::Primary))
            .await
            .unwrap();
        assert_eq!(one, 1);
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t WHERE v = 42")
            .fetch_one(&db)
            .await
            .unwrap();
        missed += usize::from(rows != round);
    }
    assert_eq!(missed, 0, "reads missed the writes of a function learned as STABLE");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        explain().await,
        RouteReason::Write,
        "the stale verdict outlived catalog_ttl"
    );
}
