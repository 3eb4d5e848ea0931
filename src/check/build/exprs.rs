//! Expressions: names, indexing (time steps and Cat selection), network calls, built-ins
//! and arithmetic, each typed with a domain and a shape.

use super::stmts::{Cx, Seq};
use super::{BuildError, Builder, Decl};
use crate::check::consts::{self, suggest};
use crate::ir::{self, Domain, Expr, ExprKind, Ref, Step, Type};
use crate::span::Span;
use crate::syntax::ast;

pub(crate) const BUILTINS: [&str; 14] = [
    "exp", "log", "sqrt", "abs", "softplus", "sigmoid", "tanh", "relu", "sum", "mean", "concat",
    "zeros", "ones", "true",
];

pub(super) fn invalid(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Invalid,
        ty: Type::unknown(),
        span,
    }
}

/// The smallest domain containing both (for `concat` and sequence steps); `None` when a
/// Cat meets anything else.
pub(super) fn join(a: Domain, b: Domain) -> Option<Domain> {
    use Domain::*;
    match (a, b) {
        (Unknown, _) | (_, Unknown) => Some(Unknown),
        (x, y) if x == y => Some(x),
        (Cat(_), _) | (_, Cat(_)) => None,
        (Binary, Unit) | (Unit, Binary) => Some(Unit),
        _ => Some(Real),
    }
}

/// Whether a value of domain `v` may be fed where `want` is declared (a Cat only into
/// the same Cat).
pub(super) fn fits(v: Domain, want: Domain) -> bool {
    match (v, want) {
        (Domain::Unknown, _) | (_, Domain::Unknown) => true,
        (Domain::Cat(a), Domain::Cat(b)) => a == b,
        (Domain::Cat(_), _) | (_, Domain::Cat(_)) => false,
        (v, w) => v.is_subdomain_of(w),
    }
}

