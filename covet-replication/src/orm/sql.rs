//! The SQL text and its arguments, built together: identifiers are always quoted, values are
//! always `$n` parameters. Nothing a caller passes at run time is ever appended as text.

use sqlx::Arguments;
use sqlx::error::BoxDynError;
use sqlx::postgres::PgArguments;

use super::expr::SqlValue;

/// A statement under construction.
pub(crate) struct SqlBuf {
    text: String,
    args: PgArguments,
    /// The first value that failed to encode; reported when the statement is finished.
    error: Option<BoxDynError>,
}

impl SqlBuf {
    pub fn new() -> Self {
        SqlBuf {
            text: String::with_capacity(128),
            args: PgArguments::default(),
            error: None,
        }
    }

    /// Appends SQL written in this crate (keywords, operators). Never caller input.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends `name` as a quoted identifier.
    pub fn ident(&mut self, name: &str) -> &mut Self {
        push_ident(&mut self.text, name);
        self
    }

    /// Appends `"schema"."table"`, or `"table"`.
    pub fn table(&mut self, schema: Option<&str>, table: &str) -> &mut Self {
        if let Some(schema) = schema {
            self.ident(schema).push(".");
        }
        self.ident(table)
    }

    /// Appends the next `$n` placeholder and binds `value` to it.
    pub fn bind(&mut self, value: &dyn SqlValue) -> &mut Self {
        let result = value.bind(&mut self.args);
        self.placeholder(result)
    }

    /// Appends the next `$n` placeholder for a value already added by `add`.
    pub fn bind_with(&mut self, add: impl FnOnce(&mut PgArguments) -> Result<(), BoxDynError>) -> &mut Self {
        let result = add(&mut self.args);
        self.placeholder(result)
    }

    pub fn bind_i64(&mut self, value: i64) -> &mut Self {
        self.bind_with(|args| args.add(value))
    }

    fn placeholder(&mut self, added: Result<(), BoxDynError>) -> &mut Self {
        match added {
            Ok(()) => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
            Err(e) => {
                // Keep the text well-formed; the statement is never sent.
                self.text.push_str("NULL");
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// The SQL text, without the arguments.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The finished statement, or the first encoding error.
    pub fn finish(self) -> Result<(String, PgArguments), sqlx::Error> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((self.text, self.args)),
        }
    }
}

/// `"name"` with embedded double quotes doubled: any string is a safe identifier this way.
/// (PostgreSQL rejects NUL in identifiers with an error; the derive rejects it at compile time.)
pub(crate) fn push_ident(out: &mut String, name: &str) {
    out.reserve(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// `s` with the `LIKE` wildcards `%`, `_` and the escape character `\` escaped, so that the
/// pattern matches `s` literally (PostgreSQL's default `LIKE` escape is the backslash).
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
