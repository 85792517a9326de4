//! `DeriveInput` -> [`ModelDef`]: every check on the user's struct happens here, before any code is
//! generated, and every error carries the span of the item it is about.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, GenericArgument, Ident, LitStr, PathArguments, Type, Visibility};

/// A struct that derives `Model`, checked.
pub(crate) struct ModelDef {
    pub ident: Ident,
    pub vis: Visibility,
    pub schema: Option<String>,
    pub table: String,
    pub fields: Vec<FieldDef>,
}

/// One field of the struct.
pub(crate) struct FieldDef {
    pub ident: Ident,
    pub ty: Type,
    /// The column name; `None` for a `#[model(skip)]` field.
    pub column: Option<String>,
    pub primary_key: bool,
    /// `#[model(default)]`: the server fills it when the field is `None`; holds `T` of `Option<T>`.
    pub default: Option<Type>,
}

impl ModelDef {
    /// The mapped (not skipped) fields, in declaration order: their index is the column index.
    pub fn columns(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.column.is_some())
    }

    pub fn primary_key(&self) -> &FieldDef {
        // `parse` guarantees exactly one.
        let mut pk = self.fields.iter().filter(|f| f.primary_key);
        pk.next().unwrap_or(&self.fields[0])
    }
}

/// Checks `input` and collects what generation needs.
pub(crate) fn parse(input: &DeriveInput) -> syn::Result<ModelDef> {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(Model)] does not support generic structs: a model maps one table with fixed column types",
        ));
    }
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(_) | Fields::Unit => {
                return Err(syn::Error::new_spanned(
                    &input.ident,
                    "#[derive(Model)] needs a struct with named fields: each field maps a column by name",
                ));
            }
        },
        Data::Enum(e) => {
            return Err(syn::Error::new_spanned(
                e.enum_token,
                "#[derive(Model)] is for structs; enums are not supported",
            ));
        }
        Data::Union(u) => {
            return Err(syn::Error::new_spanned(
                u.union_token,
                "#[derive(Model)] is for structs; unions are not supported",
            ));
        }
    };
    let (schema, table) = parse_struct_attrs(input)?;
    let fields = named.named.iter().map(parse_field).collect::<syn::Result<Vec<_>>>()?;
    check_fields(&input.ident, &fields)?;
    Ok(ModelDef {
        ident: input.ident.clone(),
        vis: input.vis.clone(),
        schema,
        table,
        fields,
    })
}

/// `#[model(table = "..", schema = "..")]` on the struct.
fn parse_struct_attrs(input: &DeriveInput) -> syn::Result<(Option<String>, String)> {
    let mut table: Option<String> = None;
    let mut schema: Option<String> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("model")) {
        attr.parse_nested_meta(|meta| {
            let slot = if meta.path.is_ident("table") {
                &mut table
            } else if meta.path.is_ident("schema") {
                &mut schema
            } else {
                return Err(meta.error(unknown("struct", &meta.path, "`table = \"..\"`, `schema = \"..\"`")));
            };
            if slot.is_some() {
                return Err(meta.error("duplicate attribute"));
            }
            *slot = Some(identifier(&meta.value()?.parse::<LitStr>()?)?);
            Ok(())
        })?;
    }
    let table = table.ok_or_else(|| {
        syn::Error::new_spanned(
            &input.ident,
            "missing #[model(table = \"..\")]: name the table this struct maps",
        )
    })?;
    Ok((schema, table))
}

/// A name for SQL: not empty, no NUL (PostgreSQL identifiers cannot hold one). Quoting happens
/// when the SQL is built, so any other character is fine.
fn identifier(lit: &LitStr) -> syn::Result<String> {
    let value = lit.value();
    if value.is_empty() {
        return Err(syn::Error::new_spanned(lit, "a table or column name cannot be empty"));
    }
    if value.contains('\0') {
        return Err(syn::Error::new_spanned(
            lit,
            "a table or column name cannot contain NUL",
        ));
    }
    Ok(value)
}

