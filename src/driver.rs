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

/// Parse and check one source text.
pub fn front_end(src: &str, opts: &CheckOptions) -> FrontEnd {
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
