//! Syntax errors as the user sees them: each `tests/ui/syntax/*.vi` fails to parse with one
//! E001, rendered for a human and snapshotted next to this file.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// A test reads its fixtures itself; the core's no-I/O rule is about src/.
#![allow(clippy::disallowed_methods)]

#[test]
fn syntax_errors_render() {
    insta::glob!("ui/syntax/*.vi", |path| {
        let src = std::fs::read_to_string(path).expect("read the spec");
        let diag = vic::diag::Diagnostic::from(
            vic::syntax::parse(&src).expect_err("this spec should not parse"),
        );
        assert_eq!(diag.code, vic::diag::Code::E001);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("spec.vi");
        insta::assert_snapshot!(vic::render::human(name, &src, &[diag]));
    });
}
