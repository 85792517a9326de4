//! The ORM against a real primary and hot standbys: `#[derive(Model)]`, QuerySets, instance
//! writes, routing (asserting which server answered), hostile values, the global handle, and
//! sessions and per-query consistency under real replication lag.
//!
//! The tables come from `migrations/` (applied once per test binary). Tests run concurrently
//! on them, so each test owns the rows whose email ends with its own domain. The lag tests
//! start clusters of their own: an apply delay would disturb the shared one.

use std::time::Duration;

use covet_replication::testing::LocalCluster;
use covet_replication::{Consistency, Error, Model, ReplicatedPool, Target, orm::Expr};
use covet_tests::{connect, node_name, shared_cluster, test_config};
use tokio::sync::OnceCell;

#[derive(Debug, Clone, PartialEq, Model)]
#[model(table = "users")]
pub struct User {
    #[model(primary_key, default)]
    pub id: Option<i64>,
    pub email: String,
    #[model(column = "name")]
    pub full_name: String,
    pub age: Option<i32>,
    #[model(default)]
    pub active: Option<bool>,
    pub bio: Option<String>,
    pub avatar: Option<Vec<u8>>,
    #[model(skip)]
    pub scratch: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Model)]
#[model(table = "orders")]
pub struct Order {
    #[model(primary_key, default)]
    pub id: Option<i64>,
    pub user_id: i64,
    #[model(default)]
    pub status: Option<String>,
    pub total_cents: i64,
    pub note: Option<String>,
    #[model(default)]
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Model)]
#[model(table = "products")]
pub struct Product {
    #[model(primary_key)]
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    #[model(default)]
    pub tags: Option<serde_json::Value>,
}

/// Which server answered: a view, so that reading it through a QuerySet shows where the read ran.
#[derive(Debug, Model)]
#[model(table = "orm_who")]
pub struct Who {
    #[model(primary_key)]
    pub id: i32,
    pub port: i32,
    pub standby: bool,
}

/// Which server wrote: the column's default is the writer's port.
#[derive(Debug, Model)]
#[model(table = "orm_probe")]
pub struct Probe {
    #[model(primary_key, default)]
    pub id: Option<i64>,
    pub note: String,
    #[model(default)]
    pub port: Option<i32>,
}

/// The migrations and the probe objects, once per test binary, on the shared cluster.
async fn schema() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let cluster = shared_cluster().await;
        let db = ReplicatedPool::connect(test_config(cluster)).await.expect("connect");
        covet_replication::orm::migrate(&db, &sqlx::migrate!("../migrations"))
            .await
            .expect("migrate");
        for sql in [
            "CREATE VIEW orm_who AS SELECT 1 AS id, inet_server_port() AS port, pg_is_in_recovery() AS standby",
            "CREATE TABLE orm_probe (id bigserial PRIMARY KEY, note text NOT NULL, port int NOT NULL DEFAULT inet_server_port())",
        ] {
            sqlx::query(sql).execute(&db.using(Target::Primary)).await.expect("probe objects");
        }
        db.close().await;
        cluster.wait_streaming().await.expect("streaming");
    })
    .await;
}

async fn pool() -> ReplicatedPool {
    schema().await;
    connect(test_config(shared_cluster().await)).await
}

fn user(email: &str, name: &str, age: Option<i32>) -> User {
    User {
        id: None,
        email: email.into(),
        full_name: name.into(),
        age,
        active: None,
        bio: None,
        avatar: None,
        scratch: vec!["not a column".into()],
    }
}

/// Waits until every standby has replayed what the primary wrote so far.
async fn replicated() {
    shared_cluster().await.wait_streaming().await.expect("streaming");
}

fn emails(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.email.as_str()).collect()
}

