//! `const` items: positive integers, const arithmetic, cycles, `--set` overrides (E015),
//! and [`eval_int`], the one evaluator of integer expressions (dimensions, sizes, loop
//! bounds, `train` values such as `batch = B`).

use crate::diag::{Code, Diagnostic};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::{HashMap, HashSet};

/// Resolved consts by name (only those that resolved to a positive integer).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consts {
    pub values: HashMap<String, usize>,
    /// In declaration order, with whether a `--set` override applied.
    pub defs: Vec<crate::ir::ConstDef>,
    /// Consts that are declared but failed to resolve (already reported): expressions that
    /// use them fail silently instead of reporting an unknown name.
    pub failed: HashSet<String>,
    /// Every declared const name (resolved or not), for did-you-mean hints.
    pub declared: Vec<String>,
}

/// A failure of a `const` item, an override or an integer expression.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstError {
    /// A const whose value is zero or negative.
    NotPositive {
        name: String,
        value: i64,
        span: Span,
    },
    /// An integer expression that needs a positive value evaluated to zero or less.
    NotPositiveValue { value: i64, span: Span },
    /// A number literal that is not an integer where an integer is needed.
    NotInteger { text: String, span: Span },
    /// `a / b` where `b` does not divide `a`.
    InexactDivision { lhs: i64, rhs: i64, span: Span },
    /// `a / 0`.
    DivisionByZero { span: Span },
    /// Arithmetic beyond 64-bit integers.
    Overflow { span: Span },
    /// Something that is not integer arithmetic (a string, a call, a list) in an
    /// integer expression.
    NotIntExpr { span: Span },
    /// A const that (directly or through others) depends on itself; `cycle` lists the
    /// names along it, starting and ending with `name`.
    Cycle { cycle: Vec<String>, span: Span },
    /// A name in an integer expression that is not a const.
    UnknownName {
        name: String,
        span: Span,
        suggestion: Option<String>,
    },
    /// `--set NAME=V` for a NAME that no `const` declares.
    UnknownOverride {
        name: String,
        suggestion: Option<String>,
    },
    /// `--set NAME=V` with `V <= 0`.
    BadOverride { name: String, value: i64 },
}

impl From<ConstError> for Diagnostic {
    fn from(e: ConstError) -> Diagnostic {
        match e {
            ConstError::NotPositive { name, value, span } => Diagnostic::new(
                Code::E015,
                span,
                format!("const `{name}` is {value}, but consts must be positive integers"),
            )
            .with_label("not positive"),
            ConstError::NotPositiveValue { value, span } => Diagnostic::new(
                Code::E015,
                span,
                format!("this evaluates to {value}, but a positive integer is needed"),
            )
            .with_label("not positive"),
            ConstError::NotInteger { text, span } => {
                Diagnostic::new(Code::E015, span, format!("`{text}` is not an integer"))
                    .with_label("an integer is needed here")
                    .with_hint("dimensions and consts are whole numbers")
            }
            ConstError::InexactDivision { lhs, rhs, span } => Diagnostic::new(
                Code::E015,
                span,
                format!("{lhs} / {rhs} is not a whole number"),
            )
            .with_label("inexact division")
            .with_hint("`/` on consts must divide exactly"),
            ConstError::DivisionByZero { span } => {
                Diagnostic::new(Code::E015, span, "this divides by zero").with_label("zero divisor")
            }
            ConstError::Overflow { span } => {
                Diagnostic::new(Code::E015, span, "this integer arithmetic overflows")
                    .with_label("too large")
            }
            ConstError::NotIntExpr { span } => Diagnostic::new(
                Code::E015,
                span,
                "this is not integer arithmetic on numbers and consts",
            )
            .with_label("expected an integer expression")
            .with_hint("use integer literals, const names, `+ - * /` and parentheses"),
            ConstError::Cycle { cycle, span } => {
                let first = cycle.first().cloned().unwrap_or_default();
                let path: Vec<String> = cycle.iter().map(|n| format!("`{n}`")).collect();
                Diagnostic::new(
                    Code::E015,
                    span,
                    format!("const `{first}` depends on itself: {}", path.join(" -> ")),
                )
                .with_label("cyclic definition")
                .with_hint("give one of these consts a literal value")
            }
            ConstError::UnknownName {
                name,
                span,
                suggestion,
            } => {
                let d = Diagnostic::new(Code::E002, span, format!("unknown const `{name}`"))
                    .with_label("not a const");
                match suggestion {
                    Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                    None => d.with_hint(format!("declare it with `const {name} = ...`")),
                }
            }
            ConstError::UnknownOverride { name, suggestion } => {
                let d = Diagnostic::new(
                    Code::E002,
                    Span::Artificial,
                    format!("the override `--set {name}=...` names no const of this spec"),
                );
                match suggestion {
                    Some(s) => d.with_hint(format!("did you mean `--set {s}=...`?")),
                    None => d.with_hint("only `const` items can be overridden"),
                }
            }
            ConstError::BadOverride { name, value } => Diagnostic::new(
                Code::E015,
                Span::Artificial,
                format!("the override `--set {name}={value}` is not a positive integer"),
            )
            .with_hint(format!("write `--set {name}=N` with N >= 1")),
        }
    }
}

