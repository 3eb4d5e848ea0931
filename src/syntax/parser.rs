//! Parsing: one function per grammar rule turns pest `Pair`s into AST nodes.
//!
//! `parse` first runs the lexical scan (`scan.rs`), which refuses input nested too deeply
//! for a recursive parser and finds the errors best named from characters alone; then pest.
//! When pest fails, `translate` names the first error in plain words, preferring a lexical
//! error at or before the place pest stopped. Spans are byte offsets of exactly a node's
//! text: pest lets rules that end in an optional part swallow trailing white space and
//! comments, so `span_of` trims them off.

use super::ast::{self, Expr, ExprKind, Ident};
use super::error::{rule_words, ParseError, ITEM_WORDS};
use super::scan;
use crate::span::Span;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;
use std::sync::OnceLock;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/vi.pest"]
struct ViParser;

/// A `#` comment and its span (comments are not in the AST; `fmt` re-attaches them).
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
}

const KEYWORDS: [&str; 18] = [
    "const", "data", "latent", "param", "net", "set", "model", "guide", "train", "meta", "let",
    "for", "in", "exact", "global", "given", "partial", "size",
];

/// Whether `word` starts an item.
fn is_item_keyword(word: &str) -> bool {
    matches!(
        word,
        "const"
            | "data"
            | "latent"
            | "param"
            | "net"
            | "set"
            | "model"
            | "guide"
            | "train"
            | "meta"
            | "global"
    )
}

/// Whether `word` is one of the reserved words.
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// Parse a whole file.
pub fn parse(src: &str) -> Result<ast::File, ParseError> {
    let scanned = scan::scan(src);
    if let Some((_, e @ (ParseError::TooDeep { .. } | ParseError::TooManyOperators { .. }))) =
        &scanned.error
    {
        return Err(e.clone());
    }
    if scanned.max_depth <= SHALLOW && scanned.max_operators <= SHALLOW_OPERATORS {
        return parse_scanned(src, &scanned);
    }
    // Deep nesting recurses deeply (pest, then the tree builder): give it a stack of its own
    // rather than risk the caller's, which may be a small one.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("vic-parse".to_string())
            .stack_size(DEEP_STACK)
            .spawn_scoped(scope, || parse_scanned(src, &scanned));
        match worker.map(|w| w.join()) {
            Ok(Ok(result)) => result,
            _ => Err(ParseError::TooComplex {
                span: Span::new(0, 0),
            }),
        }
    })
}

/// Bracket depth that any caller's stack can take.
const SHALLOW: usize = 32;
/// Operators on one path that any caller's stack can take.
const SHALLOW_OPERATORS: usize = 200;
/// The stack for parsing deeply nested input (reserved, touched only as needed).
const DEEP_STACK: usize = 64 << 20;

/// Serializes the parses that need pest's detailed error tracking (a process-wide flag).
static DETAILED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn parse_scanned(src: &str, scanned: &scan::Scan) -> Result<ast::File, ParseError> {
    // pest's detailed tracking of parse attempts (which the error messages use) costs
    // about half of a successful parse; a file that parses never needs it, so parse
    // without it first and re-parse with it only to explain a failure.
    let result = ViParser::parse(Rule::file, src).or_else(|_| {
        let _serial = DETAILED.lock().unwrap_or_else(|p| p.into_inner());
        pest::set_error_detail(true);
        let detailed = ViParser::parse(Rule::file, src);
        pest::set_error_detail(false);
        detailed
    });
    match result {
        Ok(mut pairs) => {
            if let Some((_, e)) = &scanned.error {
                return Err(e.clone());
            }
            match pairs.next() {
                Some(p) => file(p),
                None => Err(internal(Span::new(0, 0), "no file rule")),
            }
        }
        Err(err) => Err(translate(src, scanned, err)),
    }
}

/// Every syntax error of a file, not only the first: after each error the item it falls
/// in (from the start of the line of its item keyword to the next such line) is blanked
/// out, offsets kept, and the rest parsed again. Empty when the file parses. At most
/// [`MAX_SYNTAX_ERRORS`].
pub fn parse_errors(src: &str) -> Vec<ParseError> {
    let starts = item_starts(src);
    let mut text = src.to_string();
    let mut errors: Vec<ParseError> = Vec::new();
    while errors.len() < MAX_SYNTAX_ERRORS {
        let Err(e) = parse(&text) else { break };
        let pos = e.span().range().map_or(0, |r| r.start);
        // An error at the keyword of the next item is the previous item's fault.
        let from = starts
            .iter()
            .rev()
            .copied()
            .find(|&s| s < pos.max(1))
            .unwrap_or(0);
        let to = starts
            .iter()
            .copied()
            .find(|&s| s > from && s >= pos)
            .unwrap_or(text.len());
        let stop = matches!(
            e,
            ParseError::TooDeep { .. }
                | ParseError::TooManyOperators { .. }
                | ParseError::TooComplex { .. }
        );
        errors.push(e);
        if stop || to <= from {
            break;
        }
        // Blank the broken item, keeping every offset (and line) where it was.
        let blank: String = text[from..to]
            .chars()
            .map(|c| {
                if c == '\n' {
                    "\n".to_string()
                } else {
                    " ".repeat(c.len_utf8())
                }
            })
            .collect();
        text.replace_range(from..to, &blank);
    }
    errors
}

