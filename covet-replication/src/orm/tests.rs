//! The SQL the ORM builds and the access it declares, without a database. (What the derive
//! generates is exercised against a real cluster in `tests/orm.rs`; this model is written by
//! hand the way the derive would write it.)

use std::sync::{Arc, Mutex};

use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgRow};

use super::executor::Via;
use super::private::no_column;
use super::sql::{escape_like, push_ident};
use super::*;
use crate::config::Consistency;
use crate::data::routing::Target;

#[derive(Debug, Clone, Default)]
struct User {
    id: Option<i64>,
    email: String,
    age: Option<i32>,
}

impl Model for User {
    type PrimaryKey = i64;
    const TABLE: &'static str = "us\"ers";
    const SCHEMA: Option<&'static str> = Some("app");
    const COLUMNS: &'static [ColumnDef] = &[
        ColumnDef::__new("id", true, true),
        ColumnDef::__new("email", false, false),
        ColumnDef::__new("age", false, false),
    ];
    const PRIMARY_KEY: usize = 0;

    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(User {
            id: ModelField::__decode(row, "id")?,
            email: ModelField::__decode(row, "email")?,
            age: ModelField::__decode(row, "age")?,
        })
    }

    fn primary_key(&self) -> Option<i64> {
        self.id
    }

    fn __load(&mut self, row: &PgRow) -> Result<(), sqlx::Error> {
        *self = Self::from_row(row)?;
        Ok(())
    }

    fn __bind(&self, column: usize, args: &mut PgArguments) -> Result<(), BoxDynError> {
        match column {
            0 => self.id.__encode(args),
            1 => self.email.__encode(args),
            2 => self.age.__encode(args),
            other => no_column::<Self>(other),
        }
    }

    fn __is_set(&self, column: usize) -> bool {
        column != 0 || self.id.is_some()
    }
}

impl User {
    const ID: Column<User, Option<i64>> = Column::__new("id");
    const EMAIL: Column<User, String> = Column::__new("email");
    const AGE: Column<User, Option<i32>> = Column::__new("age");
}

/// Records what it is asked to run; returns no rows.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, usize, Access)>>>);

impl Capture {
    fn take(&self) -> Vec<(String, usize, Access)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn record(&self, query: ModelQuery) {
        let (sql, args, access) = query.into_parts();
        self.0.lock().unwrap().push((sql, sqlx::Arguments::len(&args), access));
    }
}

impl ModelExecutor for &Capture {
    async fn fetch_all(self, query: ModelQuery) -> Result<Vec<PgRow>, sqlx::Error> {
        self.record(query);
        Ok(Vec::new())
    }

    async fn execute(self, query: ModelQuery) -> Result<u64, sqlx::Error> {
        self.record(query);
        Ok(0)
    }
}

const T: &str = r#""app"."us""ers""#;
const COLS: &str = r#""id", "email", "age""#;

fn read() -> Access {
    Access::Read {
        target: None,
        consistency: None,
    }
}