/// Why [`eval_int`] gave no value.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalError {
    /// A new error to report.
    Error(ConstError),
    /// The expression uses a const that failed and was already reported: report nothing.
    AlreadyReported,
}

impl EvalError {
    /// The error to report, if any.
    pub fn into_error(self) -> Option<ConstError> {
        match self {
            EvalError::Error(e) => Some(e),
            EvalError::AlreadyReported => None,
        }
    }
}

impl From<ConstError> for EvalError {
    fn from(e: ConstError) -> EvalError {
        EvalError::Error(e)
    }
}

/// Evaluate an integer expression: integer literals, const names, `+ - * /` (`/` must
/// divide exactly), unary minus and parentheses. The result may be zero or negative;
/// use [`eval_positive`] for dimensions and sizes.
pub fn eval_int(expr: &ast::Expr, consts: &Consts) -> Result<i64, EvalError> {
    eval_with(
        expr,
        &mut |id: &ast::Ident| match consts.values.get(&id.name) {
            Some(&v) => Ok(v as i64),
            None if consts.failed.contains(&id.name) => Err(EvalError::AlreadyReported),
            None => Err(EvalError::Error(ConstError::UnknownName {
                name: id.name.clone(),
                span: id.span,
                suggestion: suggest(&id.name, consts.declared.iter().map(String::as_str)),
            })),
        },
    )
}

/// [`eval_int`] for a dimension, size or count: the value must be at least 1.
pub fn eval_positive(expr: &ast::Expr, consts: &Consts) -> Result<usize, EvalError> {
    let v = eval_int(expr, consts)?;
    if v <= 0 {
        return Err(EvalError::Error(ConstError::NotPositiveValue {
            value: v,
            span: expr.span,
        }));
    }
    Ok(v as usize)
}

fn eval_with(
    expr: &ast::Expr,
    lookup: &mut dyn FnMut(&ast::Ident) -> Result<i64, EvalError>,
) -> Result<i64, EvalError> {
    use ast::ExprKind as K;
    match &expr.kind {
        K::Number { value, text } => {
            if value.fract() != 0.0 || !value.is_finite() || value.abs() > 9.0e15 {
                Err(ConstError::NotInteger {
                    text: text.clone(),
                    span: expr.span,
                }
                .into())
            } else {
                Ok(*value as i64)
            }
        }
        K::Name(id) => lookup(id),
        K::Neg(inner) => {
            let v = eval_with(inner, lookup)?;
            v.checked_neg()
                .ok_or(EvalError::Error(ConstError::Overflow { span: expr.span }))
        }
        K::Binary { op, lhs, rhs } => {
            // Evaluate both sides so both report their errors.
            let l = eval_with(lhs, lookup);
            let r = eval_with(rhs, lookup);
            let (l, r) = (l?, r?);
            let overflow = || EvalError::Error(ConstError::Overflow { span: expr.span });
            match op {
                ast::BinOp::Add => l.checked_add(r).ok_or_else(overflow),
                ast::BinOp::Sub => l.checked_sub(r).ok_or_else(overflow),
                ast::BinOp::Mul => l.checked_mul(r).ok_or_else(overflow),
                ast::BinOp::Div => {
                    if r == 0 {
                        Err(ConstError::DivisionByZero { span: expr.span }.into())
                    } else if l % r != 0 {
                        Err(ConstError::InexactDivision {
                            lhs: l,
                            rhs: r,
                            span: expr.span,
                        }
                        .into())
                    } else {
                        Ok(l / r)
                    }
                }
            }
        }
        _ => Err(ConstError::NotIntExpr { span: expr.span }.into()),
    }
}

/// The closest candidate by edit distance, when it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    // One- and two-letter names are too short for a typo to be told from another name.
    let len = name.chars().count();
    let limit = if len <= 2 { 0 } else { (len / 3).max(1) };
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Edit distance with adjacent transpositions (optimal string alignment); letters that
/// differ only in ASCII case count as equal.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Visiting,
    Done(Option<i64>),
}