/// The most syntax errors [`parse_errors`] reports in one file.
pub const MAX_SYNTAX_ERRORS: usize = 20;

/// Byte offsets of the lines that start an item: an item keyword, `@` or `global` at the
/// start of the line.
fn item_starts(src: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in src.split_inclusive('\n') {
        let word: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '@')
            .collect();
        if is_item_keyword(&word) || word.starts_with('@') {
            out.push(at);
        }
        at += line.len();
    }
    out
}

/// All comments of a file, in order.
pub fn comments(src: &str) -> Vec<Comment> {
    scan::scan(src).comments
}

fn internal(span: Span, what: &str) -> ParseError {
    ParseError::Internal {
        span,
        what: what.to_string(),
    }
}

// ------------------------------------------------------------------ errors

/// Turn pest's failure into the most precise error we can name.
fn translate(src: &str, scanned: &scan::Scan, err: pest::error::Error<Rule>) -> ParseError {
    let pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    }
    .min(src.len());
    let positives = match &err.variant {
        pest::error::ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        pest::error::ErrorVariant::CustomError { .. } => {
            return ParseError::TooComplex {
                span: Span::new(pos, pos),
            }
        }
    };
    // pest's own position counts rules only; its parse attempts also see the punctuation
    // (`:` after `data x`), which usually gets farther. pest does not export the type of a
    // call stack's deepest attempt, so it is read back through its `Debug` form; should
    // that form change, only the rules of pest's own error are used.
    let (pos, rules, literals) = match err.parse_attempts() {
        Some(a) if a.max_position >= pos && a.max_position <= src.len() => {
            // Where pest's own rule list is for the same place, it is the more precise one.
            let same_place = a.max_position == pos;
            let mut rules: Vec<Rule> = a
                .call_stacks()
                .iter()
                .filter_map(|cs| {
                    let deepest = format!("{:?}", cs.deepest);
                    NAMED_RULES
                        .iter()
                        .find(|r| deepest == format!("Rule({r:?})"))
                        .copied()
                })
                .filter(|_| !same_place)
                .collect();
            if same_place {
                rules.extend(positives.iter().copied());
            }
            let tokens: Vec<String> = a.expected_tokens().iter().map(|t| t.to_string()).collect();
            for t in &tokens {
                // Keywords tried as plain strings stand for the construct they start.
                match t.as_str() {
                    "const" | "data" | "latent" | "param" | "net" | "set" | "model" | "guide"
                    | "train" | "meta" | "global" => rules.push(Rule::kw_const),
                    "let" | "for" => rules.push(Rule::kw_let),
                    "in" => rules.push(Rule::kw_in),
                    "exact" => rules.push(Rule::kw_exact),
                    "size" => rules.push(Rule::kw_size),
                    "given" => rules.push(Rule::kw_given),
                    "partial" => rules.push(Rule::kw_partial),
                    _ => {}
                }
            }
            let literals = tokens
                .into_iter()
                .filter(|t| is_punctuation(t))
                .collect::<Vec<_>>();
            let skipped = src.get(pos..a.max_position).unwrap_or("").trim();
            if (rules.is_empty() && literals.is_empty()) || is_keyword(skipped) {
                // Only lookahead noise (the end of a reserved word) got that far.
                (pos, positives, Vec::new())
            } else {
                (a.max_position, rules, literals)
            }
        }
        _ => (pos, positives, Vec::new()),
    };
    // A lexical error at or before the place pest stopped explains it better.
    if let Some((at, e)) = &scanned.error {
        if *at <= pos {
            return e.clone();
        }
    }
    if !src.is_char_boundary(pos) {
        return internal(Span::new(0, 0), "error position inside a character");
    }
    let raw_pos = pos;
    let pos = skip_space(src, pos);
    if pos >= src.len() {
        if let Some(&(at, c)) = scanned.unclosed.last() {
            let end = end_of_text(src);
            return ParseError::Unclosed {
                span: Span::new(end, end),
                open: Span::new(at, at + 1),
                bracket: c,
            };
        }
    }
    let positives = rules;
    let (found_span, found) = token_at(src, pos);
    let pos = found_span.range().map_or(pos, |r| r.start);
    let wants_name = positives
        .iter()
        .any(|r| matches!(r, Rule::ident | Rule::callee | Rule::target | Rule::binding));
    let found_text = &src[found_span.range().unwrap_or(pos..pos)];

    let unclosed = scanned
        .unclosed
        .iter()
        .rev()
        .find(|(at, _)| *at < pos)
        .map(|&(at, c)| (Span::new(at, at + 1), c));
    // An item keyword inside a bracket that never closed: the closing bracket is missing,
    // not a name (the innermost one: `)` for an unclosed call, `}` for a block).
    if let (true, Some((_, open))) = (is_item_keyword(found_text), unclosed) {
        let (close, what) = match open {
            '(' => (')', "the call"),
            '[' => (']', "the list"),
            _ => ('}', "the block"),
        };
        return ParseError::Unexpected {
            span: found_span,
            found,
            expected: vec![format!("`{close}`")],
            unclosed,
            hint: Some(format!("close {what} with `{close}` before `{found_text}`")),
        };
    }
    // A reserved word where a name was wanted.
    if wants_name && is_keyword(found_text) {
        return ParseError::ReservedWord {
            span: found_span,
            word: found_text.to_string(),
        };
    }
    // `foo (x)`: a name, white space, then `(`.
    if let Some(e) = space_before_paren(src, pos, found_text) {
        return e;
    }
    // `@ enumerate`: the name must follow `@` directly.
    if found_text == "@" && src[pos + 1..].starts_with(|c: char| c.is_whitespace()) {
        let rest = src[pos + 1..].trim_start();
        let name_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if name_len > 0 {
            let end = src.len() - rest.len() + name_len;
            return ParseError::SpaceAfterAt {
                span: Span::new(pos, end),
                name: rest[..name_len].to_string(),
            };
        }
    }
    if found_text == "@" {
        return ParseError::Unexpected {
            span: found_span,
            found,
            expected: vec!["a name right after `@`".to_string()],
            unclosed: None,
            hint: Some(
                "write a strategy such as `@enumerate` or an annotation such as `@per_member`"
                    .to_string(),
            ),
        };
    }
    // `z = Normal(0, 1)` in a block.
    if found_text == "=" && literals.iter().any(|l| l == "~") {
        let before = src[..pos].trim_end();
        let start = before.len()
            - trailing_run(before, |c| {
                c.is_ascii_alphanumeric() || matches!(c, '_' | '[' | ']' | '-' | '+')
            });
        return ParseError::EqualsForTilde {
            span: found_span,
            target: before[start..].to_string(),
        };
    }
    if found_text == "~" && literals.iter().any(|l| l == "=") && in_let(src, pos) {
        return ParseError::TildeInLet { span: found_span };
    }

    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if !expected.contains(&s) {
            expected.push(s);
        }
    };
    for r in &positives {
        if let Some(w) = rule_words(*r) {
            push(w.to_string());
        }
    }
    let mut lits = literals;
    lits.sort_by_key(|l| literal_rank(l));
    for l in lits {
        match l.as_str() {
            "+" | "-" | "*" | "/" | "." => push("an operator".to_string()),
            _ => push(format!("`{l}`")),
        }
    }
    // `mlp` with no `(`: the name was read, only its `(` is missing.
    let glued_to_name = src[..raw_pos].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && expected.iter().any(|e| e == "`(`")
        && expected.iter().any(|e| e == "a call such as `f(x)`");
    if glued_to_name {
        expected.retain(|e| e == "`(`");
    }
    // Say "an expression" once rather than every way one can start, and likewise for
    // items and statements.
    let subsumes: [(&str, &[&str]); 3] = [
        (
            "an expression",
            &[
                "a name",
                "a call such as `f(x)`",
                "a number",
                "a string",
                "`(`",
                "`[`",
                "an operator",
                "an entry `key = value`",
            ],
        ),
        (ITEM_WORDS, &["the end of the file", "`@`"]),
        ("a statement", &["a name"]),
    ];
    for (general, specific) in subsumes {
        if expected.iter().any(|e| e == general) {
            expected.retain(|e| !specific.contains(&e.as_str()));
        }
    }
    if expected.iter().any(|e| e == "an operator") {
        expected.retain(|e| e != "`[`");
    }
    // After a complete value, a range's `:` is seldom what was meant.
    if expected
        .iter()
        .any(|e| e == "`}`" || e == "`)`" || e == "`,`")
    {
        expected.retain(|e| e != "`:`");
    }
    // Operators are seldom what was meant; mention them last.
    expected.sort_by_key(|e| e == "an operator");
    // `a = 1, b = 2` in `train { }`, `f(x) z ~ ...`: no separators between entries.
    let between_entries = expected
        .iter()
        .any(|e| e == "an entry `key = value`" || e == "a statement");
    let hint = match found_text {
        "," if between_entries => {
            Some("entries and statements need no separator; start a new line or use `;`")
        }
        "," if in_let(src, pos) => Some("several names are bound as a tuple: `let (a, b) = ...`"),
        "'" => Some("strings are written in double quotes: `\"...\"`"),
        "^" | "%" | "**" => Some("the operators are `+`, `-`, `*` and `/`"),
        ":" if expected.iter().any(|e| e == "an entry `key = value`") => {
            Some("entries are written `key = value`")
        }
        ":" if after_arrow(src, pos) => {
            Some("named heads go in parentheses: `-> (loc: Real[Z], scale: Positive[Z])`")
        }
        _ => None,
    }
    .map(str::to_string);
    ParseError::Unexpected {
        span: found_span,
        found,
        expected,
        unclosed,
        hint,
    }
}