#[tokio::test]
async fn queryset_operations_return_the_right_rows() {
    let db = pool().await;
    let mine = || User::objects().filter(User::EMAIL.ends_with("@ops.test"));
    for (email, name, age) in [
        ("ana@ops.test", "Ana", Some(31)),
        ("bo@ops.test", "Bo", Some(17)),
        ("cy@ops.test", "Cy", None),
        ("di@ops.test", "Di", Some(45)),
        ("ed@ops.test", "ed", Some(31)),
    ] {
        let mut u = user(email, name, age);
        u.insert_on(&db).await.unwrap();
        assert!(u.id.is_some(), "the server's id was returned");
        assert_eq!(u.active, Some(true), "the server default was returned");
        assert_eq!(u.scratch, ["not a column"], "a skipped field is left alone");
    }
    replicated().await;

    let by_age = mine()
        .order_by(User::AGE.asc())
        .order_by(User::EMAIL)
        .all_on(&db)
        .await
        .unwrap();
    // NULLs sort last in ascending order.
    assert_eq!(
        emails(&by_age),
        [
            "bo@ops.test",
            "ana@ops.test",
            "ed@ops.test",
            "di@ops.test",
            "cy@ops.test"
        ]
    );
    assert!(
        by_age.iter().all(|u| u.scratch.is_empty()),
        "skipped fields load as Default"
    );
    let q = |e: Expr<User>| mine().filter(e).order_by(User::EMAIL);
    let cases: Vec<(Expr<User>, &[&str])> = vec![
        (User::AGE.eq(31), &["ana@ops.test", "ed@ops.test"]),
        (User::AGE.ne(31), &["bo@ops.test", "di@ops.test"]),
        (User::AGE.gt(31), &["di@ops.test"]),
        (User::AGE.gte(31), &["ana@ops.test", "di@ops.test", "ed@ops.test"]),
        (User::AGE.lt(31), &["bo@ops.test"]),
        (User::AGE.lte(31), &["ana@ops.test", "bo@ops.test", "ed@ops.test"]),
        (User::AGE.is_null(), &["cy@ops.test"]),
        (
            User::AGE.is_not_null(),
            &["ana@ops.test", "bo@ops.test", "di@ops.test", "ed@ops.test"],
        ),
        (
            User::FULL_NAME.is_in(["Bo", "Di", "nobody"]),
            &["bo@ops.test", "di@ops.test"],
        ),
        (User::FULL_NAME.is_in(Vec::<String>::new()), &[]),
        (
            User::FULL_NAME.not_in(["Ana", "Bo"]),
            &["cy@ops.test", "di@ops.test", "ed@ops.test"],
        ),
        (User::FULL_NAME.like("_d"), &["ed@ops.test"]),
        (User::FULL_NAME.like("E%"), &[]),
        (User::FULL_NAME.ilike("E%"), &["ed@ops.test"]),
        (User::EMAIL.starts_with("d"), &["di@ops.test"]),
        (User::EMAIL.contains("y@"), &["cy@ops.test"]),
        (User::FULL_NAME.icontains("A"), &["ana@ops.test"]),
        (User::AGE.gt(40) | User::AGE.lt(18), &["bo@ops.test", "di@ops.test"]),
        (User::AGE.gt(20) & User::FULL_NAME.eq("ed"), &["ed@ops.test"]),
        (!User::AGE.eq(31), &["bo@ops.test", "di@ops.test"]),
        (
            Expr::any([User::FULL_NAME.eq("Cy"), User::AGE.eq(17)]),
            &["bo@ops.test", "cy@ops.test"],
        ),
    ];
    for (expr, expected) in cases {
        let sql = expr.to_sql();
        let got = q(expr).all_on(&db).await.unwrap();
        assert_eq!(emails(&got), expected, "{sql}");
    }
    let excluded = mine()
        .exclude(User::AGE.eq(31))
        .order_by(User::EMAIL)
        .all_on(&db)
        .await
        .unwrap();
    assert_eq!(
        emails(&excluded),
        ["bo@ops.test", "di@ops.test"],
        "NULL ages are excluded too, as in SQL"
    );

    let page = mine()
        .order_by(User::EMAIL.desc())
        .limit(2)
        .offset(1)
        .all_on(&db)
        .await
        .unwrap();
    assert_eq!(emails(&page), ["di@ops.test", "cy@ops.test"]);
    assert_eq!(mine().count_on(&db).await.unwrap(), 5);
    assert_eq!(mine().limit(3).count_on(&db).await.unwrap(), 3);
    assert_eq!(mine().offset(4).count_on(&db).await.unwrap(), 1);
    assert!(mine().filter(User::AGE.eq(45)).exists_on(&db).await.unwrap());
    assert!(!mine().filter(User::AGE.eq(46)).exists_on(&db).await.unwrap());
    let first = mine().order_by(User::AGE.desc()).first_on(&db).await.unwrap().unwrap();
    assert_eq!(first.email, "cy@ops.test", "NULLs sort first in descending order");
    let first_by_pk = mine().first_on(&db).await.unwrap().unwrap();
    assert_eq!(first_by_pk.email, "ana@ops.test", "without order_by: by primary key");
    assert!(mine().filter(User::AGE.eq(99)).first_on(&db).await.unwrap().is_none());
    let got = User::objects().get_on(first_by_pk.id.unwrap(), &db).await.unwrap();
    assert_eq!(
        got,
        User {
            scratch: vec![],
            ..first_by_pk.clone()
        }
    );
    assert!(matches!(
        User::objects().get_on(-1, &db).await,
        Err(sqlx::Error::RowNotFound)
    ));
    let filtered_out = mine()
        .filter(User::AGE.eq(17))
        .get_on(first_by_pk.id.unwrap(), &db)
        .await;
    assert!(
        matches!(filtered_out, Err(sqlx::Error::RowNotFound)),
        "get() honours the filters"
    );

    let changed = mine()
        .filter(User::AGE.eq(31))
        .update_on([User::BIO.set("thirty-one"), User::AGE.set(32)], &db)
        .await
        .unwrap();
    assert_eq!(changed, 2);
    let oldest = mine().order_by(User::AGE.desc()).order_by(User::EMAIL).limit(1);
    assert_eq!(oldest.update_on([User::BIO.set("oldest")], &db).await.unwrap(), 1);
    assert_eq!(mine().filter(User::FULL_NAME.eq("Bo")).delete_on(&db).await.unwrap(), 1);
    replicated().await;
    assert_eq!(
        mine().filter(User::BIO.eq("thirty-one")).count_on(&db).await.unwrap(),
        2
    );
    assert_eq!(mine().filter(User::AGE.eq(32)).count_on(&db).await.unwrap(), 2);
    assert_eq!(mine().count_on(&db).await.unwrap(), 4);
    // The limited update hit the first row in its order only (`cy`, whose age is NULL).
    let oldest = mine().filter(User::BIO.eq("oldest")).all_on(&db).await.unwrap();
    assert_eq!(emails(&oldest), ["cy@ops.test"]);

    assert_eq!(mine().order_by(User::EMAIL).limit(1).delete_on(&db).await.unwrap(), 1);
    assert_eq!(mine().delete_on(&db).await.unwrap(), 3);
    replicated().await;
    assert!(!mine().exists_on(&db).await.unwrap());
}

