//! The one walker over IR statements and expressions. Every phase that traverses a
//! `model` or `guide` body (the checker's rules, the plan's costs, the Graphviz picture,
//! lowering's refusals and parameter groups, the exact posteriors) goes through it, so a
//! new statement or expression kind is added here once.
//!
//! Two shapes, as in `syn::visit`:
//! - [`Visitor`]: callbacks for statements, sites, distributions, flows and expressions,
//!   each defaulting to [`walk_stmt`] / [`walk_site`] / ... which visit the children. A
//!   visitor overrides what it needs and calls the `walk_*` function to go on inside.
//!   [`Scope`] says which loops enclose the current node.
//! - [`Dataflow`]: a bottom-up fold for "what does this expression depend on" questions
//!   (the Graphviz edges, the plan's sampled/enumerated taint): the fact of an expression
//!   is the join of its children's, with hooks at references and network calls.
//!
//! Folds that interpret an expression (the lowering interpreter, the linear-Gaussian
//! classification of `guide exact`) match on [`ExprKind`] themselves: what they compute
//! differs per kind by design, and the compiler's exhaustiveness check keeps them whole.

use super::{Body, Dist, Expr, ExprKind, Flow, LetTarget, LoopDef, LoopId, NetId, Ref, Site, Stmt};
use crate::span::Span;

/// Where a node sits: its body and the loops around it, outermost first.
#[derive(Clone, Debug)]
pub struct Scope<'ir> {
    pub body: &'ir Body,
    pub loops: Vec<LoopId>,
}

impl<'ir> Scope<'ir> {
    pub fn of(body: &'ir Body) -> Scope<'ir> {
        Scope {
            body,
            loops: Vec::new(),
        }
    }

    /// The definitions of the enclosing loops, outermost first.
    pub fn loop_defs(&self) -> Vec<&'ir LoopDef> {
        self.loops
            .iter()
            .filter_map(|l| self.body.loops.get(*l))
            .collect()
    }

    /// The number of times a statement here runs per pass: the product of the enclosing
    /// loops' lengths.
    pub fn iterations(&self) -> u64 {
        self.loop_defs()
            .iter()
            .fold(1u64, |a, l| a.saturating_mul(crate::arch::loop_len(l)))
    }

    fn inside(&self, loop_id: LoopId) -> Scope<'ir> {
        let mut loops = self.loops.clone();
        loops.push(loop_id);
        Scope {
            body: self.body,
            loops,
        }
    }
}

/// Callbacks over a body. Each default visits the node's children in source order.
pub trait Visitor<'ir> {
    fn stmt(&mut self, stmt: &'ir Stmt, scope: &Scope<'ir>) {
        walk_stmt(self, stmt, scope)
    }
    /// `let targets = value`.
    fn let_stmt(
        &mut self,
        targets: &'ir [LetTarget],
        value: &'ir Expr,
        span: Span,
        scope: &Scope<'ir>,
    ) {
        let _ = (targets, span);
        self.expr(value, scope)
    }
    /// `for ... { body }`; `scope` is the loop's own (it includes `loop_id`).
    fn loop_stmt(&mut self, loop_id: LoopId, body: &'ir [Stmt], scope: &Scope<'ir>) {
        let _ = loop_id;
        walk_stmts(self, body, scope)
    }
    fn site(&mut self, site: &'ir Site, scope: &Scope<'ir>) {
        walk_site(self, site, scope)
    }
    fn dist(&mut self, dist: &'ir Dist, scope: &Scope<'ir>) {
        walk_dist(self, dist, scope)
    }
    fn flow(&mut self, flow: &'ir Flow, scope: &Scope<'ir>) {
        walk_flow(self, flow, scope)
    }
    /// An expression and (by default) its subexpressions, preorder.
    fn expr(&mut self, expr: &'ir Expr, scope: &Scope<'ir>) {
        walk_expr(self, expr, scope)
    }
}

