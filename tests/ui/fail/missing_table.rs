use covet_replication::Model;

#[derive(Model)]
struct User {
    #[model(primary_key)]
    id: i64,
}

fn main() {}
