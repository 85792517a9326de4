//! Classification (cached and not) and the routing decision, without a database.
//!
//! `cargo bench -p covet-replication --bench routing`

use std::hint::black_box;
use std::time::Duration;

use covet_replication::testing::LocalCluster;
use covet_replication::{
    ReplicatedPool,
    classify::{Classifier, classify},
};
use criterion::{Criterion, criterion_group, criterion_main};

const STATEMENTS: [(&str, &str); 3] = [
    ("point_select", "SELECT id, email, name FROM users WHERE id = $1"),
    (
        "join",
        "SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.email = $1 AND o.created_at > now() - interval '1 day' ORDER BY o.created_at DESC LIMIT 20",
    ),
    (
        "cte_write",
        "WITH moved AS (DELETE FROM queue WHERE id = $1 RETURNING *) INSERT INTO done SELECT * FROM moved",
    ),
];

fn classification(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    for (name, sql) in STATEMENTS {
        g.bench_function(format!("uncached/{name}"), |b| b.iter(|| classify(black_box(sql))));
        let cached = Classifier::new(10_000);
        cached.classify(sql);
        g.bench_function(format!("cached/{name}"), |b| b.iter(|| cached.classify(black_box(sql))));
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // A real cluster so that every node is healthy; routing itself makes no round trip.
    let cluster = rt
        .block_on(LocalCluster::builder().replicas(3).start())
        .expect("cluster");
    let db = rt
        .block_on(ReplicatedPool::connect(cluster.replication_config()))
        .expect("pool");
    let sql = STATEMENTS[0].1;
    rt.block_on(db.explain(sql)).expect("route");
    c.bench_function("route/cached_classification_and_selection", |b| {
        b.to_async(&rt).iter(|| db.explain(black_box(sql)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = classification, routing
}
criterion_main!(benches);
