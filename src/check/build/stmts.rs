//! Statements of `model` and `guide`: `let` (plain, tuple, sequence steps), `~` sites and
//! `for` loops, with the use-before-definition rules of E010.
//!
//! Definedness is tracked per block: a plain local after its `let`; a sequence local or
//! a `[T, ...]` latent step by step (`upto`: every step up to it is defined; `cur`: the
//! loops in whose current iteration step `t` is defined). Observed and `given` data and
//! params are readable anywhere; `partial` data like a latent.

use super::exprs::{join, step_text};
use super::{BuildError, Builder, Decl};
use crate::ir::{self, Domain, LocalId, LoopId, SiteVar, Step, Type};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::{HashMap, HashSet};

/// Definedness of one local, latent or data variable in the current block.
#[derive(Clone, Debug, Default)]
pub(super) struct Seq {
    /// A sequence local (`let h[0]`, `let h[t]`).
    pub seq: bool,
    /// The first step: 0 for sequence locals, 1 for data and latents.
    pub min: i64,
    /// Every step from `min` to `upto` is defined.
    pub upto: Option<i64>,
    /// The whole value is defined.
    pub whole: bool,
    /// Loops in whose current iteration step `t` is defined.
    pub cur: Vec<LoopId>,
}

impl Seq {
    /// Whether the whole value can be read (all `steps` defined, when it has a time axis).
    pub fn whole_defined(&self, steps: Option<usize>) -> bool {
        self.whole || matches!((steps, self.upto), (Some(t), Some(u)) if u >= t as i64 && !self.seq)
    }
}

struct Frame {
    id: LoopId,
    /// Plain locals declared inside the loop: out of scope after it.
    scoped: Vec<String>,
}

/// The state of the block being built.
pub(super) struct Cx<'a> {
    pub guide: bool,
    pub locals: Vec<ir::Local>,
    pub local_st: Vec<Seq>,
    pub loops: Vec<ir::LoopDef>,
    loop_bodies: Vec<&'a ast::Block>,
    pub scope: HashMap<String, LocalId>,
    pub latent_st: Vec<Seq>,
    pub data_st: Vec<Seq>,
    stack: Vec<Frame>,
    /// Every name a `let` of this block defines (to tell "defined later" from "unknown").
    pub lets: HashSet<String>,
    /// Plain locals whose loop has ended.
    pub ended: HashSet<String>,
    /// Names already reported under E010 in this block.
    pub reported: HashSet<String>,
    /// Loops whose bounds failed to resolve: no coverage or step checks on them.
    pub bad_loops: HashSet<LoopId>,
    /// The network head each tuple-bound local comes from, for diagnostics that point
    /// at the head's declaration.
    pub origin: HashMap<LocalId, (ir::NetId, usize)>,
}