struct Resolver<'a> {
    items: HashMap<&'a str, (&'a ast::Ident, &'a ast::Expr)>,
    declared: Vec<String>,
    state: HashMap<String, State>,
    stack: Vec<String>,
    errors: Vec<ConstError>,
}

impl<'a> Resolver<'a> {
    /// The value of a const, resolving it (and what it uses) on first request.
    fn value_of(&mut self, name: &str) -> Result<i64, EvalError> {
        match self.state.get(name) {
            Some(State::Done(Some(v))) => return Ok(*v),
            Some(State::Done(None)) => return Err(EvalError::AlreadyReported),
            Some(State::Visiting) => {
                let start = self.stack.iter().position(|n| n == name).unwrap_or(0);
                let mut cycle: Vec<String> = self.stack[start..].to_vec();
                cycle.push(name.to_string());
                let span = self
                    .items
                    .get(name)
                    .map(|(id, _)| id.span)
                    .unwrap_or(Span::Artificial);
                self.errors.push(ConstError::Cycle { cycle, span });
                // Every const on the cycle fails; report the cycle once.
                for n in &self.stack[start..] {
                    self.state.insert(n.clone(), State::Done(None));
                }
                return Err(EvalError::AlreadyReported);
            }
            None => {}
        }
        let Some(&(_, expr)) = self.items.get(name) else {
            return Err(EvalError::AlreadyReported);
        };
        self.state.insert(name.to_string(), State::Visiting);
        self.stack.push(name.to_string());
        let result = {
            let declared = self.declared.clone();
            let mut lookup = |id: &ast::Ident| -> Result<i64, EvalError> {
                if self.items.contains_key(id.name.as_str()) {
                    self.value_of(&id.name)
                } else {
                    Err(EvalError::Error(ConstError::UnknownName {
                        name: id.name.clone(),
                        span: id.span,
                        suggestion: suggest(&id.name, declared.iter().map(String::as_str)),
                    }))
                }
            };
            eval_with(expr, &mut lookup)
        };
        self.stack.pop();
        // A cycle through this const may already have marked it failed.
        if self.state.get(name) == Some(&State::Done(None)) {
            return Err(EvalError::AlreadyReported);
        }
        let out = match result {
            Ok(v) if v > 0 => Ok(v),
            Ok(v) => {
                self.errors.push(ConstError::NotPositive {
                    name: name.to_string(),
                    value: v,
                    span: expr.span,
                });
                Err(EvalError::AlreadyReported)
            }
            Err(EvalError::Error(e)) => {
                self.errors.push(e);
                Err(EvalError::AlreadyReported)
            }
            Err(EvalError::AlreadyReported) => Err(EvalError::AlreadyReported),
        };
        self.state
            .insert(name.to_string(), State::Done(out.as_ref().ok().copied()));
        out
    }
}

