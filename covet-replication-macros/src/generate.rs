//! [`ModelDef`] -> tokens, one small function per generated item. Every path is absolute
//! (`::covet_replication::..`) and everything sits in a `const _: () = { .. };` so nothing leaks
//! into the user's namespace but the trait impl and the column constants.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::parse::{FieldDef, ModelDef, unraw};

pub(crate) fn generate(model: &ModelDef) -> TokenStream {
    let model_impl = model_impl(model);
    let columns = column_consts(model);
    quote! {
        const _: () = {
            #model_impl
            #columns
        };
    }
}

fn model_impl(model: &ModelDef) -> TokenStream {
    let ident = &model.ident;
    let table = &model.table;
    let schema = match &model.schema {
        Some(s) => quote!(::core::option::Option::Some(#s)),
        None => quote!(::core::option::Option::None),
    };
    let pk = model.primary_key();
    let pk_index = model.columns().position(|f| f.primary_key).unwrap_or(0);
    let pk_type = pk.default.as_ref().unwrap_or(&pk.ty);
    let column_defs = model.columns().map(column_def);
    let from_row = from_row(model);
    let load = load(model);
    let bind = bind(model);
    let is_set = is_set(model);
    let primary_key = primary_key_fn(pk);
    quote! {
        impl ::covet_replication::Model for #ident {
            type PrimaryKey = #pk_type;
            const TABLE: &'static str = #table;
            const SCHEMA: ::core::option::Option<&'static str> = #schema;
            const COLUMNS: &'static [::covet_replication::orm::ColumnDef] = &[#(#column_defs),*];
            const PRIMARY_KEY: usize = #pk_index;
            #from_row
            #load
            #bind
            #is_set
            #primary_key
        }
    }
}

fn column_def(f: &FieldDef) -> TokenStream {
    let name = f.column.as_deref().unwrap_or_default();
    let pk = f.primary_key;
    let default = f.default.is_some();
    quote!(::covet_replication::orm::ColumnDef::__new(#name, #pk, #default))
}

fn from_row(model: &ModelDef) -> TokenStream {
    let fields = model.fields.iter().map(|f| {
        let ident = &f.ident;
        let ty = &f.ty;
        match &f.column {
            Some(column) => quote_spanned! {ty.span()=>
                #ident: <#ty as ::covet_replication::orm::ModelField>::__decode(row, #column)?
            },
            None => quote_spanned! {ty.span()=> #ident: <#ty as ::core::default::Default>::default() },
        }
    });
    quote! {
        fn from_row(
            row: &::covet_replication::__private::sqlx::postgres::PgRow,
        ) -> ::core::result::Result<Self, ::covet_replication::__private::sqlx::Error> {
            ::core::result::Result::Ok(Self { #(#fields),* })
        }
    }
}

fn load(model: &ModelDef) -> TokenStream {
    let assigns = model.columns().map(|f| {
        let ident = &f.ident;
        let ty = &f.ty;
        let column = f.column.as_deref().unwrap_or_default();
        quote_spanned! {ty.span()=>
            self.#ident = <#ty as ::covet_replication::orm::ModelField>::__decode(row, #column)?;
        }
    });
    quote! {
        #[doc(hidden)]
        fn __load(
            &mut self,
            row: &::covet_replication::__private::sqlx::postgres::PgRow,
        ) -> ::core::result::Result<(), ::covet_replication::__private::sqlx::Error> {
            #(#assigns)*
            ::core::result::Result::Ok(())
        }
    }
}

fn bind(model: &ModelDef) -> TokenStream {
    let arms = model.columns().enumerate().map(|(i, f)| {
        let ident = &f.ident;
        let ty = &f.ty;
        quote_spanned! {ty.span()=> #i => <#ty as ::covet_replication::orm::ModelField>::__encode(&self.#ident, args), }
    });
    quote! {
        #[doc(hidden)]
        fn __bind(
            &self,
            column: usize,
            args: &mut ::covet_replication::__private::sqlx::postgres::PgArguments,
        ) -> ::core::result::Result<(), ::covet_replication::__private::BoxDynError> {
            match column {
                #(#arms)*
                other => ::covet_replication::__private::no_column::<Self>(other),
            }
        }
    }
}

fn is_set(model: &ModelDef) -> TokenStream {
    let arms = model
        .columns()
        .enumerate()
        .filter(|(_, f)| f.default.is_some())
        .map(|(i, f)| {
            let ident = &f.ident;
            quote!(#i => ::core::option::Option::is_some(&self.#ident),)
        });
    quote! {
        #[doc(hidden)]
        fn __is_set(&self, column: usize) -> bool {
            match column {
                #(#arms)*
                _ => true,
            }
        }
    }
}

fn primary_key_fn(pk: &FieldDef) -> TokenStream {
    let ident = &pk.ident;
    let pk_type = pk.default.as_ref().unwrap_or(&pk.ty);
    let value = if pk.default.is_some() {
        quote!(::core::clone::Clone::clone(&self.#ident))
    } else {
        quote!(::core::option::Option::Some(::core::clone::Clone::clone(&self.#ident)))
    };
    quote! {
        fn primary_key(&self) -> ::core::option::Option<#pk_type> {
            #value
        }
    }
}

/// `impl User { pub const EMAIL: Column<User, String> = ..; }`: typed handles that autocomplete
/// finds on the type itself.
fn column_consts(model: &ModelDef) -> TokenStream {
    let ident = &model.ident;
    let vis = &model.vis;
    let consts = model.columns().map(|f| {
        let name = format_ident!("{}", unraw(&f.ident).to_uppercase(), span = f.ident.span());
        let ty = &f.ty;
        let column = f.column.as_deref().unwrap_or_default();
        let doc = format!(
            "The `{column}` column (field `{}`): use it in `filter`, `exclude`, `order_by` and `update`.",
            unraw(&f.ident)
        );
        quote! {
            #[doc = #doc]
            #vis const #name: ::covet_replication::orm::Column<#ident, #ty> = ::covet_replication::orm::Column::__new(#column);
        }
    });
    quote! {
        #[automatically_derived]
        impl #ident {
            #(#consts)*
        }
    }
}
