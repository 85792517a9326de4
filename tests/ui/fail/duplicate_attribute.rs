use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
    #[model(column = "mail")]
    #[model(column = "email")]
    email: String,
}

fn main() {}
