use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key, default)]
    id: i64,
}

fn main() {}
