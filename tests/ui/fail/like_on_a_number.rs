use covet_replication::Model;

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
    age: i32,
}

fn main() {
    let _ = User::objects().filter(User::AGE.like("3%"));
}
