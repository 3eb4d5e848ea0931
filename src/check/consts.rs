//! `const` items: positive integers, const arithmetic, cycles, `--set` overrides (E015).

use crate::diag::Diagnostic;
use crate::syntax::ast;
use std::collections::HashMap;

/// Resolved consts by name (only those that resolved to a positive integer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consts {
    pub values: HashMap<String, usize>,
    /// In declaration order, with whether a `--set` override applied.
    pub defs: Vec<crate::ir::ConstDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConstError {}

impl From<ConstError> for Diagnostic {
    fn from(e: ConstError) -> Diagnostic {
        match e {}
    }
}

pub fn resolve(_file: &ast::File, _overrides: &[(String, i64)]) -> (Consts, Vec<ConstError>) {
    todo!("H2")
}