#[test]
fn identifiers_are_quoted_and_like_text_is_escaped() {
    let mut s = String::new();
    push_ident(&mut s, r#"a"b"#);
    push_ident(&mut s, "x; DROP TABLE users; --");
    assert_eq!(s, r#""a""b""x; DROP TABLE users; --""#);
    assert_eq!(escape_like(r"50%_off\"), r"50\%\_off\\");
    assert_eq!(escape_like("plain"), "plain");
}

#[test]
fn selects_put_every_value_in_a_parameter() {
    let q = User::objects()
        .filter(User::EMAIL.eq("x'; DROP TABLE users; --") | User::AGE.is_null())
        .filter(User::ID.is_in([1, 2, 3]))
        .exclude(User::AGE.gt(30))
        .order_by(User::AGE.desc())
        .order_by(User::EMAIL)
        .limit(10)
        .offset(20);
    assert_eq!(
        q.to_sql(),
        format!(
            r#"SELECT {COLS} FROM {T} WHERE (("email" = $1 OR "age" IS NULL) AND "id" IN ($2, $3, $4) AND NOT ("age" > $5)) ORDER BY "age" DESC, "email" ASC LIMIT $6 OFFSET $7"#
        )
    );
    assert!(!q.to_sql().contains("DROP"));
}

#[test]
fn conditions_combine() {
    let e = !(User::AGE.gte(1) & User::AGE.lte(2) & User::AGE.ne(3)) | User::EMAIL.like("a%") | User::EMAIL.ilike("b_");
    assert_eq!(
        e.to_sql(),
        r#"(NOT (("age" >= $1 AND "age" <= $2 AND "age" <> $3)) OR "email" LIKE $4 OR "email" ILIKE $5)"#
    );
    assert_eq!((!!User::AGE.lt(1)).to_sql(), r#""age" < $1"#);
    assert_eq!(User::ID.is_in(Vec::<i64>::new()).to_sql(), "FALSE");
    assert_eq!(User::ID.not_in(Vec::<i64>::new()).to_sql(), "TRUE");
    assert_eq!(Expr::<User>::all([]).to_sql(), "TRUE");
    assert_eq!(Expr::<User>::any([]).to_sql(), "FALSE");
    assert_eq!(
        (User::AGE.is_not_null() & User::EMAIL.icontains("%")).to_sql(),
        r#"("age" IS NOT NULL AND "email" ILIKE $1)"#
    );
    assert_eq!(format!("{:?}", User::AGE.lt(1)), r#"Expr("\"age\" < $1")"#);
}

#[tokio::test]
async fn reads_are_reads_with_their_target() {
    let db = Capture::default();
    User::objects().filter(User::AGE.gt(1)).all_on(&db).await.unwrap();
    User::objects().using(Target::Replica).count_on(&db).await.unwrap_err();
    User::objects().limit(5).count_on(&db).await.unwrap_err();
    User::objects()
        .filter(User::AGE.gt(1))
        .exists_on(&db)
        .await
        .unwrap_err();
    assert!(User::objects().first_on(&db).await.unwrap().is_none());
    let missing = User::objects()
        .using(Target::Node("replica1".into()))
        .get_on(7, &db)
        .await;
    assert!(matches!(missing, Err(sqlx::Error::RowNotFound)));
    let seen = db.take();
    let replica = Access::Read {
        target: Some(Target::Replica),
        consistency: None,
    };
    let node = Access::Read {
        target: Some(Target::Node("replica1".into())),
        consistency: None,
    };
    let expected = [
        (format!(r#"SELECT {COLS} FROM {T} WHERE "age" > $1"#), 1, read()),
        (format!("SELECT count(*) FROM {T}"), 0, replica),
        (
            format!(r#"SELECT count(*) FROM (SELECT 1 FROM {T} LIMIT $1) AS "q""#),
            1,
            read(),
        ),
        (
            format!(r#"SELECT EXISTS (SELECT 1 FROM {T} WHERE "age" > $1)"#),
            1,
            read(),
        ),
        (
            format!(r#"SELECT {COLS} FROM {T} ORDER BY "id" ASC LIMIT $1"#),
            1,
            read(),
        ),
        (
            format!(r#"SELECT {COLS} FROM {T} WHERE "id" = $1 ORDER BY "id" ASC LIMIT $2"#),
            2,
            node,
        ),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn writes_are_writes() {
    let db = Capture::default();
    let qs = User::objects().filter(User::EMAIL.starts_with("a_"));
    qs.clone()
        .update_on([User::AGE.set(None), User::EMAIL.set("b")], &db)
        .await
        .unwrap();
    assert_eq!(
        qs.clone().update_on([], &db).await.unwrap(),
        0,
        "nothing to set: nothing sent"
    );
    qs.clone().delete_on(&db).await.unwrap();
    User::objects()
        .order_by(User::ID)
        .limit(2)
        .delete_on(&db)
        .await
        .unwrap();
    User::objects().delete_on(&db).await.unwrap();
    let seen = db.take();
    let expected = [
        (
            format!(r#"UPDATE {T} SET "age" = $1, "email" = $2 WHERE "email" LIKE $3"#),
            3,
        ),
        (format!(r#"DELETE FROM {T} WHERE "email" LIKE $1"#), 1),
        (
            format!(r#"DELETE FROM {T} WHERE "id" IN (SELECT "id" FROM {T} ORDER BY "id" ASC LIMIT $1)"#),
            1,
        ),
        (format!("DELETE FROM {T}"), 0),
    ];
    let seen: Vec<_> = seen
        .into_iter()
        .map(|(sql, n, access)| {
            assert_eq!(access, Access::Write, "{sql}");
            (sql, n)
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn instance_writes_insert_upsert_and_delete_by_key() {
    let db = Capture::default();
    let mut new = User {
        id: None,
        email: "a".into(),
        age: None,
    };
    // The capture returns no row, so the refresh fails: the statement is what matters here.
    assert!(matches!(new.insert_on(&db).await, Err(sqlx::Error::RowNotFound)));
    new.save_on(&db).await.unwrap_err();
    assert!(
        !new.delete_on(&db).await.unwrap(),
        "no key: nothing to delete, nothing sent"
    );
    let mut known = User {
        id: Some(7),
        ..new.clone()
    };
    known.save_on(&db).await.unwrap_err();
    known.delete_on(&db).await.unwrap();
    let seen = db.take();
    let insert = format!(r#"INSERT INTO {T} ("email", "age") VALUES ($1, $2) RETURNING {COLS}"#);
    let expected = [
        (insert.clone(), 2, Access::Write),
        (insert, 2, Access::Write),
        (
            format!(
                r#"INSERT INTO {T} ("id", "email", "age") VALUES ($1, $2, $3) ON CONFLICT ("id") DO UPDATE SET "email" = EXCLUDED."email", "age" = EXCLUDED."age" RETURNING {COLS}"#
            ),
            3,
            Access::Write,
        ),
        (format!(r#"DELETE FROM {T} WHERE "id" = $1"#), 1, Access::Write),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn orm_statements_skip_the_classifier_and_writes_pin_the_primary() {
    let config =
        crate::config::ReplicationConfig::from_urls("postgres://u@127.0.0.1:1/db", &["postgres://u@127.0.0.1:2/db"])
            .unwrap();
    let db = crate::pool::ReplicatedPool::connect_lazy(config).unwrap();
    let write = super::executor::routed(&db.data, &Access::Write);
    assert_eq!(write.target, Some(Target::Primary));
    assert_eq!(
        write.known_kind.as_ref().map(|k| k.class()),
        Some(crate::classify::QueryClass::Write)
    );
    let routed = super::executor::routed(&db.using(Target::Region("eu".into())).data, &read());
    assert_eq!(
        routed.target,
        Some(Target::Region("eu".into())),
        "the handle's target stays"
    );
    let kind = routed.known_kind.clone().unwrap();
    assert!(kind.is_replica_safe());
    let pinned = super::executor::routed(
        &db.data,
        &Access::Read {
            target: Some(Target::Replica),
            consistency: None,
        },
    );
    assert_eq!(pinned.target, Some(Target::Replica));
    assert!(db.data.known_kind.is_none() && db.using(Target::Primary).data.known_kind.is_none());

    // Through a session: the same routing, the session's own state (so its watermark).
    let session = db.using(Target::Region("eu".into())).session();
    let class = |s: &crate::data::session::Session| s.handle.known_kind.as_ref().map(|k| k.class());
    let Via::Session(write) = Via::session(&session, &Access::Write) else {
        panic!("a session")
    };
    assert_eq!(
        (write.handle.target.clone(), class(&write)),
        (Some(Target::Primary), Some(crate::classify::QueryClass::Write))
    );
    assert!(Arc::ptr_eq(&write.state, &session.state));
    let Via::Session(reads) = Via::session(&session, &read()) else {
        panic!("a session")
    };
    assert_eq!(reads.handle.target, Some(Target::Region("eu".into())));
    assert_eq!(class(&reads), Some(crate::classify::QueryClass::Read));
    assert!(Arc::ptr_eq(&reads.state, &session.state));
    let strong = Access::Read {
        target: None,
        consistency: Some(Consistency::Strong),
    };
    let Via::Session(once) = Via::session(&session, &strong) else {
        panic!("a session")
    };
    assert_eq!(
        (once.state.level, session.consistency()),
        (Consistency::Strong, Consistency::ReadAfterWrite)
    );
    // The plain handle runs in its own session unless a read asks for another level.
    assert!(matches!(Via::pool(&db, &read()), Via::Pool(_)));
    let Via::Session(once) = Via::pool(&db, &strong) else {
        panic!("a session")
    };
    assert_eq!(once.state.level, Consistency::Strong);
    assert_eq!(class(&once), Some(crate::classify::QueryClass::Read));
    db.close().await;
}

#[test]
fn a_value_that_fails_to_encode_is_an_error_before_anything_is_sent() {
    struct Bad;
    impl Model for Bad {
        type PrimaryKey = i64;
        const TABLE: &'static str = "bad";
        const SCHEMA: Option<&'static str> = None;
        const COLUMNS: &'static [ColumnDef] = &[ColumnDef::__new("id", true, false)];
        const PRIMARY_KEY: usize = 0;
        fn from_row(_: &PgRow) -> Result<Self, sqlx::Error> {
            Ok(Bad)
        }
        fn primary_key(&self) -> Option<i64> {
            Some(1)
        }
        fn __load(&mut self, _: &PgRow) -> Result<(), sqlx::Error> {
            Ok(())
        }
        fn __bind(&self, column: usize, _: &mut PgArguments) -> Result<(), BoxDynError> {
            no_column::<Self>(column + 1)
        }
        fn __is_set(&self, _: usize) -> bool {
            true
        }
    }
    let db = Capture::default();
    let err = futures::executor::block_on(Bad.save_on(&db)).unwrap_err();
    assert!(matches!(err, sqlx::Error::Encode(_)), "{err:?}");
    assert!(err.to_string().contains("has no column 1"), "{err}");
    assert!(db.take().is_empty());
}

#[tokio::test]
async fn consistency_is_declared_on_reads_only_and_survives_using() {
    let db = Capture::default();
    let strong = Some(Consistency::Strong);
    let mine = || User::objects().filter(User::AGE.gt(1));
    mine().consistency(Consistency::Strong).count_on(&db).await.unwrap_err();
    mine()
        .consistency(Consistency::Eventual)
        .using(Target::Replica)
        .all_on(&db)
        .await
        .unwrap();
    mine()
        .consistency(Consistency::Strong)
        .update_on([User::AGE.set(2)], &db)
        .await
        .unwrap();
    mine().consistency(Consistency::Strong).delete_on(&db).await.unwrap();
    let access: Vec<_> = db.take().into_iter().map(|(_, _, access)| access).collect();
    assert_eq!(
        access,
        [
            Access::Read {
                target: None,
                consistency: strong,
            },
            Access::Read {
                target: Some(Target::Replica),
                consistency: Some(Consistency::Eventual),
            },
            Access::Write,
            Access::Write,
        ]
    );
}

/// Public futures must be `Send` (deadpool issues 320 and 323).
#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send(db: &crate::pool::ReplicatedPool, mut user: User, config: crate::config::ReplicationConfig) {
    fn send<T: Send>(_: T) {}
    send(User::objects().all());
    send(User::objects().all_on(db));
    send(User::objects().using(Target::Replica).first_on(db));
    send(User::objects().count());
    send(User::objects().exists());
    send(User::objects().get(1));
    send(User::objects().update([User::AGE.set(1)]));
    send(User::objects().delete_on(db));
    send(user.save_on(db));
    let session = db.session();
    send(User::objects().consistency(Consistency::Strong).all_on(db));
    send(User::objects().consistency(Consistency::Eventual).count_on(&session));
    send(user.save_on(&session));
    send(user.insert());
    send(user.delete());
    send(crate::global::setup_replication(config));
}
