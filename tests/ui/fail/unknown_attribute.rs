use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
    #[model(rename = "mail")]
    email: String,
}

fn main() {}
