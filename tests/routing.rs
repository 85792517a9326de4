//! Routing through `&ReplicatedPool` against a real cluster, asserting which server answered.

use std::collections::HashMap;
use std::time::Duration;

use covet_replication::{
    Error, Lsn, ReadPreference, ReplicatedPool, Role, RouteReason, Target, classify::classify, with_target,
};
use covet_tests::{connect, eventually, node_name, shared_cluster, table, test_config};
use futures::TryStreamExt;
use sqlx::Row;

const WHO: &str = "SELECT inet_server_port()";

async fn who(db: &ReplicatedPool) -> i32 {
    sqlx::query_scalar(WHO).fetch_one(db).await.expect("read")
}

/// Node names that served `n` reads of `db`.
async fn readers(db: &ReplicatedPool, n: usize) -> HashMap<String, usize> {
    let cluster = shared_cluster().await;
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(node_name(cluster, who(db).await)).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn reads_go_where_the_preference_says_and_writes_to_the_primary() {
    let cluster = shared_cluster().await;
    let t = table("prefs");
    cluster
        .execute(0, &format!("CREATE TABLE {t} (id serial PRIMARY KEY, port int)"))
        .await
        .unwrap();
    for pref in [
        ReadPreference::Primary,
        ReadPreference::PrimaryPreferred,
        ReadPreference::Replica,
        ReadPreference::ReplicaPreferred,
        ReadPreference::Nearest,
    ] {
        let mut config = test_config(cluster);
        config.routing.read_preference = pref;
        let db = connect(config).await;
        let seen = readers(&db, 40).await;
        match pref {
            ReadPreference::Primary | ReadPreference::PrimaryPreferred => {
                assert_eq!(seen.keys().collect::<Vec<_>>(), ["primary"], "{pref:?}: {seen:?}")
            }
            ReadPreference::Replica | ReadPreference::ReplicaPreferred => {
                assert!(!seen.contains_key("primary"), "{pref:?}: {seen:?}");
                assert!(seen.len() == 2, "{pref:?} spreads over both replicas: {seen:?}");
            }
            _ => assert_eq!(seen.values().sum::<usize>(), 40),
        }
        for _ in 0..5 {
            let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} (port) VALUES (inet_server_port()) RETURNING port"
            )))
            .fetch_one(&db)
            .await
            .unwrap();
            assert_eq!(node_name(cluster, port), "primary", "{pref:?}: write");
        }
    }
    let c = ReplicatedPool::connect(test_config(cluster)).await.unwrap().counters();
    assert_eq!(c.errors, 0);
}

#[tokio::test]
async fn the_sqlx_api_works_unchanged() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("api");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, name text)"
    )))
    .execute(&db)
    .await
    .unwrap();
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {t} VALUES ($1, $2), ($3, $4)"
    )))
    .bind(1)
    .bind("ana")
    .bind(2)
    .bind("bo")
    .execute(&db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 2);
    cluster.wait_streaming().await.unwrap();
    let rows: Vec<(i32, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id, name FROM {t} ORDER BY id")))
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(rows, [(1, "ana".to_string()), (2, "bo".to_string())]);
    let name: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM {t} WHERE id = $1")))
        .bind(2)
        .fetch_optional(&db)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("bo"));
    let streamed: Vec<sqlx::postgres::PgRow> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT id, inet_server_port() AS port FROM {t}"
    )))
    .fetch(&db)
    .try_collect()
    .await
    .unwrap();
    assert_eq!(streamed.len(), 2);
    assert_ne!(node_name(cluster, streamed[0].get::<i32, _>("port")), "primary");
    // A plain string (simple protocol) and a multi-statement string with a write.
    let n: i64 = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
        .fetch_one(&db)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT 1; UPDATE {t} SET name = 'cy' WHERE id = 1"
    )))
    .execute(&db)
    .await
    .unwrap();
    let missing = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {t} WHERE id = 99")))
        .fetch_one(&db)
        .await;
    assert!(matches!(missing, Err(sqlx::Error::RowNotFound)));
}