impl Cx<'_> {
    /// The innermost enclosing loop whose variable is `name`.
    pub fn loop_var(&self, name: &str) -> Option<(LoopId, &ir::LoopDef)> {
        self.stack.iter().rev().find_map(|f| {
            let def = self.loops.get(f.id)?;
            (def.var == name).then_some((f.id, def))
        })
    }

    pub fn loop_vars(&self) -> Vec<String> {
        self.stack
            .iter()
            .filter_map(|f| self.loops.get(f.id).map(|d| d.var.clone()))
            .collect()
    }

    /// Whether loop `l`'s body defines `name[var]` somewhere (so later iterations can
    /// read earlier steps).
    fn loop_defines(&self, l: LoopId, name: &str) -> bool {
        let (Some(body), Some(def)) = (self.loop_bodies.get(l), self.loops.get(l)) else {
            return false;
        };
        defines(body, name, &def.var)
    }

    /// Whether step `step` of a variable with state `st` is defined; the hint otherwise.
    pub fn step_defined(&self, st: &Seq, name: &str, step: Step) -> Result<(), String> {
        if st.whole {
            return Ok(());
        }
        let upto = st.upto.unwrap_or(i64::MIN);
        let Some(l) = step.loop_id else {
            let c = step.offset;
            return if upto >= c {
                Ok(())
            } else if c == 0 {
                Err(format!("define `let {name}[0] = ...` before reading it"))
            } else {
                Err(format!(
                    "define `{name}[{c}]` (in a loop over its steps) before reading it"
                ))
            };
        };
        if self.bad_loops.contains(&l) {
            return Ok(());
        }
        let Some(def) = self.loops.get(l) else {
            return Err(String::new());
        };
        let (from, to) = (def.from as i64, def.to as i64);
        let v = &def.var;
        let k = step.offset;
        if k == 0 {
            return if st.cur.contains(&l) || upto >= to {
                Ok(())
            } else {
                Err(format!("define `{name}[{v}]` earlier in this iteration"))
            };
        }
        if k > 0 {
            return if upto >= to.saturating_add(k) {
                Ok(())
            } else {
                Err(format!(
                    "a step can only read steps defined before it, such as `{name}[{v}-1]`"
                ))
            };
        }
        let first = from.saturating_add(k);
        if first < st.min {
            return Err(format!(
                "at `{v} = {from}` this reads step {first}, which does not exist; start the loop later or read a later step"
            ));
        }
        if upto < first {
            return Err(if first == 0 && st.min == 0 {
                format!("define `let {name}[0] = ...` before the loop")
            } else {
                format!("step {first} of `{name}` is not defined before the loop")
            });
        }
        if !(self.loop_defines(l, name) || upto >= to.saturating_add(k)) {
            return Err(format!(
                "the loop never defines `{name}[{v}]`, so later iterations have no earlier step"
            ));
        }
        Ok(())
    }
}

/// Every name a `let` in `block` (or a loop nested in it) defines.
fn let_names(block: &ast::Block, out: &mut HashSet<String>) {
    for s in &block.stmts {
        match &s.kind {
            ast::StmtKind::Let { targets, .. } => {
                out.extend(targets.iter().map(|t| t.name.name.clone()));
            }
            ast::StmtKind::Sample { .. } => {}
            ast::StmtKind::For { body, .. } => let_names(body, out),
        }
    }
}

/// Whether `block` (or a loop nested in it) defines `name[var]`.
fn defines(block: &ast::Block, name: &str, var: &str) -> bool {
    let is = |t: &ast::Target| {
        t.name.name == name
            && matches!(&t.index, Some(ast::Expr { kind: ast::ExprKind::Name(i), .. }) if i.name == var)
    };
    block.stmts.iter().any(|s| match &s.kind {
        ast::StmtKind::Let { targets, .. } => targets.iter().any(is),
        ast::StmtKind::Sample { target, .. } => is(target),
        ast::StmtKind::For { body, .. } => defines(body, name, var),
    })
}

