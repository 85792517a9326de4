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
