//! Distributions (LANGUAGE.md section 7), flows and inference strategies of `~` sites.

use super::exprs::fits;
use super::stmts::Cx;
use super::{boolean, literal, BuildError, Builder, Decl};
use crate::check::consts::suggest;
use crate::ir::{self, Dist, DistKind, DistParam, Domain, Kernel, Strategy, Type};
use crate::syntax::ast;

pub(crate) const DISTS: [&str; 14] = [
    "Normal",
    "LogNormal",
    "Laplace",
    "StudentT",
    "Uniform",
    "Exponential",
    "Gamma",
    "Beta",
    "Bernoulli",
    "ContinuousBernoulli",
    "Categorical",
    "Poisson",
    "Dirichlet",
    "Mixture",
];

/// Whether `name` is one of the distributions of section 7.
pub(super) fn is_distribution(name: &str) -> bool {
    DISTS.contains(&name)
}

pub(crate) const STRATEGIES: [&str; 6] = [
    "enumerate",
    "relax",
    "reinforce",
    "refine",
    "random_function",
    "reparameterized",
];

/// The domain a distribution parameter needs.
#[derive(Clone, Copy, PartialEq)]
enum Need {
    Real,
    Positive,
    Unit,
    Simplex,
}

impl Need {
    fn domain(self) -> Domain {
        match self {
            Need::Real => Domain::Real,
            Need::Positive => Domain::Positive,
            Need::Unit => Domain::Unit,
            Need::Simplex => Domain::Simplex,
        }
    }
}

struct Spec {
    kind: DistKind,
    params: &'static [(DistParam, &'static str, Need)],
    /// `Bernoulli`, `Categorical`: exactly one of `probs` / `logits`, by keyword.
    one_of: bool,
    support: Domain,
}

/// A distribution's signature as the language reference writes it:
/// `Normal(loc: Real, scale: Positive) -> Real`.
pub(crate) fn signature(name: &str) -> Option<String> {
    if name == "Mixture" {
        return Some(
            "Mixture(logits: Real[K], component: Dist(...)) -> the component's support".into(),
        );
    }
    let sp = spec(name)?;
    let params: Vec<String> = sp
        .params
        .iter()
        .map(|(_, n, need)| format!("{n}: {}", need.domain().name()))
        .collect();
    let sep = if sp.one_of { " | " } else { ", " };
    Some(format!(
        "{name}({}) -> {}",
        params.join(sep),
        sp.support.name()
    ))
}

fn spec(name: &str) -> Option<Spec> {
    use DistParam as P;
    use Need::*;
    let s = |kind, params, support| Spec {
        kind,
        params,
        one_of: false,
        support,
    };
    Some(match name {
        "Normal" => s(
            DistKind::Normal,
            &[(P::Loc, "loc", Real), (P::Scale, "scale", Positive)],
            Domain::Real,
        ),
        "LogNormal" => s(
            DistKind::LogNormal,
            &[(P::Loc, "loc", Real), (P::Scale, "scale", Positive)],
            Domain::Positive,
        ),
        "Laplace" => s(
            DistKind::Laplace,
            &[(P::Loc, "loc", Real), (P::Scale, "scale", Positive)],
            Domain::Real,
        ),
        "StudentT" => s(
            DistKind::StudentT,
            &[
                (P::Df, "df", Positive),
                (P::Loc, "loc", Real),
                (P::Scale, "scale", Positive),
            ],
            Domain::Real,
        ),
        "Uniform" => s(
            DistKind::Uniform,
            &[(P::Low, "low", Real), (P::High, "high", Real)],
            Domain::Real,
        ),
        "Exponential" => s(
            DistKind::Exponential,
            &[(P::Rate, "rate", Positive)],
            Domain::Positive,
        ),
        "Gamma" => s(
            DistKind::Gamma,
            &[
                (P::Concentration, "concentration", Positive),
                (P::Rate, "rate", Positive),
            ],
            Domain::Positive,
        ),
        "Beta" => s(
            DistKind::Beta,
            &[(P::A, "a", Positive), (P::B, "b", Positive)],
            Domain::Unit,
        ),
        "Bernoulli" => Spec {
            kind: DistKind::Bernoulli,
            params: &[(P::Probs, "probs", Unit), (P::Logits, "logits", Real)],
            one_of: true,
            support: Domain::Binary,
        },
        "ContinuousBernoulli" => s(
            DistKind::ContinuousBernoulli,
            &[(P::Logits, "logits", Real)],
            Domain::Unit,
        ),
        "Categorical" => Spec {
            kind: DistKind::Categorical,
            params: &[(P::Probs, "probs", Simplex), (P::Logits, "logits", Real)],
            one_of: true,
            // The class count comes from the arguments.
            support: Domain::Unknown,
        },
        "Poisson" => s(
            DistKind::Poisson,
            &[(P::Rate, "rate", Positive)],
            Domain::Count,
        ),
        "Dirichlet" => s(
            DistKind::Dirichlet,
            &[(P::Concentration, "concentration", Positive)],
            Domain::Simplex,
        ),
        _ => return None,
    })
}

