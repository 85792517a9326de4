//! Typed column handles: `User::EMAIL` is a `Column<User, String>`, so `User::EMAIL.eq(5)` and
//! `Order::TOTAL.eq(..)` inside `User::objects().filter(..)` do not compile.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::expr::{Cmp, Expr, Node, Value};
use super::model::ModelField;
use super::sql::escape_like;

/// The column of model `M` holding a `T` (the field's type), e.g. `User::EMAIL`.
///
/// The derive makes one per mapped field, as an associated constant named after the field in
/// upper case. Its methods build conditions ([`Expr`]), orderings ([`Order`]) and assignments
/// ([`Assignment`]); every value is sent as a bound parameter.
///
/// Values are taken as `impl IntoValue<T>`: a `T` itself, `&str` for `String` columns, and for
/// an `Option<T>` column also a bare `T` (`User::AGE.eq(30)`), `&str` or `None` (in
/// [`set`](Self::set)).
///
/// ```compile_fail
/// # use covet_replication::Model;
/// # #[derive(Model)] #[model(table = "users")]
/// # struct User { #[model(primary_key)] id: i64, email: String }
/// User::objects().filter(User::EMAIL.eq(5)); // a number is not a String
/// ```
pub struct Column<M, T> {
    name: &'static str,
    types: PhantomData<fn() -> (M, T)>,
}

impl<M, T> Column<M, T> {
    #[doc(hidden)]
    pub const fn __new(name: &'static str) -> Self {
        Column {
            name,
            types: PhantomData,
        }
    }

    /// The column's name in the table (unquoted).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// `column IS NULL`.
    pub fn is_null(self) -> Expr<M> {
        Expr::new(Node::IsNull {
            column: self.name,
            negated: false,
        })
    }

    /// `column IS NOT NULL`.
    pub fn is_not_null(self) -> Expr<M> {
        Expr::new(Node::IsNull {
            column: self.name,
            negated: true,
        })
    }

    /// Ascending order (`ORDER BY column ASC`).
    pub fn asc(self) -> Order<M> {
        Order {
            column: self.name,
            descending: false,
            model: PhantomData,
        }
    }

    /// Descending order (`ORDER BY column DESC`).
    pub fn desc(self) -> Order<M> {
        Order {
            column: self.name,
            descending: true,
            model: PhantomData,
        }
    }
}

impl<M, T: ModelField> Column<M, T> {
    fn compare(self, op: Cmp, value: impl IntoValue<T>) -> Expr<M> {
        Expr::new(Node::Compare {
            column: self.name,
            op,
            value: arc(value),
        })
    }

    /// `column = value`. For SQL `NULL` use [`is_null`](Self::is_null): `= NULL` matches nothing.
    pub fn eq(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Eq, value)
    }

    /// `column <> value` (rows where the column is `NULL` do not match).
    pub fn ne(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Ne, value)
    }

    /// `column IN (values..)`; an empty list matches no row.
    pub fn is_in<V: IntoValue<T>>(self, values: impl IntoIterator<Item = V>) -> Expr<M> {
        Expr::new(Node::In {
            column: self.name,
            values: values.into_iter().map(arc).collect(),
            negated: false,
        })
    }

    /// `column NOT IN (values..)`; an empty list matches every row.
    pub fn not_in<V: IntoValue<T>>(self, values: impl IntoIterator<Item = V>) -> Expr<M> {
        Expr::new(Node::In {
            column: self.name,
            values: values.into_iter().map(arc).collect(),
            negated: true,
        })
    }

    /// `column = value` in an [`update`](crate::orm::QuerySet::update).
    pub fn set(self, value: impl IntoValue<T>) -> Assignment<M> {
        Assignment {
            column: self.name,
            value: arc(value),
            model: PhantomData,
        }
    }
}

impl<M, T: ModelField + PartialOrd> Column<M, T> {
    /// `column > value`.
    pub fn gt(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Gt, value)
    }

    /// `column >= value`.
    pub fn gte(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Gte, value)
    }

    /// `column < value`.
    pub fn lt(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Lt, value)
    }

    /// `column <= value`.
    pub fn lte(self, value: impl IntoValue<T>) -> Expr<M> {
        self.compare(Cmp::Lte, value)
    }
}

/// Text columns (`String`, `Option<String>`): the `LIKE` family.
///
/// Two kinds of method, by design:
/// - [`like`](Self::like) / [`ilike`](Self::ilike) take a **pattern**: `%` and `_` in it are
///   wildcards and `\` escapes the next character, as in PostgreSQL. Pass user input here only
///   if users are meant to write patterns.
/// - [`contains`](Self::contains), [`starts_with`](Self::starts_with),
///   [`ends_with`](Self::ends_with) and their `i` variants take **text**: `%`, `_` and `\` are
///   escaped, so user input matches literally.
///
/// Either way the pattern is a bound parameter, never SQL text.
impl<M, T: ModelField + Text> Column<M, T> {
    fn like_node(self, case_insensitive: bool, pattern: String) -> Expr<M> {
        Expr::new(Node::Like {
            column: self.name,
            case_insensitive,
            pattern,
        })
    }

