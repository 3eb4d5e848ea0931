//! UI tests: every `tests/ui/**/*.vi` is checked, its human rendering is snapshotted, and
//! the codes it declares in its first line (`# expect: E004 W001`, or `# expect: none`)
//! are held against the diagnostics the checker actually produced.
//!
//! The snapshot shows what the user sees; the assertions here say what must be true of it
//! whatever the wording: every expected code is reported, no other error is, and every
//! diagnostic points at a real, non-empty piece of the file.

// Tests read their input files directly; the no-I/O rule is for the compiler core.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vic::check::CheckOptions;
use vic::diag::{Code, Diagnostic};
use vic::{driver, render};

const UI_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui");

/// What a ui file says about itself.
#[derive(Debug)]
struct Expectation {
    /// The codes that must be reported; empty for `# expect: none`.
    codes: Vec<Code>,
}

/// The topic directory a ui file lives in (`e004`, `pass`, `syntax`).
fn topic(path: &Path) -> Option<&str> {
    path.parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
}

fn parse_expectation(path: &Path, src: &str) -> Result<Expectation, String> {
    let first = src.lines().next().unwrap_or("");
    let Some(rest) = first.strip_prefix("# expect:") else {
        // The parser's own `syntax/` files go without the header: each is one E001.
        if topic(path) == Some("syntax") {
            return Ok(Expectation {
                codes: vec![Code::E001],
            });
        }
        return Err(format!(
            "{}: first line must be `# expect: CODE...`",
            path.display()
        ));
    };
    let words: Vec<&str> = rest
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    if words == ["none"] {
        return Ok(Expectation { codes: Vec::new() });
    }
    if words.is_empty() {
        return Err(format!("{}: `# expect:` lists no code", path.display()));
    }
    let mut codes = Vec::new();
    for w in words {
        codes.push(Code::parse(w).ok_or_else(|| format!("{}: unknown code {w}", path.display()))?);
    }
    let second = src.lines().nth(1).unwrap_or("");
    if !second.starts_with("# ") || second.len() < 10 {
        return Err(format!(
            "{}: second line must be a comment saying what is wrong",
            path.display()
        ));
    }
    Ok(Expectation { codes })
}