/// Punctuation worth naming in a message (not white space, comments or a string's quote).
fn is_punctuation(t: &str) -> bool {
    !t.is_empty()
        && t.chars().all(|c| {
            !c.is_alphanumeric()
                && !c.is_whitespace()
                && !matches!(c, '_' | ';' | '#' | '"' | '\u{FEFF}')
        })
}

/// The rules `rule_words` can name, to read pest's parse attempts back.
const NAMED_RULES: &[Rule] = &[
    Rule::ident,
    Rule::key,
    Rule::callee,
    Rule::call,
    Rule::number,
    Rule::string,
    Rule::expr,
    Rule::value,
    Rule::type_expr,
    Rule::kw_const,
    Rule::kw_data,
    Rule::kw_latent,
    Rule::kw_param,
    Rule::kw_net,
    Rule::kw_set,
    Rule::kw_model,
    Rule::kw_guide,
    Rule::kw_train,
    Rule::kw_meta,
    Rule::kw_global,
    Rule::kw_let,
    Rule::kw_for,
    Rule::kw_in,
    Rule::kw_exact,
    Rule::kw_size,
    Rule::kw_given,
    Rule::kw_partial,
    Rule::target,
    Rule::entry,
    Rule::block,
    Rule::entries,
    Rule::heads,
    Rule::binding,
    Rule::annotation,
    Rule::strategy,
    Rule::flow,
    Rule::EOI,
];