/// Visit every statement of `body`.
pub fn walk_body<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, body: &'ir Body) {
    walk_stmts(v, &body.stmts, &Scope::of(body))
}

pub fn walk_stmts<'ir, V: Visitor<'ir> + ?Sized>(
    v: &mut V,
    stmts: &'ir [Stmt],
    scope: &Scope<'ir>,
) {
    for s in stmts {
        v.stmt(s, scope);
    }
}

pub fn walk_stmt<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, stmt: &'ir Stmt, scope: &Scope<'ir>) {
    match stmt {
        Stmt::Let {
            targets,
            value,
            span,
        } => v.let_stmt(targets, value, *span, scope),
        Stmt::Sample(site) => v.site(site, scope),
        Stmt::Loop { loop_id, body, .. } => v.loop_stmt(*loop_id, body, &scope.inside(*loop_id)),
    }
}

/// A site's distribution, then its flows.
pub fn walk_site<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, site: &'ir Site, scope: &Scope<'ir>) {
    v.dist(&site.dist, scope);
    for f in &site.flows {
        v.flow(f, scope);
    }
}

/// The arguments, then the mixture component.
pub fn walk_dist<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, dist: &'ir Dist, scope: &Scope<'ir>) {
    for (_, e) in &dist.args {
        v.expr(e, scope);
    }
    if let Some(c) = &dist.component {
        v.dist(c, scope);
    }
}

pub fn walk_flow<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, flow: &'ir Flow, scope: &Scope<'ir>) {
    for e in &flow.context {
        v.expr(e, scope);
    }
}

/// The direct subexpressions of `e`, in source order.
pub fn children(e: &Expr) -> Vec<&Expr> {
    match &e.kind {
        ExprKind::Number(_) | ExprKind::Ref(_) | ExprKind::Fill(_) | ExprKind::Invalid => {
            Vec::new()
        }
        ExprKind::Step { base, .. } => vec![base],
        ExprKind::Select { base, index } => vec![base, index],
        ExprKind::NetCall { args, .. } | ExprKind::Concat(args) => args.iter().collect(),
        ExprKind::Unary { arg, .. } | ExprKind::Reduce { arg, .. } => vec![arg],
        ExprKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
    }
}

/// The direct subexpressions of `e`, mutably (for rewrites).
pub fn children_mut(e: &mut Expr) -> Vec<&mut Expr> {
    match &mut e.kind {
        ExprKind::Number(_) | ExprKind::Ref(_) | ExprKind::Fill(_) | ExprKind::Invalid => {
            Vec::new()
        }
        ExprKind::Step { base, .. } => vec![base],
        ExprKind::Select { base, index } => vec![base, index],
        ExprKind::NetCall { args, .. } | ExprKind::Concat(args) => args.iter_mut().collect(),
        ExprKind::Unary { arg, .. } | ExprKind::Reduce { arg, .. } => vec![arg],
        ExprKind::Binary { lhs, rhs, .. } => vec![lhs, rhs],
    }
}

/// Calls `f` on `e` and every subexpression of it, preorder, mutably.
pub fn rewrite(e: &mut Expr, f: &mut dyn FnMut(&mut Expr)) {
    f(e);
    for c in children_mut(e) {
        rewrite(c, f);
    }
}

pub fn walk_expr<'ir, V: Visitor<'ir> + ?Sized>(v: &mut V, e: &'ir Expr, scope: &Scope<'ir>) {
    for c in children(e) {
        v.expr(c, scope);
    }
}

// ---------------------------------------------------------------------------------
// Closures over the visitor, for the common questions.

struct Sites<F>(F);

impl<'ir, F: FnMut(&'ir Site, &Scope<'ir>)> Visitor<'ir> for Sites<F> {
    fn site(&mut self, site: &'ir Site, scope: &Scope<'ir>) {
        (self.0)(site, scope)
    }
}

