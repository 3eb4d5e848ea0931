//! The user documentation's examples are checked by the compiler they describe: every
//! fenced ```vi block of `docs/**/*.md` and of `README.md` goes through
//! `vic::driver::front_end` (or, for a sketch, the parser), and every relative link of
//! those files must lead to a file of the repository.
//!
//! The conventions (docs/README.md repeats them for doc writers):
//! - a block whose first line starts with `# fragment` is a partial sketch: it must parse
//!   as a file, or, if it is a run of statements, inside `model { ... }`; it is not
//!   checked further;
//! - a block whose first line is `# expect: CODE...` (for example `# expect: E004` or
//!   `# expect: E002 E010`) must produce every listed code and no diagnostic with any
//!   other code, error or warning. Such a block is fenced ```` ```vi expect ```` (not a
//!   plain ```` ```vi ````): `tests/lowering.rs` trains every plain ```vi block that has a
//!   `model`, and a block written to fail cannot be trained;
//! - every other block must check with no error and no warning.
//!
//! A failure names the file, the line of the block's opening fence and what went wrong.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use vic::diag::{Code, Diagnostic};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One fenced ```vi block.
struct Block {
    /// The markdown file, relative to the repository root.
    file: String,
    /// The 1-based line of the opening fence.
    line: usize,
    /// The words after `vi` in the fence's info string (`["expect"]`, or none).
    info: Vec<String>,
    text: String,
}

impl Block {
    fn at(&self) -> String {
        format!("{}:{} (a ```vi block)", self.file, self.line)
    }

    /// The text preceded by as many newlines as the markdown has lines before it, so
    /// that the line numbers of its diagnostics are those of the markdown file.
    fn padded(&self) -> String {
        format!("{}{}", "\n".repeat(self.line), self.text)
    }
}

fn collect_md(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_md(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// `README.md` and every markdown file under `docs/`, relative paths, sorted.
fn doc_files() -> Vec<(String, PathBuf)> {
    let root = Path::new(ROOT);
    let mut files = Vec::new();
    collect_md(&root.join("docs"), &mut files);
    files.sort();
    files.insert(0, root.join("README.md"));
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, p)
        })
        .collect()
}

/// The fenced blocks of a markdown text whose info string starts with the word `vi`.
fn vi_blocks(file: &str, text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    // (fence line, info words, is a vi block, text)
    let mut open: Option<(usize, Vec<String>, bool, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let mut words = info.split_whitespace().map(str::to_string);
                    let lang = words.next();
                    let is_vi = lang.as_deref() == Some("vi");
                    open = Some((i + 1, words.collect(), is_vi, String::new()));
                }
            }
            Some((fence, info, is_vi, body)) => {
                if trimmed.trim_end() == "```" {
                    if *is_vi {
                        out.push(Block {
                            file: file.to_string(),
                            line: *fence,
                            info: std::mem::take(info),
                            text: std::mem::take(body),
                        });
                    }
                    open = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    if let Some((fence, _, true, _)) = open {
        out.push(Block {
            file: file.to_string(),
            line: fence,
            info: vec!["(unclosed)".into()],
            text: String::new(),
        });
    }
    out
}

/// The codes of a `# expect:` first line, or why it cannot be read.
fn expected_codes(first: &str) -> Option<Result<Vec<Code>, String>> {
    let rest = first.strip_prefix("# expect:")?;
    let words: Vec<&str> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return Some(Err("`# expect:` lists no code".into()));
    }
    Some(
        words
            .iter()
            .map(|w| {
                Code::parse(w).ok_or_else(|| format!("`# expect:` names an unknown code `{w}`"))
            })
            .collect(),
    )
}

/// Diagnostics of `b.padded()`, rendered with the markdown file's name and lines.
fn rendered(b: &Block, diags: &[Diagnostic]) -> String {
    vic::render::human(&b.file, &b.padded(), diags)
}