/// Punctuation in the order it reads best in a list of alternatives.
fn literal_rank(l: &str) -> usize {
    [
        ",", ")", "]", "}", "=", "~", ":", "->", "|>", "(", "[", "{", "@",
    ]
    .iter()
    .position(|x| *x == l)
    .unwrap_or(99)
}

/// The length in bytes of the longest run of characters at the end of `s` that satisfy `keep`.
fn trailing_run(s: &str, keep: impl Fn(char) -> bool) -> usize {
    s.chars()
        .rev()
        .take_while(|&c| keep(c))
        .map(char::len_utf8)
        .sum()
}

/// Whether `pos` follows `-> name`, the start of a network's output.
fn after_arrow(src: &str, pos: usize) -> bool {
    let before = src[..pos].trim_end();
    let name = trailing_run(before, |c| c.is_ascii_alphanumeric() || c == '_');
    name > 0 && before[..before.len() - name].trim_end().ends_with("->")
}

/// Whether the statement around `pos` starts with `let`.
fn in_let(src: &str, pos: usize) -> bool {
    let before = &src[..pos];
    let line_start = before.rfind(['\n', ';', '{', '}']).map_or(0, |i| i + 1);
    let stmt = before[line_start..].trim_start();
    stmt.starts_with("let")
        && !stmt[3..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
}

/// The error for `name (`, if that is what sits at `pos`.
fn space_before_paren(src: &str, pos: usize, found: &str) -> Option<ParseError> {
    let is_name = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !is_keyword(s)
    };
    let mk = |start: usize, name: &str, paren: usize| ParseError::SpaceBeforeParen {
        span: Span::new(start, paren + 1),
        name: name.to_string(),
    };
    if found == "(" {
        // `decoder (z)`: pest stopped at the `(`.
        let before = &src[..pos];
        let trimmed = before.trim_end_matches([' ', '\t']);
        if trimmed.len() == before.len() {
            return None;
        }
        let start =
            trimmed.len() - trailing_run(trimmed, |c| c.is_ascii_alphanumeric() || c == '_');
        let name = &trimmed[start..];
        if is_name(name) {
            return Some(mk(start, name, pos));
        }
    } else if is_name(found) {
        // `Normal (0, 1)`: pest stopped at the name, which wanted to be a call.
        let after = &src[pos + found.len()..];
        let rest = after.trim_start_matches([' ', '\t']);
        if rest.len() < after.len() && rest.starts_with('(') {
            let paren = src.len() - rest.len();
            return Some(mk(pos, found, paren));
        }
    }
    None
}

/// Just after the last character that is not white space: where "the end of the file" is
/// shown, on the line the user was writing rather than an empty one below it.
fn end_of_text(src: &str) -> usize {
    src.trim_end().len()
}

/// The first offset at or after `pos` that is not white space or a comment.
fn skip_space(src: &str, mut pos: usize) -> usize {
    let bytes = src.as_bytes();
    while pos < bytes.len() {
        match bytes[pos] {
            b' ' | b'\t' | b'\r' | b'\n' | b';' => pos += 1,
            b'#' => pos = src[pos..].find('\n').map_or(src.len(), |n| pos + n),
            _ => break,
        }
    }
    pos
}