/// Resolve every `const` item, then apply `--set` overrides. Duplicate const names are
/// reported by `build` (E003); the first declaration is used here.
pub fn resolve(file: &ast::File, overrides: &[(String, i64)]) -> (Consts, Vec<ConstError>) {
    let mut order: Vec<(&ast::Ident, &ast::Expr)> = Vec::new();
    let mut items: HashMap<&str, (&ast::Ident, &ast::Expr)> = HashMap::new();
    for item in &file.items {
        if let ast::ItemKind::Const { name, value } = &item.kind {
            if !items.contains_key(name.name.as_str()) {
                items.insert(name.name.as_str(), (name, value));
                order.push((name, value));
            }
        }
    }
    let declared: Vec<String> = order.iter().map(|(n, _)| n.name.clone()).collect();
    let mut errors = Vec::new();

    // Overrides replace the declared expression entirely (so a bad default that is
    // overridden is not an error).
    let mut overridden: HashMap<String, i64> = HashMap::new();
    for (name, value) in overrides {
        if !items.contains_key(name.as_str()) {
            errors.push(ConstError::UnknownOverride {
                name: name.clone(),
                suggestion: suggest(name, declared.iter().map(String::as_str)),
            });
        } else if *value <= 0 {
            errors.push(ConstError::BadOverride {
                name: name.clone(),
                value: *value,
            });
        } else {
            overridden.insert(name.clone(), *value);
        }
    }

    let mut r = Resolver {
        items,
        declared: declared.clone(),
        state: HashMap::new(),
        stack: Vec::new(),
        errors: Vec::new(),
    };
    for (name, v) in &overridden {
        r.state.insert(name.clone(), State::Done(Some(*v)));
    }
    let mut consts = Consts {
        declared,
        ..Consts::default()
    };
    for (name, _) in &order {
        match r.value_of(&name.name) {
            Ok(v) => {
                consts.values.insert(name.name.clone(), v as usize);
                consts.defs.push(crate::ir::ConstDef {
                    name: name.name.clone(),
                    value: v as usize,
                    overridden: overridden.contains_key(&name.name),
                    span: name.span,
                });
            }
            Err(_) => {
                consts.failed.insert(name.name.clone());
            }
        }
    }
    errors.extend(r.errors);
    (consts, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse;

    fn run(src: &str, overrides: &[(&str, i64)]) -> (Consts, Vec<ConstError>) {
        let file = parse(src).expect("parses");
        let ov: Vec<(String, i64)> = overrides.iter().map(|(n, v)| (n.to_string(), *v)).collect();
        resolve(&file, &ov)
    }

    fn codes(errs: &[ConstError]) -> Vec<Code> {
        errs.iter()
            .map(|e| Diagnostic::from(e.clone()).code)
            .collect()
    }

    fn text<'a>(src: &'a str, e: &ConstError) -> &'a str {
        let d = Diagnostic::from(e.clone());
        &src[d.span.range().expect("has a span")]
    }

    #[test]
    fn resolves_in_any_order() {
        let src = "const A = B * 2\nconst B = C + 1\nconst C = 3\nmodel {}";
        let (c, e) = run(src, &[]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(c.values["A"], 8);
        assert_eq!(c.values["B"], 4);
        assert_eq!(c.defs.len(), 3);
        assert_eq!(c.defs[0].name, "A");
    }

    #[test]
    fn cycle_is_reported_once() {
        let src = "const A = B + 1\nconst B = A * 2\nconst C = 4\nmodel {}";
        let (c, e) = run(src, &[]);
        assert_eq!(codes(&e), vec![Code::E015]);
        let msg = Diagnostic::from(e[0].clone()).message;
        assert!(msg.contains("`A` -> `B` -> `A`"), "{msg}");
        assert_eq!(c.values["C"], 4);
        assert!(c.failed.contains("A") && c.failed.contains("B"));
    }

    #[test]
    fn self_cycle() {
        let src = "const A = A\nmodel {}";
        let (_, e) = run(src, &[]);
        assert_eq!(codes(&e), vec![Code::E015]);
        assert_eq!(text(src, &e[0]), "A");
    }

    #[test]
    fn non_positive_and_inexact() {
        let src = "const A = 3 - 5\nconst B = 7 / 2\nconst C = 2.5\nconst D = 8 / 2\nmodel {}";
        let (c, e) = run(src, &[]);
        assert_eq!(codes(&e), vec![Code::E015, Code::E015, Code::E015]);
        assert_eq!(text(src, &e[0]), "3 - 5");
        assert_eq!(text(src, &e[1]), "7 / 2");
        assert_eq!(text(src, &e[2]), "2.5");
        assert_eq!(c.values["D"], 4);
    }

    #[test]
    fn unknown_name_in_const() {
        let src = "const Hidden = 5\nconst A = Hiden * 2\nmodel {}";
        let (_, e) = run(src, &[]);
        assert_eq!(codes(&e), vec![Code::E002]);
        assert_eq!(text(src, &e[0]), "Hiden");
        let d = Diagnostic::from(e[0].clone());
        assert_eq!(d.hint.as_deref(), Some("did you mean `Hidden`?"));
    }

    #[test]
    fn dependent_of_failed_const_is_silent() {
        let src = "const A = 0\nconst B = A + 1\nmodel {}";
        let (c, e) = run(src, &[]);
        assert_eq!(codes(&e), vec![Code::E015]);
        assert!(c.failed.contains("B"));
    }

    #[test]
    fn overrides() {
        let src = "const Z = 32\nconst W = Z * 2\nmodel {}";
        let (c, e) = run(src, &[("Z", 16)]);
        assert!(e.is_empty());
        assert_eq!(c.values["W"], 32);
        assert!(c.defs[0].overridden && !c.defs[1].overridden);
        let (_, e) = run(src, &[("Y", 16), ("W", 0)]);
        assert_eq!(codes(&e), vec![Code::E002, Code::E015]);
        let d = Diagnostic::from(e[0].clone());
        assert!(d.span.is_artificial() && d.message.contains("--set Y"));
    }

    #[test]
    fn eval_int_and_positive() {
        let src = "const B = 64\nmodel {}";
        let (c, _) = run(src, &[]);
        let file = parse("const X = (B + 2) / 2 - 40\nmodel {}").expect("parses");
        let ast::ItemKind::Const { value, .. } = &file.items[0].kind else {
            panic!("const")
        };
        assert_eq!(eval_int(value, &c), Ok(-7));
        assert!(matches!(
            eval_positive(value, &c),
            Err(EvalError::Error(ConstError::NotPositiveValue {
                value: -7,
                ..
            }))
        ));
    }
}
