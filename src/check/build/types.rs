//! Types as written (`Real[D]`, `Cat(K)`, `Set[T]`) to `ir::Type`, and param inits.

use super::{literal, BuildError, Builder};
use crate::check::consts::suggest;
use crate::ir::{Domain, Init, Type};
use crate::span::Span;
use crate::syntax::ast;

pub(super) const DOMAINS: [&str; 7] = [
    "Real", "Positive", "Unit", "Binary", "Count", "Simplex", "Cat",
];

impl Builder<'_> {
    /// A data, latent, param, set or head type: `Set[...]` is an error here.
    pub(super) fn value_type(&mut self, t: &ast::TypeExpr) -> Type {
        match &t.kind {
            ast::TypeExprKind::Set(_) => {
                self.errors.push(BuildError::SetOutsideNet { span: t.span });
                Type::unknown()
            }
            ast::TypeExprKind::Domain { name, arg, shape } => {
                self.domain_type(name, arg.as_deref(), shape.as_deref(), t.span)
            }
        }
    }

    /// A network input type: `(member type, is a set)`.
    pub(super) fn input_type(&mut self, t: &ast::TypeExpr) -> (Type, bool) {
        match &t.kind {
            ast::TypeExprKind::Set(inner) => match &inner.kind {
                ast::TypeExprKind::Set(_) => {
                    self.errors.push(BuildError::NestedSet { span: inner.span });
                    (Type::unknown(), true)
                }
                ast::TypeExprKind::Domain { .. } => (self.value_type(inner), true),
            },
            ast::TypeExprKind::Domain { .. } => (self.value_type(t), false),
        }
    }

    fn domain_type(
        &mut self,
        name: &ast::Ident,
        arg: Option<&ast::Expr>,
        shape: Option<&[ast::Expr]>,
        _span: Span,
    ) -> Type {
        let mut dims_ok = true;
        let dims: Vec<usize> = shape
            .unwrap_or(&[])
            .iter()
            .map(|d| {
                self.positive(d).unwrap_or_else(|| {
                    dims_ok = false;
                    1
                })
            })
            .collect();
        let domain = match name.name.as_str() {
            "Real" => Domain::Real,
            "Positive" => Domain::Positive,
            "Unit" => Domain::Unit,
            "Binary" => Domain::Binary,
            "Count" => Domain::Count,
            "Simplex" => Domain::Simplex,
            "Cat" => match arg {
                Some(k) => match self.positive(k) {
                    Some(k) => Domain::Cat(k),
                    None => Domain::Unknown,
                },
                None => {
                    self.errors.push(BuildError::DomainArg {
                        domain: "Cat".into(),
                        needs_arg: true,
                        span: name.span,
                    });
                    Domain::Unknown
                }
            },
            other => {
                self.errors.push(BuildError::Unknown {
                    what: "domain",
                    name: other.to_string(),
                    span: name.span,
                    suggestion: suggest(other, DOMAINS),
                });
                Domain::Unknown
            }
        };
        if let (Some(a), false) = (arg, name.name == "Cat") {
            if domain != Domain::Unknown {
                self.errors.push(BuildError::DomainArg {
                    domain: name.name.clone(),
                    needs_arg: false,
                    span: a.span,
                });
            }
        }
        if domain == Domain::Simplex && dims.is_empty() {
            self.errors
                .push(BuildError::SimplexWithoutShape { span: name.span });
        }
        // A type with a failed dimension is unknown, so its uses are not reported again.
        Type::new(if dims_ok { domain } else { Domain::Unknown }, dims)
    }

    /// A param's init, checked against its constrained domain; the default when absent
    /// (`zeros` for Real, `ones` for Positive, `0.5` for Unit, `1/K` for Simplex).
    pub(super) fn param_init(
        &mut self,
        name: &ast::Ident,
        ty: &Type,
        ty_span: Span,
        init: Option<&ast::Expr>,
    ) -> Init {
        let d = ty.domain;
        if matches!(d, Domain::Binary | Domain::Count | Domain::Cat(_)) {
            self.errors.push(BuildError::ParamDomain {
                name: name.name.clone(),
                domain: d.name(),
                span: ty_span,
            });
        }
        let default = match d {
            Domain::Positive => Init::Ones,
            Domain::Unit => Init::Value(0.5),
            Domain::Simplex => {
                let k = ty.shape.last().copied().unwrap_or(1).max(1);
                Init::Value(1.0 / k as f64)
            }
            _ => Init::Zeros,
        };
        let Some(e) = init else { return default };
        let Some(init) = self.init_expr(e) else {
            return default;
        };
        // The range of values the init can produce, to compare with the domain.
        let (lo, hi) = match &init {
            Init::Zeros => (0.0, 0.0),
            Init::Ones => (1.0, 1.0),
            Init::Value(v) => (*v, *v),
            Init::Normal { .. } => (f64::NEG_INFINITY, f64::INFINITY),
            Init::Uniform { low, high } => (*low, *high),
        };
        let bad_hint = match d {
            Domain::Positive if lo <= 0.0 => Some(format!(
                "a Positive param needs a value > 0: write `= 1.0` or `= uniform(0.5, 1.5)`, or declare `Real{}`",
                shape_suffix(ty)
            )),
            Domain::Unit if lo <= 0.0 || hi >= 1.0 => {
                Some("a Unit param needs a value strictly between 0 and 1: write `= 0.5`".to_string())
            }
            Domain::Simplex if lo <= 0.0 || hi >= 1.0 => Some(
                "a Simplex param starts uniform by default; write a value in (0, 1) or leave out the init"
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(hint) = bad_hint {
            self.errors.push(BuildError::InitOutsideDomain {
                name: name.name.clone(),
                ty: ty.display(),
                span: e.span,
                hint,
            });
        }
        init
    }

    fn init_expr(&mut self, e: &ast::Expr) -> Option<Init> {
        if let Some(v) = literal(e) {
            return Some(Init::Value(v));
        }
        match &e.kind {
            ast::ExprKind::Name(id) if id.name == "zeros" => Some(Init::Zeros),
            ast::ExprKind::Name(id) if id.name == "ones" => Some(Init::Ones),
            ast::ExprKind::Call(call)
                if matches!(call.callee.name.as_str(), "normal" | "uniform") =>
            {
                let normal = call.callee.name == "normal";
                let names: &[&str] = if normal {
                    &["mean", "std"]
                } else {
                    &["low", "high"]
                };
                let args = self.bind_args(&call.callee.name, call, names, true)?;
                let mut vals = [0.0f64; 2];
                let mut ok = true;
                for (i, a) in args.iter().enumerate() {
                    match a {
                        Some(a) => match literal(a) {
                            Some(v) => vals[i] = v,
                            None => {
                                self.errors.push(BuildError::BadValue {
                                    callee: call.callee.name.clone(),
                                    keyword: names[i].to_string(),
                                    expected: "a number".into(),
                                    span: a.span,
                                });
                                ok = false;
                            }
                        },
                        None => {
                            self.errors.push(BuildError::MissingKeyword {
                                callee: call.callee.name.clone(),
                                keyword: names[i].to_string(),
                                span: call.span,
                            });
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return None;
                }
                if normal {
                    if vals[1] <= 0.0 {
                        self.errors.push(BuildError::BadValue {
                            callee: "normal".into(),
                            keyword: "std".into(),
                            expected: "positive".into(),
                            span: args[1].map(|a| a.span).unwrap_or(call.span),
                        });
                    }
                    Some(Init::Normal {
                        mean: vals[0],
                        std: vals[1],
                    })
                } else {
                    if vals[1] <= vals[0] {
                        self.errors.push(BuildError::BadValue {
                            callee: "uniform".into(),
                            keyword: "high".into(),
                            expected: "greater than `low`".into(),
                            span: args[1].map(|a| a.span).unwrap_or(call.span),
                        });
                    }
                    Some(Init::Uniform {
                        low: vals[0],
                        high: vals[1],
                    })
                }
            }
            ast::ExprKind::Name(id) | ast::ExprKind::Call(ast::Call { callee: id, .. }) => {
                self.errors.push(BuildError::Unknown {
                    what: "initializer",
                    name: id.name.clone(),
                    span: id.span,
                    suggestion: suggest(&id.name, ["zeros", "ones", "normal", "uniform"]),
                });
                None
            }
            _ => {
                self.errors.push(BuildError::BadValue {
                    callee: "param".into(),
                    keyword: "init".into(),
                    expected: "`zeros`, `ones`, a number, `normal(m, s)` or `uniform(a, b)`".into(),
                    span: e.span,
                });
                None
            }
        }
    }

    /// Match a call's arguments to named parameters: positional ones in order (when
    /// `positional`), then keywords. Reports arity, unknown and duplicate keywords;
    /// `None` when the arguments could not be matched at all.
    pub(super) fn bind_args<'e>(
        &mut self,
        callee: &str,
        call: &'e ast::Call,
        names: &[&str],
        positional: bool,
    ) -> Option<Vec<Option<&'e ast::Expr>>> {
        self.bind(callee, &call.args, names, positional)
    }

    pub(super) fn bind<'e>(
        &mut self,
        callee: &str,
        args: &'e [ast::Arg],
        names: &[&str],
        positional: bool,
    ) -> Option<Vec<Option<&'e ast::Expr>>> {
        let mut out: Vec<Option<&ast::Expr>> = vec![None; names.len()];
        let mut spans: Vec<Span> = vec![Span::Artificial; names.len()];
        let mut next = 0usize;
        let mut ok = true;
        let mut arity_reported = false;
        let npos = args.iter().filter(|a| a.name.is_none()).count();
        for a in args {
            match &a.name {
                None => {
                    if !positional {
                        self.errors.push(BuildError::PositionalNotAllowed {
                            callee: callee.to_string(),
                            span: a.span,
                            hint: format!(
                                "name the argument: `{}(NAME = ...)`; it takes {}",
                                callee,
                                names_list(names)
                            ),
                        });
                        ok = false;
                    } else if next >= names.len() {
                        // One arity error per call, at the first extra argument.
                        if !arity_reported {
                            arity_reported = true;
                            self.errors.push(BuildError::Arity {
                                callee: callee.to_string(),
                                expected: count_text(names.len()),
                                given: npos,
                                span: a.span,
                            });
                        }
                        ok = false;
                    } else {
                        out[next] = Some(&a.value);
                        spans[next] = a.span;
                        next += 1;
                    }
                }
                Some(kw) => match names.iter().position(|n| *n == kw.name) {
                    Some(i) => {
                        if out[i].is_some() {
                            self.errors.push(BuildError::DuplicateKeyword {
                                callee: callee.to_string(),
                                keyword: kw.name.clone(),
                                span: a.span,
                                first: spans[i],
                            });
                            ok = false;
                        } else {
                            out[i] = Some(&a.value);
                            spans[i] = a.span;
                        }
                    }
                    None => {
                        self.errors.push(BuildError::UnknownKeyword {
                            callee: callee.to_string(),
                            keyword: kw.name.clone(),
                            span: kw.span,
                            suggestion: suggest(&kw.name, names.iter().copied()),
                            accepted: names.iter().map(|n| n.to_string()).collect(),
                        });
                        ok = false;
                    }
                },
            }
        }
        ok.then_some(out)
    }
}

fn shape_suffix(ty: &Type) -> String {
    if ty.shape.is_empty() {
        String::new()
    } else {
        let dims: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}

pub(super) fn count_text(n: usize) -> String {
    match n {
        0 => "no arguments".into(),
        1 => "1 argument".into(),
        n => format!("{n} arguments"),
    }
}

fn names_list(names: &[&str]) -> String {
    if names.is_empty() {
        "no arguments".into()
    } else {
        let v: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        v.join(", ")
    }
}
