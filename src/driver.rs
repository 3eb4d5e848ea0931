//! The driver: runs the phases in order on one source text. No I/O here.

use crate::check::{self, CheckOptions};
use crate::diag::Diagnostic;
use crate::ir::Program;
use crate::syntax::{self, ast};

/// Everything the front end learned about one file.
#[derive(Clone, Debug)]
pub struct FrontEnd {
    /// Present when the file parsed.
    pub ast: Option<ast::File>,
    /// Present when the file checked without errors.
    pub program: Option<Program>,
    /// Syntax errors, or every check error and warning, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl FrontEnd {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.is_error())
    }
}

/// The stack the phases run on. Deeply nested (but legal) input recurses deeply in the
/// parser, the checker and the formatter; a dedicated thread with a large stack, of
/// which only the pages actually touched are committed, keeps that independent of the
/// caller's stack (a test thread has 2 MiB).
const PHASE_STACK: usize = 256 << 20;

/// Run `f` on a thread with [`PHASE_STACK`]; inline if no thread can be started.
/// A panic inside is a compiler bug and is propagated unchanged.
fn on_phase_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let mut f = Some(f);
    let on_thread = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("vic-phases".into())
            .stack_size(PHASE_STACK)
            .spawn_scoped(scope, || f.take().map(|f| f()));
        match spawned.map(|handle| handle.join()) {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => None,
        }
    });
    match (on_thread, f.take()) {
        (Some(v), _) => v,
        (None, Some(f)) => f(),
        (None, None) => unreachable_phase(),
    }
}

#[allow(clippy::panic)]
fn unreachable_phase() -> ! {
    panic!("internal compiler error: a phase closure ran twice; please report this")
}

/// Parse and check one source text.
pub fn front_end(src: &str, opts: &CheckOptions) -> FrontEnd {
    on_phase_stack(|| front_end_here(src, opts))
}

fn front_end_here(src: &str, opts: &CheckOptions) -> FrontEnd {
    if !opts.train.is_empty() {
        return with_train_overrides(src, opts);
    }
    match syntax::parse(src) {
        Err(e) => {
            // Every item's syntax error, not only the first.
            let mut all: Vec<Diagnostic> = syntax::parse_errors(src)
                .into_iter()
                .map(Diagnostic::from)
                .collect();
            if all.is_empty() {
                all.push(Diagnostic::from(e));
            }
            FrontEnd {
                ast: None,
                program: None,
                diagnostics: all,
            }
        }
        Ok(file) => {
            let checked = check::check(&file, opts);
            FrontEnd {
                ast: Some(file),
                program: checked.program,
                diagnostics: checked.diagnostics,
            }
        }
    }
}

/// `--set train.KEY=VALUE`: the settings are written after the source as a `train` block
/// of their own, parsed with it, and merged into the spec's `train` block (each replacing
/// the entry of the same key), so the checker validates them by the spec's own rules and
/// codes. A diagnostic about one of them loses its span (it is not in the file) and names
/// the option instead.
fn with_train_overrides(src: &str, opts: &CheckOptions) -> FrontEnd {
    let cut = src.len();
    let mut text = format!("{src}\ntrain {{\n");
    let mut ranges = Vec::new();
    for (key, value) in &opts.train {
        let start = text.len();
        // `train.lr` is a shorthand for the optimizer's learning rate.
        let entry = if key == "lr" {
            format!("optimizer = {}", optimizer_with_lr(src, value))
        } else {
            format!("{key} = {value}")
        };
        text.push_str(&entry);
        text.push('\n');
        ranges.push((start, text.len(), format!("--set train.{key}={value}")));
    }
    text.push('}');
    let relabel = |mut d: Diagnostic| -> Diagnostic {
        if let Some(r) = d.span.range() {
            if r.start >= cut {
                let which = ranges
                    .iter()
                    .find(|(s, e, _)| r.start >= *s && r.start < *e)
                    .map(|(_, _, o)| o.clone())
                    .unwrap_or_else(|| "--set train.*".into());
                d.message = format!("in `{which}`: {}", d.message);
                d.span = crate::span::Span::Artificial;
                d.label.clear();
            }
        }
        d.secondary
            .retain(|l| l.span.range().is_none_or(|r| r.start < cut));
        d
    };
    let mut file = match syntax::parse(&text) {
        Err(e) => {
            return FrontEnd {
                ast: None,
                program: None,
                diagnostics: vec![relabel(Diagnostic::from(e))],
            }
        }
        Ok(f) => f,
    };
    // Merge the appended block into the spec's first `train` block, if it has one.
    let is_train = |i: &ast::Item| matches!(i.kind, ast::ItemKind::Train(_));
    let first = file.items.iter().position(is_train);
    let last = file.items.iter().rposition(is_train);
    if let (Some(f), Some(l)) = (first, last) {
        if f != l {
            let added = file.items.remove(l);
            if let (ast::ItemKind::Train(new), ast::ItemKind::Train(old)) =
                (added.kind, &mut file.items[f].kind)
            {
                for e in new {
                    old.retain(|o| o.key.name != e.key.name);
                    old.push(e);
                }
            }
        }
    }
    let checked = check::check(
        &file,
        &CheckOptions {
            overrides: opts.overrides.clone(),
            train: Vec::new(),
        },
    );
    FrontEnd {
        ast: Some(file),
        program: checked.program,
        diagnostics: checked.diagnostics.into_iter().map(relabel).collect(),
    }
}

