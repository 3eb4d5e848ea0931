//! Whole-program rules on the IR (E007-E009, E011, E013, E014, E016, W001, W002).

use crate::diag::Diagnostic;
use crate::ir::Program;
use crate::syntax::ast;

#[derive(Clone, Debug, PartialEq)]
pub enum RuleError {}

impl From<RuleError> for Diagnostic {
    fn from(e: RuleError) -> Diagnostic {
        match e {}
    }
}

/// `front_errors`: earlier phases reported errors, so only rules that cannot be
/// confused by unresolved names should run.
pub fn check(_program: &mut Program, _file: &ast::File, _front_errors: bool) -> Vec<RuleError> {
    todo!("H3")
}
