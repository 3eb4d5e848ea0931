//! Robustness: the front end and the formatter never panic, whatever the input, every
//! diagnostic points inside the source, and whatever `vic fmt` prints parses again (and
//! formats to itself). Inputs: random text, mutated copies of `specs/`, and a soup of the
//! language's own tokens. Case counts are fixed here, not read from `PROPTEST_CASES`.

// Tests read the specs and the clock directly; the no-I/O rule is for the compiler core.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;
use vic::check::CheckOptions;
use vic::driver::{self, Emit, FrontEnd};

mod support;
use support::strip_spans;

/// The AST of a source as RON with spans stripped, when it parses.
fn ast_text(src: &str) -> Option<String> {
    let ast = vic::syntax::parse(src).ok()?;
    let front = FrontEnd {
        ast: Some(ast),
        program: None,
        diagnostics: Vec::new(),
    };
    driver::emit(&front, Emit::Ast).map(|t| strip_spans(&t))
}

/// One case may take this long (debug build, a loaded machine) before it counts as a hang.
const CASE_TIME: Duration = Duration::from_secs(5);

fn config(cases: u32) -> Config {
    Config {
        cases,
        max_shrink_iters: 200,
        max_shrink_time: 20_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The specs' texts, read once.
fn specs() -> &'static [String] {
    static SPECS: OnceLock<Vec<String>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "vi"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    })
}

/// Split a text into tokens and the runs of white space between them, so that the pieces
/// concatenate back to the text.
fn pieces(src: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let class = |c: char| {
            if c.is_whitespace() {
                0
            } else if c.is_alphanumeric() || c == '_' || c == '.' {
                1
            } else {
                2
            }
        };
        let k = class(c);
        let next_same = chars.peek().is_some_and(|&(_, n)| k != 2 && class(n) == k);
        if !next_same {
            let end = i + c.len_utf8();
            out.push(&src[start..end]);
            start = end;
        }
    }
    out
}

/// Tokens of the language, for insertion and soup.
const VOCAB: &[&str] = &[
    "const",
    "data",
    "latent",
    "param",
    "net",
    "set",
    "model",
    "guide",
    "train",
    "meta",
    "let",
    "for",
    "in",
    "exact",
    "global",
    "given",
    "partial",
    "size",
    "@per_member",
    "@enumerate",
    "@reinforce",
    "@relax(temperature = 0.5)",
    "@refine(steps = 2)",
    "|>",
    "iaf(ar, h, steps = 2)",
    "Real",
    "Positive",
    "Unit",
    "Binary",
    "Count",
    "Simplex",
    "Cat(3)",
    "Set[",
    "Normal(",
    "Bernoulli(logits = ",
    "Categorical(",
    "Gamma(",
    "Dirichlet(",
    "Mixture(",
    "mlp(hidden = [4])",
    "linear()",
    "gru()",
    "lstm()",
    "conv(",
    "deconv(",
    "made(",
    "deepsets(",
    "attend_read(",
    "zeros(",
    "ones(",
    "concat(",
    "exp(",
    "sum(",
    "x",
    "y",
    "z",
    "h",
    "t",
    "T",
    "D",
    "Z",
    "K",
    "enc",
    "dec",
    "x[t]",
    "h[t-1]",
    "h[0]",
    "z[t]",
    "mu[c]",
    ".loc",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    "=",
    "~",
    "->",
    "+",
    "-",
    "*",
    "/",
    "#",
    "\n",
    "0",
    "1",
    "2",
    "28",
    "-2.5",
    "1e-3",
    "1e400",
    "99999999999999999999",
    "\"fashion-mnist\"",
    "\"",
    "1:T",
    "-180:160:20",
];

fn vocab() -> impl Strategy<Value = String> {
    prop::sample::select(VOCAB).prop_map(str::to_string)
}

/// One edit of a spec's pieces.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Insert(usize, String),
    Duplicate(usize),
    Swap(usize, usize),
    DeleteChar(usize),
    InsertChar(usize, char),
    Truncate(usize),
    /// Replace the i-th word with the j-th word of the same text: keeps the file parsing
    /// far more often, so the checker sees swapped names, numbers and keywords.
    Rename(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), vocab()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
        any::<usize>().prop_map(Mutation::DeleteChar),
        (any::<usize>(), any::<char>()).prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Rename(i, j)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Rename(i, j)),
    ]
}

