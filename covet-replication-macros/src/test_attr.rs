//! `#[covet_replication::test]`: an `async fn(ReplicatedPool)` test on a fresh database, with
//! `#[sqlx::test]`'s arguments (`migrations`, `migrator`, `fixtures`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{LitStr, Token};

/// Where the migrations come from.
enum Migrations {
    /// `./migrations` of the crate, when it is a directory.
    Inferred,
    /// `migrations = false`.
    None,
    /// `migrations = "path"`, relative to the crate.
    Path(LitStr),
    /// `migrator = "path::TO::MIGRATOR"`.
    Migrator(syn::Path),
}

/// The attribute's arguments.
struct Args {
    migrations: Migrations,
    /// Fixture files, relative to the test's source file.
    fixtures: Vec<LitStr>,
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(args)?;
    let input: syn::ItemFn = syn::parse2(item)?;
    if input.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            input.sig.fn_token,
            "#[covet_replication::test] takes an `async fn name(db: ReplicatedPool)`",
        ));
    }
    if input.sig.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &input.sig.inputs,
            "the test takes one argument, the handle: `db: ReplicatedPool` (a test without one is a #[tokio::test])",
        ));
    }
    let name = &input.sig.ident;
    let ret = &input.sig.output;
    let vis = &input.vis;
    let attrs = &input.attrs;
    let inner_sig = &input.sig;
    let body = &input.block;

    let migrator = match args.migrations {
        Migrations::None => None,
        Migrations::Migrator(path) => Some(quote! { &#path }),
        Migrations::Path(path) => Some(migrate_static(&quote! { #path })),
        // `./`: sqlx's `migrate!` refuses a bare relative path ("paths relative to the current
        // file's directory are not currently supported").
        Migrations::Inferred => inferred_migrations().then(|| migrate_static(&quote! { "./migrations" })),
    };
    let set_migrator = migrator.map(|m| quote! { args.migrator(#m); });
    let fixtures = args.fixtures.iter().map(|path| {
        quote! {
            ::covet_replication::testing::TestFixture { path: #path, contents: include_str!(#path) }
        }
    });
    Ok(quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #ret {
            #inner_sig #body
            let mut args = ::covet_replication::testing::TestArgs::new(
                concat!(module_path!(), "::", stringify!(#name)),
            );
            #set_migrator
            args.fixtures(&[#(#fixtures),*]);
            ::covet_replication::testing::run_test(args, #name)
        }
    })
}

/// `&MIGRATOR` of a static holding `sqlx::migrate!(path)`: the test needs it `'static`.
fn migrate_static(path: &TokenStream) -> TokenStream {
    quote! {{
        static MIGRATOR: ::sqlx::migrate::Migrator = ::sqlx::migrate!(#path);
        &MIGRATOR
    }}
}

/// Whether the crate being compiled has a `migrations` directory (as `#[sqlx::test]` decides).
fn inferred_migrations() -> bool {
    std::env::var_os("CARGO_MANIFEST_DIR").is_some_and(|dir| std::path::Path::new(&dir).join("migrations").is_dir())
}

fn parse_args(tokens: TokenStream) -> syn::Result<Args> {
    let mut args = Args {
        migrations: Migrations::Inferred,
        fixtures: Vec::new(),
    };
    let mut migrations_set = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("migrations") || meta.path.is_ident("migrator") {
            if std::mem::replace(&mut migrations_set, true) {
                return Err(meta.error("only one `migrations` or `migrator` argument"));
            }
            let value = meta.value()?;
            args.migrations = if meta.path.is_ident("migrator") {
                let path: LitStr = value.parse()?;
                Migrations::Migrator(path.parse()?)
            } else if value.peek(syn::LitBool) {
                let on: syn::LitBool = value.parse()?;
                if on.value {
                    return Err(syn::Error::new_spanned(
                        on,
                        "`migrations = true` is the default: leave it out",
                    ));
                }
                Migrations::None
            } else {
                Migrations::Path(value.parse()?)
            };
            Ok(())
        } else if meta.path.is_ident("fixtures") {
            parse_fixtures(&meta, &mut args.fixtures)
        } else {
            Err(meta.error("expected `migrations`, `migrator` or `fixtures`"))
        }
    });
    parser.parse2(tokens)?;
    Ok(args)
}

/// `fixtures("users", "dir/posts.sql")` (a bare name is `fixtures/<name>.sql`), or
/// `fixtures(path = "dir", scripts("users", "posts"))` (`dir/<name>.sql`).
fn parse_fixtures(meta: &syn::meta::ParseNestedMeta<'_>, out: &mut Vec<LitStr>) -> syn::Result<()> {
    let content;
    syn::parenthesized!(content in meta.input);
    if content.peek(LitStr) {
        let names = content.parse_terminated(<LitStr as syn::parse::Parse>::parse, Token![,])?;
        for name in names {
            let file = if name.value().ends_with(".sql") {
                name.value()
            } else {
                format!("fixtures/{}.sql", name.value())
            };
            out.push(LitStr::new(&file, name.span()));
        }
        return Ok(());
    }
    let mut dir: Option<LitStr> = None;
    let mut scripts: Vec<LitStr> = Vec::new();
    let nested = syn::meta::parser(|inner| {
        if inner.path.is_ident("path") {
            dir = Some(inner.value()?.parse()?);
            Ok(())
        } else if inner.path.is_ident("scripts") {
            let list;
            syn::parenthesized!(list in inner.input);
            scripts.extend(list.parse_terminated(<LitStr as syn::parse::Parse>::parse, Token![,])?);
            Ok(())
        } else {
            Err(inner.error("expected `path = \"dir\"` or `scripts(\"name\", ...)`"))
        }
    });
    nested.parse2(content.parse()?)?;
    let Some(dir) = dir else {
        return Err(meta.error("`fixtures(scripts(..))` needs `path = \"dir\"`"));
    };
    if scripts.is_empty() {
        return Err(meta.error("`fixtures(path = ..)` needs `scripts(\"name\", ...)`"));
    }
    for script in scripts {
        let name = script.value();
        let file = if name.ends_with(".sql") {
            name
        } else {
            format!("{name}.sql")
        };
        out.push(LitStr::new(&format!("{}/{file}", dir.value()), script.span()));
    }
    Ok(())
}
