use covet_replication::{Model, Target};

#[derive(Model)]
#[model(table = "users")]
struct User {
    #[model(primary_key)]
    id: i64,
    name: String,
}

async fn pinned() {
    let _ = User::objects().using(Target::Replica).delete().await;
    // Even pinned to the primary: writes take no target, so `using` always reads.
    let primary = User::objects().using(Target::Primary);
    let _ = primary.update([User::NAME.set("x")]).await;
}

fn main() {}
