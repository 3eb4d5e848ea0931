//! The long explanations printed by `vic explain CODE`.

use crate::diag::Code;

pub fn text(_code: Code) -> &'static str {
    "" // filled in by the lead
}