/// Calls `f` on every sample site of `body`, in order, with its scope.
pub fn for_each_site<'ir>(body: &'ir Body, f: impl FnMut(&'ir Site, &Scope<'ir>)) {
    walk_body(&mut Sites(f), body)
}

struct Exprs<F>(F);

impl<'ir, F: FnMut(&'ir Expr)> Visitor<'ir> for Exprs<F> {
    fn expr(&mut self, e: &'ir Expr, scope: &Scope<'ir>) {
        (self.0)(e);
        walk_expr(self, e, scope)
    }
}

/// Calls `f` on every expression of `body` (distribution arguments, components, flow
/// contexts, `let` values) and every subexpression, preorder.
pub fn for_each_expr<'ir>(body: &'ir Body, f: impl FnMut(&'ir Expr)) {
    walk_body(&mut Exprs(f), body)
}

struct Lets<F>(F);

impl<'ir, F: FnMut(&'ir [LetTarget], &'ir Expr, Span, &Scope<'ir>)> Visitor<'ir> for Lets<F> {
    fn let_stmt(
        &mut self,
        targets: &'ir [LetTarget],
        value: &'ir Expr,
        span: Span,
        scope: &Scope<'ir>,
    ) {
        (self.0)(targets, value, span, scope)
    }
}

/// Calls `f` on every `let` of `body`, in order: its targets, value, span and scope.
pub fn for_each_let<'ir>(
    body: &'ir Body,
    f: impl FnMut(&'ir [LetTarget], &'ir Expr, Span, &Scope<'ir>),
) {
    walk_body(&mut Lets(f), body)
}

struct TopLevel<'ir>(Vec<&'ir Expr>);

impl<'ir> Visitor<'ir> for TopLevel<'ir> {
    fn expr(&mut self, e: &'ir Expr, _: &Scope<'ir>) {
        self.0.push(e)
    }
}

/// The expressions a site holds directly: its distribution's arguments (and its mixture
/// component's), then its flows' contexts.
pub fn site_exprs<'ir>(site: &'ir Site, scope: &Scope<'ir>) -> Vec<&'ir Expr> {
    let mut v = TopLevel(Vec::new());
    v.site(site, scope);
    v.0
}

/// Calls `f` on `e` and every subexpression of it, preorder.
pub fn for_each_subexpr<'ir>(e: &'ir Expr, f: &mut dyn FnMut(&'ir Expr)) {
    f(e);
    for c in children(e) {
        for_each_subexpr(c, f);
    }
}

/// Every network a site's flows call, with the flow.
pub fn flow_nets(site: &Site) -> impl Iterator<Item = (NetId, usize, &Flow)> {
    site.flows.iter().map(|f| {
        let super::FlowKind::Iaf { net, steps } = f.kind;
        (net, steps, f)
    })
}

/// A bottom-up fold: the fact of an expression is the join of its children's facts, with
/// [`Dataflow::reference`] at names and [`Dataflow::call`] at network calls.
pub trait Dataflow {
    type Fact: Default;
    fn join(&mut self, into: &mut Self::Fact, other: Self::Fact);
    /// The fact of a name (`x`, `h` in `h[t-1]`, ...).
    fn reference(&mut self, r: Ref, e: &Expr) -> Self::Fact;
    /// The fact of `net(args)` from the join of its arguments' facts; the network's first
    /// argument is given for calls that need it (a context set's size).
    fn call(&mut self, net: NetId, args: &[Expr], joined: Self::Fact, e: &Expr) -> Self::Fact {
        let _ = (net, args, e);
        joined
    }
}

/// The fact of `e` under `d`.
pub fn flow<D: Dataflow + ?Sized>(d: &mut D, e: &Expr) -> D::Fact {
    match &e.kind {
        ExprKind::Ref(r) => d.reference(*r, e),
        ExprKind::NetCall { net, args, .. } => {
            let joined = join_all(d, args.iter());
            d.call(*net, args, joined, e)
        }
        _ => join_all(d, children(e).into_iter()),
    }
}

