//! The one place diagnostics are printed: for humans (codespan-reporting), as JSON lines,
//! and as GitHub workflow annotations (LANGUAGE.md section 12).

use crate::diag::{Diagnostic, Severity};
use crate::span::Span;
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor, Config, Styles, StylesWriter};

/// Render diagnostics of one file for a human, without colour.
pub fn human(file_name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let files = SimpleFile::new(file_name, src);
    let config = Config::default();
    let mut out = String::new();
    for d in diags {
        if term::emit_to_string(&mut out, &config, &files, &to_codespan(d, src)).is_err() {
            // A span outside the text is a compiler bug; still say what was found.
            out.push_str(&fallback(file_name, d));
        }
    }
    out
}

/// Render diagnostics of one file for a terminal, with ANSI colours.
pub fn human_colored(file_name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let files = SimpleFile::new(file_name, src);
    let config = Config::default();
    let styles = Styles::default();
    let mut buffer = termcolor::Buffer::ansi();
    for d in diags {
        let mut writer = StylesWriter::new(&mut buffer, &styles);
        let diagnostic = to_codespan(d, src);
        if term::emit_to_write_style(&mut writer, &config, &files, &diagnostic).is_err() {
            return human(file_name, src, diags);
        }
    }
    String::from_utf8_lossy(buffer.as_slice()).into_owned()
}

