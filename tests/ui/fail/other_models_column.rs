use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
}

#[derive(Model)]
#[model(table = "orders")]
struct Order {
    #[model(primary_key)]
    id: i64,
    user_id: i64,
}

fn main() {
    let _ = User::objects().filter(Order::USER_ID.eq(1));
}