/// The spec's optimizer (or the default `adam`) with its learning rate replaced by `lr`,
/// as source text: `adam(lr = 5e-4, betas = [0.5, 0.999])`.
fn optimizer_with_lr(src: &str, lr: &str) -> String {
    let text_of = |sp: crate::span::Span| sp.range().and_then(|r| src.get(r)).unwrap_or("");
    let call = syntax::parse(src).ok().and_then(|file| {
        file.items.into_iter().find_map(|item| match item.kind {
            ast::ItemKind::Train(entries) => entries
                .into_iter()
                .find_map(|e| (e.key.name == "optimizer").then_some(e.value)),
            _ => None,
        })
    });
    match call.map(|e| e.kind) {
        Some(ast::ExprKind::Call(c)) => {
            let mut args = vec![format!("lr = {lr}")];
            for (i, a) in c.args.iter().enumerate() {
                match &a.name {
                    Some(n) if n.name == "lr" => {}
                    Some(n) => args.push(format!("{} = {}", n.name, text_of(a.value.span))),
                    // The first positional argument is the learning rate.
                    None if i == 0 => {}
                    None => args.push(text_of(a.value.span).to_string()),
                }
            }
            format!("{}({})", c.callee.name, args.join(", "))
        }
        Some(ast::ExprKind::Name(n)) => format!("{}(lr = {lr})", n.name),
        _ => format!("adam(lr = {lr})"),
    }
}

/// `vic fmt`: the canonical text of a source, or its syntax error.
pub fn format(src: &str) -> Result<String, Diagnostic> {
    on_phase_stack(|| format_here(src))
}

fn format_here(src: &str) -> Result<String, Diagnostic> {
    let file = syntax::parse(src).map_err(Diagnostic::from)?;
    let comments = syntax::comments(src);
    Ok(crate::fmt::format_file(&file, &comments, src))
}

/// What `vic compile --emit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Ast,
    Ir,
    Plan,
    Dot,
}

/// Render an emitted form. `ast` needs only a parse; the others a checked program.
pub fn emit(front: &FrontEnd, what: Emit) -> Option<String> {
    let pretty = ron::ser::PrettyConfig::new().struct_names(true);
    match what {
        Emit::Ast => front
            .ast
            .as_ref()
            .and_then(|a| ron::ser::to_string_pretty(a, pretty).ok()),
        Emit::Ir => front
            .program
            .as_ref()
            .and_then(|p| ron::ser::to_string_pretty(p, pretty).ok()),
        Emit::Plan => front
            .program
            .as_ref()
            .map(|p| crate::plan::plan(p).to_string()),
        Emit::Dot => front.program.as_ref().map(crate::dot::render),
    }
}

/// Read IR back from its RON text (`--emit ir` output, a run directory's `ir.ron`).
pub fn read_ir(text: &str) -> Result<Program, String> {
    ron::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nesting at the parser's limits must not overflow a test thread's 2 MiB stack in
    /// any phase (the parser, the checker, the formatter).
    #[test]
    fn deep_but_legal_nesting_runs_on_any_callers_stack() {
        let depth = crate::syntax::MAX_NESTING - 2;
        let nested = format!("{}1{}", "(".repeat(depth), ")".repeat(depth));
        let chain = vec!["x"; 900].join(" + ");
        let src = format!(
            "const A = {nested}\ndata x : Real\nmodel {{ let s = {chain}\n x ~ Normal(s, 1) }}\n"
        );
        let front = front_end(&src, &CheckOptions::default());
        assert!(front.ast.is_some(), "{:?}", front.diagnostics);
        assert!(format(&src).is_ok());
    }
}
