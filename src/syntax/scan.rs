//! The lexical pre-scan: comments, brackets, strings and numbers, checked before pest runs.
//!
//! pest stops at the first failure and describes it in grammar terms; this scan finds the
//! errors that are easier to name from the characters alone (an unclosed `{`, a string
//! with no closing quote, `1e`), and refuses input nested so deeply that a recursive
//! parser could run out of stack.

use super::error::ParseError;
use super::parser::Comment;
use crate::span::Span;

/// The deepest bracket nesting accepted.
pub const MAX_DEPTH: usize = 256;
/// The most operators (`+ - * / .`) accepted on one path of an expression tree.
pub const MAX_OPERATORS: usize = 1000;

/// What the scan learned about a source text.
#[derive(Debug, Default)]
pub struct Scan {
    pub comments: Vec<Comment>,
    /// The first lexical error and the byte offset where it was detected.
    pub error: Option<(usize, ParseError)>,
    /// Brackets opened and never closed, outermost first: (offset, bracket).
    pub unclosed: Vec<(usize, char)>,
    /// The deepest bracket nesting seen.
    pub max_depth: usize,
    /// The most operators seen on one path of an expression.
    pub max_operators: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn closer_of(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

/// One bracket level: where it opened and how many operators it holds so far.
struct Level {
    at: usize,
    open: char,
    /// Operators counted at the enclosing level before this bracket opened.
    outer_ops: usize,
}

/// Scan `src` once, left to right.
pub fn scan(src: &str) -> Scan {
    let bytes = src.as_bytes();
    let mut out = Scan::default();
    let mut stack: Vec<Level> = Vec::new();
    // Operators at the current level since the last separator, and on the whole path.
    let mut level_ops = 0usize;
    let mut path_ops = 0usize;
    let mut i = 0usize;
    let fail = |out: &mut Scan, at: usize, e: ParseError| {
        if out.error.is_none() {
            out.error = Some((at, e));
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' => {
                let end = src[i..].find('\n').map_or(src.len(), |n| i + n);
                let mut text_end = end;
                if text_end > i && bytes[text_end - 1] == b'\r' {
                    text_end -= 1;
                }
                out.comments.push(Comment {
                    text: src[i..text_end].to_string(),
                    span: Span::new(i, text_end),
                });
                i = end;
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => {
                            i += 1;
                            // Skip the escaped character (a whole UTF-8 sequence).
                            if i < bytes.len() && bytes[i] != b'\n' {
                                i += utf8_len(bytes[i]);
                            }
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        b'\n' => break,
                        _ => i += 1,
                    }
                }
                if !closed {
                    let mut end = i.min(bytes.len());
                    if end > start && bytes[end - 1] == b'\r' {
                        end -= 1;
                    }
                    fail(
                        &mut out,
                        start,
                        ParseError::UnterminatedString {
                            span: Span::new(start, end),
                        },
                    );
                }
            }
            b'0'..=b'9' => {
                let start = i;
                i = number_end(bytes, i);
                // A number glued to letters, digits or dots (`1e`, `2x`, `1.`, `0x1F`).
                if i < bytes.len() && (is_name_char(bytes[i] as char) || bytes[i] == b'.') {
                    while i < bytes.len() && (is_name_char(bytes[i] as char) || bytes[i] == b'.') {
                        i += 1;
                    }
                    fail(
                        &mut out,
                        start,
                        ParseError::InvalidNumber {
                            span: Span::new(start, i),
                            text: src[start..i].to_string(),
                        },
                    );
                }
            }
            b'(' | b'[' | b'{' => {
                stack.push(Level {
                    at: i,
                    open: b as char,
                    outer_ops: level_ops,
                });
                level_ops = 0;
                out.max_depth = out.max_depth.max(stack.len());
                if stack.len() > MAX_DEPTH {
                    fail(
                        &mut out,
                        i,
                        ParseError::TooDeep {
                            span: Span::new(i, i + 1),
                            limit: MAX_DEPTH,
                        },
                    );
                    return out;
                }
                i += 1;
            }
            b')' | b']' | b'}' => {
                let close = b as char;
                match stack.pop() {
                    Some(level) => {
                        if closer_of(level.open) != close {
                            fail(
                                &mut out,
                                i,
                                ParseError::MismatchedBracket {
                                    span: Span::new(i, i + 1),
                                    found: close,
                                    open: Span::new(level.at, level.at + 1),
                                    expected: closer_of(level.open),
                                },
                            );
                        }
                        path_ops -= level_ops;
                        level_ops = level.outer_ops;
                    }
                    None => fail(
                        &mut out,
                        i,
                        ParseError::UnmatchedClose {
                            span: Span::new(i, i + 1),
                            found: close,
                        },
                    ),
                }
                i += 1;
            }
            b',' | b'=' | b'~' | b':' => {
                path_ops -= level_ops;
                level_ops = 0;
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'>') => i += 2,
            b'+' | b'-' | b'*' | b'/' | b'.' => {
                level_ops += 1;
                path_ops += 1;
                out.max_operators = out.max_operators.max(path_ops);
                if path_ops > MAX_OPERATORS {
                    fail(
                        &mut out,
                        i,
                        ParseError::TooManyOperators {
                            span: Span::new(i, i + 1),
                            limit: MAX_OPERATORS,
                        },
                    );
                    return out;
                }
                i += 1;
            }
            _ if is_name_char(b as char) => {
                while i < bytes.len() && is_name_char(bytes[i] as char) {
                    i += 1;
                }
            }
            _ => i += utf8_len(b),
        }
    }
    out.unclosed = stack.iter().map(|l| (l.at, l.open)).collect();
    out
}

/// The length of the UTF-8 sequence that starts with byte `b` (1 for a stray byte).
fn utf8_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// The end of the number that starts at `i`: digits, an optional fraction, an optional exponent.
fn number_end(bytes: &[u8], mut i: usize) -> usize {
    let digits = |bytes: &[u8], mut j: usize| {
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        j
    };
    i = digits(bytes, i);
    if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
        i = digits(bytes, i + 1);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            i = digits(bytes, j);
        }
    }
    i
}