#[tokio::test]
async fn transactions_stay_on_the_primary_and_read_only_ones_on_one_replica() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("tx");
    cluster.execute(0, &format!("CREATE TABLE {t} (id int)")).await.unwrap();
    let mut tx = db.begin().await.unwrap();
    for i in 0..5 {
        let port: i32 = sqlx::query_scalar(WHO).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(node_name(cluster, port), "primary");
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES ($1)")))
            .bind(i)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    for _ in 0..4 {
        let mut ro = db.begin_read_only().await.unwrap();
        let first: i32 = sqlx::query_scalar(WHO).fetch_one(&mut *ro).await.unwrap();
        assert_ne!(node_name(cluster, first), "primary");
        assert_eq!(node_name(cluster, first), ro.node().as_str());
        for _ in 0..5 {
            let (port, standby): (i32, bool) = sqlx::query_as("SELECT inet_server_port(), pg_is_in_recovery()")
                .fetch_one(&mut *ro)
                .await
                .unwrap();
            assert_eq!(port, first, "a read-only transaction stays on one replica");
            assert!(standby);
        }
        ro.commit().await.unwrap();
    }
}

#[tokio::test]
async fn weights_spread_reads_in_proportion() {
    let cluster = shared_cluster().await;
    let mut config = test_config(cluster);
    config.replicas[0].weight = 3;
    config.replicas[1].weight = 1;
    let db = connect(config).await;
    let seen = readers(&db, 400).await;
    let r1 = *seen.get("replica1").unwrap_or(&0) as f64 / 400.0;
    assert!(
        (0.62..=0.88).contains(&r1),
        "weights 3:1 gave {seen:?} {:#?}",
        db.manager().nodes()
    );
    assert!(!seen.contains_key("primary"));
}