impl Builder<'_> {
    /// Build `model` (`guide == false`) or an amortized guide.
    pub(super) fn body(&mut self, block: &ast::Block, guide: bool) -> ir::Body {
        let latent_st = self
            .prog
            .latents
            .iter()
            .map(|_| Seq {
                min: 1,
                ..Seq::default()
            })
            .collect();
        let data_st = self
            .prog
            .data
            .iter()
            .map(|_| Seq {
                min: 1,
                ..Seq::default()
            })
            .collect();
        let mut cx = Cx {
            guide,
            locals: Vec::new(),
            local_st: Vec::new(),
            loops: Vec::new(),
            loop_bodies: Vec::new(),
            scope: HashMap::new(),
            latent_st,
            data_st,
            stack: Vec::new(),
            lets: HashSet::new(),
            ended: HashSet::new(),
            reported: HashSet::new(),
            bad_loops: HashSet::new(),
            origin: HashMap::new(),
        };
        let_names(block, &mut cx.lets);
        let mut stmts = self.stmts(&block.stmts, &mut cx);
        if guide {
            self.resolve_random_functions(&mut stmts);
        }
        ir::Body {
            stmts,
            locals: cx.locals,
            loops: cx.loops,
            span: block.span,
        }
    }

    /// Name the network whose input each `@random_function` site's GP lives over: the
    /// network whose output is the site's `loc`, directly (`Normal(enc(x).loc, ...)`) or
    /// through a `let` of the guide's top level. The site must be outside loops and its
    /// variable per example.
    fn resolve_random_functions(&mut self, stmts: &mut [ir::Stmt]) {
        let lets: HashMap<ir::LocalId, (ir::NetId, Vec<ir::Expr>)> = stmts
            .iter()
            .filter_map(|s| match s {
                ir::Stmt::Let { targets, value, .. } => match &value.kind {
                    ir::ExprKind::NetCall { net, args, .. } => {
                        Some((targets, (*net, args.clone())))
                    }
                    _ => None,
                },
                _ => None,
            })
            .flat_map(|(targets, call)| targets.iter().map(move |t| (t.local, call.clone())))
            .collect();
        let mut errors = Vec::new();
        let mut resolve = |site: &mut ir::Site, in_loop: bool, prog: &ir::Program| {
            let Some(ir::Strategy::RandomFunction { net, inputs, .. }) = &mut site.strategy else {
                return;
            };
            let name = match site.var {
                SiteVar::Latent(l) => prog.latents.get(l).map(|d| (d.name.clone(), d.global)),
                SiteVar::Data(d) => prog.data.get(d).map(|d| (d.name.clone(), false)),
            };
            let (name, global) = name.unwrap_or_default();
            let loc = site
                .dist
                .args
                .iter()
                .find(|(p, _)| *p == ir::DistParam::Loc)
                .map(|(_, e)| e);
            let found = match loc.map(|e| &e.kind) {
                Some(ir::ExprKind::NetCall { net, args, .. }) => Some((*net, args.clone())),
                Some(ir::ExprKind::Ref(ir::Ref::Local(l))) => lets.get(l).cloned(),
                _ => None,
            };
            let reason = if in_loop || site.step.is_some() {
                Some("a site outside loops (one GP input per example)")
            } else if global {
                Some("a per-example latent (a global latent has no input to condition on)")
            } else if found.is_none() {
                Some("a `loc` computed by a network (its input is where the GP lives)")
            } else {
                None
            };
            match (reason, found) {
                (None, Some((n, args))) => {
                    *net = Some(n);
                    *inputs = args;
                }
                (reason, _) => errors.push(BuildError::RandomFunctionNoNet {
                    name,
                    reason: reason.unwrap_or("a network's output"),
                    span: site.span,
                }),
            }
        };
        fn walk(
            stmts: &mut [ir::Stmt],
            in_loop: bool,
            prog: &ir::Program,
            f: &mut dyn FnMut(&mut ir::Site, bool, &ir::Program),
        ) {
            for s in stmts {
                match s {
                    ir::Stmt::Sample(site) => f(site, in_loop, prog),
                    ir::Stmt::Loop { body, .. } => walk(body, true, prog, f),
                    ir::Stmt::Let { .. } => {}
                }
            }
        }
        walk(stmts, false, &self.prog, &mut resolve);
        self.errors.extend(errors);
    }

    fn stmts<'a>(&mut self, stmts: &'a [ast::Stmt], cx: &mut Cx<'a>) -> Vec<ir::Stmt> {
        let mut out = Vec::new();
        for s in stmts {
            match &s.kind {
                ast::StmtKind::Let {
                    targets,
                    tuple,
                    value,
                } => out.push(self.let_stmt(targets, *tuple, value, s.span, cx)),
                ast::StmtKind::Sample {
                    target,
                    dist,
                    flows,
                    strategy,
                } => {
                    if let Some(site) =
                        self.sample(target, dist, flows, strategy.as_ref(), s.span, cx)
                    {
                        out.push(ir::Stmt::Sample(site));
                    }
                }
                ast::StmtKind::For {
                    var,
                    from,
                    to,
                    body,
                } => {
                    if let Some(st) = self.for_stmt(var, from, to, body, s.span, cx) {
                        out.push(st);
                    }
                }
            }
        }
        out
    }

    fn for_stmt<'a>(
        &mut self,
        var: &ast::Ident,
        from: &ast::Expr,
        to: &ast::Expr,
        body: &'a ast::Block,
        span: Span,
        cx: &mut Cx<'a>,
    ) -> Option<ir::Stmt> {
        let first = self
            .names
            .get(&var.name)
            .map(|(_, s)| *s)
            .or_else(|| cx.loop_var(&var.name).map(|(_, d)| d.span))
            .or_else(|| cx.scope.get(&var.name).map(|&l| cx.locals[l].span));
        if let Some(first) = first {
            self.errors.push(BuildError::Duplicate {
                what: "name",
                name: var.name.clone(),
                span: var.span,
                first,
            });
        }
        let a = self.int(from);
        let b = self.int(to);
        let id = cx.loops.len();
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) if a >= 0 && a <= b => (a as usize, b as usize),
            (Some(_), Some(_)) => {
                self.errors.push(BuildError::BadValue {
                    callee: "for".into(),
                    keyword: "range".into(),
                    expected: "`a:b` with 0 <= a <= b".into(),
                    span: from.span.to(to.span),
                });
                cx.bad_loops.insert(id);
                (1, 1)
            }
            _ => {
                cx.bad_loops.insert(id);
                (1, 1)
            }
        };
        cx.loops.push(ir::LoopDef {
            var: var.name.clone(),
            from: a,
            to: b,
            span,
        });
        cx.loop_bodies.push(body);
        cx.stack.push(Frame {
            id,
            scoped: Vec::new(),
        });
        let stmts = self.stmts(&body.stmts, cx);
        let frame = cx.stack.pop();
        if let Some(frame) = frame {
            for name in frame.scoped {
                cx.scope.remove(&name);
                cx.ended.insert(name);
            }
        }
        let close = |st: &mut Seq| {
            if let Some(pos) = st.cur.iter().position(|&l| l == id) {
                st.cur.remove(pos);
                let contiguous = match st.upto {
                    Some(u) => u.saturating_add(1) >= a as i64,
                    None => a as i64 == st.min,
                };
                if contiguous {
                    st.upto = Some(st.upto.unwrap_or(i64::MIN).max(b as i64));
                }
            }
        };
        cx.local_st.iter_mut().for_each(close);
        cx.latent_st.iter_mut().for_each(close);
        cx.data_st.iter_mut().for_each(close);
        Some(ir::Stmt::Loop {
            loop_id: id,
            body: stmts,
            span,
        })
    }

    fn let_stmt(
        &mut self,
        targets: &[ast::Target],
        tuple: bool,
        value: &ast::Expr,
        span: Span,
        cx: &mut Cx,
    ) -> ir::Stmt {
        let v = if tuple {
            self.expr_any(value, cx)
        } else {
            self.expr(value, cx)
        };
        let unknown = || vec![(Type::unknown(), None); targets.len()];
        let tys: Vec<(Type, Option<usize>)> = if tuple {
            match &v.kind {
                ir::ExprKind::NetCall { net, head, .. } => {
                    let n = &self.prog.nets[*net];
                    let heads: Vec<(Type, Option<usize>)> = match head {
                        None => n
                            .heads
                            .iter()
                            .enumerate()
                            .map(|(i, h)| (h.ty.clone(), Some(i)))
                            .collect(),
                        Some(i) => vec![(v.ty.clone(), Some(*i))],
                    };
                    if heads.len() != targets.len() {
                        self.errors.push(BuildError::TupleArity {
                            net: n.name.clone(),
                            heads: heads.len(),
                            targets: targets.len(),
                            span: targets
                                .first()
                                .map(|t| t.span)
                                .unwrap_or(span)
                                .to(targets.last().map(|t| t.span).unwrap_or(span)),
                        });
                        unknown()
                    } else {
                        heads
                    }
                }
                ir::ExprKind::Invalid => unknown(),
                _ => {
                    self.errors
                        .push(BuildError::TupleNeedsNet { span: value.span });
                    unknown()
                }
            }
        } else {
            vec![(v.ty.clone(), None)]
        };
        let mut out = Vec::new();
        let called = match &v.kind {
            ir::ExprKind::NetCall { net, .. } => Some(*net),
            _ => None,
        };
        for (t, (ty, head)) in targets.iter().zip(tys) {
            let (local, step) = self.let_target(t, ty, cx);
            if let (Some(net), Some(h)) = (called, head) {
                cx.origin.insert(local, (net, h));
            }
            out.push(ir::LetTarget {
                local,
                step,
                head,
                span: t.span,
            });
        }
        ir::Stmt::Let {
            targets: out,
            value: v,
            span,
        }
    }

    fn new_local(&mut self, cx: &mut Cx, name: &str, ty: Type, span: Span, st: Seq) -> LocalId {
        let id = cx.locals.len();
        cx.locals.push(ir::Local {
            name: name.to_string(),
            steps: st.seq.then_some(0),
            ty,
            span,
        });
        cx.local_st.push(st);
        id
    }

    /// Define the local a `let` target names (or one step of it).
    fn let_target(&mut self, t: &ast::Target, ty: Type, cx: &mut Cx) -> (LocalId, Option<Step>) {
        let name = &t.name.name;
        let clash = self
            .names
            .get(name)
            .map(|(_, s)| *s)
            .or_else(|| cx.loop_var(name).map(|(_, d)| d.span));
        if let Some(first) = clash {
            self.errors.push(BuildError::Duplicate {
                what: "name",
                name: name.clone(),
                span: t.name.span,
                first,
            });
            // A detached local keeps the IR consistent; reads still see the declaration.
            let seq = t.index.is_some();
            let id = self.new_local(
                cx,
                name,
                ty,
                t.span,
                Seq {
                    seq,
                    whole: true,
                    ..Seq::default()
                },
            );
            return (id, None);
        }
        let Some(ix) = &t.index else {
            // `_` binds nothing: a value (a network head) the spec does not want. It can
            // be written any number of times and never read.
            let unnamed = name == "_";
            let prev = (!unnamed).then(|| cx.scope.get(name).copied()).flatten();
            if let Some(prev) = prev {
                self.errors.push(BuildError::Duplicate {
                    what: "local",
                    name: name.clone(),
                    span: t.name.span,
                    first: cx.locals[prev].span,
                });
            }
            let whole = Seq {
                whole: true,
                ..Seq::default()
            };
            let id = self.new_local(cx, name, ty, t.span, whole);
            if !unnamed && prev.is_none() {
                cx.scope.insert(name.clone(), id);
                if let Some(f) = cx.stack.last_mut() {
                    f.scoped.push(name.clone());
                }
            }
            return (id, None);
        };
        // A sequence step.
        let Some(step) = self.time_index(ix, cx) else {
            self.errors.push(BuildError::BadIndex {
                what: "a sequence step is defined at `0`, a const or a loop variable `t`".into(),
                span: ix.span,
            });
            return (self.new_local(cx, name, ty, t.span, Seq::default()), None);
        };
        let id = match cx.scope.get(name).copied() {
            Some(prev) if !cx.local_st[prev].seq => {
                self.errors.push(BuildError::Duplicate {
                    what: "local",
                    name: name.clone(),
                    span: t.name.span,
                    first: cx.locals[prev].span,
                });
                return (
                    self.new_local(cx, name, ty, t.span, Seq::default()),
                    Some(step),
                );
            }
            Some(prev) => {
                let old = cx.locals[prev].ty.clone();
                if old.domain != Domain::Unknown && ty.domain != Domain::Unknown {
                    if old.shape != ty.shape {
                        self.errors.push(BuildError::BadIndex {
                            what: format!(
                                "every step of `{name}` must have the shape of its first step, `{}`, but this is `{}`",
                                old.display(),
                                ty.display()
                            ),
                            span: t.span,
                        });
                    } else if let Some(d) = join(old.domain, ty.domain) {
                        cx.locals[prev].ty.domain = d;
                    }
                }
                prev
            }
            None => {
                let id = self.new_local(
                    cx,
                    name,
                    ty,
                    t.span,
                    Seq {
                        seq: true,
                        min: 0,
                        ..Seq::default()
                    },
                );
                cx.scope.insert(name.clone(), id);
                id
            }
        };
        match step.loop_id {
            None => {
                let c = step.offset;
                let st = &mut cx.local_st[id];
                let next = st.upto.map(|u| u.saturating_add(1)).unwrap_or(0);
                if c == next {
                    st.upto = Some(c);
                    let steps = cx.locals[id].steps.unwrap_or(0).max(c.max(0) as usize);
                    cx.locals[id].steps = Some(steps);
                } else if c < next {
                    self.errors.push(BuildError::Duplicate {
                        what: "step",
                        name: format!("{name}[{c}]"),
                        span: t.span,
                        first: cx.locals[id].span,
                    });
                } else {
                    self.order_error(
                        cx,
                        BuildError::StepNotDefined {
                            name: name.clone(),
                            step: c.saturating_sub(1).to_string(),
                            span: t.span,
                            hint: "define the steps of a sequence in order, starting at 0".into(),
                        },
                    );
                }
            }
            Some(l) if step.offset == 0 => {
                let to = cx.loops.get(l).map(|d| d.to).unwrap_or(0);
                cx.local_st[id].cur.push(l);
                let steps = cx.locals[id].steps.unwrap_or(0).max(to);
                cx.locals[id].steps = Some(steps);
            }
            Some(_) => {
                self.errors.push(BuildError::BadIndex {
                    what: format!(
                        "a loop defines the current step `{name}[{}]`, not `{name}[{}]`",
                        cx.loops
                            .get(step.loop_id.unwrap_or(0))
                            .map(|d| d.var.clone())
                            .unwrap_or_default(),
                        step_text(step, cx)
                    ),
                    span: ix.span,
                });
            }
        }
        (id, Some(step))
    }

    fn sample(
        &mut self,
        target: &ast::Target,
        dist: &ast::Call,
        flows: &[ast::Call],
        strategy: Option<&ast::Strategy>,
        span: Span,
        cx: &mut Cx,
    ) -> Option<ir::Site> {
        let name = &target.name.name;
        let var = match self.names.get(name).map(|(d, _)| *d) {
            Some(Decl::Latent(l)) => Some((SiteVar::Latent(l), self.prog.latents[l].ty.clone())),
            Some(Decl::Data(d)) => Some((SiteVar::Data(d), self.prog.data[d].ty.clone())),
            Some(d) if !cx.scope.contains_key(name) => {
                self.not_sampleable(cx, name, d.kind(), target.name.span);
                None
            }
            _ if cx.scope.contains_key(name) => {
                self.not_sampleable(cx, name, "local", target.name.span);
                None
            }
            _ if cx.loop_var(name).is_some() => {
                self.not_sampleable(cx, name, "loop variable", target.name.span);
                None
            }
            _ => {
                self.unknown_name(&target.name, cx);
                None
            }
        };
        let Some((var, var_ty)) = var else {
            // Still check the distribution, for errors inside it.
            self.dist(dist, &Type::unknown(), cx);
            return None;
        };
        let mut site_ty = var_ty.clone();
        let mut site_step = None;
        if let Some(ix) = &target.index {
            match self.time_index(ix, cx) {
                Some(
                    step @ Step {
                        loop_id: Some(l),
                        offset: 0,
                    },
                ) => {
                    site_step = Some(step);
                    match var_ty.shape.first() {
                        Some(&t) => {
                            site_ty = Type::new(var_ty.domain, var_ty.shape[1..].to_vec());
                            if let (Some(def), false) = (cx.loops.get(l), cx.bad_loops.contains(&l))
                            {
                                if def.from != 1 || def.to != t {
                                    self.errors.push(BuildError::LoopCoverage {
                                        name: name.clone(),
                                        from: def.from,
                                        to: def.to,
                                        steps: t,
                                        span: target.span,
                                    });
                                }
                            }
                        }
                        None if var_ty.domain == Domain::Unknown => {}
                        None => {
                            self.errors.push(BuildError::BadIndex {
                                what: format!(
                                    "`{name}` is `{}`, which has no time axis to index",
                                    var_ty.display()
                                ),
                                span: target.span,
                            });
                            site_ty = Type::unknown();
                        }
                    }
                }
                _ => {
                    self.errors.push(BuildError::StepOutsideLoop {
                        name: name.clone(),
                        span: target.span,
                    });
                    site_ty = Type::new(
                        var_ty.domain,
                        var_ty.shape.iter().skip(1).copied().collect(),
                    );
                }
            }
        }
        let d = self.dist(dist, &site_ty, cx);
        // A guide latent site is compared with the model's site by the rules (E008).
        if !(cx.guide && matches!(var, SiteVar::Latent(_))) {
            self.check_support(var, &site_ty, &d);
        }
        if !cx.guide {
            for f in flows {
                self.errors.push(BuildError::FlowInModel { span: f.span });
            }
        }
        let flows: Vec<ir::Flow> = flows
            .iter()
            .filter_map(|f| self.flow(f, &site_ty, cx))
            .collect();
        let strategy = if cx.guide {
            Some(self.strategy(strategy, &d))
        } else {
            if let Some(s) = strategy {
                self.errors
                    .push(BuildError::StrategyInModel { span: s.span });
            }
            None
        };
        let st = match var {
            SiteVar::Latent(l) => cx.latent_st.get_mut(l),
            SiteVar::Data(x) => cx.data_st.get_mut(x),
        };
        if let Some(st) = st {
            match site_step {
                Some(Step {
                    loop_id: Some(l), ..
                }) => st.cur.push(l),
                _ => st.whole = true,
            }
        }
        Some(ir::Site {
            var,
            step: site_step,
            ty: site_ty,
            dist: d,
            flows,
            strategy,
            span,
        })
    }

    /// A `~` target that is neither a latent nor data: E005 in `model`, E008 (a guide
    /// site for a non-latent) in `guide`.
    fn not_sampleable(&mut self, cx: &Cx, name: &str, kind: &'static str, span: Span) {
        let name = name.to_string();
        self.errors.push(if cx.guide {
            BuildError::GuideSiteNotLatent { name, kind, span }
        } else {
            BuildError::NotSampleable { name, kind, span }
        });
    }

    /// A latent's declared domain must equal the support; data must lie in it, with
    /// discreteness agreeing (Binary or Unit data under ContinuousBernoulli allowed).
    fn check_support(&mut self, var: SiteVar, ty: &Type, d: &ir::Dist) {
        let sup = d.support.domain;
        let dec = ty.domain;
        if sup == Domain::Unknown || dec == Domain::Unknown {
            return;
        }
        let kind = d.kind.name().to_string();
        let shape_s = if ty.shape.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = ty.shape.iter().map(|x| x.to_string()).collect();
            format!("[{}]", v.join(", "))
        };
        match var {
            SiteVar::Latent(l) => {
                if dec == sup {
                    return;
                }
                let name = self.prog.latents[l].name.clone();
                let hint = match (dec, sup) {
                    (Domain::Positive, Domain::Real) => {
                        format!("use LogNormal or declare `Real{shape_s}`")
                    }
                    (Domain::Unit, _) => format!("use Beta or declare `{}{shape_s}`", sup.name()),
                    (Domain::Simplex, _) => {
                        format!("use Dirichlet or declare `{}{shape_s}`", sup.name())
                    }
                    _ => format!("declare `latent {name} : {}{shape_s}`", sup.name()),
                };
                self.errors.push(BuildError::LatentSupport {
                    name,
                    declared: Type::new(dec, ty.shape.clone()).display(),
                    dist: kind,
                    support: sup.name(),
                    span: d.span,
                    hint,
                });
            }
            SiteVar::Data(x) => {
                let ok = if sup.is_discrete() {
                    dec.is_discrete()
                        && (dec == sup || (dec == Domain::Binary && sup == Domain::Count))
                } else if dec == Domain::Binary && d.kind == ir::DistKind::ContinuousBernoulli {
                    true
                } else {
                    !dec.is_discrete() && dec.is_subdomain_of(sup)
                };
                if ok {
                    return;
                }
                let name = self.prog.data[x].name.clone();
                let hint = if dec == Domain::Binary && !sup.is_discrete() {
                    "use Bernoulli(logits = ...) or ContinuousBernoulli".to_string()
                } else if let (Domain::Cat(_), Domain::Cat(_)) = (dec, sup) {
                    "make the last axis of the probabilities the number of classes".to_string()
                } else if !dec.is_discrete() && sup.is_discrete() {
                    "use a continuous distribution such as Normal, or declare the data discrete"
                        .to_string()
                } else {
                    format!(
                        "use a distribution whose support contains {} values",
                        dec.name()
                    )
                };
                self.errors.push(BuildError::DataSupport {
                    name,
                    declared: Type::new(dec, ty.shape.clone()).display(),
                    dist: kind,
                    support: sup.name(),
                    span: d.span,
                    hint,
                });
            }
        }
    }
}