#[tokio::test]
async fn instance_save_inserts_then_updates_and_fills_server_defaults() {
    let db = pool().await;
    let mut owner = user("owner@save.test", "Owner", Some(40));
    owner.save_on(&db).await.unwrap();
    let owner_id = owner.id.expect("inserted");

    let mut order = Order {
        id: None,
        user_id: owner_id,
        status: None,
        total_cents: 1250,
        note: Some("leave at the door".into()),
        metadata: None,
    };
    order.save_on(&db).await.unwrap();
    assert!(order.id.is_some());
    assert_eq!(order.status.as_deref(), Some("new"), "column default");
    assert_eq!(order.metadata, Some(serde_json::json!({})));

    // By primary key now: an update that keeps what it was not given.
    order.total_cents = 1500;
    order.metadata = Some(serde_json::json!({"gift": true, "quote": "it's \"fine\""}));
    order.status = None; // None: leave the stored status alone
    order.save_on(&db).await.unwrap();
    assert_eq!(order.status.as_deref(), Some("new"));
    order.status = Some("paid".into());
    order.save_on(&db).await.unwrap();
    let fresh = Order::objects()
        .using(Target::Primary)
        .get_on(order.id.unwrap(), &db)
        .await
        .unwrap();
    assert_eq!(fresh, order);
    assert_eq!(fresh.metadata.as_ref().unwrap()["quote"], "it's \"fine\"");

    // A natural key: save() inserts or updates by it.
    let mut p = Product {
        sku: "SKU-'1'".into(),
        name: "Widget".into(),
        price_cents: 999,
        tags: None,
    };
    p.save_on(&db).await.unwrap();
    assert_eq!(p.tags, Some(serde_json::json!([])));
    p.price_cents = 1099;
    p.tags = Some(serde_json::json!(["sale"]));
    p.save_on(&db).await.unwrap();
    let again = Product::objects()
        .using(Target::Primary)
        .get_on("SKU-'1'", &db)
        .await
        .unwrap();
    assert_eq!(again, p);
    assert!(matches!(p.clone().insert_on(&db).await, Err(sqlx::Error::Database(e)) if e.is_unique_violation()));

    // Deleting the owner cascades to the order.
    assert!(owner.delete_on(&db).await.unwrap());
    assert!(!owner.delete_on(&db).await.unwrap(), "already gone");
    assert!(p.delete_on(&db).await.unwrap());
    let orders = Order::objects()
        .using(Target::Primary)
        .filter(Order::USER_ID.eq(owner_id));
    assert_eq!(orders.count_on(&db).await.unwrap(), 0);
    let never_saved = user("never@save.test", "N", None);
    assert!(!never_saved.delete_on(&db).await.unwrap());
}