#[tokio::test]
async fn region_preference_and_targets() {
    let cluster = shared_cluster().await;
    let mut config = test_config(cluster);
    config.routing.preferred_region = Some("us".into());
    let db = connect(config).await;
    assert_eq!(
        readers(&db, 30).await.keys().collect::<Vec<_>>(),
        ["replica2"],
        "preferred region us"
    );

    let eu = db.using(Target::Region("eu".into()));
    assert_eq!(
        readers(&eu, 30).await.keys().collect::<Vec<_>>(),
        ["replica1"],
        "region eu"
    );
    let primary = db.using(Target::Primary);
    assert_eq!(readers(&primary, 10).await.keys().collect::<Vec<_>>(), ["primary"]);
    let node = db.using(Target::Node("replica1".into()));
    assert_eq!(readers(&node, 10).await.keys().collect::<Vec<_>>(), ["replica1"]);
    let scoped = with_target(Target::Primary, async { readers(&db, 10).await }).await;
    assert_eq!(scoped.keys().collect::<Vec<_>>(), ["primary"], "task-scoped override");
    // A per-call override wins over the scope.
    let inner = with_target(Target::Primary, async {
        readers(&db.using(Target::Node("replica2".into())), 5).await
    })
    .await;
    assert_eq!(inner.keys().collect::<Vec<_>>(), ["replica2"]);

    let err = sqlx::query_scalar::<_, i32>(WHO)
        .fetch_one(&db.using(Target::Node("nope".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(Error::from_sqlx(&err), Some(Error::UnknownNode { id }) if id == "nope"),
        "{err}"
    );
    let err = sqlx::query_scalar::<_, i32>(WHO)
        .fetch_one(&db.using(Target::Region("ap".into())))
        .await
        .unwrap_err();
    assert!(
        matches!(Error::from_sqlx(&err), Some(Error::NoEligibleReplica { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn writes_never_reach_a_replica() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("writes");
    cluster
        .execute(0, &format!("CREATE TABLE {t} (id int, port int)"))
        .await
        .unwrap();
    cluster
        .execute(
            0,
            &format!(
                "CREATE FUNCTION {t}_add(i int) RETURNS int LANGUAGE sql VOLATILE AS \
                 $$ INSERT INTO {t} VALUES (i, inet_server_port()) RETURNING inet_server_port() $$;
                 CREATE FUNCTION {t}_count() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM {t} $$;"
            ),
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();

    // An application function the classifier does not know: pg_proc says volatile -> primary.
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {t}_add(1)")))
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    // A stable one may run on a replica.
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT inet_server_port() FROM (SELECT {t}_count()) c"
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_ne!(node_name(cluster, port), "primary");

    // Forcing a known write onto a replica is refused before anything is sent.
    let err = sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {t} VALUES (2, 0)")))
        .execute(&db.using(Target::Replica))
        .await
        .unwrap_err();
    assert!(
        matches!(Error::from_sqlx(&err), Some(Error::WriteOnReplica { .. })),
        "{err}"
    );

    // A hint that lies: the standby refuses (25006), nothing is written there, the primary runs it.
    let before = db.counters().refused_writes;
    let sql = format!("/* covet:replica */ SELECT {t}_add(3)");
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    assert_eq!(db.counters().refused_writes, before + 1);
    // ... and the text is remembered as a write: no second refusal.
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    assert_eq!(db.counters().refused_writes, before + 1);

    let rows: Vec<(i32, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT id, port FROM {t} ORDER BY id")))
        .fetch_all(&db.using(Target::Primary))
        .await
        .unwrap();
    let primary_port = i32::from(cluster.nodes()[0].port);
    assert_eq!(rows, [(1, primary_port), (3, primary_port), (3, primary_port)]);
}

#[tokio::test]
async fn reads_of_views_that_write_run_on_the_primary_without_a_refusal() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("views");
    // The shape of the corpus's one text-invisible write (alter_table.sql's my_locks): a view
    // whose WHERE clause assigns a transaction id, which a standby refuses.
    cluster
        .execute(
            0,
            &format!(
                "CREATE VIEW {t}_locks AS SELECT locktype FROM pg_locks \
                   WHERE transactionid = pg_current_xact_id()::xid;
                 CREATE VIEW {t}_outer AS SELECT * FROM {t}_locks;
                 CREATE FUNCTION {t}_vol() RETURNS int LANGUAGE sql VOLATILE AS $$ SELECT 1 $$;
                 CREATE VIEW {t}_fn AS SELECT {t}_vol() AS one;
                 CREATE TABLE {t}_tab (id int);
                 CREATE VIEW {t}_plain AS SELECT id FROM {t}_tab UNION ALL SELECT 1;
                 CREATE MATERIALIZED VIEW {t}_mat AS SELECT {t}_vol() AS one;"
            ),
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    let refused = db.counters().refused_writes;
    let served_by = |relation: String| {
        let db = db.clone();
        async move {
            let sql = format!("SELECT inet_server_port() FROM (SELECT count(*) FROM {relation}) c");
            let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&db)
                .await
                .unwrap();
            node_name(cluster, port)
        }
    };
    // Reads first: after a statement that ran on the primary as a write, the handle's
    // read-after-write promise may send the next read there too.
    for (relation, node) in [
        (format!("{t}_plain"), "replica"),
        (format!("{t}_mat"), "replica"),
        (format!("{t}_tab"), "replica"),
        (format!("{t}_locks"), "primary"),
        (format!("{t}_outer"), "primary"),
        (format!("{t}_fn"), "primary"),
        (format!("public.{t}_locks"), "primary"),
    ] {
        let served = served_by(relation.clone()).await;
        assert!(served.starts_with(node), "{relation} was read on {served}");
    }
    let locks = format!("select * from {t}_locks order by 1");
    assert_eq!(
        db.explain(&locks).await.unwrap().1,
        covet_replication::RouteReason::Write
    );
    // The catalog kept them off the standbys: none had to be refused there.
    assert_eq!(db.counters().refused_writes, refused);
}

#[tokio::test]
async fn unparseable_sql_runs_on_the_primary() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    // PostgreSQL accepts these; the parser does not. They must not be guessed onto a replica.
    let candidates = [
        "SELECT inet_server_port() FOR READ ONLY",
        "SELECT inet_server_port() FROM ROWS FROM (generate_series(1, 1)) AS x",
    ];
    let unparsed: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|sql| !classify(sql).is_parsed())
        .collect();
    assert!(
        !unparsed.is_empty(),
        "no candidate is unparseable any more: pick a new one"
    );
    let before = db.counters();
    for sql in &unparsed {
        let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(*sql))
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(node_name(cluster, port), "primary", "{sql}");
    }
    assert_eq!(db.counters().writes - before.writes, unparsed.len() as u64);
}

/// 100,000-term chains aborted the process with a stack overflow in the classifier. Through the
/// handle they run on the primary, on the test's own 2 MiB thread, and the process lives on.
#[tokio::test]
async fn hostile_deep_sql_runs_on_the_primary_without_crashing() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let chain = |op: &str| vec!["1 = 1"; 100_000].join(op);
    for sql in [
        format!("SELECT inet_server_port() WHERE {}", chain(" OR ")),
        format!("SELECT inet_server_port() WHERE {}", chain(" AND ")),
        format!("SELECT inet_server_port() WHERE 1{} = 1", "::int".repeat(100_000)),
    ] {
        // The server may refuse such a text (stack depth limit); what matters is who got it.
        match sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&db)
            .await
        {
            Ok(port) => assert_eq!(port.map(|p| node_name(cluster, p)).as_deref(), Some("primary")),
            Err(sqlx::Error::Database(e)) => assert_eq!(e.code().as_deref(), Some("54001"), "{e}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // They counted as writes (unknown text); once the replicas replayed them, reads go there.
    eventually(
        Duration::from_secs(10),
        || {
            format!(
                "no read reached a replica after the hostile statements: {}",
                db.status()
            )
        },
        || async { node_name(cluster, who(&db).await) != "primary" },
    )
    .await;
}

#[tokio::test]
async fn lsns_decode_from_and_bind_as_pg_lsn_in_both_wire_formats() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let expected: Lsn = "16/B374D848".parse().unwrap();
    // Prepared statements answer in binary; a bound Lsn goes out in binary.
    let (decoded, bound, bytes, null): (Lsn, Lsn, i64, Option<Lsn>) =
        sqlx::query_as("SELECT '16/B374D848'::pg_lsn, $1::pg_lsn, ($1::pg_lsn - '0/0'::pg_lsn)::int8, NULL::pg_lsn")
            .bind(Lsn(0x1_0000_0001))
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(decoded, expected);
    assert_eq!(bound.to_string(), "1/1");
    assert_eq!(bytes, 0x1_0000_0001);
    assert_eq!(null, None);
    // The simple protocol answers in text.
    let row = sqlx::raw_sql("SELECT '16/B374D848'::pg_lsn")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.get::<Lsn, _>(0), expected);
    // A type sqlx cannot decode as pg_lsn is refused, not misread.
    let wrong = sqlx::query_scalar::<_, Lsn>("SELECT 42::int8").fetch_one(&db).await;
    assert!(matches!(wrong, Err(sqlx::Error::ColumnDecode { .. })), "{wrong:?}");
}

#[tokio::test]
async fn a_write_the_primary_refuses_on_its_own_gets_its_error_after_the_retries() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("ro");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {t} (id int); CREATE FUNCTION {t}_write() RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN SET TRANSACTION READ ONLY; INSERT INTO {t} VALUES (1); END $$"
    )))
    .execute(&db)
    .await
    .unwrap();
    let before = db.counters().retries;
    // Refused (25006) by a primary that takes writes: the handle asks every node, finds the
    // primary writable, sends it again (nothing ran), and after the retries gives the error.
    let err = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {t}_write()")))
        .execute(&db)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("25006"),
        "{err}"
    );
    assert_eq!(db.counters().retries - before, 2, "sent three times in all");
    let mut conn = cluster.connect(cluster.primary()).await.unwrap();
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

