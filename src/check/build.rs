//! Name resolution, typing and IR construction (E002-E006, E010).

use super::consts::Consts;
use crate::diag::Diagnostic;
use crate::ir::Program;
use crate::syntax::ast;

#[derive(Clone, Debug, PartialEq)]
pub enum BuildError {}

impl From<BuildError> for Diagnostic {
    fn from(e: BuildError) -> Diagnostic {
        match e {}
    }
}

/// Build the IR. Always returns a program (with `ExprKind::Invalid` where typing
/// failed) so later rules can run; `train`/`meta` are filled in by `config`.
pub fn build(_file: &ast::File, _consts: &Consts) -> (Program, Vec<BuildError>) {
    todo!("H2")
}
