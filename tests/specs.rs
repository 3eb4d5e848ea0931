//! The example specs in `specs/`: each checks cleanly, its IR is snapshotted and reads
//! back equal, `vic fmt` is idempotent on it and keeps its meaning, and the plan and the
//! Graphviz picture can be printed.

// Tests read their input files directly; the no-I/O rule is for the compiler core.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use vic::check::CheckOptions;
use vic::driver::{self, Emit, FrontEnd};
use vic::ir;
use vic::render;

mod support;
use support::strip_spans;

const SPECS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/specs");

fn spec_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SPECS_DIR)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "vi"))
        .collect();
    files.sort();
    files
}

fn name_of(path: &Path) -> String {
    format!("specs/{}", path.file_name().unwrap().to_string_lossy())
}

fn check(src: &str) -> FrontEnd {
    driver::front_end(src, &CheckOptions::default())
}

#[test]
fn strip_spans_replaces_only_spans() {
    let a = "Foo(span: Src(1, 20), x: MySrc(3, 4), n: Src(a, 2))";
    assert_eq!(
        strip_spans(a),
        "Foo(span: Artificial, x: MySrc(3, 4), n: Src(a, 2))"
    );
    assert_ne!(strip_spans("Src(1, 2) 5"), strip_spans("Src(1, 2) 6"));
}

