use covet_replication::Model;

#[derive(Model)]
#[model(table = "boxes")]
struct Boxed<T> {
    #[model(primary_key)]
    id: i64,
    value: T,
}

fn main() {}