fn unknown(on: &str, path: &syn::Path, known: &str) -> String {
    let name = path.get_ident().map_or_else(|| "?".to_string(), ToString::to_string);
    format!("unknown #[model({name})] attribute on a {on}; expected one of {known}")
}

/// The attributes of one field, each seen at most once.
#[derive(Default)]
struct FieldAttrs {
    column: Option<(String, Span)>,
    primary_key: Option<Span>,
    default: Option<Span>,
    skip: Option<Span>,
}

fn parse_field(field: &syn::Field) -> syn::Result<FieldDef> {
    let ident = field
        .ident
        .clone()
        .ok_or_else(|| syn::Error::new_spanned(field, "a model field needs a name"))?;
    let mut a = FieldAttrs::default();
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("model")) {
        attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let flag = if meta.path.is_ident("column") {
                let lit: LitStr = meta.value()?.parse()?;
                if a.column.is_some() {
                    return Err(meta.error("duplicate attribute"));
                }
                a.column = Some((identifier(&lit)?, span));
                return Ok(());
            } else if meta.path.is_ident("primary_key") {
                &mut a.primary_key
            } else if meta.path.is_ident("default") {
                &mut a.default
            } else if meta.path.is_ident("skip") {
                &mut a.skip
            } else {
                return Err(meta.error(unknown(
                    "field",
                    &meta.path,
                    "`primary_key`, `column = \"..\"`, `default`, `skip`",
                )));
            };
            if flag.is_some() {
                return Err(meta.error("duplicate attribute"));
            }
            *flag = Some(span);
            Ok(())
        })?;
    }
    if let Some(skip) = a.skip {
        if a.column.is_some() || a.primary_key.is_some() || a.default.is_some() {
            return Err(syn::Error::new(
                skip,
                "#[model(skip)] cannot be combined with other #[model(..)] attributes: a skipped field maps no column",
            ));
        }
        return Ok(FieldDef {
            ident,
            ty: field.ty.clone(),
            column: None,
            primary_key: false,
            default: None,
        });
    }
    let default = match a.default {
        None => None,
        Some(_) => Some(option_inner(&field.ty).cloned().ok_or_else(|| {
            syn::Error::new_spanned(
                &field.ty,
                "a #[model(default)] field must be an `Option<_>`: `None` lets the server fill it on insert",
            )
        })?),
    };
    let column = a.column.map_or_else(|| unraw(&ident), |(name, _)| name);
    Ok(FieldDef {
        ident,
        ty: field.ty.clone(),
        column: Some(column),
        primary_key: a.primary_key.is_some(),
        default,
    })
}

/// Exactly one primary key, and no two fields on the same column.
fn check_fields(ident: &Ident, fields: &[FieldDef]) -> syn::Result<()> {
    let mut keys = fields.iter().filter(|f| f.primary_key);
    if keys.next().is_none() {
        return Err(syn::Error::new_spanned(
            ident,
            "no #[model(primary_key)] field: mark the field of the table's primary key",
        ));
    }
    if let Some(second) = keys.next() {
        return Err(syn::Error::new_spanned(
            &second.ident,
            "a second #[model(primary_key)]: composite primary keys are not supported",
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        let Some(column) = &f.column else { continue };
        if fields[..i].iter().any(|g| g.column.as_ref() == Some(column)) {
            return Err(syn::Error::new_spanned(
                &f.ident,
                format!("column {column:?} is mapped by an earlier field too"),
            ));
        }
    }
    Ok(())
}

/// `T` of a type spelled `Option<T>` (also `std::option::Option<T>`); a type alias of an
/// `Option` is not seen through.
pub(crate) fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first() {
        Some(GenericArgument::Type(inner)) if args.args.len() == 1 => Some(inner),
        _ => None,
    }
}

/// The field name as written, without `r#`.
pub(crate) fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map_or(s.clone(), str::to_string)
}