/// Every spec checks with no error and no warning.
#[test]
fn specs_check_cleanly() {
    let files = spec_files();
    assert!(
        files.len() >= 16,
        "expected the 16 appendix specs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let src = std::fs::read_to_string(path).unwrap();
        let front = check(&src);
        if !front.diagnostics.is_empty() {
            failures.push(render::human(&name_of(path), &src, &front.diagnostics));
        } else if front.program.is_none() {
            failures.push(format!("{}: no diagnostics but no program", name_of(path)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every spec opens with a comment (the paper and what it shows) and trains somewhere.
#[test]
fn specs_are_documented() {
    for path in spec_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        assert!(
            src.starts_with("# "),
            "{} must open with a comment",
            name_of(&path)
        );
        assert!(
            src.contains("train {"),
            "{} has no train block",
            name_of(&path)
        );
        assert!(
            src.contains("dataset"),
            "{} names no dataset",
            name_of(&path)
        );
    }
}

/// The IR of each spec, snapshotted; it reads back to an equal program. A spec that
/// does not check is reported after the others have been snapshotted.
#[test]
fn specs_ir() {
    let mut failures = Vec::new();
    insta::glob!("../specs", "*.vi", |path| {
        let src = std::fs::read_to_string(path).unwrap();
        let front = check(&src);
        let Some(program) = front.program.clone() else {
            failures.push(format!("{} does not check", name_of(path)));
            return;
        };
        let ir = driver::emit(&front, Emit::Ir).expect("IR prints");
        match driver::read_ir(&ir) {
            Ok(back) if back == program => {}
            Ok(_) => failures.push(format!("{}: IR does not read back equal", name_of(path))),
            Err(e) => failures.push(format!("{}: IR does not read back: {e}", name_of(path))),
        }
        insta::assert_snapshot!(ir);
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Expressions of a checked program that are still placeholders: `ExprKind::Invalid`, or
/// a `Domain::Unknown` type anywhere but on a multi-head network call (the value of a
/// tuple `let`, whose heads carry the types; see `src/ir.rs`).
fn placeholders(program: &ir::Program) -> Vec<String> {
    fn expr(e: &ir::Expr, out: &mut Vec<String>) {
        let all_heads = matches!(e.kind, ir::ExprKind::NetCall { head: None, .. });
        if e.ty.domain == ir::Domain::Unknown && !all_heads {
            out.push(format!("Unknown type at {:?}: {:?}", e.span, e.kind));
        }
        match &e.kind {
            ir::ExprKind::Invalid => out.push(format!("Invalid at {:?}", e.span)),
            ir::ExprKind::Number(_) | ir::ExprKind::Ref(_) | ir::ExprKind::Fill(_) => {}
            ir::ExprKind::Step { base, .. } => expr(base, out),
            ir::ExprKind::Select { base, index } => {
                expr(base, out);
                expr(index, out);
            }
            ir::ExprKind::NetCall { args, .. } | ir::ExprKind::Concat(args) => {
                args.iter().for_each(|a| expr(a, out))
            }
            ir::ExprKind::Unary { arg, .. } | ir::ExprKind::Reduce { arg, .. } => expr(arg, out),
            ir::ExprKind::Binary { lhs, rhs, .. } => {
                expr(lhs, out);
                expr(rhs, out);
            }
        }
    }
    fn dist(d: &ir::Dist, out: &mut Vec<String>) {
        d.args.iter().for_each(|(_, a)| expr(a, out));
        if let Some(c) = &d.component {
            dist(c, out);
        }
    }
    fn stmts(ss: &[ir::Stmt], out: &mut Vec<String>) {
        for s in ss {
            match s {
                ir::Stmt::Let { value, .. } => expr(value, out),
                ir::Stmt::Sample(site) => {
                    dist(&site.dist, out);
                    for f in &site.flows {
                        f.context.iter().for_each(|c| expr(c, out));
                    }
                }
                ir::Stmt::Loop { body, .. } => stmts(body, out),
            }
        }
    }
    let mut out = Vec::new();
    stmts(&program.model.stmts, &mut out);
    if let ir::Guide::Amortized(body) = &program.guide {
        stmts(&body.stmts, &mut out);
    }
    out
}

#[test]
fn placeholders_are_found() {
    let src = std::fs::read_to_string(format!("{SPECS_DIR}/vae.vi")).unwrap();
    let mut program = check(&src).program.unwrap();
    assert!(placeholders(&program).is_empty());
    let ir::Stmt::Sample(site) = &mut program.model.stmts[0] else {
        panic!("the VAE's model starts with `z ~ Normal(0, 1)`");
    };
    site.dist.args[0].1.kind = ir::ExprKind::Invalid;
    site.dist.args[1].1.ty.domain = ir::Domain::Unknown;
    assert_eq!(placeholders(&program).len(), 2);
}

/// A program without errors is fully typed.
#[test]
fn specs_ir_fully_typed() {
    let mut failures = Vec::new();
    for path in spec_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        if let Some(program) = check(&src).program {
            for p in placeholders(&program) {
                failures.push(format!("{}: {p}", name_of(&path)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `vic fmt` is idempotent on every spec, keeps its comments, and the formatted text
/// means the same: it checks cleanly to the same IR up to source positions.
#[test]
fn specs_format() {
    let mut failures = Vec::new();
    for path in spec_files() {
        let name = name_of(&path);
        let src = std::fs::read_to_string(&path).unwrap();
        let once = match driver::format(&src) {
            Ok(t) => t,
            Err(d) => {
                failures.push(format!("{name}: fmt failed: {}", d.message));
                continue;
            }
        };
        let twice = match driver::format(&once) {
            Ok(t) => t,
            Err(d) => {
                failures.push(format!(
                    "{name}: formatted text does not parse: {}",
                    d.message
                ));
                continue;
            }
        };
        if once != twice {
            failures.push(format!(
                "{name}: fmt is not idempotent:\n--- once\n{once}\n--- twice\n{twice}"
            ));
        }
        let comments = |t: &str| t.matches('#').count();
        if comments(&once) != comments(&src) {
            failures.push(format!(
                "{name}: fmt changed the number of `#` from {} to {}",
                comments(&src),
                comments(&once)
            ));
        }
        let original = check(&src);
        let formatted = check(&once);
        if !formatted.diagnostics.is_empty() {
            failures.push(render::human(
                &format!("{name} (formatted)"),
                &once,
                &formatted.diagnostics,
            ));
            continue;
        }
        let ir_a = driver::emit(&original, Emit::Ir).map(|t| strip_spans(&t));
        let ir_b = driver::emit(&formatted, Emit::Ir).map(|t| strip_spans(&t));
        if ir_a.is_none() || ir_a != ir_b {
            failures.push(format!(
                "{name}: the formatted text checks to a different IR"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every spec is already in canonical form (CI runs `vic fmt --check specs/*.vi`).
#[test]
fn specs_are_canonical() {
    for path in spec_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        let formatted = driver::format(&src).map_err(|d| d.message);
        assert_eq!(
            formatted.as_deref(),
            Ok(src.as_str()),
            "{} is not formatted; run `vic fmt` on it",
            name_of(&path)
        );
    }
}

/// `--emit plan` and `--emit dot` print something for every spec.
#[test]
fn specs_plan_and_dot() {
    for path in spec_files() {
        let src = std::fs::read_to_string(&path).unwrap();
        let front = check(&src);
        for what in [Emit::Plan, Emit::Dot, Emit::Ast] {
            let text = driver::emit(&front, what).unwrap_or_default();
            assert!(
                !text.trim().is_empty(),
                "{}: empty {what:?}",
                name_of(&path)
            );
        }
        let dot = driver::emit(&front, Emit::Dot).unwrap_or_default();
        assert!(
            dot.contains("digraph") || dot.contains("graph"),
            "{}: not Graphviz",
            name_of(&path)
        );
        // The plan accounts for every network and every latent; the picture shows every
        // variable.
        let plan = driver::emit(&front, Emit::Plan).unwrap_or_default();
        let program = front.program.as_ref().unwrap();
        for net in &program.nets {
            assert!(
                plan.contains(&net.name),
                "{}: the plan does not mention network `{}`",
                name_of(&path),
                net.name
            );
        }
        for latent in &program.latents {
            assert!(
                plan.contains(&latent.name),
                "{}: the plan does not mention latent `{}`",
                name_of(&path),
                latent.name
            );
        }
        let names = program.data.iter().map(|d| &d.name);
        for name in names.chain(program.latents.iter().map(|l| &l.name)) {
            assert!(
                dot.contains(&format!("\"{name}")) || dot.contains(&format!(":{name}\"")),
                "{}: the graph has no node for `{name}`",
                name_of(&path)
            );
        }
    }
}

/// `--set` overrides reach the IR, and a bad override is an E015.
#[test]
fn specs_take_const_overrides() {
    let src = std::fs::read_to_string(format!("{SPECS_DIR}/vae.vi")).unwrap();
    let opts = CheckOptions {
        overrides: vec![("Z".to_string(), 16)],
        ..Default::default()
    };
    let front = driver::front_end(&src, &opts);
    assert!(front.diagnostics.is_empty(), "{:?}", front.diagnostics);
    let program = front.program.unwrap();
    let z = program.consts.iter().find(|c| c.name == "Z").unwrap();
    assert_eq!((z.value, z.overridden), (16, true));
    assert_eq!(program.latents[0].ty.shape, vec![16]);
    assert!(program
        .nets
        .iter()
        .all(|n| n.heads.iter().all(|h| h.ty.shape != vec![32])));

    let bad = CheckOptions {
        overrides: vec![("Z".to_string(), 0)],
        ..Default::default()
    };
    let front = driver::front_end(&src, &bad);
    assert!(
        front
            .diagnostics
            .iter()
            .any(|d| d.code == vic::diag::Code::E015),
        "{:?}",
        front.diagnostics
    );
}
