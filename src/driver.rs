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
    match syntax::parse(src) {
        Err(e) => FrontEnd {
            ast: None,
            program: None,
            diagnostics: vec![Diagnostic::from(e)],
        },
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
