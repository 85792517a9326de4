//! Texts the classifier does not parse, because the tree would be too deep to walk.
//!
//! sqlparser parses a chain of binary operators (`a = 1 OR a = 2 OR ...`) in a loop but builds
//! a left-deep tree, which its visitor, ours and `Drop` then walk by recursion: 40,000 terms
//! overflow a 2 MiB thread stack, an abort that no `catch_unwind` sees. Nesting that the parser
//! itself recurses on (parentheses, subqueries, `NOT NOT ...`) stops at its recursion limit and
//! needs nothing here. A text too long or with too many operators is judged unknown: it runs on
//! the primary, which is always correct.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Longer texts are not even tokenized (bulk statements of this size are writes anyway).
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// At most this many operators, so at most this deep a tree of them: ~5% of what overflows a
/// 2 MiB stack in a debug build.
pub(crate) const MAX_OPERATORS: usize = 2_000;

/// Why `sql` is not parsed, if it is not.
pub(crate) fn too_deep(sql: &str) -> Option<&'static str> {
    if sql.len() > MAX_BYTES {
        return Some("text too long to classify");
    }
    // Every operator takes at least one byte and sits between two operands.
    if sql.len() < 2 * MAX_OPERATORS {
        return None;
    }
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        // The parser fails on it as well; the token-level judgement that follows is flat.
        return None;
    };
    let operators = tokens.iter().filter(|t| deepens(t)).count();
    (operators > MAX_OPERATORS).then_some("too many operators to classify")
}

/// Whether a token can add a level to the expression tree: operators, casts, subscripts and
/// the keyword operators. Punctuation and literal kinds not named here count too: counting too
/// much only sends a large statement to the primary.
fn deepens(token: &Token) -> bool {
    match token {
        Token::Word(word) => matches!(
            word.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::OVERLAPS
                | Keyword::OPERATOR
        ),
        Token::Whitespace(_)
        | Token::Comma
        | Token::Period
        | Token::SemiColon
        | Token::LParen
        | Token::RParen
        | Token::Number(..)
        | Token::Placeholder(_)
        | Token::SingleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::EscapedStringLiteral(_)
        | Token::EOF => false,
        _ => true,
    }
}
