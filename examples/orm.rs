//! The ORM: `cargo run --example orm`.
//!
//! With `COVET_CONFIG` or `COVET_PRIMARY_URL` set it uses that cluster; otherwise it starts a
//! LocalCluster (a primary and two hot standbys) itself. It applies `migrations/`, then saves and
//! queries users, products and orders through `#[derive(Model)]` types and prints which node
//! served each statement. It only touches rows whose email ends in `@orm-example.test` and
//! products whose SKU starts with `EX-`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use covet_replication::{Model, Target};

#[derive(Debug, Clone, Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key, default)]
    id: Option<i64>,
    email: String,
    name: String,
    age: Option<i32>,
    #[model(default)]
    active: Option<bool>,
}

#[derive(Debug, Clone, Model)]
#[model(table = "products")]
struct Product {
    #[model(primary_key)]
    sku: String,
    name: String,
    price_cents: i64,
}

#[derive(Debug, Clone, Model)]
#[model(table = "orders")]
struct Order {
    #[model(primary_key, default)]
    id: Option<i64>,
    user_id: i64,
    #[model(default)]
    status: Option<String>,
    total_cents: i64,
    note: Option<String>,
}

#[derive(Debug, Clone, Model)]
#[model(table = "order_items")]
struct OrderItem {
    #[model(primary_key, default)]
    id: Option<i64>,
    order_id: i64,
    sku: String,
    quantity: i32,
    price_cents: i64,
}

const DOMAIN: &str = "@orm-example.test";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keeps the local cluster alive until the end of main.
    println!(
        "starting: the cluster of COVET_CONFIG / COVET_PRIMARY_URL, or a local one (1 primary + 2 hot standbys) ..."
    );
    let (config, _cluster) = covet_replication::testing::configured_or_local().await?;
    tracing::subscriber::set_global_default(RouteLog)?;

    // Once at startup: the global handle that `User::objects().all()` and `user.save()` use.
    let db = covet_replication::setup_replication(config).await?;
    covet_replication::orm::migrate(&db, &sqlx::migrate!("../migrations")).await?;
    println!("migrations applied on the primary\n");

    // A clean slate from an earlier run (orders and their items go with their user).
    let n = User::objects().filter(User::EMAIL.ends_with(DOMAIN)).delete().await?;
    show(&format!("delete earlier users -> {n}"));

    println!("\n-- writes: always the primary");
    for (sku, name, price) in [
        ("EX-1", "Kettle", 2_499),
        ("EX-2", "Teapot", 1_999),
        ("EX-3", "Mug", 899),
    ] {
        let mut p = Product {
            sku: sku.into(),
            name: name.into(),
            price_cents: price,
        };
        p.save().await?; // a natural key: insert or update
        show(&format!("product.save() {sku}"));
    }
    let mut users = Vec::new();
    for (name, age) in [("Ana", Some(34)), ("Bo", Some(17)), ("Cy", None), ("Di", Some(58))] {
        let mut u = User {
            id: None,
            email: format!("{}{DOMAIN}", name.to_lowercase()),
            name: name.into(),
            age,
            active: None,
        };
        u.save().await?; // INSERT .. RETURNING: id and active come from the server
        show(&format!(
            "user.save() {name} -> id {}, active {:?}",
            u.id.unwrap_or_default(),
            u.active
        ));
        users.push(u);
    }
    let ana = users[0].id.unwrap_or_default();
    let mut order = Order {
        id: None,
        user_id: ana,
        status: None,
        total_cents: 0,
        note: Some("ring twice; it's the \"blue\" door".into()),
    };
    order.save().await?;
    show(&format!("order.save() -> status {:?} (column default)", order.status));
    for (sku, quantity, price) in [("EX-1", 1, 2_499), ("EX-3", 4, 899)] {
        let mut item = OrderItem {
            id: None,
            order_id: order.id.unwrap_or_default(),
            sku: sku.into(),
            quantity,
            price_cents: price,
        };
        item.insert().await?;
        order.total_cents += i64::from(quantity) * price;
    }
    show("2 x item.insert()");
    order.save().await?; // has an id now: an update by primary key
    show(&format!("order.save() -> total {}", order.total_cents));

    // Replicas replay the primary's WAL a few milliseconds behind.
    let mine = || User::objects().filter(User::EMAIL.ends_with(DOMAIN));
    let start = Instant::now();
    while mine().count().await? < 4 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!("\n-- reads: replicas by default");
    let adults = mine()
        .filter(User::AGE.gte(18))
        .order_by(User::AGE.desc())
        .all()
        .await?;
    show(&format!("adults by age desc -> {:?}", names(&adults)));
    let page = mine().order_by(User::NAME).limit(2).offset(1).all().await?;
    show(&format!("by name, 2 after the first -> {:?}", names(&page)));
    let no_age = mine().filter(User::AGE.is_null()).first().await?;
    show(&format!("first without age -> {:?}", no_age.map(|u| u.name)));
    let some = mine()
        .filter(User::NAME.is_in(["Ana", "Di"]) | User::AGE.lt(18))
        .count()
        .await?;
    show(&format!("Ana, Di or under 18 -> {some}"));
    let typed = "50%_off"; // user input: contains() matches it literally
    let hits = mine().filter(User::NAME.contains(typed)).exists().await?;
    show(&format!("name contains {typed:?} -> {hits}"));
    let items = OrderItem::objects().filter(OrderItem::ORDER_ID.eq(order.id.unwrap_or_default()));
    show(&format!("items of the order -> {}", items.count().await?));

    println!("\n-- .using(..): this query only");
    let fresh = User::objects().using(Target::Primary).get(ana).await?;
    show(&format!("using(Primary).get({ana}) -> {}", fresh.name));
    for target in [
        Target::Region("us".into()),
        Target::Node("replica1".into()),
        Target::Replica,
    ] {
        let label = format!("using({target}).count()");
        match mine().using(target).count().await {
            Ok(n) => show(&format!("{label} -> {n}")),
            Err(e) => println!("{label:<60} error: {e}"),
        }
    }

    println!("\n-- bulk writes: the primary");
    let n = Order::objects()
        .filter(Order::USER_ID.eq(ana))
        .update([Order::STATUS.set("paid")])
        .await?;
    show(&format!("orders of Ana -> paid ({n})"));
    let n = mine().filter(User::AGE.lt(18)).delete().await?;
    show(&format!("delete users under 18 -> {n}"));

    // The status report: nodes, lag, and where this run's statements went.
    println!("\n{}", db.status());
    db.close().await;
    Ok(())
}

fn names(users: &[User]) -> Vec<&str> {
    users.iter().map(|u| u.name.as_str()).collect()
}

/// Prints `what` with the node the last statement was routed to.
fn show(what: &str) {
    let node = LAST_NODE.lock().map(|mut n| n.take()).unwrap_or_default();
    println!("{what:<60} served by {}", node.as_deref().unwrap_or("?"));
}

/// The node of the last `covet::route` "routed" event: a tracing subscriber that keeps only that.
static LAST_NODE: Mutex<Option<String>> = Mutex::new(None);

struct RouteLog;

impl tracing::Subscriber for RouteLog {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == "covet::route"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut NodeField);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

struct NodeField;

impl tracing::field::Visit for NodeField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "node"
            && let Ok(mut last) = LAST_NODE.lock()
        {
            *last = Some(format!("{value:?}"));
        }
    }
}
