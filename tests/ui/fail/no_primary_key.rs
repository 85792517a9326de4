use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    id: i64,
    email: String,
}

fn main() {}
