//! Conditions: what `filter` and `exclude` take. Built from typed column handles
//! (`User::AGE.gte(18)`), combined with `&`, `|`, `!` (or [`Expr::and`], [`Expr::or`],
//! [`Expr::any`], [`Expr::all`]).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;

use super::model::ModelField;
use super::sql::SqlBuf;

/// A value held by a condition or an assignment until the statement is built.
pub(crate) trait SqlValue: Send + Sync + 'static {
    fn bind(&self, args: &mut PgArguments) -> Result<(), BoxDynError>;
}

impl<T: ModelField> SqlValue for T {
    fn bind(&self, args: &mut PgArguments) -> Result<(), BoxDynError> {
        self.__encode(args)
    }
}

pub(crate) type Value = Arc<dyn SqlValue>;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Cmp {
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => " = ",
            Cmp::Ne => " <> ",
            Cmp::Gt => " > ",
            Cmp::Gte => " >= ",
            Cmp::Lt => " < ",
            Cmp::Lte => " <= ",
        }
    }
}

/// One node of a condition tree. Column names come from the derive; values are bound.
#[derive(Clone)]
pub(crate) enum Node {
    Compare {
        column: &'static str,
        op: Cmp,
        value: Value,
    },
    IsNull {
        column: &'static str,
        negated: bool,
    },
    In {
        column: &'static str,
        values: Vec<Value>,
        negated: bool,
    },
    Like {
        column: &'static str,
        case_insensitive: bool,
        pattern: String,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
}

impl Node {
    pub fn write(&self, sql: &mut SqlBuf) {
        match self {
            Node::Compare { column, op, value } => {
                sql.ident(column).push(op.sql()).bind(value.as_ref());
            }
            Node::IsNull { column, negated } => {
                sql.ident(column)
                    .push(if *negated { " IS NOT NULL" } else { " IS NULL" });
            }
            // `x IN ()` is a syntax error: an empty list matches nothing (`NOT IN`: everything).
            Node::In { values, negated, .. } if values.is_empty() => {
                sql.push(if *negated { "TRUE" } else { "FALSE" });
            }
            Node::In {
                column,
                values,
                negated,
            } => {
                sql.ident(column).push(if *negated { " NOT IN (" } else { " IN (" });
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind(value.as_ref());
                }
                sql.push(")");
            }
            Node::Like {
                column,
                case_insensitive,
                pattern,
            } => {
                let pattern = pattern.clone();
                sql.ident(column)
                    .push(if *case_insensitive { " ILIKE " } else { " LIKE " })
                    .bind_with(|args| args.add(pattern));
            }
            Node::And(nodes) => write_list(sql, nodes, " AND ", "TRUE"),
            Node::Or(nodes) => write_list(sql, nodes, " OR ", "FALSE"),
            Node::Not(node) => {
                sql.push("NOT (");
                node.write(sql);
                sql.push(")");
            }
        }
    }
}

fn write_list(sql: &mut SqlBuf, nodes: &[Node], separator: &str, empty: &str) {
    match nodes {
        [] => {
            sql.push(empty);
        }
        [one] => one.write(sql),
        _ => {
            sql.push("(");
            for (i, node) in nodes.iter().enumerate() {
                if i > 0 {
                    sql.push(separator);
                }
                node.write(sql);
            }
            sql.push(")");
        }
    }
}

/// A condition on the rows of model `M`, for [`QuerySet::filter`](crate::orm::QuerySet::filter) and
/// [`exclude`](crate::orm::QuerySet::exclude).
///
/// Made by the comparison methods of [`Column`](crate::orm::Column); combined with `&` (and), `|`
/// (or) and `!` (not). Conditions on another model's columns do not type-check.
///
/// SQL's three-valued logic applies: `!User::AGE.gt(30)` does not match rows whose `age` is
/// `NULL` (neither does `User::AGE.gt(30)`); add `| User::AGE.is_null()` when you want them.
///
/// ```
/// # use covet_replication::Model;
/// # #[derive(Model)] #[model(table = "users")]
/// # struct User { #[model(primary_key)] id: i64, name: String, age: Option<i32>, active: bool }
/// use covet_replication::orm::Expr;
///
/// let teens = User::AGE.gte(13) & User::AGE.lt(20);
/// let named = Expr::any(["ana", "bo"].map(|n| User::NAME.eq(n)));
/// let q = User::objects().filter(teens | !User::ACTIVE.eq(true)).exclude(named);
/// assert_eq!(
///     q.to_sql(),
///     r#"SELECT "id", "name", "age", "active" FROM "users" WHERE ((("age" >= $1 AND "age" < $2) OR NOT ("active" = $3)) AND NOT (("name" = $4 OR "name" = $5)))"#
/// );
/// ```
pub struct Expr<M> {
    pub(crate) node: Node,
    model: PhantomData<fn() -> M>,
}

impl<M> Expr<M> {
    pub(crate) fn new(node: Node) -> Self {
        Expr {
            node,
            model: PhantomData,
        }
    }

    /// The condition as SQL, values as `$n` (numbered from 1 here).
    pub fn to_sql(&self) -> String {
        let mut sql = SqlBuf::new();
        self.node.write(&mut sql);
        sql.text().to_owned()
    }

    /// Both conditions (`self & other`).
    #[must_use]
    pub fn and(self, other: Expr<M>) -> Self {
        Expr::new(match (self.node, other.node) {
            (Node::And(mut a), Node::And(b)) => {
                a.extend(b);
                Node::And(a)
            }
            (Node::And(mut a), b) => {
                a.push(b);
                Node::And(a)
            }
            (a, b) => Node::And(vec![a, b]),
        })
    }

    /// Either condition (`self | other`).
    #[must_use]
    pub fn or(self, other: Expr<M>) -> Self {
        Expr::new(match (self.node, other.node) {
            (Node::Or(mut a), Node::Or(b)) => {
                a.extend(b);
                Node::Or(a)
            }
            (Node::Or(mut a), b) => {
                a.push(b);
                Node::Or(a)
            }
            (a, b) => Node::Or(vec![a, b]),
        })
    }

    /// All of `exprs`; no expression at all is `TRUE`.
    pub fn all(exprs: impl IntoIterator<Item = Expr<M>>) -> Self {
        Expr::new(Node::And(exprs.into_iter().map(|e| e.node).collect()))
    }

    /// Any of `exprs`; no expression at all is `FALSE`.
    pub fn any(exprs: impl IntoIterator<Item = Expr<M>>) -> Self {
        Expr::new(Node::Or(exprs.into_iter().map(|e| e.node).collect()))
    }
}

impl<M> Clone for Expr<M> {
    fn clone(&self) -> Self {
        Expr::new(self.node.clone())
    }
}

impl<M> fmt::Debug for Expr<M> {
    /// The condition as SQL, values as `$n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.to_sql()).finish()
    }
}

impl<M> std::ops::BitAnd for Expr<M> {
    type Output = Expr<M>;
    fn bitand(self, rhs: Expr<M>) -> Expr<M> {
        self.and(rhs)
    }
}

impl<M> std::ops::BitOr for Expr<M> {
    type Output = Expr<M>;
    fn bitor(self, rhs: Expr<M>) -> Expr<M> {
        self.or(rhs)
    }
}

impl<M> std::ops::Not for Expr<M> {
    type Output = Expr<M>;
    fn not(self) -> Expr<M> {
        Expr::new(match self.node {
            Node::Not(inner) => *inner,
            node => Node::Not(Box::new(node)),
        })
    }
}
