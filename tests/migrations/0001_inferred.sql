-- Applied by default by #[covet_replication::test] in this crate (tests/test_attr.rs), as
-- #[sqlx::test] applies a crate's ./migrations.
CREATE TABLE inferred (id int PRIMARY KEY);
