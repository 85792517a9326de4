//! Work on the raw text: the leading `/* covet:... */` hint, and a conservative token-level
//! classification for text the SQL parser does not understand.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::functions::{Builtins, FunctionName, Resolution, Resolve};
use super::kind::{Hint, QueryClass, TransactionControl, TransactionOp};
use super::visit::{Analysis, Verdict, analyze_statements};

/// The hint of the leading comments: `/* covet:primary */` or `/* covet:replica */`, any
/// case, any whitespace around `covet`, `:` and the word. If both appear, primary wins.
pub(crate) fn leading_hint(sql: &str) -> Option<Hint> {
    let mut rest = sql;
    let mut hint = None;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/*") {
            let Some((body, after_comment)) = split_block_comment(after) else {
                return hint;
            };
            match (hint, parse_hint(body)) {
                (_, Some(Hint::Primary)) => hint = Some(Hint::Primary),
                (None, found) => hint = found,
                _ => {}
            }
            rest = after_comment;
        } else if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else {
            return hint;
        }
    }
}

/// Splits `body */ rest` (after the opening `/*`), honouring nested comments as
/// PostgreSQL does. `None` if the comment is not closed.
fn split_block_comment(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[..i], &text[i + 2..]));
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    None
}

fn parse_hint(body: &str) -> Option<Hint> {
    let rest = strip_prefix_ignore_case(body.trim_start(), "covet")?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let word_end = rest
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    if word.eq_ignore_ascii_case("primary") {
        Some(Hint::Primary)
    } else if word.eq_ignore_ascii_case("replica") {
        Some(Hint::Replica)
    } else {
        None
    }
}

/// The first word after leading whitespace, comments and parentheses.
fn leading_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(after) = rest.strip_prefix("/*") {
            rest = split_block_comment(after).map_or("", |(_, next)| next);
        } else if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else {
            break;
        }
    }
    let end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
    &rest[..end]
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Classifies text that did not parse as a whole: each `;`-separated part is parsed on
/// its own, and parts that still fail are judged by their tokens (see [`token_verdict`]).
pub(crate) fn analyze_unparsed<R: Resolve>(sql: &str, resolver: &R, depth: u8) -> Analysis {
    let dialect = PostgreSqlDialect {};
    let mut analysis = Analysis {
        parsed: false,
        ..Analysis::default()
    };
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize_with_location() else {
        // Not even tokens: the leading keyword can still tell a write or session statement.
        let word = Token::make_word(leading_word(sql), None);
        let verdict = match words_verdict(&[&word], resolver, &mut analysis) {
            v if v.class == QueryClass::Read => Verdict::new(QueryClass::Unknown, "could not be tokenized"),
            v => v,
        };
        analysis.add(verdict);
        return analysis;
    };
    let parts = split_statements(sql, &tokens);
    if parts.len() > 1 {
        for part in parts {
            match Parser::parse_sql(&dialect, part.text) {
                Ok(statements) => {
                    let parsed = analyze_statements(&statements, resolver, depth);
                    merge(&mut analysis, parsed);
                }
                Err(_) => {
                    let verdict = token_verdict(part.tokens, resolver, &mut analysis);
                    analysis.add(verdict);
                }
            }
        }
    } else if let Some(part) = parts.into_iter().next() {
        let verdict = token_verdict(part.tokens, resolver, &mut analysis);
        analysis.add(verdict);
    }
    analysis
}

fn merge(into: &mut Analysis, from: Analysis) {
    let Analysis {
        verdict,
        first_transaction,
        transaction_replica_safe,
        unknown_functions,
        relations,
        statements,
        parsed: _,
        procedure,
        changes_catalog,
    } = from;
    into.procedure |= procedure;
    into.changes_catalog |= changes_catalog;
    if let Some(mut verdict) = verdict {
        // `add` keeps the first transaction and counts one statement per call.
        verdict.transaction = first_transaction;
        into.add(verdict);
        into.statements += statements.saturating_sub(1);
    }
    into.transaction_replica_safe &= transaction_replica_safe;
    into.add_unknown_functions(unknown_functions);
    into.add_relations(relations);
}

struct Part<'s, 't> {
    text: &'s str,
    tokens: &'t [TokenWithSpan],
}

/// Splits at `;` outside parentheses, skipping parts with nothing but whitespace.
fn split_statements<'s, 't>(sql: &'s str, tokens: &'t [TokenWithSpan]) -> Vec<Part<'s, 't>> {
    let mut parts = Vec::new();
    let mut offsets = LocationOffsets::new(sql);
    let mut depth = 0usize;
    let (mut text_start, mut token_start) = (0, 0);
    for (i, token) in tokens.iter().enumerate() {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::SemiColon if depth == 0 => {
                let Some(end) = offsets.offset(token.span.start) else {
                    break;
                };
                parts.push(Part {
                    text: &sql[text_start..end],
                    tokens: &tokens[token_start..i],
                });
                text_start = end + 1;
                token_start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(Part {
        text: sql.get(text_start..).unwrap_or(""),
        tokens: &tokens[token_start.min(tokens.len())..],
    });
    parts.retain(|part| part.tokens.iter().any(|t| !is_blank(&t.token)));
    parts
}

/// Maps the tokenizer's 1-based line/column (in chars) to byte offsets, for increasing
/// locations.
struct LocationOffsets<'s> {
    chars: std::iter::Peekable<std::str::CharIndices<'s>>,
    line: u64,
    column: u64,
}

impl<'s> LocationOffsets<'s> {
    fn new(sql: &'s str) -> Self {
        Self {
            chars: sql.char_indices().peekable(),
            line: 1,
            column: 1,
        }
    }

    fn offset(&mut self, at: Location) -> Option<usize> {
        while let Some(&(index, c)) = self.chars.peek() {
            if (self.line, self.column) == (at.line, at.column) {
                return Some(index);
            }
            self.chars.next();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        None
    }
}

fn is_blank(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_) | Token::EOF)
}

/// The unquoted word at `i`, uppercased; empty for anything else.
fn word_at(words: &[&Token], i: usize) -> String {
    match words.get(i) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    }
}

/// A verdict from the tokens of one statement the parser did not understand. Writes are
/// recognised by keywords, locking clauses and write functions; a query whose every
/// `name(` is a known function (or a listed unknown one) is a read.
fn token_verdict<R: Resolve>(tokens: &[TokenWithSpan], resolver: &R, analysis: &mut Analysis) -> Verdict {
    let words: Vec<&Token> = tokens.iter().map(|t| &t.token).filter(|t| !is_blank(t)).collect();
    words_verdict(&words, resolver, analysis)
}

fn words_verdict<R: Resolve>(words: &[&Token], resolver: &R, analysis: &mut Analysis) -> Verdict {
    let first = words.iter().position(|t| !matches!(t, Token::LParen)).unwrap_or(0);
    let first_word = word_at(words, first);
    if first_word == "EXPLAIN" {
        return explain_verdict(&words[first + 1..], resolver, analysis);
    }
    if let Some(write) = write_in_tokens(words, first) {
        return write;
    }
    let txn = |op, reason| Verdict::transaction(TransactionControl::new(op), reason);
    let session = |reason| Verdict::new(QueryClass::SessionState, reason);
    match (first_word.as_str(), word_at(words, first + 1).as_str()) {
        ("SELECT" | "WITH" | "VALUES" | "TABLE", _) => query_tokens(words, resolver, analysis),
        ("BEGIN" | "START", _) => txn(TransactionOp::Begin, "BEGIN (not parsed)"),
        ("COMMIT" | "ROLLBACK", "PREPARED") | ("PREPARE", "TRANSACTION") => {
            txn(TransactionOp::TwoPhase, "two-phase commit (not parsed)")
        }
        ("ROLLBACK", "TO") => txn(TransactionOp::RollbackToSavepoint, "ROLLBACK TO SAVEPOINT (not parsed)"),
        ("COMMIT" | "END", _) => txn(TransactionOp::Commit, "COMMIT (not parsed)"),
        ("ROLLBACK" | "ABORT", _) => txn(TransactionOp::Rollback, "ROLLBACK (not parsed)"),
        ("SAVEPOINT", _) => txn(TransactionOp::Savepoint, "SAVEPOINT (not parsed)"),
        ("RELEASE", _) => txn(TransactionOp::ReleaseSavepoint, "RELEASE (not parsed)"),
        ("SET", "TRANSACTION") => txn(TransactionOp::SetTransaction, "SET TRANSACTION (not parsed)"),
        (
            "SET" | "RESET" | "DISCARD" | "LOAD" | "LISTEN" | "UNLISTEN" | "PREPARE" | "EXECUTE" | "DEALLOCATE"
            | "DECLARE" | "FETCH" | "MOVE" | "CLOSE",
            _,
        ) => session("session statement (not parsed)"),
        ("CREATE", "TEMP" | "TEMPORARY") => session("CREATE TEMP (not parsed)"),
        ("CREATE" | "ALTER" | "DROP" | "COMMENT", _) => {
            analysis.changes_catalog = true;
            Verdict::new(QueryClass::Write, "DDL, maintenance or write (not parsed)")
        }
        (
            "TRUNCATE" | "GRANT" | "REVOKE" | "SECURITY" | "REINDEX" | "CLUSTER" | "VACUUM" | "ANALYZE" | "ANALYSE"
            | "CHECKPOINT" | "REFRESH" | "LOCK" | "NOTIFY" | "CALL" | "DO" | "COPY" | "IMPORT" | "REASSIGN",
            _,
        ) => Verdict::new(QueryClass::Write, "DDL, maintenance or write (not parsed)"),
        _ => Verdict::new(QueryClass::Unknown, "could not be parsed"),
    }
}

/// `EXPLAIN` (tokens after it): plan-only is a read; with `ANALYZE` the statement runs and
/// decides.
fn explain_verdict<R: Resolve>(words: &[&Token], resolver: &R, analysis: &mut Analysis) -> Verdict {
    let mut rest = words;
    let mut analyze = false;
    // `EXPLAIN (ANALYZE [on], COSTS OFF, ...)`
    if matches!(rest.first(), Some(Token::LParen)) {
        let Some(close) = matching_paren(rest, 0) else {
            return Verdict::new(QueryClass::Unknown, "could not be parsed");
        };
        let mut options = rest[1..close].split(|t| matches!(t, Token::Comma));
        analyze = options.any(|option| {
            matches!(word_at(option, 0).as_str(), "ANALYZE" | "ANALYSE")
                && !matches!(word_at(option, 1).as_str(), "FALSE" | "OFF" | "0" | "NO")
                && !matches!(option.get(1), Some(Token::Number(n, _)) if n == "0")
        });
        rest = &rest[close + 1..];
    }
    // `EXPLAIN ANALYZE VERBOSE ...`
    while matches!(word_at(rest, 0).as_str(), "ANALYZE" | "ANALYSE" | "VERBOSE") {
        analyze |= word_at(rest, 0) != "VERBOSE";
        rest = &rest[1..];
    }
    if word_at(rest, 0) == "EXECUTE" {
        Verdict::new(
            QueryClass::SessionState,
            "EXPLAIN EXECUTE uses a prepared statement of the session (not parsed)",
        )
    } else if analyze {
        words_verdict(rest, resolver, analysis)
    } else {
        // Without ANALYZE nothing is executed, and a standby plans writes too.
        Verdict::new(QueryClass::Read, "EXPLAIN without ANALYZE (not parsed)")
    }
}

/// Signs of a write anywhere in the tokens: DML keywords (data-modifying CTEs, `PREPARE
/// ... AS INSERT`, `FOR [NO KEY] UPDATE`), `SELECT ... INTO`, `FOR [KEY] SHARE`, calls of
/// built-in write functions.
fn write_in_tokens(words: &[&Token], first: usize) -> Option<Verdict> {
    let write = |reason: &'static str| Some(Verdict::new(QueryClass::Write, reason));
    let starts_query = matches!(word_at(words, first).as_str(), "SELECT" | "WITH");
    for (i, token) in words.iter().enumerate() {
        let Token::Word(w) = token else { continue };
        match word_at(words, i).as_str() {
            "INSERT" | "UPDATE" | "DELETE" | "MERGE" => {
                return write("INSERT/UPDATE/DELETE/MERGE (not parsed)");
            }
            "FOR"
                if word_at(words, i + 1) == "SHARE"
                    || (word_at(words, i + 1) == "KEY" && word_at(words, i + 2) == "SHARE") =>
            {
                return write("SELECT ... FOR SHARE locks rows (not parsed)");
            }
            "INTO" if starts_query => return write("SELECT INTO creates a table (not parsed)"),
            _ => {}
        }
        if matches!(words.get(i + 1), Some(Token::LParen)) {
            let name = FunctionName::from_parts([Some((w.value.as_str(), w.quote_style.is_some()))]);
            if name.is_some_and(|n| Builtins::primary_only_reason(n.name()).is_some()) {
                return write("calls a function that needs the primary (not parsed)");
            }
        }
    }
    None
}

/// PostgreSQL's reserved and "column name" keywords: they cannot name a function, so
/// `word(` with one of them is syntax (`IN (`, `ARRAY(`, `VARCHAR(20)`, `XMLELEMENT(`).
const NOT_FUNCTION_NAMES: &[&str] = &[
    "ALL",
    "ANALYSE",
    "ANALYZE",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "ASYMMETRIC",
    "BETWEEN",
    "BIGINT",
    "BIT",
    "BOOLEAN",
    "BOTH",
    "CASE",
    "CAST",
    "CHAR",
    "CHARACTER",
    "CHECK",
    "COALESCE",
    "COLLATE",
    "COLUMN",
    "CONSTRAINT",
    "CREATE",
    "CURRENT_CATALOG",
    "CURRENT_DATE",
    "CURRENT_ROLE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "DEC",
    "DECIMAL",
    "DEFAULT",
    "DEFERRABLE",
    "DESC",
    "DISTINCT",
    "DO",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "EXTRACT",
    "FALSE",
    "FETCH",
    "FLOAT",
    "FOR",
    "FOREIGN",
    "FROM",
    "GRANT",
    "GREATEST",
    "GROUP",
    "GROUPING",
    "HAVING",
    "IN",
    "INITIALLY",
    "INOUT",
    "INT",
    "INTEGER",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "LATERAL",
    "LEADING",
    "LEAST",
    "LIMIT",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "NATIONAL",
    "NCHAR",
    "NONE",
    "NORMALIZE",
    "NOT",
    "NULL",
    "NULLIF",
    "NUMERIC",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUT",
    "OVERLAY",
    "PLACING",
    "POSITION",
    "PRECISION",
    "PRIMARY",
    "REAL",
    "REFERENCES",
    "RETURNING",
    "ROW",
    "SELECT",
    "SESSION_USER",
    "SETOF",
    "SMALLINT",
    "SOME",
    "SUBSTRING",
    "SYMMETRIC",
    "TABLE",
    "THEN",
    "TIME",
    "TIMESTAMP",
    "TO",
    "TRAILING",
    "TREAT",
    "TRIM",
    "TRUE",
    "UNION",
    "UNIQUE",
    "USER",
    "USING",
    "VALUES",
    "VARCHAR",
    "VARIADIC",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
    "XMLATTRIBUTES",
    "XMLCONCAT",
    "XMLELEMENT",
    "XMLEXISTS",
    "XMLFOREST",
    "XMLNAMESPACES",
    "XMLPARSE",
    "XMLPI",
    "XMLROOT",
    "XMLSERIALIZE",
    "XMLTABLE",
];

/// A query the parser did not understand, judged by its `name(` tokens: known functions
/// are fine, unknown ones are listed, write functions (configured ones too) make it a write.
fn query_tokens<R: Resolve>(words: &[&Token], resolver: &R, analysis: &mut Analysis) -> Verdict {
    for i in 0..words.len() {
        if !matches!(words.get(i + 1), Some(Token::LParen)) || !is_call(words, i) {
            continue;
        }
        // Walk back over `schema.` qualifiers.
        let mut start = i;
        while start >= 2 && matches!(words[start - 1], Token::Period) && matches!(words[start - 2], Token::Word(_)) {
            start -= 2;
        }
        let parts = words[start..=i].iter().step_by(2).map(|t| match t {
            Token::Word(w) => Some((w.value.as_str(), w.quote_style.is_some())),
            _ => None,
        });
        let Some(name) = FunctionName::from_parts(parts) else {
            return Verdict::new(QueryClass::Unknown, "could not be parsed");
        };
        match resolver.resolve(&name) {
            Resolution::ReplicaSafe => {}
            Resolution::PrimaryOnly(why) => return Verdict::new(QueryClass::Write, why),
            Resolution::RunsSql { .. } => {
                return Verdict::new(QueryClass::Unknown, "runs SQL text (not parsed)");
            }
            Resolution::Unknown => analysis.add_unknown_function(name),
        }
    }
    Verdict::new(QueryClass::Read, "query (not parsed: judged from its tokens)")
}

/// Whether the word at `i`, followed by `(`, is a function call rather than syntax.
fn is_call(words: &[&Token], i: usize) -> bool {
    let Some(Token::Word(w)) = words.get(i) else {
        return false;
    };
    if w.quote_style.is_none() && NOT_FUNCTION_NAMES.contains(&w.value.to_ascii_uppercase().as_str()) {
        return false;
    }
    let before = i.checked_sub(1).and_then(|j| words.get(j));
    let before_word = i.checked_sub(1).map(|j| word_at(words, j)).unwrap_or_default();
    // `f(x) OVER (`, `FILTER (`, `sub(...) alias(cols)`: nothing calls right after `)`.
    if matches!(before, Some(Token::RParen)) {
        return false;
    }
    // `AS alias(cols)`, `ORDER BY (`, `CHARACTER VARYING(20)`, `BIT VARYING(5)`.
    if before_word == "AS"
        || (matches!(before_word.as_str(), "ORDER" | "GROUP" | "PARTITION") && word_at(words, i) == "BY")
        || (matches!(before_word.as_str(), "CHARACTER" | "CHAR" | "BIT") && word_at(words, i) == "VARYING")
    {
        return false;
    }
    // `WITH name(cols) AS [NOT] [MATERIALIZED] (`: a CTE, not a call.
    if let Some(close) = matching_paren(words, i + 1) {
        let after = word_at(words, close + 1);
        if after == "AS"
            && (matches!(words.get(close + 2), Some(Token::LParen))
                || matches!(word_at(words, close + 2).as_str(), "NOT" | "MATERIALIZED"))
        {
            return false;
        }
    }
    true
}

/// Index of the `)` matching the `(` at `open`.
fn matching_paren(words: &[&Token], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, token) in words.iter().enumerate().skip(open) {
        match token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}
