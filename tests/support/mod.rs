//! Helpers shared by the integration tests of specs and robustness.

/// RON text (IR or AST) with every source span replaced by `Artificial`, so that two
/// texts that mean the same but are laid out differently compare equal.
pub fn strip_spans(ir: &str) -> String {
    let mut out = String::with_capacity(ir.len());
    let mut rest = ir;
    while let Some(at) = rest.find("Src(") {
        let (before, tail) = rest.split_at(at);
        // Only an identifier boundary before `Src(` (not e.g. `MySrc(`).
        let boundary = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let inner = &tail[4..];
        let close = inner.find(')');
        let is_span = boundary
            && close.is_some_and(|i| {
                let body = &inner[..i];
                body.split(',').count() == 2
                    && body.split(',').all(|n| {
                        let n = n.trim();
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                    })
            });
        out.push_str(before);
        match (is_span, close) {
            (true, Some(i)) => {
                out.push_str("Artificial");
                rest = &inner[i + 1..];
            }
            _ => {
                out.push_str("Src(");
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    out
}
