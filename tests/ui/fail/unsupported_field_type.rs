use covet_replication::Model;

struct Money {
    cents: i64,
}

#[derive(Model)]
#[model(table = "accounts")]
struct Account {
    #[model(primary_key)]
    id: i64,
    balance: Money,
}

fn main() {}
