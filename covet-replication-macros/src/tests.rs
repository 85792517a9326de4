//! `expand` on token streams: the checks of `parse` and the shape of the output. What the
//! generated code does is tested against a real cluster in `tests/orm.rs`, and the compiler's
//! view of misuse in `tests/ui/`.

use quote::quote;

use crate::expand;

fn error(input: proc_macro2::TokenStream) -> String {
    match expand(input) {
        Ok(tokens) => panic!("expected an error, got {tokens}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_full_model_expands_into_an_anonymous_const() {
    let out = expand(quote! {
        #[model(table = "users", schema = "app")]
        pub struct User {
            #[model(primary_key, default)]
            id: Option<i64>,
            #[model(column = "e\"mail")]
            email: String,
            r#type: i32,
            #[model(skip)]
            cache: Vec<u8>,
        }
    })
    .unwrap()
    .to_string();
    assert!(out.starts_with("const _ : () ="), "{out}");
    assert!(out.contains("impl :: covet_replication :: Model for User"), "{out}");
    assert!(out.contains("type PrimaryKey = i64"), "{out}");
    assert!(
        out.contains("pub const EMAIL : :: covet_replication :: orm :: Column < User , String >"),
        "{out}"
    );
    assert!(out.contains("pub const TYPE"), "{out}");
    assert!(!out.contains("CACHE"), "{out}");
    assert!(
        out.contains(r#"ColumnDef :: __new ("e\"mail" , false , false)"#),
        "{out}"
    );
    assert!(out.contains(r#"ColumnDef :: __new ("type" , false , false)"#), "{out}");
    assert!(out.contains(r#"Some ("app")"#), "{out}");
}

#[test]
fn a_primary_key_is_required_and_must_be_single() {
    assert!(error(quote! { #[model(table = "t")] struct T { a: i32 } }).contains("no #[model(primary_key)]"));
    let e = error(quote! {
        #[model(table = "t")]
        struct T { #[model(primary_key)] a: i32, #[model(primary_key)] b: i32 }
    });
    assert!(e.contains("composite primary keys are not supported"), "{e}");
}

#[test]
fn unsupported_shapes_are_rejected() {
    let e = error(quote! { #[model(table = "t")] struct T<X> { #[model(primary_key)] a: X } });
    assert!(e.contains("generic"), "{e}");
    let e = error(quote! { #[model(table = "t")] struct T(i32); });
    assert!(e.contains("named fields"), "{e}");
    let e = error(quote! { #[model(table = "t")] enum T { A } });
    assert!(e.contains("enums are not supported"), "{e}");
    let e = error(quote! { struct T { #[model(primary_key)] a: i32 } });
    assert!(e.contains("missing #[model(table"), "{e}");
}

#[test]
fn attributes_are_checked() {
    let cases = [
        (
            quote! { #[model(table = "t", table = "u")] struct T { #[model(primary_key)] a: i32 } },
            "duplicate attribute",
        ),
        (
            quote! { #[model(tabel = "t")] struct T { #[model(primary_key)] a: i32 } },
            "unknown #[model(tabel)]",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key, primary_key)] a: i32 } },
            "duplicate attribute",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key)] #[model(column = "x", column = "y")] a: i32 } },
            "duplicate attribute",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key)] #[model(pk)] a: i32 } },
            "unknown #[model(pk)]",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key)] #[model(skip)] a: i32 } },
            "cannot be combined",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key, default)] a: i64 } },
            "must be an `Option<_>`",
        ),
        (
            quote! { #[model(table = "")] struct T { #[model(primary_key)] a: i32 } },
            "cannot be empty",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key, column = "a\0")] a: i32 } },
            "cannot contain NUL",
        ),
        (
            quote! { #[model(table = "t")] struct T { #[model(primary_key)] a: i32, #[model(column = "a")] b: i32 } },
            "mapped by an earlier field",
        ),
        (
            quote! { #[model(table = 5)] struct T { #[model(primary_key)] a: i32 } },
            "expected string literal",
        ),
    ];
    for (input, expected) in cases {
        let e = error(input.clone());
        assert!(e.contains(expected), "{input}: {e}");
    }
}

fn test_attr(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> Result<String, String> {
    crate::test_attr::expand(args, item)
        .map(|t| t.to_string())
        .map_err(|e| e.to_string())
}

#[test]
fn the_test_attribute_resolves_fixtures_and_migrations_as_sqlx_test_does() {
    let item = quote! { async fn t(db: ReplicatedPool) -> sqlx::Result<()> { Ok(()) } };
    let out = test_attr(
        quote! { migrations = "../migrations", fixtures("users", "dir/posts.sql"), fixtures(path = "more", scripts("a", "b.sql")) },
        item.clone(),
    )
    .unwrap();
    assert!(out.contains(":: sqlx :: migrate ! (\"../migrations\")"), "{out}");
    for file in ["fixtures/users.sql", "dir/posts.sql", "more/a.sql", "more/b.sql"] {
        assert!(out.contains(&format!("include_str ! (\"{file}\")")), "{file}: {out}");
    }
    assert!(out.contains("fn t () -> sqlx :: Result < () >"), "{out}");
    assert!(out.contains("run_test (args , t)"), "{out}");
    let out = test_attr(quote! { migrator = "crate::MIGRATOR", fixtures("users") }, item.clone()).unwrap();
    assert!(out.contains("args . migrator (& crate :: MIGRATOR)"), "{out}");
    let out = test_attr(quote! { migrations = false }, item).unwrap();
    assert!(!out.contains("migrator"), "{out}");
}

#[test]
fn the_test_attribute_refuses_what_it_cannot_run() {
    let item = quote! { async fn t(db: ReplicatedPool) {} };
    let cases = [
        (quote! {}, quote! { fn t(db: ReplicatedPool) {} }, "takes an `async fn"),
        (quote! {}, quote! { async fn t() {} }, "takes one argument"),
        (
            quote! {},
            quote! { async fn t(a: ReplicatedPool, b: i32) {} },
            "takes one argument",
        ),
        (quote! { migrations = true }, item.clone(), "is the default"),
        (quote! { migrations = "a", migrator = "B" }, item.clone(), "only one"),
        (quote! { fixtures(scripts("a")) }, item.clone(), "needs `path"),
        (quote! { fixtures(path = "dir") }, item.clone(), "needs `scripts"),
        (quote! { flavor = "multi_thread" }, item, "expected `migrations`"),
    ];
    for (args, item, expected) in cases {
        let err = test_attr(args.clone(), item).unwrap_err();
        assert!(err.contains(expected), "{args}: {err}");
    }
}