    /// `column LIKE pattern`: `%` and `_` in `pattern` are wildcards, `\` escapes.
    pub fn like(self, pattern: impl Into<String>) -> Expr<M> {
        self.like_node(false, pattern.into())
    }

    /// `column ILIKE pattern` (case-insensitive): `%` and `_` are wildcards, `\` escapes.
    pub fn ilike(self, pattern: impl Into<String>) -> Expr<M> {
        self.like_node(true, pattern.into())
    }

    /// The column contains `text` literally (`%`, `_`, `\` in it match themselves).
    pub fn contains(self, text: &str) -> Expr<M> {
        self.like_node(false, format!("%{}%", escape_like(text)))
    }

    /// Case-insensitive [`contains`](Self::contains).
    pub fn icontains(self, text: &str) -> Expr<M> {
        self.like_node(true, format!("%{}%", escape_like(text)))
    }

    /// The column starts with `text` literally.
    pub fn starts_with(self, text: &str) -> Expr<M> {
        self.like_node(false, format!("{}%", escape_like(text)))
    }

    /// Case-insensitive [`starts_with`](Self::starts_with).
    pub fn istarts_with(self, text: &str) -> Expr<M> {
        self.like_node(true, format!("{}%", escape_like(text)))
    }

    /// The column ends with `text` literally.
    pub fn ends_with(self, text: &str) -> Expr<M> {
        self.like_node(false, format!("%{}", escape_like(text)))
    }

    /// Case-insensitive [`ends_with`](Self::ends_with).
    pub fn iends_with(self, text: &str) -> Expr<M> {
        self.like_node(true, format!("%{}", escape_like(text)))
    }
}

impl<M, T> Clone for Column<M, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M, T> Copy for Column<M, T> {}

impl<M, T> fmt::Debug for Column<M, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Column").field(&self.name).finish()
    }
}

/// Column types that hold text, for [`Column::like`] and friends.
pub trait Text: private::Sealed {}
impl Text for String {}
impl Text for Option<String> {}

mod private {
    pub trait Sealed {}
    impl Sealed for String {}
    impl Sealed for Option<String> {}
}

/// A value that can be compared with, or stored in, a column holding `T`.
///
/// Implemented for `T` itself, for `&str` and `&String` into `String` (and `Option<String>`),
/// `&[u8]` into `Vec<u8>`, and for `U` into `Option<U>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be compared with or stored in a column of type `{T}`",
    label = "expected a value for a `{T}` column",
    note = "a column's values have the field's type (`&str` works for `String` columns, `x` for `Option<x>` columns)"
)]
pub trait IntoValue<T> {
    /// The value as the column's type.
    fn into_value(self) -> T;
}

/// `value` as the column's type, boxed for a condition or an assignment.
fn arc<T: ModelField>(value: impl IntoValue<T>) -> Value {
    Arc::new(value.into_value())
}

impl<T> IntoValue<T> for T {
    fn into_value(self) -> T {
        self
    }
}

impl<T> IntoValue<Option<T>> for T {
    fn into_value(self) -> Option<T> {
        Some(self)
    }
}

impl IntoValue<String> for &str {
    fn into_value(self) -> String {
        self.to_owned()
    }
}

impl IntoValue<Option<String>> for &str {
    fn into_value(self) -> Option<String> {
        Some(self.to_owned())
    }
}

impl IntoValue<String> for &String {
    fn into_value(self) -> String {
        self.clone()
    }
}

impl IntoValue<Option<String>> for &String {
    fn into_value(self) -> Option<String> {
        Some(self.clone())
    }
}

impl IntoValue<Vec<u8>> for &[u8] {
    fn into_value(self) -> Vec<u8> {
        self.to_vec()
    }
}

/// An `ORDER BY` term: `User::NAME.asc()`, `User::AGE.desc()`.
pub struct Order<M> {
    pub(crate) column: &'static str,
    pub(crate) descending: bool,
    model: PhantomData<fn() -> M>,
}

impl<M> Clone for Order<M> {
    fn clone(&self) -> Self {
        Order {
            column: self.column,
            descending: self.descending,
            model: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Order<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = if self.descending { "DESC" } else { "ASC" };
        f.debug_tuple("Order").field(&self.column).field(&dir).finish()
    }
}

impl<M, T> From<Column<M, T>> for Order<M> {
    /// A bare column orders ascending.
    fn from(column: Column<M, T>) -> Self {
        column.asc()
    }
}

/// `column = value` in an [`update`](crate::orm::QuerySet::update): `User::NAME.set("ana")`.
pub struct Assignment<M> {
    pub(crate) column: &'static str,
    pub(crate) value: Value,
    model: PhantomData<fn() -> M>,
}

impl<M> Clone for Assignment<M> {
    fn clone(&self) -> Self {
        Assignment {
            column: self.column,
            value: Arc::clone(&self.value),
            model: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Assignment<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Assignment").field(&self.column).finish_non_exhaustive()
    }
}