/// `db.acquire()` is `PgPool::acquire`: the primary, and a connection APIs bounded on
/// `AsMut<PgConnection>` take (sqlx's advisory locks).
#[tokio::test]
async fn acquire_hands_out_a_primary_connection_that_takes_an_advisory_lock() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    // A targeted connection is acquire_on's (first: a primary connection handed out makes the
    // handle's reads wait for its position, and a replica-only target is refused meanwhile).
    let replica = db.acquire_on(Target::Replica).await.unwrap();
    assert_ne!(replica.node().as_str(), "primary");
    drop(replica);
    let conn = db.acquire().await.unwrap();
    assert_eq!(conn.node().as_str(), "primary");
    let lock = sqlx::postgres::PgAdvisoryLock::new("covet-acquire-test");
    let guard = lock.acquire(conn).await.unwrap();
    // Held: another connection does not get it, and gets it once released.
    let other = lock.try_acquire(db.acquire().await.unwrap()).await.unwrap();
    let other = other.right().expect("the lock is held");
    let released = guard.release_now().await.unwrap();
    let again = lock.try_acquire(other).await.unwrap();
    assert!(again.is_left(), "the lock is free again");
    drop((released, again));
}

/// `PgPool`'s other methods, on the handle: `begin_with`, `try_begin`, `is_closed`, `size`,
/// `num_idle`, `connect_options`.
#[tokio::test]
async fn the_handle_has_pgpools_begin_with_try_begin_and_pool_getters() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let mut tx = db.begin_with("BEGIN ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    let port: i32 = sqlx::query_scalar(WHO).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(level, "serializable");
    tx.rollback().await.unwrap();
    // The connection goes back to the pool (on a task of sqlx's): then try_begin gets it
    // without waiting.
    let mut idle = None;
    for _ in 0..100 {
        idle = db.try_begin().await.unwrap();
        if idle.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut idle = idle.expect("an idle primary connection");
    let port: i32 = sqlx::query_scalar(WHO).fetch_one(&mut *idle).await.unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    drop(idle);
    assert!(
        db.size() >= 1 && db.num_idle() <= db.size() as usize,
        "{} {}",
        db.size(),
        db.num_idle()
    );
    let primary_port = cluster.nodes()[cluster.primary()].port;
    assert_eq!(db.connect_options().get_port(), primary_port);
    assert!(!db.is_closed());
    db.close().await;
    assert!(db.is_closed());
}

/// `PgPoolOptions::new().max_connections(n).after_connect(..).connect(url)` has its
/// counterpart: sizes and sqlx's three hooks on every node's pool. The hooks run on the
/// replicas as on the primary (a read takes an idle replica connection without sqlx's
/// acquire path, which would skip `before_acquire`).
#[tokio::test]
async fn pool_options_set_sizes_and_sqlx_hooks_on_every_node() {
    use sqlx::Executor;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    type Ports = Arc<Mutex<BTreeSet<i32>>>;
    async fn port_into(conn: &mut sqlx::PgConnection, ports: &Ports) -> Result<bool, sqlx::Error> {
        let port: i32 = sqlx::query_scalar("SELECT inet_server_port()").fetch_one(conn).await?;
        ports.lock().unwrap().insert(port);
        Ok(true)
    }
    let cluster = shared_cluster().await;
    let (acquired, released): (Ports, Ports) = Default::default();
    let (a, r) = (Arc::clone(&acquired), Arc::clone(&released));
    let db = covet_replication::ReplicatedPoolOptions::new()
        .max_connections(3)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("SET statement_timeout = '1234ms'").await?;
                Ok(())
            })
        })
        .before_acquire(move |conn, _| {
            let a = Arc::clone(&a);
            Box::pin(async move { port_into(conn, &a).await })
        })
        .after_release(move |conn, _| {
            let r = Arc::clone(&r);
            Box::pin(async move { port_into(conn, &r).await })
        })
        .connect_with(test_config(cluster))
        .await
        .unwrap();
    for node in db.status().nodes {
        assert_eq!(node.pool_max, 3, "{}", node.id);
    }
    // As PgPool::options: the primary pool's.
    assert_eq!(db.options().get_max_connections(), 3);
    // Each node by name, ten times: more than its pool holds, so some acquires find an idle
    // connection (the only ones `before_acquire` sees). `Target::Replica` could leave a replica
    // with one read, on a new connection.
    let mut seen = BTreeSet::new();
    for target in db.status().nodes.into_iter().map(|n| Target::Node(n.id.to_string())) {
        for _ in 0..10 {
            let (timeout, port): (String, i32) =
                sqlx::query_as("SELECT current_setting('statement_timeout'), inet_server_port()")
                    .fetch_one(&db.using(target.clone()))
                    .await
                    .unwrap();
            assert_eq!(
                timeout,
                "1234ms",
                "after_connect did not run on {}",
                node_name(cluster, port)
            );
            seen.insert(port);
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    eventually(
        Duration::from_secs(5),
        || format!("served by {seen:?}; before_acquire on {acquired:?}, after_release on {released:?}"),
        || async { *acquired.lock().unwrap() == seen && *released.lock().unwrap() == seen },
    )
    .await;
}

/// Which node served a statement, without `inet_server_port()`: `Session::last_route`, checked
/// here against `inet_server_port()` for every statement; and router counters over a window.
#[tokio::test]
async fn a_session_says_which_node_served_its_last_statement() {
    let cluster = shared_cluster().await;
    let db = connect(test_config(cluster)).await;
    let t = table("served");
    cluster.execute(0, &format!("CREATE TABLE {t} (id int)")).await.unwrap();
    cluster.wait_streaming().await.unwrap();
    let session = db.session_with(covet_replication::Consistency::Eventual);
    assert_eq!(session.last_route(), None);
    let before = db.counters();
    let mut on = HashMap::new();
    for _ in 0..20 {
        let port: i32 = sqlx::query_scalar(WHO).fetch_one(&session).await.unwrap();
        let served = session.last_route().unwrap();
        assert_eq!(served.node.as_str(), node_name(cluster, port));
        assert_eq!(
            (served.role, served.reason),
            (Role::Replica, RouteReason::ReadPreference)
        );
        *on.entry(served.node.to_string()).or_insert(0) += 1;
    }
    assert!(on.keys().all(|n| n.starts_with("replica")), "{on:?}");
    let port: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {t} VALUES (1) RETURNING inet_server_port()"
    )))
    .fetch_one(&session)
    .await
    .unwrap();
    let served = session.last_route().unwrap();
    assert_eq!(
        (served.node.as_str(), served.role, served.reason),
        ("primary", Role::Primary, RouteReason::Write)
    );
    assert_eq!(node_name(cluster, port), "primary");
    let port: i32 = sqlx::query_scalar(WHO)
        .fetch_one(&session.using(Target::Node("replica2".into())))
        .await
        .unwrap();
    let served = session.last_route().unwrap();
    assert_eq!(
        (served.node.as_str(), served.reason),
        ("replica2", RouteReason::Override)
    );
    assert_eq!(node_name(cluster, port), "replica2");
    // Through the plain handle, inside the session's scope.
    let port: i32 = session
        .scope(async { sqlx::query_scalar(WHO).fetch_one(&db.using(Target::Primary)).await })
        .await
        .unwrap();
    assert_eq!(node_name(cluster, port), "primary");
    assert_eq!(session.last_route().unwrap().node.as_str(), "primary");

    let window = db.counters().since(&before);
    assert_eq!(
        (
            window.to_replica,
            window.to_primary,
            window.by_class.read,
            window.by_class.write
        ),
        (21, 2, 22, 1),
        "{window:?}"
    );
    assert_eq!(db.counters().since(&db.counters()).to_replica, 0);
}