impl Builder<'_> {
    /// A single value: a multi-head network call without `.head` is an error here.
    pub(super) fn expr(&mut self, e: &ast::Expr, cx: &mut Cx) -> Expr {
        let x = self.expr_any(e, cx);
        if let ExprKind::NetCall {
            net, head: None, ..
        } = &x.kind
        {
            let n = &self.prog.nets[*net];
            self.errors.push(BuildError::MultiHeadValue {
                net: n.name.clone(),
                first_head: n.heads.first().map(|h| h.name.clone()).unwrap_or_default(),
                span: e.span,
            });
            return invalid(e.span);
        }
        x
    }

    /// Any expression, including a multi-head network call (`head: None`, for a tuple `let`).
    pub(super) fn expr_any(&mut self, e: &ast::Expr, cx: &mut Cx) -> Expr {
        use ast::ExprKind as K;
        let span = e.span;
        match &e.kind {
            K::Number { value, .. } => number(*value, span),
            K::Str(s) => {
                self.errors.push(BuildError::NotAValue {
                    name: format!("\"{s}\""),
                    kind: "string",
                    span,
                });
                invalid(span)
            }
            K::List(_) | K::Range { .. } => {
                self.errors.push(BuildError::NotAValue {
                    name: "[...]".into(),
                    kind: "list",
                    span,
                });
                invalid(span)
            }
            K::Name(id) => self.name(id, cx),
            K::Neg(inner) => {
                let x = self.expr(inner, cx);
                if let ExprKind::Number(v) = x.kind {
                    return number(-v, span);
                }
                if !self.not_cat(&x, "unary `-`") {
                    return invalid(span);
                }
                let d = if x.ty.domain == Domain::Unknown {
                    Domain::Unknown
                } else {
                    Domain::Real
                };
                Expr {
                    ty: Type::new(d, x.ty.shape.clone()),
                    kind: ExprKind::Unary {
                        op: ir::UnaryFn::Neg,
                        arg: Box::new(x),
                    },
                    span,
                }
            }
            K::Binary { op, lhs, rhs } => {
                let l = self.expr(lhs, cx);
                let r = self.expr(rhs, cx);
                let ok_l = self.not_cat(&l, op.symbol());
                let ok_r = self.not_cat(&r, op.symbol());
                if !ok_l || !ok_r {
                    return invalid(span);
                }
                let shape = if l.ty.shape.is_empty() {
                    r.ty.shape.clone()
                } else if r.ty.shape.is_empty() || l.ty.shape == r.ty.shape {
                    l.ty.shape.clone()
                } else {
                    self.errors.push(BuildError::Broadcast {
                        op: op.symbol(),
                        lhs: l.ty.shape.clone(),
                        rhs: r.ty.shape.clone(),
                        span,
                    });
                    return invalid(span);
                };
                let (a, b) = (l.ty.domain, r.ty.domain);
                let domain = if a == Domain::Unknown || b == Domain::Unknown {
                    Domain::Unknown
                } else if a == Domain::Positive && b == Domain::Positive && *op != ast::BinOp::Sub {
                    Domain::Positive
                } else {
                    Domain::Real
                };
                let op = match op {
                    ast::BinOp::Add => ir::BinaryOp::Add,
                    ast::BinOp::Sub => ir::BinaryOp::Sub,
                    ast::BinOp::Mul => ir::BinaryOp::Mul,
                    ast::BinOp::Div => ir::BinaryOp::Div,
                };
                Expr {
                    kind: ExprKind::Binary {
                        op,
                        lhs: Box::new(l),
                        rhs: Box::new(r),
                    },
                    ty: Type::new(domain, shape),
                    span,
                }
            }
            K::Call(call) => self.call(call, cx),
            K::Field { base, field } => {
                let b = self.expr_any(base, cx);
                match b.kind {
                    ExprKind::NetCall { net, args, .. } => {
                        let n = &self.prog.nets[net];
                        match n.heads.iter().position(|h| h.name == field.name) {
                            Some(i) => Expr {
                                ty: n.heads[i].ty.clone(),
                                kind: ExprKind::NetCall {
                                    net,
                                    args,
                                    head: Some(i),
                                },
                                span,
                            },
                            None => {
                                let names: Vec<&str> =
                                    n.heads.iter().map(|h| h.name.as_str()).collect();
                                self.errors.push(BuildError::UnknownHead {
                                    net: n.name.clone(),
                                    head: field.name.clone(),
                                    span: field.span,
                                    suggestion: suggest(&field.name, names),
                                });
                                invalid(span)
                            }
                        }
                    }
                    ExprKind::Invalid => invalid(span),
                    _ => {
                        self.errors.push(BuildError::BadIndex {
                            what: format!(
                                "`.{}` picks a head of a network call, but this is not one",
                                field.name
                            ),
                            span: field.span,
                        });
                        invalid(span)
                    }
                }
            }
            K::Index { base, indices } => self.index(base, indices, span, cx),
        }
    }

    /// Report a Cat value where a Real one is needed; `false` when reported.
    fn not_cat(&mut self, x: &Expr, context: &str) -> bool {
        if let Domain::Cat(_) = x.ty.domain {
            self.errors.push(BuildError::DomainRequired {
                context: format!("`{context}`"),
                expected: "a Real value".into(),
                found: x.ty.domain.name(),
                span: x.span,
                hint: Some(
                    "a Cat fed where Real is needed: pass it to a network input declared `Cat(K)`, or index with it (`mu[c]`)"
                        .into(),
                ),
            });
            return false;
        }
        true
    }

    /// A name used as a value.
    fn name(&mut self, id: &ast::Ident, cx: &mut Cx) -> Expr {
        let span = id.span;
        if let Some((l, def)) = cx.loop_var(&id.name) {
            let d = if def.from >= 1 {
                Domain::Positive
            } else {
                Domain::Real
            };
            return Expr {
                kind: ExprKind::Ref(Ref::LoopVar(l)),
                ty: Type::scalar(d),
                span,
            };
        }
        if let Some(local) = cx.scope.get(&id.name).copied() {
            let st = &cx.local_st[local];
            let ty = cx.locals[local].ty.clone();
            if st.seq {
                self.errors.push(BuildError::BadIndex {
                    what: format!(
                        "`{}` is a sequence; read one step such as `{0}[t]`",
                        id.name
                    ),
                    span,
                });
                return invalid(span);
            }
            if !st.whole {
                self.order_error(
                    cx,
                    BuildError::UseBeforeDef {
                        name: id.name.clone(),
                        what: "local",
                        span,
                        hint: format!("move `let {}` above this use", id.name),
                    },
                );
            }
            return Expr {
                kind: ExprKind::Ref(Ref::Local(local)),
                ty,
                span,
            };
        }
        match self.names.get(&id.name).map(|(d, _)| *d) {
            Some(Decl::Const) => match self.consts.values.get(&id.name) {
                Some(v) => number(*v as f64, span),
                None => invalid(span),
            },
            Some(Decl::Data(d)) => {
                let def = &self.prog.data[d];
                let ty = def.ty.clone();
                if def.role == ir::DataRole::Partial {
                    let name = def.name.clone();
                    let steps = ty.shape.first().copied();
                    if !cx.data_st[d].whole_defined(steps) {
                        self.order_error(cx, BuildError::UseBeforeDef {
                            name: name.clone(),
                            what: "partial data",
                            span,
                            hint: format!(
                                "`{name}` is only known where it is observed: sample or observe it with `{name} ~ ...` first"
                            ),
                        });
                    }
                }
                Expr {
                    kind: ExprKind::Ref(Ref::Data(d)),
                    ty,
                    span,
                }
            }
            Some(Decl::Latent(l)) => {
                let def = &self.prog.latents[l];
                let ty = def.ty.clone();
                let steps = ty.shape.first().copied();
                if !cx.latent_st[l].whole_defined(steps) {
                    self.order_error(
                        cx,
                        BuildError::UseBeforeDef {
                            name: def.name.clone(),
                            what: "latent",
                            span,
                            hint: format!("sample it with `{} ~ ...` above this use", def.name),
                        },
                    );
                }
                Expr {
                    kind: ExprKind::Ref(Ref::Latent(l)),
                    ty,
                    span,
                }
            }
            Some(Decl::Param(p)) => Expr {
                kind: ExprKind::Ref(Ref::Param(p)),
                ty: self.prog.params[p].ty.clone(),
                span,
            },
            Some(Decl::Set(_)) => {
                self.errors.push(BuildError::SetAsValue {
                    name: id.name.clone(),
                    span,
                });
                invalid(span)
            }
            Some(Decl::Net(_)) => {
                self.errors.push(BuildError::NotAValue {
                    name: id.name.clone(),
                    kind: "network",
                    span,
                });
                invalid(span)
            }
            None => {
                self.unknown_name(id, cx);
                invalid(span)
            }
        }
    }

    /// Report an E010 error, once per name and block.
    pub(super) fn order_error(&mut self, cx: &mut Cx, e: BuildError) {
        let name = match &e {
            BuildError::UseBeforeDef { name, .. } | BuildError::StepNotDefined { name, .. } => {
                name.clone()
            }
            _ => String::new(),
        };
        if cx.reported.insert(name) {
            self.errors.push(e);
        }
    }

    pub(super) fn unknown_name(&mut self, id: &ast::Ident, cx: &mut Cx) {
        if cx.ended.contains(&id.name) {
            self.order_error(
                cx,
                BuildError::UseBeforeDef {
                    name: id.name.clone(),
                    what: "local",
                    span: id.span,
                    hint: format!(
                        "`{}` is defined inside a loop and is not visible after it",
                        id.name
                    ),
                },
            );
            return;
        }
        if cx.lets.contains(&id.name) {
            self.order_error(
                cx,
                BuildError::UseBeforeDef {
                    name: id.name.clone(),
                    what: "local",
                    span: id.span,
                    hint: format!("move `let {}` above this use", id.name),
                },
            );
            return;
        }
        let mut cands = self.declared_names();
        cands.extend(cx.scope.keys().cloned());
        cands.extend(cx.loop_vars());
        self.errors.push(BuildError::Unknown {
            what: "name",
            name: id.name.clone(),
            span: id.span,
            suggestion: suggest(&id.name, cands.iter().map(String::as_str)),
        });
    }

    /// `name(args)`: a network or a built-in.
    fn call(&mut self, call: &ast::Call, cx: &mut Cx) -> Expr {
        let span = call.span;
        let name = call.callee.name.as_str();
        if let Some((Decl::Net(n), _)) = self.names.get(name).copied() {
            return self.net_call(n, call, cx);
        }
        let positional: Vec<&ast::Expr> = call
            .args
            .iter()
            .filter(|a| a.name.is_none())
            .map(|a| &a.value)
            .collect();
        if let Some(a) = call.args.iter().find(|a| a.name.is_some()) {
            if BUILTINS.contains(&name) {
                self.errors.push(BuildError::KeywordNotAllowed {
                    callee: name.into(),
                    span: a.span,
                });
                return invalid(span);
            }
        }
        let unary = match name {
            "exp" => Some(ir::UnaryFn::Exp),
            "log" => Some(ir::UnaryFn::Log),
            "sqrt" => Some(ir::UnaryFn::Sqrt),
            "abs" => Some(ir::UnaryFn::Abs),
            "softplus" => Some(ir::UnaryFn::Softplus),
            "sigmoid" => Some(ir::UnaryFn::Sigmoid),
            "tanh" => Some(ir::UnaryFn::Tanh),
            "relu" => Some(ir::UnaryFn::Relu),
            _ => None,
        };
        if unary.is_some() || name == "sum" || name == "mean" {
            if positional.len() != 1 {
                self.errors.push(BuildError::Arity {
                    callee: name.into(),
                    expected: "1 argument".into(),
                    given: positional.len(),
                    span,
                });
                for p in positional {
                    self.expr(p, cx);
                }
                return invalid(span);
            }
            let x = self.expr(positional[0], cx);
            if !self.not_cat(&x, name) {
                return invalid(span);
            }
            let d = x.ty.domain;
            if let Some(op) = unary {
                let needs_positive = matches!(op, ir::UnaryFn::Log | ir::UnaryFn::Sqrt);
                if needs_positive && !d.is_subdomain_of(Domain::Positive) {
                    self.errors.push(BuildError::DomainRequired {
                        context: format!("`{name}`"),
                        expected: "a Positive argument".into(),
                        found: d.name(),
                        span: x.span,
                        hint: Some(format!(
                            "apply `{name}` to a Positive value, e.g. `{name}(softplus(...))` or `{name}(exp(...))`"
                        )),
                    });
                }
                let out = if d == Domain::Unknown {
                    Domain::Unknown
                } else {
                    match op {
                        ir::UnaryFn::Exp | ir::UnaryFn::Softplus | ir::UnaryFn::Sqrt => {
                            Domain::Positive
                        }
                        ir::UnaryFn::Sigmoid => Domain::Unit,
                        _ => Domain::Real,
                    }
                };
                return Expr {
                    ty: Type::new(out, x.ty.shape.clone()),
                    kind: ExprKind::Unary {
                        op,
                        arg: Box::new(x),
                    },
                    span,
                };
            }
            let out = match d {
                Domain::Unknown | Domain::Positive => d,
                _ => Domain::Real,
            };
            let op = if name == "sum" {
                ir::Reduce::Sum
            } else {
                ir::Reduce::Mean
            };
            return Expr {
                ty: Type::scalar(out),
                kind: ExprKind::Reduce {
                    op,
                    arg: Box::new(x),
                },
                span,
            };
        }
        match name {
            "concat" => {
                if positional.is_empty() {
                    self.errors.push(BuildError::Arity {
                        callee: "concat".into(),
                        expected: "at least 1 argument".into(),
                        given: 0,
                        span,
                    });
                    return invalid(span);
                }
                let xs: Vec<Expr> = positional.iter().map(|p| self.expr(p, cx)).collect();
                if xs.iter().any(|x| matches!(x.kind, ExprKind::Invalid)) {
                    return invalid(span);
                }
                let mut domain = xs[0].ty.domain;
                let rest: Vec<usize> = xs[0].ty.shape.iter().skip(1).copied().collect();
                let mut first_axis = 0usize;
                let mut ok = true;
                for x in &xs {
                    if x.ty.shape.is_empty() {
                        self.errors.push(BuildError::ConcatShape {
                            expected: rest.clone(),
                            found: Vec::new(),
                            span: x.span,
                        });
                        ok = false;
                        continue;
                    }
                    if x.ty.shape[1..] != rest[..] {
                        self.errors.push(BuildError::ConcatShape {
                            expected: rest.clone(),
                            found: x.ty.shape[1..].to_vec(),
                            span: x.span,
                        });
                        ok = false;
                    }
                    first_axis = first_axis.saturating_add(x.ty.shape[0]);
                    match join(domain, x.ty.domain) {
                        Some(d) => domain = d,
                        None => {
                            self.not_cat(x, "concat");
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return invalid(span);
                }
                let mut shape = vec![first_axis];
                shape.extend(rest);
                Expr {
                    kind: ExprKind::Concat(xs),
                    ty: Type::new(domain, shape),
                    span,
                }
            }
            "zeros" | "ones" => {
                let mut dims = Vec::new();
                let mut ok = true;
                let items: Vec<&ast::Expr> = match positional.as_slice() {
                    [one] => match &one.kind {
                        ast::ExprKind::List(items) => items.iter().collect(),
                        _ => positional.clone(),
                    },
                    _ => positional.clone(),
                };
                if items.is_empty() {
                    self.errors.push(BuildError::Arity {
                        callee: name.into(),
                        expected: "at least 1 dimension".into(),
                        given: 0,
                        span,
                    });
                    return invalid(span);
                }
                for d in items {
                    match self.positive(d) {
                        Some(v) => dims.push(v),
                        None => ok = false,
                    }
                }
                if !ok {
                    return invalid(span);
                }
                let (v, d) = if name == "zeros" {
                    (0.0, Domain::Real)
                } else {
                    (1.0, Domain::Positive)
                };
                Expr {
                    kind: ExprKind::Fill(v),
                    ty: Type::new(d, dims),
                    span,
                }
            }
            _ => {
                for p in positional {
                    self.expr(p, cx);
                }
                let mut cands: Vec<String> = BUILTINS.iter().map(|s| s.to_string()).collect();
                cands.extend(self.prog.nets.iter().map(|n| n.name.clone()));
                let what = match self.names.get(name) {
                    Some((d, _)) => {
                        self.errors.push(BuildError::NotAValue {
                            name: name.into(),
                            kind: d.kind(),
                            span: call.callee.span,
                        });
                        return invalid(span);
                    }
                    None if super::dists::is_distribution(name) => {
                        self.errors.push(BuildError::DistributionAsValue {
                            name: name.into(),
                            span: call.callee.span,
                        });
                        return invalid(span);
                    }
                    None => "network or function",
                };
                self.errors.push(BuildError::Unknown {
                    what,
                    name: name.into(),
                    span: call.callee.span,
                    suggestion: suggest(name, cands.iter().map(String::as_str)),
                });
                invalid(span)
            }
        }
    }

    /// `net(args)`: arity, and each argument against its input's shape and domain.
    fn net_call(&mut self, n: ir::NetId, call: &ast::Call, cx: &mut Cx) -> Expr {
        let span = call.span;
        let Some(net) = self.prog.nets.get(n) else {
            self.errors.push(BuildError::Internal {
                what: "a network is called before it was built".into(),
                span,
            });
            return invalid(span);
        };
        let net = net.clone();
        if let Some(a) = call.args.iter().find(|a| a.name.is_some()) {
            self.errors.push(BuildError::KeywordNotAllowed {
                callee: net.name.clone(),
                span: a.span,
            });
            return invalid(span);
        }
        if call.args.len() != net.inputs.len() {
            self.errors.push(BuildError::Arity {
                callee: net.name.clone(),
                expected: super::types::count_text(net.inputs.len()),
                given: call.args.len(),
                span,
            });
            for a in &call.args {
                self.expr(&a.value, cx);
            }
            return invalid(span);
        }
        let args: Vec<Expr> = call
            .args
            .iter()
            .zip(&net.inputs)
            .map(|(a, input)| self.net_arg(&net, input, &a.value, cx))
            .collect();
        if net.heads.len() == 1 {
            Expr {
                ty: net.heads[0].ty.clone(),
                kind: ExprKind::NetCall {
                    net: n,
                    args,
                    head: Some(0),
                },
                span,
            }
        } else {
            Expr {
                ty: Type::unknown(),
                kind: ExprKind::NetCall {
                    net: n,
                    args,
                    head: None,
                },
                span,
            }
        }
    }

    /// One argument of a network call (also used for flow contexts).
    pub(super) fn net_arg(
        &mut self,
        net: &ir::NetDef,
        input: &ir::NetInput,
        e: &ast::Expr,
        cx: &mut Cx,
    ) -> Expr {
        if input.set {
            if let ast::ExprKind::Name(id) = &e.kind {
                if let Some((Decl::Set(s), _)) = self.names.get(&id.name).copied() {
                    let set = &self.prog.sets[s];
                    let ty = set.ty.clone();
                    let fits_shape = ty.shape == input.ty.shape
                        || ty.domain == Domain::Unknown
                        || input.ty.domain == Domain::Unknown;
                    if !fits_shape {
                        self.errors.push(BuildError::NetArgShape {
                            net: net.name.clone(),
                            input: input.name.clone(),
                            expected: input.ty.shape.clone(),
                            found: ty.shape.clone(),
                            span: e.span,
                        });
                    } else if !fits(ty.domain, input.ty.domain) {
                        self.errors.push(BuildError::NetArgDomain {
                            net: net.name.clone(),
                            input: input.name.clone(),
                            expected: input.ty.domain.name(),
                            found: ty.domain.name(),
                            span: e.span,
                        });
                    }
                    return Expr {
                        kind: ExprKind::Ref(Ref::Set(s)),
                        ty,
                        span: e.span,
                    };
                }
            }
            self.errors.push(BuildError::SetArg {
                net: net.name.clone(),
                input: input.name.clone(),
                span: e.span,
            });
            return invalid(e.span);
        }
        let x = self.expr(e, cx);
        if x.ty.domain == Domain::Unknown || input.ty.domain == Domain::Unknown {
            return x;
        }
        let cat =
            matches!(x.ty.domain, Domain::Cat(_)) || matches!(input.ty.domain, Domain::Cat(_));
        if (!cat || fits(x.ty.domain, input.ty.domain)) && x.ty.shape != input.ty.shape {
            self.errors.push(BuildError::NetArgShape {
                net: net.name.clone(),
                input: input.name.clone(),
                expected: input.ty.shape.clone(),
                found: x.ty.shape.clone(),
                span: e.span,
            });
        } else if !fits(x.ty.domain, input.ty.domain) {
            self.errors.push(BuildError::NetArgDomain {
                net: net.name.clone(),
                input: input.name.clone(),
                expected: input.ty.domain.name(),
                found: x.ty.domain.name(),
                span: e.span,
            });
        }
        x
    }

    /// `a[i]`: a time step of a sequence or `[T, ...]` variable, or a Cat selection.
    fn index(&mut self, base: &ast::Expr, indices: &[ast::Expr], span: Span, cx: &mut Cx) -> Expr {
        let [index] = indices else {
            self.errors.push(BuildError::BadIndex {
                what: "only one index is allowed".into(),
                span,
            });
            return invalid(span);
        };
        if let ast::ExprKind::Name(id) = &base.kind {
            if let Some(step) = self.time_index(index, cx) {
                return self.read_step(id, step, index, span, cx);
            }
        }
        let b = self.expr(base, cx);
        let i = self.expr(index, cx);
        if matches!(b.kind, ExprKind::Invalid) || matches!(i.kind, ExprKind::Invalid) {
            return invalid(span);
        }
        match i.ty.domain {
            Domain::Cat(k) if i.ty.shape.is_empty() => {
                if b.ty.shape.first() != Some(&k) {
                    self.errors.push(BuildError::SelectAxis {
                        classes: k,
                        shape: b.ty.shape.clone(),
                        span: base.span,
                    });
                    return invalid(span);
                }
                let ty = Type::new(b.ty.domain, b.ty.shape[1..].to_vec());
                Expr {
                    kind: ExprKind::Select {
                        base: Box::new(b),
                        index: Box::new(i),
                    },
                    ty,
                    span,
                }
            }
            _ => {
                self.errors.push(BuildError::BadIndex {
                    what: "this index is neither a time step nor a `Cat` value".into(),
                    span: index.span,
                });
                invalid(span)
            }
        }
    }

    /// `t`, `t-1`, `t+1` (a loop variable and a const offset) or a const int: a time index.
    pub(super) fn time_index(&mut self, e: &ast::Expr, cx: &Cx) -> Option<Step> {
        match &e.kind {
            ast::ExprKind::Name(id) => {
                if let Some((l, _)) = cx.loop_var(&id.name) {
                    return Some(Step {
                        loop_id: Some(l),
                        offset: 0,
                    });
                }
            }
            ast::ExprKind::Binary { op, lhs, rhs }
                if matches!(op, ast::BinOp::Add | ast::BinOp::Sub) =>
            {
                if let ast::ExprKind::Name(id) = &lhs.kind {
                    if let Some((l, _)) = cx.loop_var(&id.name) {
                        let k = consts::eval_int(rhs, self.consts).ok()?;
                        let offset = if *op == ast::BinOp::Sub {
                            k.saturating_neg()
                        } else {
                            k
                        };
                        return Some(Step {
                            loop_id: Some(l),
                            offset,
                        });
                    }
                }
            }
            _ => {}
        }
        // A const integer expression (no errors reported when it is not one: it may be
        // a Cat index).
        match consts::eval_int(e, self.consts) {
            Ok(v) => Some(Step {
                loop_id: None,
                offset: v,
            }),
            Err(_) => None,
        }
    }

    /// Read `name[step]` with the definedness rules of E010.
    fn read_step(
        &mut self,
        id: &ast::Ident,
        step: Step,
        index: &ast::Expr,
        span: Span,
        cx: &mut Cx,
    ) -> Expr {
        let name = id.name.clone();
        let (base, ty, steps, state): (Expr, Type, Option<usize>, Option<Seq>) =
            if let Some(local) = cx.scope.get(&name).copied() {
                let st = cx.local_st[local].clone();
                if !st.seq {
                    self.errors.push(BuildError::BadIndex {
                        what: format!("`{name}` is not a sequence, so it has no steps"),
                        span,
                    });
                    return invalid(span);
                }
                let l = &cx.locals[local];
                (
                    Expr {
                        kind: ExprKind::Ref(Ref::Local(local)),
                        ty: l.ty.clone(),
                        span: id.span,
                    },
                    l.ty.clone(),
                    None,
                    Some(st),
                )
            } else {
                let decl = self.names.get(&name).map(|(d, _)| *d);
                let (r, vty, st) = match decl {
                    Some(Decl::Data(d)) => {
                        let def = &self.prog.data[d];
                        let st = (def.role == ir::DataRole::Partial).then(|| cx.data_st[d].clone());
                        (Ref::Data(d), def.ty.clone(), st)
                    }
                    Some(Decl::Latent(l)) => (
                        Ref::Latent(l),
                        self.prog.latents[l].ty.clone(),
                        Some(cx.latent_st[l].clone()),
                    ),
                    Some(_) | None if cx.loop_var(&name).is_some() => {
                        self.errors.push(BuildError::BadIndex {
                            what: format!("the loop variable `{name}` has no steps"),
                            span,
                        });
                        return invalid(span);
                    }
                    Some(d) => {
                        // A param or other declaration indexed by a number: not a sequence.
                        self.errors.push(BuildError::BadIndex {
                            what: format!(
                                "the {} `{name}` is not a sequence, so it has no steps",
                                d.kind()
                            ),
                            span,
                        });
                        return invalid(span);
                    }
                    None if cx.lets.contains(&name) && !cx.ended.contains(&name) => {
                        let hint = match step {
                            Step {
                                loop_id: Some(_),
                                offset,
                            } if offset < 0 => {
                                format!("define `let {name}[0] = ...` before the loop")
                            }
                            _ => format!("define `{name}` before reading it"),
                        };
                        let st = step_text(step, cx);
                        self.order_error(
                            cx,
                            BuildError::StepNotDefined {
                                name: name.clone(),
                                step: st,
                                span,
                                hint,
                            },
                        );
                        return invalid(span);
                    }
                    None => {
                        self.unknown_name(id, cx);
                        return invalid(span);
                    }
                };
                if vty.domain == Domain::Unknown {
                    return invalid(span);
                }
                let Some(&t) = vty.shape.first() else {
                    self.errors.push(BuildError::BadIndex {
                        what: format!(
                            "`{name}` is `{}`, which has no time axis to index",
                            vty.display()
                        ),
                        span,
                    });
                    return invalid(span);
                };
                let sty = Type::new(vty.domain, vty.shape[1..].to_vec());
                (
                    Expr {
                        kind: ExprKind::Ref(r),
                        ty: vty,
                        span: id.span,
                    },
                    sty,
                    Some(t),
                    st,
                )
            };
        // Range of constant steps: locals 0.., data and latents 1..=T.
        if step.loop_id.is_none() {
            let first: i64 = if steps.is_some() { 1 } else { 0 };
            let last = steps.unwrap_or(0);
            if step.offset < first || (steps.is_some() && step.offset > last as i64) {
                self.errors.push(BuildError::StepOutOfRange {
                    name: name.clone(),
                    step: step.offset,
                    first,
                    last: if steps.is_some() {
                        last
                    } else {
                        state.as_ref().and_then(|s| s.upto).unwrap_or(0).max(0) as usize
                    },
                    span: index.span,
                });
                return invalid(span);
            }
        }
        // Observed data has every step; a loop step must stay inside 1..=T.
        if let (Some(t), None, Some(l)) = (steps, &state, step.loop_id) {
            if let (Some(def), false) = (cx.loops.get(l), cx.bad_loops.contains(&l)) {
                let lo = (def.from as i64).saturating_add(step.offset);
                let hi = (def.to as i64).saturating_add(step.offset);
                if lo < 1 || hi > t as i64 {
                    self.errors.push(BuildError::StepOutOfRange {
                        name: name.clone(),
                        step: if lo < 1 { lo } else { hi },
                        first: 1,
                        last: t,
                        span: index.span,
                    });
                    return invalid(span);
                }
            }
        }
        if let Some(st) = &state {
            if let Err(hint) = cx.step_defined(st, &name, step) {
                self.order_error(
                    cx,
                    BuildError::StepNotDefined {
                        name: name.clone(),
                        step: step_text(step, cx),
                        span,
                        hint,
                    },
                );
            }
        }
        Expr {
            kind: ExprKind::Step {
                base: Box::new(base),
                step,
            },
            ty,
            span,
        }
    }
}

pub(super) fn step_text(step: Step, cx: &Cx) -> String {
    match step.loop_id {
        None => step.offset.to_string(),
        Some(l) => {
            let v = cx.loops.get(l).map(|d| d.var.clone()).unwrap_or_default();
            match step.offset {
                0 => v,
                k if k < 0 => format!("{v}-{}", k.unsigned_abs()),
                k => format!("{v}+{k}"),
            }
        }
    }
}

fn number(v: f64, span: Span) -> Expr {
    Expr {
        kind: ExprKind::Number(v),
        ty: Type::scalar(if v > 0.0 {
            Domain::Positive
        } else {
            Domain::Real
        }),
        span,
    }
}