fn apply(src: &str, muts: &[Mutation]) -> String {
    let mut toks: Vec<String> = pieces(src).into_iter().map(str::to_string).collect();
    for m in muts {
        let n = toks.len().max(1);
        match m {
            Mutation::Delete(i) if !toks.is_empty() => {
                toks.remove(i % n);
            }
            Mutation::Insert(i, t) => toks.insert(i % (toks.len() + 1), t.clone()),
            Mutation::Duplicate(i) if !toks.is_empty() => {
                let t = toks[i % n].clone();
                toks.insert(i % n, t);
            }
            Mutation::Swap(i, j) if !toks.is_empty() => toks.swap(i % n, j % n),
            Mutation::Rename(i, j) => {
                let words: Vec<usize> = (0..toks.len())
                    .filter(|&k| {
                        toks[k]
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_alphanumeric() || c == '_')
                    })
                    .collect();
                if !words.is_empty() {
                    let from = words[j % words.len()];
                    let to = words[i % words.len()];
                    toks[to] = toks[from].clone();
                }
            }
            Mutation::DeleteChar(i) | Mutation::InsertChar(i, _) | Mutation::Truncate(i) => {
                let mut text: String = toks.concat();
                let bounds: Vec<usize> = text
                    .char_indices()
                    .map(|(k, _)| k)
                    .chain([text.len()])
                    .collect();
                let at = bounds[i % bounds.len()];
                match m {
                    Mutation::DeleteChar(_) if at < text.len() => {
                        text.remove(at);
                    }
                    Mutation::InsertChar(_, c) => text.insert(at, *c),
                    Mutation::Truncate(_) => text.truncate(at),
                    _ => {}
                }
                toks = pieces(&text).into_iter().map(str::to_string).collect();
            }
            _ => {}
        }
    }
    toks.concat()
}

/// The properties every input must have. Returns a description of the first violation.
fn robust(src: &str) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let front = driver::front_end(src, &CheckOptions::default());
    for d in &front.diagnostics {
        for span in std::iter::once(d.span).chain(d.secondary.iter().map(|l| l.span)) {
            if let Some(r) = span.range() {
                prop_assert!(
                    r.start <= r.end && r.end <= src.len(),
                    "{} span {:?} outside a source of {} bytes",
                    d.code,
                    r,
                    src.len()
                );
                prop_assert!(
                    src.is_char_boundary(r.start) && src.is_char_boundary(r.end),
                    "{} span {:?} splits a character",
                    d.code,
                    r
                );
            }
        }
    }
    // A file that parses has an AST, and one with no error has a program.
    prop_assert_eq!(front.program.is_some(), !front.has_errors());
    if let Ok(formatted) = driver::format(src) {
        prop_assert!(
            front.ast.is_some(),
            "fmt accepted a file the front end could not parse"
        );
        // fmt changes the layout, never the meaning: the same AST up to positions.
        let before = ast_text(src);
        let after = ast_text(&formatted);
        prop_assert!(
            before == after,
            "fmt changed the AST of\n{}\ninto\n{}",
            src,
            formatted
        );
        match driver::format(&formatted) {
            Ok(again) => prop_assert_eq!(&again, &formatted, "fmt is not idempotent"),
            Err(d) => prop_assert!(
                false,
                "fmt output does not parse ({}: {}):\n{}",
                d.code,
                d.message,
                formatted
            ),
        }
    } else {
        prop_assert!(
            front.ast.is_none(),
            "the front end parsed a file fmt rejects"
        );
    }
    prop_assert!(
        started.elapsed() < CASE_TIME,
        "took {:?} on {} bytes",
        started.elapsed(),
        src.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary Unicode text.
    #[test]
    fn random_text(src in "\\PC{0,200}") {
        robust(&src)?;
    }

    /// Arbitrary bytes, made UTF-8 the lossy way.
    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        robust(&String::from_utf8_lossy(&bytes))?;
    }

    /// The language's own tokens in random order.
    #[test]
    fn token_soup(toks in prop::collection::vec(vocab(), 0..80),
                  seps in prop::collection::vec(prop::sample::select(&[" ", "", "\n"][..]), 80)) {
        let src: String = toks
            .iter()
            .zip(seps.iter().cycle())
            .map(|(t, s)| format!("{t}{s}"))
            .collect();
        robust(&src)?;
    }
}

proptest! {
    #![proptest_config(config(1024))]

    /// Edited copies of the example specs: deleted, inserted, duplicated and swapped
    /// tokens, deleted and inserted characters, truncation. Most of them still parse, so
    /// they reach the checker; they are cheap, so there are more of them.
    #[test]
    fn mutated_specs(which in any::<usize>(), muts in prop::collection::vec(mutation(), 1..6)) {
        let all = specs();
        prop_assume!(!all.is_empty());
        let src = apply(&all[which % all.len()], &muts);
        robust(&src)?;
    }
}

/// The specs themselves pass, and a mutation does change the text (the generator works).
#[test]
fn specs_are_robust_and_mutations_bite() {
    for s in specs() {
        robust(s).unwrap();
        assert_eq!(apply(s, &[]), *s);
        assert_ne!(apply(s, &[Mutation::Truncate(10)]), *s);
        assert_eq!(pieces(s).concat(), *s);
    }
}