#[tokio::test]
async fn reads_are_served_by_replicas_and_writes_by_the_primary() {
    let cluster = shared_cluster().await;
    let db = pool().await;
    let who = || Who::objects();

    // Default routing: every QuerySet read on a standby.
    let before = db.counters();
    for _ in 0..20 {
        let w = who().first_on(&db).await.unwrap().unwrap();
        assert_ne!(node_name(cluster, w.port), "primary");
        assert!(w.standby);
    }
    assert_eq!(who().count_on(&db).await.unwrap(), 1);
    assert!(who().exists_on(&db).await.unwrap());
    let after = db.counters();
    assert_eq!(after.to_replica - before.to_replica, 22);
    assert_eq!(after.to_primary, before.to_primary);
    // The parser, asked separately, agrees with the QuerySet's own classification.
    let (node, _) = db.explain(&who().to_sql()).await.unwrap();
    assert_ne!(node.as_str(), "primary");

    // .using() pins the read.
    let at = |t: Target| who().using(t);
    let w = at(Target::Primary).first_on(&db).await.unwrap().unwrap();
    assert_eq!(node_name(cluster, w.port), "primary");
    assert!(!w.standby);
    let w = at(Target::Node("replica2".into()))
        .first_on(&db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node_name(cluster, w.port), "replica2");
    let w = at(Target::Region("eu".into())).get_on(1, &db).await.unwrap();
    assert_eq!(node_name(cluster, w.port), "replica1");
    let w = at(Target::Replica).all_on(&db).await.unwrap();
    assert!(w[0].standby);
    // A handle's own target applies when the QuerySet has none; the QuerySet's wins.
    let w = who().first_on(&db.using(Target::Primary)).await.unwrap().unwrap();
    assert_eq!(node_name(cluster, w.port), "primary");
    let w = at(Target::Node("replica1".into()))
        .first_on(&db.using(Target::Primary))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(node_name(cluster, w.port), "replica1");

    // Writes: on the primary, even through a handle pinned to a replica.
    let replica_handle = db.using(Target::Replica);
    let before = db.counters();
    let mut p = Probe {
        id: None,
        note: "routing".into(),
        port: None,
    };
    p.insert_on(&replica_handle).await.unwrap();
    assert_eq!(node_name(cluster, p.port.unwrap()), "primary");
    p.note = "saved".into();
    p.save_on(&replica_handle).await.unwrap();
    let mine = || Probe::objects().filter(Probe::ID.eq(p.id.unwrap()));
    assert_eq!(
        mine()
            .update_on([Probe::NOTE.set("updated")], &replica_handle)
            .await
            .unwrap(),
        1
    );
    assert_eq!(mine().delete_on(&replica_handle).await.unwrap(), 1);
    let after = db.counters();
    assert_eq!(after.to_primary - before.to_primary, 4);
    assert_eq!(after.to_replica, before.to_replica);
    assert_eq!(after.errors, before.errors);
}

