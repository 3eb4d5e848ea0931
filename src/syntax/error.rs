//! Syntax errors (E001): what went wrong, where, and how to say it in plain words.
//!
//! pest reports the farthest position it reached and the rules it tried there; this module
//! turns that into "expected `=` or `:`, found `foo`", and recognises the common mistakes
//! (a reserved word as a name, a space before a call's `(`, `=` for `~`).

use super::parser::Rule;
use crate::diag::{Code, Diagnostic};
use crate::span::Span;

/// Why a file failed to parse. Only the first error of a file is reported.
#[derive(Clone, Debug, PartialEq)]
pub enum ParseError {
    /// A token that cannot come here; `expected` lists what could, in plain words.
    Unexpected {
        span: Span,
        found: String,
        expected: Vec<String>,
        /// An enclosing bracket that is never closed, when there is one.
        unclosed: Option<(Span, char)>,
        hint: Option<String>,
    },
    /// A reserved word where a name is needed.
    ReservedWord { span: Span, word: String },
    /// White space between a call's name and its `(`.
    SpaceBeforeParen { span: Span, name: String },
    /// White space between `@` and the name of an annotation or strategy.
    SpaceAfterAt { span: Span, name: String },
    /// `name = Dist(...)` in a block, where a sample `name ~ Dist(...)` or a `let` was meant.
    EqualsForTilde { span: Span, target: String },
    /// `let name ~ Dist(...)`: `let` binds with `=`.
    TildeInLet { span: Span },
    /// A bracket still open at the end of the file.
    Unclosed {
        span: Span,
        open: Span,
        bracket: char,
    },
    /// A closing bracket that does not match the innermost open one.
    MismatchedBracket {
        span: Span,
        found: char,
        open: Span,
        expected: char,
    },
    /// A closing bracket with nothing open.
    UnmatchedClose { span: Span, found: char },
    /// A string literal with no closing `"` on its line.
    UnterminatedString { span: Span },
    /// An unknown escape in a string literal.
    InvalidEscape { span: Span, text: String },
    /// A number glued to letters or dots (`1e`, `2x`, `1.`).
    InvalidNumber { span: Span, text: String },
    /// A number too large to represent.
    NumberOutOfRange { span: Span, text: String },
    /// Brackets nested deeper than the limit.
    TooDeep { span: Span, limit: usize },
    /// An expression with more operators on one path than the limit.
    TooManyOperators { span: Span, limit: usize },
    /// The parser gave up (its call or stack budget ran out).
    TooComplex { span: Span },
    /// A state the parser should never reach.
    Internal { span: Span, what: String },
}

impl ParseError {
    /// Where the error points.
    pub fn span(&self) -> Span {
        match self {
            ParseError::Unexpected { span, .. }
            | ParseError::ReservedWord { span, .. }
            | ParseError::SpaceBeforeParen { span, .. }
            | ParseError::SpaceAfterAt { span, .. }
            | ParseError::EqualsForTilde { span, .. }
            | ParseError::TildeInLet { span }
            | ParseError::Unclosed { span, .. }
            | ParseError::MismatchedBracket { span, .. }
            | ParseError::UnmatchedClose { span, .. }
            | ParseError::UnterminatedString { span }
            | ParseError::InvalidEscape { span, .. }
            | ParseError::InvalidNumber { span, .. }
            | ParseError::NumberOutOfRange { span, .. }
            | ParseError::TooDeep { span, .. }
            | ParseError::TooManyOperators { span, .. }
            | ParseError::TooComplex { span }
            | ParseError::Internal { span, .. } => *span,
        }
    }
}

/// "a", "a or b", "a, b or c".
fn one_of(items: &[String]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

fn opener_name(c: char) -> &'static str {
    match c {
        '(' => "`(`",
        '[' => "`[`",
        _ => "`{`",
    }
}