/// Names other tools give our distributions (too far for an edit-distance suggestion).
const DIST_ALIASES: &[(&str, &str)] = &[
    ("Gaussian", "Normal"),
    ("Gauss", "Normal"),
    ("MultivariateNormal", "Normal"),
    ("MvNormal", "Normal"),
    ("Bern", "Bernoulli"),
    ("Binomial", "Bernoulli"),
    ("Cat", "Categorical"),
    ("OneHotCategorical", "Categorical"),
    ("Multinomial", "Categorical"),
    ("RelaxedOneHotCategorical", "Categorical"),
    ("RelaxedBernoulli", "Bernoulli"),
    ("Student", "StudentT"),
    ("Lognormal", "LogNormal"),
    ("Exp", "Exponential"),
];

impl Builder<'_> {
    /// A distribution for a variable (one step) of type `var`. Unknown distributions and
    /// broken arguments still give a `Dist` (with an Unknown support) so the site stays in
    /// the IR.
    pub(super) fn dist(&mut self, call: &ast::Call, var: &Type, cx: &mut Cx) -> Dist {
        let name = call.callee.name.as_str();
        let broken = |kind| Dist {
            kind,
            args: Vec::new(),
            component: None,
            support: Type::new(Domain::Unknown, var.shape.clone()),
            span: call.span,
        };
        if name == "Mixture" {
            return self.mixture(call, var, cx);
        }
        let Some(sp) = spec(name) else {
            self.errors.push(BuildError::Unknown {
                what: "distribution",
                name: name.into(),
                span: call.callee.span,
                suggestion: DIST_ALIASES
                    .iter()
                    .find(|(a, _)| *a == name)
                    .map(|(_, d)| d.to_string())
                    .or_else(|| suggest(name, DISTS)),
            });
            for a in &call.args {
                self.expr(&a.value, cx);
            }
            return broken(DistKind::Normal);
        };
        let names: Vec<&str> = sp.params.iter().map(|p| p.1).collect();
        let Some(bound) = self.bind_args(name, call, &names, !sp.one_of) else {
            return broken(sp.kind);
        };
        if sp.one_of {
            let given = bound.iter().filter(|b| b.is_some()).count();
            if given != 1 {
                self.errors.push(BuildError::ProbsOrLogits {
                    dist: name.into(),
                    both: given > 1,
                    span: call.span,
                });
                return broken(sp.kind);
            }
        } else {
            let mut missing = false;
            for (i, b) in bound.iter().enumerate() {
                if b.is_none() {
                    self.errors.push(BuildError::MissingKeyword {
                        callee: name.into(),
                        keyword: names[i].into(),
                        span: call.span,
                    });
                    missing = true;
                }
            }
            if missing {
                for e in bound.iter().flatten() {
                    self.expr(e, cx);
                }
                return broken(sp.kind);
            }
        }
        // Categorical: the class count K, from the variable or from the argument.
        let mut classes = match var.domain {
            Domain::Cat(k) => Some(k),
            _ => None,
        };
        let mut args = Vec::new();
        for (i, b) in bound.iter().enumerate() {
            let Some(e) = b else { continue };
            let (param, pname, need) = sp.params[i];
            let x = self.expr(e, cx);
            if matches!(x.kind, ir::ExprKind::Invalid) {
                args.push((param, x));
                continue;
            }
            if x.ty.domain != Domain::Unknown {
                // Shape.
                let expected: Vec<usize> = if sp.kind == DistKind::Categorical {
                    let k = classes.or_else(|| x.ty.shape.last().copied());
                    if classes.is_none() {
                        classes = k;
                    }
                    let mut s = var.shape.clone();
                    s.push(k.unwrap_or(0));
                    s
                } else {
                    var.shape.clone()
                };
                let scalar_ok = sp.kind != DistKind::Categorical;
                let shape_ok = (scalar_ok && x.ty.shape.is_empty())
                    || x.ty.shape == expected
                    || var.domain == Domain::Unknown && sp.kind != DistKind::Categorical;
                if !shape_ok {
                    let head = match &x.kind {
                        ir::ExprKind::Ref(ir::Ref::Local(l)) => cx.origin.get(l).copied(),
                        ir::ExprKind::NetCall {
                            net, head: Some(h), ..
                        } => Some((*net, *h)),
                        _ => None,
                    }
                    .and_then(|(n, h)| self.prog.nets.get(n)?.heads.get(h))
                    .map(|h| (h.span, h.name.clone()));
                    self.errors.push(BuildError::DistArgShape {
                        dist: name.into(),
                        param: pname.into(),
                        expected: self.shape_named(&expected),
                        found: self.shape_named(&x.ty.shape),
                        scalar_ok,
                        span: e.span,
                        head,
                    });
                } else if !literal_fits(&x, need.domain())
                    .unwrap_or_else(|| fits(x.ty.domain, need.domain()))
                {
                    let hint = match need {
                        Need::Positive => Some(
                            "wrap it in softplus(...) or declare the head Positive".to_string(),
                        ),
                        Need::Unit => {
                            Some("wrap it in sigmoid(...) or pass it as `logits`".to_string())
                        }
                        Need::Simplex => Some(
                            "declare the head `Simplex[K]`, or pass unnormalized scores as `logits`"
                                .to_string(),
                        ),
                        Need::Real => Some(
                            "a Cat fed where Real is needed: use it as a network input declared `Cat(K)`"
                                .to_string(),
                        ),
                    };
                    self.errors.push(BuildError::DistArgDomain {
                        dist: name.into(),
                        param: pname.into(),
                        expected: need.domain().name(),
                        found: x.ty.domain.name(),
                        span: e.span,
                        hint,
                    });
                }
            }
            args.push((param, x));
        }
        let support = match sp.kind {
            DistKind::Categorical => match classes {
                Some(k) => Domain::Cat(k),
                None => Domain::Unknown,
            },
            _ => sp.support,
        };
        Dist {
            kind: sp.kind,
            args,
            component: None,
            support: Type::new(support, var.shape.clone()),
            span: call.span,
        }
    }

    /// `Mixture(logits = w, component = Dist(...))`: `w : Real[K]`, the component's
    /// arguments scalars or `[K] + shape`.
    fn mixture(&mut self, call: &ast::Call, var: &Type, cx: &mut Cx) -> Dist {
        let broken = Dist {
            kind: DistKind::Mixture,
            args: Vec::new(),
            component: None,
            support: Type::new(Domain::Unknown, var.shape.clone()),
            span: call.span,
        };
        let Some(bound) = self.bind_args("Mixture", call, &["logits", "component"], true) else {
            return broken;
        };
        let (Some(w), Some(comp)) = (bound[0], bound[1]) else {
            for (i, k) in ["logits", "component"].iter().enumerate() {
                if bound[i].is_none() {
                    self.errors.push(BuildError::MissingKeyword {
                        callee: "Mixture".into(),
                        keyword: (*k).into(),
                        span: call.span,
                    });
                }
            }
            return broken;
        };
        let wx = self.expr(w, cx);
        let mut k = None;
        if !matches!(wx.kind, ir::ExprKind::Invalid) && wx.ty.domain != Domain::Unknown {
            if wx.ty.shape.len() != 1 {
                self.errors.push(BuildError::DistArgShape {
                    dist: "Mixture".into(),
                    param: "logits".into(),
                    expected: self.shape_named(&[wx.ty.shape.first().copied().unwrap_or(1)]),
                    found: self.shape_named(&wx.ty.shape),
                    scalar_ok: false,
                    span: w.span,
                    head: None,
                });
            } else {
                k = Some(wx.ty.shape[0]);
            }
            if let Domain::Cat(_) = wx.ty.domain {
                self.errors.push(BuildError::DistArgDomain {
                    dist: "Mixture".into(),
                    param: "logits".into(),
                    expected: "Real".into(),
                    found: wx.ty.domain.name(),
                    span: w.span,
                    hint: None,
                });
            }
        }
        let ast::ExprKind::Call(cc) = &comp.kind else {
            self.errors.push(BuildError::BadValue {
                callee: "Mixture".into(),
                keyword: "component".into(),
                expected: "a distribution such as `Normal(mu, sigma)`".into(),
                span: comp.span,
            });
            return broken;
        };
        let mut comp_shape = vec![k.unwrap_or(1)];
        comp_shape.extend(var.shape.iter().copied());
        let comp_var = if k.is_some() {
            Type::new(var.domain, comp_shape)
        } else {
            Type::unknown()
        };
        let c = self.dist(cc, &comp_var, cx);
        Dist {
            kind: DistKind::Mixture,
            args: vec![(DistParam::Logits, wx)],
            support: Type::new(c.support.domain, var.shape.clone()),
            component: Some(Box::new(c)),
            span: call.span,
        }
    }

    /// The strategy of a guide site: as written, or the default for its support.
    pub(super) fn strategy(&mut self, s: Option<&ast::Strategy>, d: &Dist) -> Strategy {
        let default = if matches!(d.support.domain, Domain::Binary | Domain::Cat(_)) {
            Strategy::Enumerate
        } else {
            Strategy::Reparameterized
        };
        let Some(s) = s else { return default };
        let name = s.name.name.as_str();
        let args: &[ast::Arg] = s.args.as_deref().unwrap_or(&[]);
        let names: &[&str] = match name {
            "enumerate" | "reinforce" | "reparameterized" => &[],
            "relax" => &["temperature"],
            "refine" => &["steps", "lr", "through", "momentum", "clip"],
            "random_function" => &["inducing", "kernel"],
            _ => {
                self.errors.push(BuildError::Unknown {
                    what: "inference strategy",
                    name: name.into(),
                    span: s.name.span,
                    suggestion: suggest(name, STRATEGIES),
                });
                return default;
            }
        };
        let Some(b) = self.bind(name, args, names, true) else {
            return default;
        };
        let mut bad = |this: &mut Self, kw: &str, expected: &str, e: &ast::Expr| {
            this.errors.push(BuildError::BadValue {
                callee: name.into(),
                keyword: kw.into(),
                expected: expected.into(),
                span: e.span,
            });
        };
        let pos_num = |this: &mut Self,
                       i: usize,
                       kw: &str,
                       dflt: f64,
                       bad: &mut dyn FnMut(&mut Self, &str, &str, &ast::Expr)|
         -> Option<f64> {
            match b[i] {
                None => Some(dflt),
                Some(e) => match literal(e).filter(|v| *v > 0.0) {
                    Some(v) => Some(v),
                    None => {
                        bad(this, kw, "a positive number", e);
                        None
                    }
                },
            }
        };
        let count = |this: &mut Self,
                     i: usize,
                     kw: &str,
                     dflt: usize,
                     bad: &mut dyn FnMut(&mut Self, &str, &str, &ast::Expr)|
         -> Option<usize> {
            match b[i] {
                None => Some(dflt),
                Some(e) => match literal(e).filter(|v| *v >= 1.0 && v.fract() == 0.0) {
                    Some(v) => Some(v as usize),
                    None => match super::super::consts::eval_positive(e, this.consts) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            bad(this, kw, "a positive integer", e);
                            None
                        }
                    },
                },
            }
        };
        let out = match name {
            "enumerate" => Some(Strategy::Enumerate),
            "reinforce" => Some(Strategy::Reinforce),
            "reparameterized" => Some(Strategy::Reparameterized),
            "relax" => pos_num(self, 0, "temperature", 0.5, &mut bad)
                .map(|temperature| Strategy::Relax { temperature }),
            "refine" => {
                let steps = count(self, 0, "steps", 20, &mut bad);
                let lr = pos_num(self, 1, "lr", 1.0, &mut bad);
                let through = match b[2] {
                    None => Some(true),
                    Some(e) => {
                        let v = boolean(e);
                        if v.is_none() {
                            bad(self, "through", "`true` or `false`", e);
                        }
                        v
                    }
                };
                let momentum = match b[3] {
                    None => Some(crate::ir::default_refine_momentum()),
                    Some(e) => match literal(e).filter(|v| (0.0..1.0).contains(v)) {
                        Some(v) => Some(v),
                        None => {
                            bad(self, "momentum", "a number in [0, 1)", e);
                            None
                        }
                    },
                };
                let clip = pos_num(self, 4, "clip", crate::ir::default_refine_clip(), &mut bad);
                match (steps, lr, through, momentum, clip) {
                    (Some(steps), Some(lr), Some(through), Some(momentum), Some(clip)) => {
                        Some(Strategy::Refine {
                            steps,
                            lr,
                            through,
                            momentum,
                            clip,
                        })
                    }
                    _ => None,
                }
            }
            "random_function" => {
                let inducing = count(self, 0, "inducing", 64, &mut bad);
                let kernel = match b[1] {
                    None => Some(Kernel::Rbf),
                    Some(e) => match &e.kind {
                        ast::ExprKind::Str(s) if s == "rbf" => Some(Kernel::Rbf),
                        ast::ExprKind::Str(s) if s == "matern32" => Some(Kernel::Matern32),
                        ast::ExprKind::Str(s) if s == "matern52" => Some(Kernel::Matern52),
                        ast::ExprKind::Str(s) => {
                            self.errors.push(BuildError::Unknown {
                                what: "kernel",
                                name: s.clone(),
                                span: e.span,
                                suggestion: suggest(s, ["rbf", "matern32", "matern52"]),
                            });
                            None
                        }
                        _ => {
                            bad(
                                self,
                                "kernel",
                                "`\"rbf\"`, `\"matern32\"` or `\"matern52\"`",
                                e,
                            );
                            None
                        }
                    },
                };
                match (inducing, kernel) {
                    (Some(inducing), Some(kernel)) => {
                        // The network is resolved once the guide's `let`s are known
                        // (`Builder::resolve_random_functions`).
                        Some(Strategy::RandomFunction {
                            inducing,
                            kernel,
                            net: None,
                            inputs: Vec::new(),
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        out.unwrap_or(default)
    }

    /// `|> iaf(ar, ctx..., steps = 2)` for a site of type `site`.
    pub(super) fn flow(&mut self, f: &ast::Call, site: &Type, cx: &mut Cx) -> Option<ir::Flow> {
        if f.callee.name != "iaf" {
            self.errors.push(BuildError::Unknown {
                what: "flow",
                name: f.callee.name.clone(),
                span: f.callee.span,
                suggestion: suggest(&f.callee.name, ["iaf"]),
            });
            return None;
        }
        let mut positional = f.args.iter().filter(|a| a.name.is_none());
        let mut steps = 1usize;
        let mut ok = true;
        for a in f.args.iter().filter(|a| a.name.is_some()) {
            let Some(kw) = &a.name else { continue };
            if kw.name == "steps" {
                // 0 steps is the diagonal guide itself (a baseline with the same spec).
                match super::super::consts::eval_int(&a.value, self.consts) {
                    Ok(v) if v >= 0 => steps = v as usize,
                    _ => {
                        self.errors.push(BuildError::BadValue {
                            callee: "iaf".into(),
                            keyword: "steps".into(),
                            expected: "a non-negative integer".into(),
                            span: a.value.span,
                        });
                        ok = false;
                    }
                }
            } else {
                self.errors.push(BuildError::UnknownKeyword {
                    callee: "iaf".into(),
                    keyword: kw.name.clone(),
                    span: kw.span,
                    suggestion: suggest(&kw.name, ["steps"]),
                    accepted: vec!["steps".into()],
                });
                ok = false;
            }
        }
        let Some(first) = positional.next() else {
            self.errors.push(BuildError::MissingKeyword {
                callee: "iaf".into(),
                keyword: "the `made` network".into(),
                span: f.span,
            });
            return None;
        };
        let ast::ExprKind::Name(id) = &first.value.kind else {
            self.errors.push(BuildError::BadValue {
                callee: "iaf".into(),
                keyword: "network".into(),
                expected: "the name of a `made` network".into(),
                span: first.value.span,
            });
            return None;
        };
        let n = match self.names.get(&id.name).map(|(d, _)| *d) {
            Some(Decl::Net(n)) => n,
            Some(d) => {
                self.errors.push(BuildError::FlowNotMade {
                    net: id.name.clone(),
                    arch: d.kind(),
                    span: id.span,
                });
                return None;
            }
            None => {
                self.unknown_name(id, cx);
                return None;
            }
        };
        let net = self.prog.nets.get(n)?.clone();
        if !matches!(net.arch, ir::Arch::Made { .. }) {
            self.errors.push(BuildError::FlowNotMade {
                net: net.name.clone(),
                arch: net.arch.name(),
                span: id.span,
            });
            return None;
        }
        let ctx: Vec<&ast::Arg> = positional.collect();
        if let Some(z) = net.inputs.first() {
            if site.domain != Domain::Unknown && z.ty.domain != Domain::Unknown {
                if z.ty.shape != site.shape {
                    self.errors.push(BuildError::NetArgShape {
                        net: net.name.clone(),
                        input: z.name.clone(),
                        expected: z.ty.shape.clone(),
                        found: site.shape.clone(),
                        span: id.span,
                    });
                } else if !fits(site.domain, z.ty.domain) {
                    self.errors.push(BuildError::NetArgDomain {
                        net: net.name.clone(),
                        input: z.name.clone(),
                        expected: z.ty.domain.name(),
                        found: site.domain.name(),
                        span: id.span,
                    });
                }
            }
        }
        if ctx.len() + 1 != net.inputs.len() {
            self.errors.push(BuildError::Arity {
                callee: format!("iaf({}, ...)", net.name),
                expected: format!(
                    "{} context argument(s) for `{}`",
                    net.inputs.len().saturating_sub(1),
                    net.name
                ),
                given: ctx.len(),
                span: f.span,
            });
            return None;
        }
        let context: Vec<ir::Expr> = ctx
            .iter()
            .zip(net.inputs.iter().skip(1))
            .map(|(a, input)| self.net_arg(&net, input, &a.value, cx))
            .collect();
        if !ok {
            return None;
        }
        Some(ir::Flow {
            kind: ir::FlowKind::Iaf { net: n, steps },
            context,
            span: f.span,
        })
    }
}

/// For a literal number (or a negated one), whether its value lies in `want`: `0.5` is a
/// valid `probs` although its type, from the literal alone, is `Positive`.
fn literal_fits(x: &ir::Expr, want: Domain) -> Option<bool> {
    let value = match &x.kind {
        ir::ExprKind::Number(v) => *v,
        ir::ExprKind::Unary {
            op: crate::ir::UnaryFn::Neg,
            arg,
        } => match arg.kind {
            ir::ExprKind::Number(v) => -v,
            _ => return None,
        },
        _ => return None,
    };
    Some(match want {
        Domain::Positive => value > 0.0,
        Domain::Unit => value > 0.0 && value < 1.0,
        Domain::Real => value.is_finite(),
        _ => return None,
    })
}