#[tokio::test]
async fn hostile_values_round_trip_as_data() {
    let db = pool().await;
    let values = [
        "O'Brien",
        "\"double\" 'single' `back`",
        "100% _sure_",
        r"C:\path\to\file \\ \' \%",
        "'; DROP TABLE users; --",
        "\" OR 1=1; --",
        "$1 $2 ?",
        "/* covet:replica */ DELETE FROM users",
        "ünïcødé ✓ 𝄞",
        "",
    ];
    let mut ids = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let mut u = user(&format!("{i}{v}@hostile.test"), v, Some(i as i32));
        u.bio = Some(v.to_string());
        u.avatar = Some(v.as_bytes().to_vec());
        u.insert_on(&db).await.unwrap();
        ids.push(u.id.unwrap());
    }
    replicated().await;
    let mine = || User::objects().filter(User::EMAIL.ends_with("@hostile.test"));
    for (i, v) in values.iter().enumerate() {
        let u = User::objects().get_on(ids[i], &db).await.unwrap();
        assert_eq!((u.full_name.as_str(), u.bio.as_deref()), (*v, Some(*v)));
        assert_eq!(u.avatar.as_deref(), Some(v.as_bytes()));
        // Equality, and the literal-text matchers, find exactly this row.
        for e in [
            User::FULL_NAME.eq(*v),
            User::BIO.eq(*v),
            User::FULL_NAME.contains(v),
            User::FULL_NAME.starts_with(v),
            User::FULL_NAME.iends_with(v),
        ] {
            let sql = e.to_sql();
            let hits = mine()
                .filter(e)
                .filter(User::AGE.eq(i as i32))
                .count_on(&db)
                .await
                .unwrap();
            assert_eq!(hits, 1, "{v:?} via {sql}");
        }
        let hits = mine().filter(User::FULL_NAME.eq(*v)).count_on(&db).await.unwrap();
        assert_eq!(hits, 1, "{v:?} matches only itself");
    }
    // contains() escapes the wildcards; like() takes a pattern.
    let c = |e| mine().filter(e).count_on(&db);
    assert_eq!(
        c(User::FULL_NAME.contains("%")).await.unwrap(),
        2,
        "literal %: '100% _sure_' and the path"
    );
    assert_eq!(c(User::FULL_NAME.contains("_")).await.unwrap(), 1);
    assert_eq!(
        c(User::FULL_NAME.like("%")).await.unwrap(),
        values.len() as i64,
        "a pattern: % is any text"
    );
    assert_eq!(
        c(User::FULL_NAME.like(r"100\% \_sure\_")).await.unwrap(),
        1,
        "escaped by the caller"
    );
    assert_eq!(c(User::FULL_NAME.contains(r"\")).await.unwrap(), 1);
    // Updates bind too.
    let n = mine()
        .filter(User::FULL_NAME.eq("'; DROP TABLE users; --"))
        .update_on([User::BIO.set("x'); DELETE FROM users; --")], &db)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // NUL: PostgreSQL text cannot hold it. A clear database error, no panic, nothing written.
    let before = mine().using(Target::Primary).count_on(&db).await.unwrap();
    let mut nul = user("nul\0@hostile.test", "nul\0name", None);
    let err = nul.insert_on(&db).await.unwrap_err();
    let sqlx::Error::Database(e) = &err else {
        panic!("expected a database error, got {err:?}")
    };
    assert_eq!(e.code().as_deref(), Some("22021"), "invalid byte sequence: {e}");
    assert!(nul.id.is_none());
    let err = mine()
        .filter(User::FULL_NAME.eq("O'Brien"))
        .update_on([User::BIO.set("a\0b")], &db)
        .await
        .unwrap_err();
    assert!(matches!(err, sqlx::Error::Database(_)), "{err:?}");
    let err = mine()
        .filter(User::FULL_NAME.eq("a\0b"))
        .count_on(&db)
        .await
        .unwrap_err();
    assert!(
        matches!(err, sqlx::Error::Database(_)),
        "a NUL in a filter is refused too: {err:?}"
    );
    assert_eq!(mine().using(Target::Primary).count_on(&db).await.unwrap(), before);
    let o = mine()
        .using(Target::Primary)
        .filter(User::FULL_NAME.eq("O'Brien"))
        .first_on(&db)
        .await
        .unwrap();
    assert_eq!(
        o.unwrap().bio.as_deref(),
        Some("O'Brien"),
        "the failed update changed nothing"
    );

    // The table is still there.
    assert_eq!(mine().delete_on(&db).await.unwrap(), values.len() as u64);
}

#[tokio::test]
async fn transactions_run_model_writes_on_their_connection() {
    let db = pool().await;
    let mut tx = db.begin().await.unwrap();
    let mut u = user("tx@tx.test", "Tx", None);
    u.insert_on(&mut tx).await.unwrap();
    let mine = || User::objects().filter(User::EMAIL.eq("tx@tx.test"));
    assert_eq!(mine().count_on(&mut tx).await.unwrap(), 1, "visible inside");
    tx.rollback().await.unwrap();
    assert_eq!(
        mine().using(Target::Primary).count_on(&db).await.unwrap(),
        0,
        "rolled back"
    );

    let mut tx = db.begin().await.unwrap();
    u.id = None;
    u.save_on(&mut tx).await.unwrap();
    mine().update_on([User::AGE.set(7)], &mut tx).await.unwrap();
    tx.commit().await.unwrap();
    let got = mine().using(Target::Primary).first_on(&db).await.unwrap().unwrap();
    assert_eq!(got.age, Some(7));
    assert!(got.delete_on(&db).await.unwrap());
}

/// The only test that installs the global handle (others pass theirs): the handle belongs to
/// this test's runtime.
#[tokio::test]
async fn the_global_handle() {
    schema().await;
    let err = User::objects().count().await.unwrap_err();
    assert!(matches!(Error::from_sqlx(&err), Some(Error::NotSetUp)), "{err:?}");
    assert!(matches!(covet_replication::db(), Err(Error::NotSetUp)));
    let mut u = user("g@global.test", "G", None);
    let err = u.save().await.unwrap_err();
    assert!(matches!(Error::from_sqlx(&err), Some(Error::NotSetUp)), "{err:?}");

    let cluster = shared_cluster().await;
    let db = covet_replication::setup_replication(test_config(cluster))
        .await
        .unwrap();
    covet_tests::wait_states(
        &db,
        covet_replication::NodeState::Healthy,
        std::time::Duration::from_secs(20),
    )
    .await;
    let global = covet_replication::db().unwrap();
    assert_eq!(global.manager().nodes().len(), 3);
    assert_eq!(global.status().nodes.len(), 3);
    let failover = global.failover();
    assert!(!failover.in_progress() && failover.history().is_empty());
    // The accessor reaches the same manager: a failover of a live primary is refused.
    assert!(matches!(
        failover.failover(None).await,
        Err(Error::Failover(
            covet_replication::failover::FailoverError::PrimaryAlive { .. }
        ))
    ));
    assert_eq!(db.failover().history().len(), 1);

    u.save().await.unwrap();
    u.insert().await.unwrap_err(); // a duplicate email
    let mine = || User::objects().filter(User::EMAIL.ends_with("@global.test"));
    assert_eq!(mine().using(Target::Primary).count().await.unwrap(), 1);
    assert_eq!(mine().update([User::AGE.set(3)]).await.unwrap(), 1);
    replicated().await;
    assert_eq!(mine().all().await.unwrap()[0].age, Some(3));
    assert_eq!(mine().first().await.unwrap().unwrap().id, u.id);
    assert_eq!(User::objects().get(u.id.unwrap()).await.unwrap().email, "g@global.test");
    assert!(mine().exists().await.unwrap());
    let w = Who::objects().first().await.unwrap().unwrap();
    assert!(w.standby, "the global handle routes reads to replicas");
    assert!(u.delete().await.unwrap());
    assert_eq!(mine().delete().await.unwrap(), 0);
    db.close().await;
}

/// A row of the lag tests; `port` is the server that wrote it (the column's default).
#[derive(Debug, Model)]
#[model(table = "lag_probe")]
pub struct LagProbe {
    #[model(primary_key, default)]
    pub id: Option<i64>,
    pub note: String,
    #[model(default)]
    pub port: Option<i32>,
}

impl LagProbe {
    fn new(note: &str) -> Self {
        LagProbe {
            id: None,
            note: note.into(),
            port: None,
        }
    }
}

/// The rows of `lag_probe` through a view that adds the port of the server that read them.
#[derive(Debug, Model)]
#[model(table = "lag_probe_seen")]
pub struct Seen {
    #[model(primary_key)]
    pub id: i64,
    pub note: String,
    pub served_by: i32,
}

/// A cluster of its own whose two standbys replay 2 s behind the primary, and a pool on it.
async fn lagging_cluster() -> (LocalCluster, ReplicatedPool) {
    let cluster = LocalCluster::builder().replicas(2).start().await.unwrap();
    cluster
        .execute(
            0,
            "CREATE TABLE lag_probe (id bigserial PRIMARY KEY, note text NOT NULL, \
                 port int NOT NULL DEFAULT inet_server_port()); \
             CREATE VIEW lag_probe_seen AS SELECT id, note, inet_server_port() AS served_by FROM lag_probe; \
             CREATE VIEW orm_who AS SELECT 1 AS id, inet_server_port() AS port, pg_is_in_recovery() AS standby",
        )
        .await
        .unwrap();
    cluster.wait_streaming().await.unwrap();
    for r in cluster.replicas() {
        cluster.set_apply_delay(r, Duration::from_secs(2)).await.unwrap();
    }
    let db = connect(test_config(&cluster)).await;
    (cluster, db)
}

/// Reads row `id` through `db` at `level` (`None`: the executor's own): where it was read, or
/// `None` if the read missed it.
async fn seen_at(id: i64, level: Option<Consistency>, db: impl covet_replication::orm::ModelExecutor) -> Option<i32> {
    let q = Seen::objects().filter(Seen::ID.eq(id));
    let q = match level {
        Some(level) => q.consistency(level),
        None => q,
    };
    q.first_on(db).await.unwrap().map(|s| s.served_by)
}

/// Where a read of `orm_who` through `db` at `level` ran: `(port, standby)`.
async fn who_at(level: Option<Consistency>, db: impl covet_replication::orm::ModelExecutor) -> (i32, bool) {
    let q = Who::objects();
    let q = match level {
        Some(level) => q.consistency(level),
        None => q,
    };
    let w = q.first_on(db).await.unwrap().unwrap();
    (w.port, w.standby)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_querysets_read_their_writes_under_two_seconds_of_lag() {
    let (cluster, db) = lagging_cluster().await;
    let other = connect(test_config(&cluster)).await; // another process, as far as routing goes
    let name = |port| node_name(&cluster, port);
    const ROUNDS: usize = 20;

    // Reads with no write before them are served by the lagging standbys.
    for _ in 0..5 {
        let (port, standby) = who_at(None, &db.session()).await;
        assert!(standby && name(port) != "primary", "{}", name(port));
    }

    // Read-after-write sessions: save, then a QuerySet read through the same session. The
    // standbys are 2 s behind, so only the primary can serve it.
    let (mut stale, mut on_primary, mut by_token) = (0, 0, 0);
    for i in 0..ROUNDS {
        let session = db.session();
        let mut p = LagProbe::new(&format!("session {i}"));
        p.save_on(&session).await.unwrap();
        assert_eq!(name(p.port.unwrap()), "primary", "writes run on the primary");
        assert!(session.watermark().is_some(), "the save moved the session's watermark");
        let id = p.id.unwrap();
        match seen_at(id, None, &session).await {
            None => stale += 1,
            Some(port) => on_primary += usize::from(name(port) == "primary"),
        }
        // An update through a QuerySet moves it too; the next read sees the new value.
        let n = LagProbe::objects()
            .filter(LagProbe::ID.eq(id))
            .update_on([LagProbe::NOTE.set("updated")], &session)
            .await
            .unwrap();
        assert_eq!(n, 1);
        let again = Seen::objects().get_on(id, &session).await.unwrap();
        assert_eq!(again.note, "updated");
        // Inside `Session::scope`, the plain handle reads in the session too.
        let scoped = session.scope(seen_at(id, None, &db)).await;
        assert_eq!(scoped.map(name).as_deref(), Some("primary"), "scoped");
        assert_eq!(
            seen_at(id, None, &db).await,
            None,
            "outside the scope: a standby, behind"
        );
        // The token carries the guarantee to another pool.
        let reader = other.session_from_token(&session.token()).unwrap();
        by_token += usize::from(seen_at(id, None, &reader).await.is_some());
    }
    assert_eq!(stale, 0, "read-after-write sessions must see their saves");
    assert_eq!(
        on_primary, ROUNDS,
        "with the standbys 2 s behind, the primary served them"
    );
    assert_eq!(by_token, ROUNDS, "sessions continued from tokens see the writes too");

    // A read pinned to a replica cannot fall back to the primary: an error, not stale data
    // (no replica is eligible, as their measured lag leaves no chance to catch up in time).
    let session = db.session();
    LagProbe::new("pinned").save_on(&session).await.unwrap();
    let err = Who::objects()
        .using(Target::Replica)
        .first_on(&session)
        .await
        .unwrap_err();
    assert!(
        matches!(
            Error::from_sqlx(&err),
            Some(Error::NoEligibleReplica { .. } | Error::NotCaughtUp { .. })
        ),
        "{err:?}"
    );

    // Proof that the check can fail: eventual sessions read the standbys and miss their saves.
    let mut missed = 0;
    for i in 0..ROUNDS {
        let session = db.session_with(Consistency::Eventual);
        let mut p = LagProbe::new(&format!("eventual {i}"));
        p.save_on(&session).await.unwrap();
        missed += usize::from(seen_at(p.id.unwrap(), None, &session).await.is_none());
        let (port, standby) = who_at(None, &session).await;
        assert!(standby, "an eventual read after a write: {}", name(port));
    }
    assert!(
        missed * 10 >= ROUNDS * 9,
        "eventual sessions must miss their writes under 2 s of lag: {missed} of {ROUNDS}"
    );
    println!("{:?}", db.consistency_counters());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_query_consistency_overrides_the_session_for_one_read() {
    let (cluster, db) = lagging_cluster().await;
    let name = |port| node_name(&cluster, port);
    let primary = |(port, standby): (i32, bool)| !standby && name(port) == "primary";
    let replica = |(port, standby): (i32, bool)| standby && name(port) != "primary";
    const ROUNDS: usize = 10;

    for i in 0..ROUNDS {
        // A read-after-write session that just wrote: it reads on the primary ...
        let session = db.session();
        let mut p = LagProbe::new(&format!("override {i}"));
        p.save_on(&session).await.unwrap();
        let id = p.id.unwrap();
        assert!(primary(who_at(None, &session).await));
        // ... but `Eventual` for one query allows any replica, which misses the write;
        assert!(replica(who_at(Some(Consistency::Eventual), &session).await));
        assert_eq!(seen_at(id, Some(Consistency::Eventual), &session).await, None);
        // the session itself is unchanged: its next read still sees the write;
        assert_eq!(seen_at(id, None, &session).await.map(name).as_deref(), Some("primary"));
        assert_eq!(session.consistency(), Consistency::ReadAfterWrite);
        // a write window derived from the session covers the save it just made.
        let window = Some(Consistency::WriteWindow(Duration::from_secs(30)));
        assert_eq!(
            seen_at(id, window, &session).await.map(name).as_deref(),
            Some("primary")
        );

        // `Strong` forces the primary where the session would read a replica.
        let eventual = db.session_with(Consistency::Eventual);
        assert!(replica(who_at(None, &eventual).await));
        assert!(primary(who_at(Some(Consistency::Strong), &eventual).await));
        assert!(primary(who_at(Some(Consistency::Strong), &db.session()).await));

        // The plain handle: its own writes are seen (read-after-write by default), except by
        // an `Eventual` read; `Strong` reads the primary even with no write to see.
        let mut q = LagProbe::new(&format!("handle {i}"));
        q.save_on(&db).await.unwrap();
        let id = q.id.unwrap();
        assert_eq!(seen_at(id, None, &db).await.map(name).as_deref(), Some("primary"));
        assert_eq!(seen_at(id, Some(Consistency::Eventual), &db).await, None);
        assert!(replica(who_at(Some(Consistency::Eventual), &db).await));
        assert!(primary(who_at(Some(Consistency::Strong), &db).await));
    }
    let c = db.consistency_counters();
    println!("{c:?}");
    assert!(c.strong_reads >= 3 * ROUNDS as u64, "{c:?}");
}