fn codes_text(diags: &[Diagnostic]) -> String {
    if diags.is_empty() {
        return "no diagnostic".into();
    }
    diags
        .iter()
        .map(|d| d.code.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What is wrong with one block, if anything.
fn judge(b: &Block) -> Option<String> {
    let first = b.text.lines().next().unwrap_or("");
    let expect_fence = b.info.iter().any(|w| w == "expect");
    if let Some(w) = b.info.iter().find(|w| *w != "expect") {
        return Some(format!(
            "{}: unknown fence word `{w}` (write ```vi, or ```vi expect for a block that must fail)",
            b.at()
        ));
    }
    if first.starts_with("# fragment") {
        if expect_fence {
            return Some(format!(
                "{}: a `# fragment` is fenced ```vi, not ```vi expect",
                b.at()
            ));
        }
        let as_file = vic::syntax::parse(&b.padded());
        let as_statements = vic::syntax::parse(&format!("model {{\n{}\n}}\n", b.text));
        return match (as_file, as_statements) {
            (Ok(_), _) | (_, Ok(_)) => None,
            (Err(e), Err(_)) => Some(format!(
                "{}: the fragment parses neither as a file nor as statements of a block:\n{}",
                b.at(),
                rendered(b, &[Diagnostic::from(e)])
            )),
        };
    }
    let front = vic::driver::front_end(&b.padded(), &Default::default());
    let diags = &front.diagnostics;
    match expected_codes(first) {
        Some(Err(e)) => Some(format!("{}: {e}", b.at())),
        Some(Ok(codes)) => {
            if !expect_fence {
                return Some(format!(
                    "{}: a `# expect:` block must be fenced ```vi expect, so that \
                     tests/lowering.rs does not try to train it",
                    b.at()
                ));
            }
            let mut problems = Vec::new();
            for c in &codes {
                if !diags.iter().any(|d| d.code == *c) {
                    problems.push(format!("expected {c}, got {}", codes_text(diags)));
                }
            }
            for d in diags {
                if !codes.contains(&d.code) {
                    problems.push(format!("unexpected {} ({})", d.code, d.message));
                }
            }
            (!problems.is_empty()).then(|| {
                format!(
                    "{}: {}\n{}",
                    b.at(),
                    problems.join("; "),
                    rendered(b, diags)
                )
            })
        }
        None => {
            if expect_fence {
                return Some(format!(
                    "{}: a ```vi expect block must start with `# expect: CODE...`",
                    b.at()
                ));
            }
            (!diags.is_empty()).then(|| {
                format!(
                    "{}: must check with no error and no warning, got {}\n{}",
                    b.at(),
                    codes_text(diags),
                    rendered(b, diags)
                )
            })
        }
    }
}

#[test]
fn every_vi_block_of_the_docs_checks_as_it_says() {
    let mut blocks = Vec::new();
    for (rel, path) in doc_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        blocks.extend(vi_blocks(&rel, &text));
    }
    let in_docs = blocks
        .iter()
        .filter(|b| b.file.starts_with("docs/"))
        .count();
    assert!(
        in_docs >= 20,
        "found only {in_docs} ```vi blocks under docs/: is the documentation there?"
    );
    let failures: Vec<String> = blocks.iter().filter_map(judge).collect();
    assert!(
        failures.is_empty(),
        "{} of {} ```vi blocks failed:\n\n{}",
        failures.len(),
        blocks.len(),
        failures.join("\n\n")
    );
}

/// The targets of the inline links `[text](target)` of a markdown text, outside code.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_fence = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        // Drop inline code spans, whose brackets are not links.
        let mut plain = String::new();
        for (k, part) in line.split('`').enumerate() {
            if k % 2 == 0 {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_of_the_docs_leads_to_a_file_of_the_repository() {
    let root = std::fs::canonicalize(ROOT).unwrap();
    let mut problems = Vec::new();
    for (rel, path) in doc_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let dir = path.parent().unwrap().to_path_buf();
        for (line, target) in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with('#') {
                continue;
            }
            let file = target.split('#').next().unwrap_or("");
            let resolved = std::fs::canonicalize(dir.join(file));
            match resolved {
                Ok(p) if p.starts_with(&root) => {}
                Ok(p) => problems.push(format!(
                    "{rel}:{line}: `{target}` points outside the repository ({})",
                    p.display()
                )),
                Err(_) => problems.push(format!("{rel}:{line}: `{target}` does not exist")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
