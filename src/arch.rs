//! Architecture facts per network: parameter counts, FLOPs and activation memory per
//! example, and the cost rule E017.

use crate::diag::Diagnostic;
use crate::ir::{NetDef, Program};

/// Learned scalars of one network (all copies: `@per_member` and `iaf` steps counted by callers).
pub fn param_count(_net: &NetDef) -> u64 {
    todo!("H4")
}

/// E017: enumeration over more than 1024 joint values, more than 1e9 parameters.
pub fn check_costs(_program: &Program) -> Vec<Diagnostic> {
    todo!("H4")
}