/// The token at `pos` and how to name it in a message.
fn token_at(src: &str, pos: usize) -> (Span, String) {
    let pos = skip_space(src, pos);
    let rest = &src[pos..];
    let Some(c) = rest.chars().next() else {
        let end = end_of_text(src);
        return (Span::new(end, end), "the end of the file".to_string());
    };
    let len = if c.is_ascii_alphanumeric() || c == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len())
    } else if c == '"' {
        rest[1..].find('"').map_or(rest.len(), |i| i + 2)
    } else if rest.starts_with("->") || rest.starts_with("|>") {
        2
    } else {
        c.len_utf8()
    };
    // Names and numbers are words; `.` only continues a number.
    let len = if c.is_ascii_alphabetic() || c == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len())
    } else {
        len
    };
    let text = &rest[..len];
    let found = if c == '"' {
        "a string".to_string()
    } else if c.is_whitespace() {
        "white space".to_string()
    } else {
        format!("`{}`", text.replace('`', "'"))
    };
    (Span::new(pos, pos + len), found)
}

// ------------------------------------------------------------------ pairs

/// The span of a pair, without the white space and comments pest lets a rule that ends
/// in an optional or repeated part swallow.
fn span_of(p: &Pair<'_, Rule>) -> Span {
    let s = p.as_span();
    Span::new(s.start(), trimmed_end(s.get_input(), s.start(), s.end()))
}

/// `end` moved back over trailing white space, `;` and comments, but not before `start`.
fn trimmed_end(src: &str, start: usize, mut end: usize) -> usize {
    let bytes = src.as_bytes();
    loop {
        while end > start && matches!(bytes[end - 1], b' ' | b'\t' | b'\r' | b'\n' | b';') {
            end -= 1;
        }
        // Only a `#` on the last line of the text can start a comment that ends it.
        let Some(hash) = src[start..end].rfind('#').map(|h| start + h) else {
            return end;
        };
        if src[hash..end].contains('\n') {
            return end;
        }
        // The `#` may sit in a string: look at the whole line to tell.
        let line_start = src[..hash].rfind('\n').map_or(0, |i| i + 1);
        match comment_start(&src[line_start..end]) {
            Some(c) if line_start + c >= start => end = line_start + c,
            _ => return end,
        }
    }
}

/// The offset of the `#` that starts a comment in one line of text, if any.
fn comment_start(line: &str) -> Option<usize> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '#' if !in_string => return Some(i),
            _ => {}
        }
    }
    None
}

/// The children of one pair, taken in order, each checked against the grammar.
struct Children<'i> {
    inner: std::iter::Peekable<Pairs<'i, Rule>>,
    parent: Span,
}

impl<'i> Children<'i> {
    fn of(p: Pair<'i, Rule>) -> Children<'i> {
        let parent = span_of(&p);
        Children {
            inner: p.into_inner().peekable(),
            parent,
        }
    }

    fn next(&mut self) -> Result<Pair<'i, Rule>, ParseError> {
        self.inner
            .next()
            .ok_or_else(|| internal(self.parent, "missing child"))
    }

    fn expect(&mut self, rule: Rule) -> Result<Pair<'i, Rule>, ParseError> {
        let p = self.next()?;
        if p.as_rule() == rule {
            Ok(p)
        } else {
            Err(internal(
                span_of(&p),
                &format!("expected {rule:?}, got {:?}", p.as_rule()),
            ))
        }
    }

    fn next_if(&mut self, rule: Rule) -> Option<Pair<'i, Rule>> {
        self.inner.next_if(|p| p.as_rule() == rule)
    }

    fn peek_rule(&mut self) -> Option<Rule> {
        self.inner.peek().map(|p| p.as_rule())
    }

    fn rest(self) -> std::iter::Peekable<Pairs<'i, Rule>> {
        self.inner
    }
}

// ------------------------------------------------------------------ items

fn file(p: Pair<'_, Rule>) -> Result<ast::File, ParseError> {
    let mut items = Vec::new();
    for c in p.into_inner() {
        if c.as_rule() == Rule::EOI {
            break;
        }
        items.push(item(c)?);
    }
    Ok(ast::File { items })
}

fn item(p: Pair<'_, Rule>) -> Result<ast::Item, ParseError> {
    let span = span_of(&p);
    let kind = match p.as_rule() {
        Rule::const_item => const_item(p)?,
        Rule::data_item => data_item(p)?,
        Rule::latent_item => latent_item(p)?,
        Rule::param_item => param_item(p)?,
        Rule::net_item => ast::ItemKind::Net(net_item(p)?),
        Rule::set_item => set_item(p)?,
        Rule::model_item => model_item(p)?,
        Rule::guide_item => guide_item(p)?,
        Rule::train_item => ast::ItemKind::Train(train_item(p)?),
        Rule::meta_item => ast::ItemKind::Meta(meta_item(p)?),
        r => return Err(internal(span, &format!("unexpected item rule {r:?}"))),
    };
    Ok(ast::Item { kind, span })
}

