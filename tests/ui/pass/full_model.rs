//! Everything the derive accepts, compiled.

use covet_replication::{Model, Target};

#[derive(Debug, Clone, Default, sqlx::Type)]
#[sqlx(transparent)]
pub struct Sku(String);

#[derive(Debug, Model)]
#[model(table = "items", schema = "shop")]
pub struct Item {
    #[model(primary_key)]
    pub r#ref: Sku,
    #[model(column = "display name")]
    name: String,
    small: i16,
    count: i32,
    big: Option<i64>,
    ratio: f32,
    score: Option<f64>,
    on: bool,
    data: Vec<u8>,
    doc: serde_json::Value,
    #[model(default)]
    created: Option<i64>,
    #[model(skip)]
    cache: std::collections::HashMap<String, String>,
}

fn main() {
    let q = Item::objects()
        .filter(Item::NAME.contains("x") & Item::COUNT.gt(1) & Item::BIG.eq(5))
        .filter(Item::ON.eq(true) | Item::SCORE.is_null())
        .order_by(Item::REF.desc())
        .using(Target::Replica);
    assert!(q.to_sql().starts_with(r#"SELECT "ref", "display name", "small""#));
    assert!(q.to_sql().contains(r#"FROM "shop"."items""#));
    let _ = Item::objects().update([Item::SMALL.set(1), Item::BIG.set(None), Item::DATA.set(&b"x"[..])]);
    assert_eq!(<Item as Model>::COLUMNS.len(), 11);
    assert_eq!(Item::CREATED.name(), "created");
}