/// Every `.vi` file under `dir`, sorted.
fn vi_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "vi") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The path as the user would type it from the crate root (`tests/ui/e004/x.vi`).
fn display_name(path: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Problems with the spans of `diags` in `src`, one line each.
fn span_problems(src: &str, diags: &[Diagnostic]) -> Vec<String> {
    let mut out = Vec::new();
    let whole = src.trim();
    for d in diags {
        let spans = std::iter::once((d.span, "primary"))
            .chain(d.secondary.iter().map(|l| (l.span, "secondary")));
        for (span, which) in spans {
            let Some(r) = span.range() else {
                continue;
            };
            // An empty span is a caret between characters; it is only right where there
            // is no text to point at: after the last text of the file.
            let at_end = r.start == r.end
                && r.end <= src.len()
                && src.is_char_boundary(r.start)
                && src[r.start..].trim().is_empty();
            if at_end {
                continue;
            }
            if r.start >= r.end {
                out.push(format!("{} {which} span {r:?} is empty", d.code));
            } else if r.end > src.len() {
                out.push(format!(
                    "{} {which} span {r:?} ends past the file ({})",
                    d.code,
                    src.len()
                ));
            } else if !src.is_char_boundary(r.start) || !src.is_char_boundary(r.end) {
                out.push(format!("{} {which} span {r:?} splits a character", d.code));
            } else if src[r.clone()].trim() == whole {
                out.push(format!(
                    "{} {which} span {r:?} covers the whole file",
                    d.code
                ));
            } else if src[r.clone()].trim() != &src[r.clone()] {
                // White space (or a trailing comment's newline) is never the offending text.
                out.push(format!(
                    "{} {which} span {r:?} starts or ends with white space: {:?}",
                    d.code,
                    &src[r.clone()]
                ));
            }
        }
    }
    out
}

/// Everything wrong with one ui file's outcome; empty when it behaves as it says.
fn judge(path: &Path, src: &str, diags: &[Diagnostic]) -> Vec<String> {
    let exp = match parse_expectation(path, src) {
        Ok(e) => e,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();
    let got: Vec<Code> = diags.iter().map(|d| d.code).collect();
    let got_text = if got.is_empty() {
        "nothing".to_string()
    } else {
        got.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" ")
    };
    for c in &exp.codes {
        if !got.contains(c) {
            problems.push(format!("expected {c}, got {got_text}"));
        }
    }
    if exp.codes.is_empty() {
        if !diags.is_empty() {
            problems.push(format!("expected no diagnostics, got {got_text}"));
        }
    } else {
        for d in diags {
            if d.is_error() && !exp.codes.contains(&d.code) {
                problems.push(format!(
                    "unexpected error {} ({}), expected {}",
                    d.code,
                    d.message,
                    exp.codes
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
        }
    }
    // A file under `eNNN/` or `wNNN/` must expect that code.
    if let Some(dir) = topic(path) {
        if let Some(code) = Code::parse(dir) {
            if !exp.codes.contains(&code) {
                problems.push(format!("lives in {dir}/ but does not expect {code}"));
            }
        } else if dir == "pass" && !exp.codes.is_empty() {
            problems.push("lives in pass/ but expects diagnostics".to_string());
        }
    }
    problems.extend(span_problems(src, diags));
    problems
}

/// The rendering of every ui file, as a user would see it.
#[test]
fn ui_snapshots() {
    insta::glob!("ui/**/*.vi", |path| {
        // The parser's own syntax files are snapshotted by tests/ui_syntax.rs.
        if topic(path) == Some("syntax") {
            return;
        }
        let src = std::fs::read_to_string(path).unwrap();
        let front = driver::front_end(&src, &CheckOptions::default());
        let rendered = render::human(&display_name(path), &src, &front.diagnostics);
        insta::assert_snapshot!(rendered);
    });
}

/// Every ui file reports what its `# expect:` line says, with sound spans. All files are
/// judged before failing, so one run lists every disagreement.
#[test]
fn ui_expectations() {
    let files = vi_files(Path::new(UI_DIR));
    assert!(!files.is_empty(), "no ui files under {UI_DIR}");
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let outcome =
            std::panic::catch_unwind(|| driver::front_end(&src, &CheckOptions::default()));
        let problems = match outcome {
            Ok(front) => judge(path, &src, &front.diagnostics),
            Err(_) => vec!["the front end panicked".to_string()],
        };
        for p in problems {
            failures.push(format!("{}: {p}", display_name(path)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} ui disagreement(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every stable code is exercised by at least two ui files.
#[test]
fn every_code_has_two_ui_files() {
    let mut count: BTreeMap<Code, Vec<String>> =
        Code::ALL.iter().map(|&c| (c, Vec::new())).collect();
    for path in vi_files(Path::new(UI_DIR)) {
        let src = std::fs::read_to_string(&path).unwrap();
        let exp = parse_expectation(&path, &src).unwrap();
        for c in exp.codes {
            count.entry(c).or_default().push(display_name(&path));
        }
    }
    let thin: Vec<String> = count
        .iter()
        .filter(|(_, files)| files.len() < 2)
        .map(|(c, files)| format!("{c}: {files:?}"))
        .collect();
    assert!(
        thin.is_empty(),
        "codes with fewer than two ui files:\n{}",
        thin.join("\n")
    );
}

/// The judge itself: a test that cannot fail is worse than none.
#[test]
fn judge_rejects_wrong_outcomes() {
    use vic::span::Span;
    let path = Path::new("tests/ui/e004/x.vi");
    let src = "# expect: E004\n# a shape mismatch\nconst D = 2\n";
    let good = Diagnostic::new(Code::E004, Span::new(30, 35), "shape");
    assert!(judge(path, src, std::slice::from_ref(&good)).is_empty());
    // missing the expected code
    assert!(!judge(path, src, &[]).is_empty());
    // an unexpected error alongside
    let other = Diagnostic::new(Code::E002, Span::new(30, 35), "name");
    assert!(!judge(path, src, &[good.clone(), other]).is_empty());
    // a warning alongside is fine
    let warn = Diagnostic::new(Code::W001, Span::new(30, 35), "unused");
    assert!(judge(path, src, &[good.clone(), warn]).is_empty());
    // an empty span after the last text (an end-of-file caret) is fine
    let eof = Diagnostic::new(Code::E004, Span::new(src.len() - 1, src.len() - 1), "end");
    assert!(judge(path, src, &[eof]).is_empty());
    // empty, out-of-range, whole-file and white-space-padded spans
    for span in [
        Span::new(30, 34),
        Span::new(30, 30),
        Span::new(30, 999),
        Span::new(0, src.len()),
    ] {
        let bad = Diagnostic::new(Code::E004, span, "shape");
        assert!(!judge(path, src, &[bad]).is_empty(), "{span:?} accepted");
    }
}