fn fallback(file_name: &str, d: &Diagnostic) -> String {
    format!(
        "{}[{}]: {} ({file_name})\n",
        severity_word(d.severity),
        d.code,
        d.message
    )
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// Clamp a span to the text and to character boundaries, so rendering cannot fail.
fn clamp(span: Span, src: &str) -> Option<std::ops::Range<usize>> {
    let r = span.range()?;
    let fix = |mut i: usize| {
        i = i.min(src.len());
        while !src.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let (s, e) = (fix(r.start), fix(r.end));
    Some(s..e.max(s))
}

fn to_codespan(d: &Diagnostic, src: &str) -> cs::Diagnostic<()> {
    let mut out = match d.severity {
        Severity::Error => cs::Diagnostic::error(),
        Severity::Warning => cs::Diagnostic::warning(),
    }
    .with_code(d.code.as_str())
    .with_message(&d.message);
    let mut labels = Vec::new();
    if let Some(r) = clamp(d.span, src) {
        labels.push(cs::Label::primary((), r).with_message(&d.label));
    }
    for l in &d.secondary {
        if let Some(r) = clamp(l.span, src) {
            labels.push(cs::Label::secondary((), r).with_message(&l.message));
        }
    }
    out = out.with_labels(labels);
    let mut notes = Vec::new();
    if let Some(h) = &d.hint {
        notes.push(format!("hint: {h}"));
    }
    notes.push(format!("see `vic explain {}`", d.code));
    out.with_notes(notes)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Where a diagnostic starts and ends, 1-based; the end column is just past the last
/// character. An artificial span (a command-line override) is reported at 1:1.
pub fn position(src: &str, span: Span) -> (usize, usize, usize, usize) {
    match clamp(span, src) {
        Some(r) => {
            let (l, c) = line_col(src, r.start);
            let (el, ec) = line_col(src, r.end);
            (l, c, el, ec)
        }
        None => (1, 1, 1, 1),
    }
}

/// One JSON object per diagnostic, one per line.
pub fn json(file_name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let (line, column, end_line, end_column) = position(src, d.span);
        let mut obj = serde_json::json!({
            "file": file_name,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "severity": d.severity,
            "code": d.code.as_str(),
            "message": d.message,
        });
        if let (Some(h), Some(map)) = (&d.hint, obj.as_object_mut()) {
            map.insert("hint".into(), serde_json::Value::String(h.clone()));
        }
        out.push_str(&obj.to_string());
        out.push('\n');
    }
    out
}

/// GitHub Actions workflow commands:
/// `::error file=F,line=L,col=C,endLine=EL,endColumn=EC,title=CODE::message`.
pub fn github(file_name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        let (line, column, end_line, end_column) = position(src, d.span);
        let mut message = d.message.clone();
        if let Some(h) = &d.hint {
            message.push_str(" (hint: ");
            message.push_str(h);
            message.push(')');
        }
        out.push_str(&format!(
            "::{} file={},line={line},col={column},endLine={end_line},endColumn={end_column},title={}::{}\n",
            severity_word(d.severity),
            escape_property(file_name),
            d.code,
            escape_data(&message)
        ));
    }
    out
}

/// One SARIF 2.1.0 log (what GitHub code scanning and other CI dashboards read) for the
/// diagnostics of several files: one run of the tool `vic`, its rules the codes that
/// occur (each with `vic explain`'s title), one result per diagnostic with its region
/// (1-based lines and columns, the end column just past the span) and its hint.
pub fn sarif(files: &[(String, String, Vec<Diagnostic>)]) -> String {
    let mut codes: Vec<crate::diag::Code> = files
        .iter()
        .flat_map(|(_, _, ds)| ds.iter().map(|d| d.code))
        .collect();
    codes.sort_by_key(|c| c.as_str());
    codes.dedup();
    let rules: Vec<serde_json::Value> = codes
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.as_str(),
                "shortDescription": { "text": crate::explain::title(*c) },
                "fullDescription": { "text": crate::explain::text(*c) },
            })
        })
        .collect();
    let mut results = Vec::new();
    for (name, src, diags) in files {
        for d in diags {
            let (line, column, end_line, end_column) = position(src, d.span);
            let mut text = d.message.clone();
            if let Some(h) = &d.hint {
                text.push_str(&format!(" (hint: {h})"));
            }
            results.push(serde_json::json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": codes.iter().position(|c| *c == d.code).unwrap_or(0),
                "level": severity_word(d.severity),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": name.replace('\\', "/") },
                        "region": {
                            "startLine": line,
                            "startColumn": column,
                            "endLine": end_line,
                            "endColumn": end_column,
                        }
                    }
                }],
            }));
        }
    }
    let log = serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "vic",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    });
    format!("{log}\n")
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Code;

    fn diag() -> Diagnostic {
        Diagnostic::new(
            Code::E004,
            Span::new(8, 11),
            "`dec` expects Real[4], found Real[3]",
        )
        .with_label("this is Real[3]")
        .with_hint("pass a value of shape [4]")
    }

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = "ab\ncé x\n";
        // "x" is at byte 7 (é is two bytes), line 2, column 4.
        assert_eq!(position(src, Span::new(7, 8)), (2, 4, 2, 5));
        assert_eq!(position(src, Span::Artificial), (1, 1, 1, 1));
    }

    #[test]
    fn json_lines_have_the_contract_keys() {
        let src = "let a = foo + 1\n";
        let out = json("m.vi", src, &[diag()]);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        for key in [
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "severity",
            "code",
            "message",
            "hint",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["column"], 9);
        assert_eq!(v["end_column"], 12);
        assert_eq!(v["severity"], "error");
    }

    #[test]
    fn github_lines_escape_and_carry_the_code() {
        let src = "let a = foo + 1\n";
        let mut d = diag();
        d.message = "50% bad\nreally".into();
        let out = github("dir,a:b.vi", src, &[d]);
        assert_eq!(
            out,
            "::error file=dir%2Ca%3Ab.vi,line=1,col=9,endLine=1,endColumn=12,title=E004::50%25 bad%0Areally (hint: pass a value of shape [4])\n"
        );
    }

    #[test]
    fn human_rendering_points_at_the_span_and_shows_the_hint() {
        let src = "let a = foo + 1\n";
        let out = human("m.vi", src, &[diag()]);
        assert!(out.contains("error[E004]"), "{out}");
        assert!(out.contains("m.vi:1:9"), "{out}");
        assert!(out.contains("^^^ this is Real[3]"), "{out}");
        assert!(out.contains("hint: pass a value of shape [4]"), "{out}");
    }

    #[test]
    fn spans_past_the_end_do_not_fail() {
        let src = "é";
        let mut d = diag();
        d.span = Span::new(1, 99);
        let out = human("m.vi", src, &[d]);
        assert!(out.contains("E004"));
    }
}
