use covet_replication::Model;

#[derive(Model)]
#[model(table = "states")]
enum State {
    On,
    Off,
}

fn main() {}
