use covet_replication::Model;

#[derive(Model)]
#[model(table = "order_items")]
struct OrderItem {
    #[model(primary_key)]
    order_id: i64,
    #[model(primary_key)]
    line: i32,
}

fn main() {}
