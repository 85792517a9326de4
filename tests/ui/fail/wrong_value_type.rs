use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
    email: String,
}

fn main() {
    let _ = User::objects().filter(User::EMAIL.eq(5));
}