fn const_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_const)?;
    let name = ident(c.expect(Rule::ident)?);
    let value = expr(c.expect(Rule::expr)?)?;
    Ok(ast::ItemKind::Const { name, value })
}

fn data_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_data)?;
    let name = ident(c.expect(Rule::ident)?);
    let ty = type_expr(c.expect(Rule::type_expr)?)?;
    let role = match c.next_if(Rule::data_role) {
        Some(r) => data_role(r)?,
        None => ast::DataRole::Observed,
    };
    Ok(ast::ItemKind::Data { name, ty, role })
}

fn data_role(p: Pair<'_, Rule>) -> Result<ast::DataRole, ParseError> {
    let mut c = Children::of(p);
    let kw = c.next()?;
    match kw.as_rule() {
        Rule::kw_given => Ok(ast::DataRole::Given),
        Rule::kw_partial => Ok(ast::DataRole::Partial),
        r => Err(internal(span_of(&kw), &format!("data role {r:?}"))),
    }
}

fn latent_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    let global = c.next_if(Rule::kw_global).map(|g| span_of(&g));
    c.expect(Rule::kw_latent)?;
    let name = ident(c.expect(Rule::ident)?);
    let ty = type_expr(c.expect(Rule::type_expr)?)?;
    Ok(ast::ItemKind::Latent { name, ty, global })
}

fn param_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_param)?;
    let name = ident(c.expect(Rule::ident)?);
    let ty = type_expr(c.expect(Rule::type_expr)?)?;
    let init = match c.next_if(Rule::expr) {
        Some(e) => Some(expr(e)?),
        None => None,
    };
    Ok(ast::ItemKind::Param { name, ty, init })
}

fn net_item(p: Pair<'_, Rule>) -> Result<ast::NetDecl, ParseError> {
    let mut c = Children::of(p);
    let mut annotations = Vec::new();
    while let Some(a) = c.next_if(Rule::annotation) {
        annotations.push(annotation(a)?);
    }
    c.expect(Rule::kw_net)?;
    let name = ident(c.expect(Rule::ident)?);
    let mut inputs = Vec::new();
    while let Some(b) = c.next_if(Rule::binding) {
        inputs.push(binding(b)?);
    }
    let output = match c.peek_rule() {
        Some(Rule::heads) => ast::NetOutput::Heads(heads(c.next()?)?),
        _ => ast::NetOutput::Single(type_expr(c.expect(Rule::type_expr)?)?),
    };
    let arch = call(c.expect(Rule::call)?)?;
    Ok(ast::NetDecl {
        annotations,
        name,
        inputs,
        output,
        arch,
    })
}

fn annotation(p: Pair<'_, Rule>) -> Result<Ident, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::at_sign)?;
    Ok(ident(c.expect(Rule::ident)?))
}

fn binding(p: Pair<'_, Rule>) -> Result<ast::Binding, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let name = ident(c.expect(Rule::ident)?);
    let ty = type_expr(c.expect(Rule::type_expr)?)?;
    Ok(ast::Binding { name, ty, span })
}

fn heads(p: Pair<'_, Rule>) -> Result<Vec<ast::Binding>, ParseError> {
    p.into_inner().map(binding).collect()
}

fn set_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_set)?;
    let name = ident(c.expect(Rule::ident)?);
    let ty = type_expr(c.expect(Rule::type_expr)?)?;
    c.expect(Rule::kw_size)?;
    let size = expr(c.expect(Rule::expr)?)?;
    Ok(ast::ItemKind::Set { name, ty, size })
}

fn model_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_model)?;
    Ok(ast::ItemKind::Model(block(c.expect(Rule::block)?)?))
}

fn guide_item(p: Pair<'_, Rule>) -> Result<ast::ItemKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_guide)?;
    let body = c.next()?;
    match body.as_rule() {
        Rule::kw_exact => Ok(ast::ItemKind::Guide(ast::GuideBody::Exact(span_of(&body)))),
        _ => {
            let b = block(body)?;
            Ok(ast::ItemKind::Guide(ast::GuideBody::Block(b)))
        }
    }
}

fn train_item(p: Pair<'_, Rule>) -> Result<Vec<ast::Entry>, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_train)?;
    entries(c.expect(Rule::entries)?)
}

fn meta_item(p: Pair<'_, Rule>) -> Result<Vec<ast::Entry>, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_meta)?;
    entries(c.expect(Rule::entries)?)
}

fn entries(p: Pair<'_, Rule>) -> Result<Vec<ast::Entry>, ParseError> {
    p.into_inner().map(entry).collect()
}

fn entry(p: Pair<'_, Rule>) -> Result<ast::Entry, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let key = ident(c.expect(Rule::key)?);
    let value = value(c.expect(Rule::value)?)?;
    Ok(ast::Entry { key, value, span })
}