fn closer_of(c: char) -> char {
    match c {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

impl From<ParseError> for Diagnostic {
    fn from(e: ParseError) -> Diagnostic {
        let span = e.span();
        let d = |msg: String| Diagnostic::new(Code::E001, span, msg);
        match e {
            ParseError::Unexpected {
                found,
                expected,
                unclosed,
                hint,
                ..
            } => {
                let mut diag = d(format!("expected {}, found {found}", one_of(&expected)))
                    .with_label(format!("expected {}", one_of(&expected)));
                if let Some((open, c)) = unclosed {
                    diag = diag
                        .with_secondary(open, format!("this {} is never closed", opener_name(c)));
                }
                if let Some(h) = hint {
                    diag = diag.with_hint(h);
                }
                diag
            }
            ParseError::ReservedWord { word, .. } => d(format!(
                "`{word}` is a reserved word and cannot be used as a name"
            ))
            .with_label("reserved word")
            .with_hint(format!("choose another name such as `{word}_`")),
            ParseError::SpaceBeforeParen { name, .. } => {
                d(format!("a call's `(` must follow `{name}` with no space"))
                    .with_label("space before `(`")
                    .with_hint(format!("write `{name}(` with no space"))
            }
            ParseError::SpaceAfterAt { name, .. } => {
                d(format!("`{name}` must follow `@` with no space"))
                    .with_label("space after `@`")
                    .with_hint(format!("write `@{name}`"))
            }
            ParseError::EqualsForTilde { target, .. } => d("expected `~`, found `=`".to_string())
                .with_label("expected `~`")
                .with_hint(format!(
                    "to sample or observe `{target}` write `{target} ~ Dist(...)`; \
                         to define a value write `let {target} = ...`"
                )),
            ParseError::TildeInLet { .. } => d("expected `=`, found `~`".to_string())
                .with_label("expected `=`")
                .with_hint("`let` defines a value with `=`; to sample or observe, drop the `let`"),
            ParseError::Unclosed { open, bracket, .. } => {
                d(format!("this {} is never closed", opener_name(bracket)))
                    .with_label(format!(
                        "expected `{}` before the end of the file",
                        closer_of(bracket)
                    ))
                    .with_secondary(open, format!("{} opened here", opener_name(bracket)))
                    .with_hint(format!("add the missing `{}`", closer_of(bracket)))
            }
            ParseError::MismatchedBracket {
                found,
                open,
                expected,
                ..
            } => d(format!("expected `{expected}`, found `{found}`"))
                .with_label(format!("expected `{expected}`"))
                .with_secondary(open, format!("to close this `{}`", opener_of(expected))),
            ParseError::UnmatchedClose { found, .. } => {
                d(format!("`{found}` closes nothing that is open"))
                    .with_label("unmatched bracket")
                    .with_hint("remove it, or add the opening bracket it belongs to")
            }
            ParseError::UnterminatedString { .. } => {
                d("this string has no closing `\"`".to_string())
                    .with_label("unterminated string")
                    .with_hint("close it with `\"` on the same line")
            }
            ParseError::InvalidEscape { text, .. } => {
                d(format!("`{text}` is not a valid escape in a string"))
                    .with_label("unknown escape")
                    .with_hint("the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`")
            }
            ParseError::InvalidNumber { text, .. } => {
                let hint = if text.contains("..") {
                    "ranges are written `a:b`, as in `for t in 1:T`"
                } else {
                    "numbers look like `128`, `0.5` or `1e-3`"
                };
                d(format!("`{text}` is not a valid number"))
                    .with_label("invalid number")
                    .with_hint(hint)
            }
            ParseError::NumberOutOfRange { text, .. } => {
                d(format!("the number `{text}` is too large")).with_label("out of range")
            }
            ParseError::TooDeep { limit, .. } => {
                d(format!("brackets are nested deeper than {limit} levels")).with_label("too deep")
            }
            ParseError::TooManyOperators { limit, .. } => d(format!(
                "an expression has more than {limit} operators in a row"
            ))
            .with_label("too long")
            .with_hint("split it with `let`"),
            ParseError::TooComplex { .. } => {
                d("the file is too complex for the parser".to_string())
            }
            ParseError::Internal { what, .. } => d(format!(
                "internal compiler error in the parser ({what}); please report it"
            )),
        }
    }
}

fn opener_of(c: char) -> char {
    match c {
        ')' => '(',
        ']' => '[',
        _ => '{',
    }
}

/// How messages name "any item".
pub const ITEM_WORDS: &str = "an item (`const`, `data`, `latent`, `net`, `model`, ...)";

/// The human words for what a grammar rule stands for.
pub fn rule_words(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::ident => "a name",
        Rule::key => "an entry `key = value`",
        Rule::callee | Rule::call => "a call such as `f(x)`",
        Rule::number => "a number",
        Rule::string => "a string",
        Rule::expr | Rule::value | Rule::arg | Rule::neg | Rule::paren | Rule::list => {
            "an expression"
        }
        Rule::add | Rule::sub | Rule::mul | Rule::div => "an operator",
        Rule::field | Rule::index => "an operator",
        Rule::type_expr | Rule::domain_type | Rule::set_type | Rule::set_domain => "a type",
        Rule::shape => "`[`",
        Rule::domain_arg => "`(`",
        Rule::kw_const
        | Rule::kw_data
        | Rule::kw_latent
        | Rule::kw_param
        | Rule::kw_net
        | Rule::kw_set
        | Rule::kw_model
        | Rule::kw_guide
        | Rule::kw_train
        | Rule::kw_meta
        | Rule::kw_global
        | Rule::const_item
        | Rule::data_item
        | Rule::latent_item
        | Rule::param_item
        | Rule::net_item
        | Rule::set_item
        | Rule::model_item
        | Rule::guide_item
        | Rule::train_item
        | Rule::meta_item
        | Rule::annotation => ITEM_WORDS,
        Rule::let_stmt | Rule::for_stmt | Rule::sample_stmt | Rule::kw_let | Rule::kw_for => {
            "a statement"
        }
        Rule::target => "a name",
        Rule::entry => "an entry `key = value`",
        Rule::kw_exact => "`exact`",
        Rule::kw_in => "`in`",
        Rule::kw_size => "`size`",
        Rule::kw_given => "`given`",
        Rule::kw_partial => "`partial`",
        Rule::flow => "`|>`",
        Rule::strategy => "`@strategy`",
        Rule::block | Rule::entries => "`{`",
        Rule::heads | Rule::let_tuple => "`(`",
        Rule::binding => "a name",
        Rule::EOI => "the end of the file",
        _ => return None,
    })
}
