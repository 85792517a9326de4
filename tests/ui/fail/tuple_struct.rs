use covet_replication::Model;

#[derive(Model)]
#[model(table = "pairs")]
struct Pair(i64, String);

fn main() {}