// ------------------------------------------------------------------ types

fn type_expr(p: Pair<'_, Rule>) -> Result<ast::TypeExpr, ParseError> {
    let mut c = Children::of(p);
    let inner = c.next()?;
    match inner.as_rule() {
        Rule::set_type => set_type(inner),
        _ => domain_type(inner),
    }
}

fn set_type(p: Pair<'_, Rule>) -> Result<ast::TypeExpr, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    c.expect(Rule::set_domain)?;
    let elem = type_expr(c.expect(Rule::type_expr)?)?;
    Ok(ast::TypeExpr {
        kind: ast::TypeExprKind::Set(Box::new(elem)),
        span,
    })
}

fn domain_type(p: Pair<'_, Rule>) -> Result<ast::TypeExpr, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let name = ident(c.expect(Rule::ident)?);
    let arg = match c.next_if(Rule::domain_arg) {
        Some(a) => Some(Box::new(domain_arg(a)?)),
        None => None,
    };
    let shape = match c.next_if(Rule::shape) {
        Some(s) => Some(shape(s)?),
        None => None,
    };
    Ok(ast::TypeExpr {
        kind: ast::TypeExprKind::Domain { name, arg, shape },
        span,
    })
}

fn domain_arg(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let mut c = Children::of(p);
    expr(c.expect(Rule::expr)?)
}

fn shape(p: Pair<'_, Rule>) -> Result<Vec<Expr>, ParseError> {
    p.into_inner().map(expr).collect()
}

// ------------------------------------------------------------------ statements

fn block(p: Pair<'_, Rule>) -> Result<ast::Block, ParseError> {
    let span = span_of(&p);
    let stmts = p.into_inner().map(stmt).collect::<Result<_, _>>()?;
    Ok(ast::Block { stmts, span })
}

fn stmt(p: Pair<'_, Rule>) -> Result<ast::Stmt, ParseError> {
    let span = span_of(&p);
    let kind = match p.as_rule() {
        Rule::let_stmt => let_stmt(p)?,
        Rule::sample_stmt => sample_stmt(p)?,
        Rule::for_stmt => for_stmt(p)?,
        r => return Err(internal(span, &format!("unexpected statement rule {r:?}"))),
    };
    Ok(ast::Stmt { kind, span })
}

fn let_stmt(p: Pair<'_, Rule>) -> Result<ast::StmtKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_let)?;
    let lhs = c.next()?;
    let (targets, tuple) = match lhs.as_rule() {
        Rule::let_tuple => (let_tuple(lhs)?, true),
        _ => (vec![target(lhs)?], false),
    };
    let value = expr(c.expect(Rule::expr)?)?;
    Ok(ast::StmtKind::Let {
        targets,
        tuple,
        value,
    })
}

fn let_tuple(p: Pair<'_, Rule>) -> Result<Vec<ast::Target>, ParseError> {
    p.into_inner().map(target).collect()
}

fn target(p: Pair<'_, Rule>) -> Result<ast::Target, ParseError> {
    let span = span_of(&p);
    if p.as_rule() != Rule::target {
        return Err(internal(span, "expected a target"));
    }
    let mut c = Children::of(p);
    let name = ident(c.expect(Rule::ident)?);
    let index = match c.next_if(Rule::expr) {
        Some(e) => Some(expr(e)?),
        None => None,
    };
    Ok(ast::Target { name, index, span })
}

fn sample_stmt(p: Pair<'_, Rule>) -> Result<ast::StmtKind, ParseError> {
    let mut c = Children::of(p);
    let target = target(c.expect(Rule::target)?)?;
    let dist = call(c.expect(Rule::call)?)?;
    let mut flows = Vec::new();
    while let Some(f) = c.next_if(Rule::flow) {
        flows.push(flow(f)?);
    }
    let strategy = match c.next_if(Rule::strategy) {
        Some(s) => Some(strategy(s)?),
        None => None,
    };
    Ok(ast::StmtKind::Sample {
        target,
        dist,
        flows,
        strategy,
    })
}

fn flow(p: Pair<'_, Rule>) -> Result<ast::Call, ParseError> {
    let mut c = Children::of(p);
    call(c.expect(Rule::call)?)
}

fn strategy(p: Pair<'_, Rule>) -> Result<ast::Strategy, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    c.expect(Rule::at_sign)?;
    let inner = c.next()?;
    match inner.as_rule() {
        Rule::call => {
            let call = call(inner)?;
            Ok(ast::Strategy {
                name: call.callee,
                args: Some(call.args),
                span,
            })
        }
        _ => Ok(ast::Strategy {
            name: ident(inner),
            args: None,
            span,
        }),
    }
}

fn for_stmt(p: Pair<'_, Rule>) -> Result<ast::StmtKind, ParseError> {
    let mut c = Children::of(p);
    c.expect(Rule::kw_for)?;
    let var = ident(c.expect(Rule::ident)?);
    c.expect(Rule::kw_in)?;
    let from = expr(c.expect(Rule::expr)?)?;
    let to = expr(c.expect(Rule::expr)?)?;
    let body = block(c.expect(Rule::block)?)?;
    Ok(ast::StmtKind::For {
        var,
        from,
        to,
        body,
    })
}