fn join_all<'e, D: Dataflow + ?Sized>(d: &mut D, es: impl Iterator<Item = &'e Expr>) -> D::Fact {
    let mut acc = D::Fact::default();
    for c in es {
        let f = flow(d, c);
        d.join(&mut acc, f);
    }
    acc
}

/// The join of the facts of every expression a site's distribution reads (arguments and
/// component), without its flows.
pub fn flow_dist<D: Dataflow + ?Sized>(d: &mut D, dist: &Dist) -> D::Fact {
    let mut acc = join_all(d, dist.args.iter().map(|(_, e)| e));
    if let Some(c) = &dist.component {
        let f = flow_dist(d, c);
        d.join(&mut acc, f);
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::e2e::program;

    const VRNN: &str = "
const T = 3
data x : Binary[T, 4]
latent z : Real[T, 2]
net cell(h: Real[5], x: Binary[4], z: Real[2]) -> Real[5] = gru()
net post(h: Real[5], x: Binary[4]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [5])
net emit(h: Real[5], z: Real[2]) -> Real[4] = mlp(hidden = [5])
model {
  let h[0] = zeros(5)
  for t in 1:T {
    z[t] ~ Normal(0, 1)
    x[t] ~ Bernoulli(logits = emit(h[t - 1], z[t]))
    let h[t] = cell(h[t - 1], x[t], z[t])
  }
}
guide {
  let h[0] = zeros(5)
  for t in 1:T {
    let (m, s) = post(h[t - 1], x[t])
    z[t] ~ Normal(m, s)
    let h[t] = cell(h[t - 1], x[t], z[t])
  }
}
";

    #[test]
    fn sites_come_in_order_with_their_loops() {
        let p = program(VRNN).unwrap();
        let mut seen = Vec::new();
        for_each_site(&p.model, |s, scope| {
            seen.push((s.var, scope.loops.clone(), scope.iterations()))
        });
        use crate::ir::SiteVar::*;
        assert_eq!(
            seen,
            vec![(Latent(0), vec![0], 3), (Data(0), vec![0], 3)],
            "{seen:?}"
        );
    }

    #[test]
    fn every_expression_is_visited_once_preorder() {
        let p = program(VRNN).unwrap();
        let mut calls = Vec::new();
        let mut count = 0;
        for_each_expr(&p.model, |e| {
            count += 1;
            if let ExprKind::NetCall { net, .. } = e.kind {
                calls.push(p.nets[net].name.clone());
            }
        });
        assert_eq!(calls, ["emit", "cell"]);
        // zeros(5); Normal(0, 1): 2; emit(h[t-1], z[t]): call, step, h, step, z = 5;
        // cell(h[t-1], x[t], z[t]): call + 3 steps with their bases = 7.
        assert_eq!(count, 1 + 2 + 5 + 7);
    }

    /// The networks an expression depends on, through the dataflow fold.
    struct Nets;
    impl Dataflow for Nets {
        type Fact = Vec<NetId>;
        fn join(&mut self, into: &mut Vec<NetId>, other: Vec<NetId>) {
            into.extend(other)
        }
        fn reference(&mut self, _: Ref, _: &Expr) -> Vec<NetId> {
            Vec::new()
        }
        fn call(&mut self, net: NetId, _: &[Expr], mut joined: Vec<NetId>, _: &Expr) -> Vec<NetId> {
            joined.push(net);
            joined
        }
    }

    #[test]
    fn dataflow_joins_children_and_calls() {
        let p = program(VRNN).unwrap();
        let mut found = Vec::new();
        for_each_site(&p.model, |s, _| found.push(flow_dist(&mut Nets, &s.dist)));
        assert_eq!(found, vec![vec![], vec![2]]);
    }
}