// ------------------------------------------------------------------ expressions

fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        PrattParser::new()
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
            .op(Op::prefix(Rule::neg))
            .op(Op::postfix(Rule::field) | Op::postfix(Rule::index))
    })
}

fn expr(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    if p.as_rule() != Rule::expr {
        return Err(internal(span, "expected an expression"));
    }
    pratt()
        .map_primary(primary)
        .map_prefix(|op, rhs| {
            let rhs = rhs?;
            Ok(Expr {
                span: span_of(&op).to(rhs.span),
                kind: ExprKind::Neg(Box::new(rhs)),
            })
        })
        .map_postfix(|lhs, op| {
            let lhs = lhs?;
            let span = lhs.span.to(span_of(&op));
            let kind = match op.as_rule() {
                Rule::field => {
                    let mut c = Children::of(op);
                    ExprKind::Field {
                        base: Box::new(lhs),
                        field: ident(c.expect(Rule::ident)?),
                    }
                }
                _ => ExprKind::Index {
                    base: Box::new(lhs),
                    indices: op.into_inner().map(expr).collect::<Result<_, _>>()?,
                },
            };
            Ok(Expr { kind, span })
        })
        .map_infix(|lhs, op, rhs| {
            let (lhs, rhs) = (lhs?, rhs?);
            let op = match op.as_rule() {
                Rule::add => ast::BinOp::Add,
                Rule::sub => ast::BinOp::Sub,
                Rule::mul => ast::BinOp::Mul,
                Rule::div => ast::BinOp::Div,
                r => return Err(internal(span_of(&op), &format!("operator {r:?}"))),
            };
            Ok(Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
            })
        })
        .parse(p.into_inner())
}

fn primary(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    let kind = match p.as_rule() {
        Rule::number => return number(p),
        Rule::string => return string(p),
        Rule::call => ExprKind::Call(call(p)?),
        Rule::list => list(p)?,
        Rule::paren => return paren(p),
        Rule::ident => ExprKind::Name(ident(p)),
        r => return Err(internal(span, &format!("unexpected primary {r:?}"))),
    };
    Ok(Expr { kind, span })
}

/// `(e)`: the parentheses are not kept, but the span covers them.
fn paren(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let inner = expr(c.expect(Rule::expr)?)?;
    Ok(Expr { span, ..inner })
}

fn list(p: Pair<'_, Rule>) -> Result<ExprKind, ParseError> {
    Ok(ExprKind::List(
        p.into_inner().map(expr).collect::<Result<_, _>>()?,
    ))
}

fn call(p: Pair<'_, Rule>) -> Result<ast::Call, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let callee = ident(c.expect(Rule::callee)?);
    let args = c.rest().map(arg).collect::<Result<_, _>>()?;
    Ok(ast::Call { callee, args, span })
}

fn arg(p: Pair<'_, Rule>) -> Result<ast::Arg, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let name = c.next_if(Rule::key).map(ident);
    let value = value(c.expect(Rule::value)?)?;
    Ok(ast::Arg { name, value, span })
}

/// An expression, or a range `a:b` / `a:b:step`.
fn value(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    let mut parts = p
        .into_inner()
        .map(expr)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter();
    let first = parts.next().ok_or_else(|| internal(span, "empty value"))?;
    let Some(to) = parts.next() else {
        return Ok(first);
    };
    let step = parts.next().map(Box::new);
    Ok(Expr {
        kind: ExprKind::Range {
            from: Box::new(first),
            to: Box::new(to),
            step,
        },
        span,
    })
}

fn number(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    let text = p.as_str().to_string();
    let value = match text.parse::<f64>() {
        Ok(v) if v.is_finite() => v,
        _ => return Err(ParseError::NumberOutOfRange { span, text }),
    };
    Ok(Expr {
        kind: ExprKind::Number { value, text },
        span,
    })
}

fn string(p: Pair<'_, Rule>) -> Result<Expr, ParseError> {
    let span = span_of(&p);
    let mut c = Children::of(p);
    let raw = c.expect(Rule::string_raw)?;
    let start = raw.as_span().start();
    let mut out = String::new();
    let mut chars = raw.as_str().char_indices();
    while let Some((i, ch)) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some((_, '"')) => out.push('"'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((j, other)) => {
                let end = start + j + other.len_utf8();
                return Err(ParseError::InvalidEscape {
                    span: Span::new(start + i, end),
                    text: format!("\\{other}"),
                });
            }
            None => return Err(internal(span, "string ends in a backslash")),
        }
    }
    Ok(Expr {
        kind: ExprKind::Str(out),
        span,
    })
}

fn ident(p: Pair<'_, Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(&p),
    }
}
