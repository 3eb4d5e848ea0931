//! The interpreter of the IR on candle tensors: evaluates expressions and statements of
//! `guide` and `model` for a batch, following the value conventions of `lower`.
//!
//! Rows: a batch starts with `B` rows (one per example). Drawing `S` samples multiplies
//! the rows of everything downstream of a sampled site by `S`; values computed before
//! (an encoder's output) stay at fewer rows and are *lifted* (each row repeated, in
//! order) when combined with more. Row `r` of a lifted value belongs to example
//! `r / (R / B)`.
//!
//! Enumeration multiplies rows the same way. An enumerated site (`@enumerate`, the
//! default for a Categorical or a one-element Bernoulli guide site; every discrete
//! latent of `guide exact`'s model) with K values turns the current `R0` rows into
//! `R0 * K`: row `r * K + k` is row `r` of everything computed before (lifted) with the
//! site's value set to its k-th support value (`Cat(K)`: the one-hot `e_k`; `Binary`:
//! 0 then 1). Later sites draw at the new rows, so the rows of one example are laid out
//! `[samples, K1, K2, ...]` (samples outermost, the last enumerated site innermost), and
//! `Frame::sample_rows` always holds the current number of rows.
//!
//! Each row's weight lives in `Frame::log_weight` (`[rows]`, `None` when nothing was
//! enumerated): in the guide it is the sum of `log q` of the row's enumerated values,
//! `q(c1 | x) q(c2 | x, c1) ...`, with gradients; the weights of one sample of one
//! example sum to 1. The objective (`objective.rs`) turns every per-row term `t` into
//! a per-example value `(1/S) Σ_rows exp(log_weight) · t`, so the ELBO is the exact
//! expectation over the enumerated values; an enumerated site's own term is
//! `log q(c) - log p(c)` per row (never an analytic KL, which would sum over c twice).
//! To force a row's value (an observed label), give the other values' rows a log-weight
//! of `-inf`.

use super::dist::DistValue;
use super::infer::enumerate::support_rows;
use super::infer::Draw;
use super::nets::{CopyKey, NetCtx};
use super::{broadcast_to, LoweredModel, SiteRecord};
use crate::ir::{
    BinaryOp, DataId, Expr, ExprKind, Reduce, Ref, Site, SiteVar, Step, Stmt, Type, UnaryFn,
};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor, D};

/// A runtime value: shared by every row (numbers, fills, params, global latents) or one
/// per row.
#[derive(Clone, Debug)]
pub enum Val {
    /// No rows axis: shape is the per-example shape.
    Shared(Tensor),
    /// `[rows, ...per-example shape]`.
    Rows(Tensor),
}

impl Val {
    pub fn rows(&self) -> Option<usize> {
        match self {
            Val::Shared(_) => None,
            Val::Rows(t) => t.dims().first().copied(),
        }
    }
}

/// Repeat each row of `t` so that it has `rows` rows (`rows` a multiple of its rows).
pub fn lift(t: &Tensor, rows: usize) -> Result<Tensor> {
    let have = t.dim(0)?;
    if have == rows {
        return Ok(t.clone());
    }
    if have == 0 || !rows.is_multiple_of(have) {
        bail!("internal error: cannot lift {have} rows to {rows}");
    }
    let factor = rows / have;
    let mut dims = t.dims().to_vec();
    let mut expanded = dims.clone();
    expanded.insert(1, factor);
    dims[0] = rows;
    t.unsqueeze(1)?
        .broadcast_as(expanded)?
        .contiguous()?
        .reshape(dims)
}

/// The value as a tensor `[rows, ...shape]` (broadcasting a shared value).
pub fn materialize(v: &Val, rows: usize, shape: &[usize]) -> Result<Tensor> {
    let mut full = vec![rows];
    full.extend_from_slice(shape);
    match v {
        Val::Shared(t) => broadcast_to(t, &full),
        Val::Rows(t) => {
            let t = lift(t, rows)?;
            if t.dims() == full.as_slice() {
                Ok(t)
            } else if t.rank() == 1 {
                // A per-row scalar used where a shaped value is expected.
                let mut ones = vec![rows];
                ones.extend(std::iter::repeat_n(1, shape.len()));
                t.reshape(ones)?.broadcast_as(full)
            } else {
                broadcast_to(&t, &full)
            }
        }
    }
}

/// The tensor shape of a value of type `ty` for one example: a `Cat(K)` value carries a
/// trailing one-hot axis.
pub fn value_shape(ty: &Type) -> Vec<usize> {
    let mut s = ty.shape.clone();
    if let crate::ir::Domain::Cat(k) = ty.domain {
        s.push(k);
    }
    s
}

/// A sequence or single `let` value.
#[derive(Clone, Debug)]
enum LocalVal {
    Unset,
    Single(Val),
    Steps(Vec<Option<Val>>),
}

/// Which pass is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The guide: latents are drawn from q.
    Guide,
    /// The model scoring latents drawn by the guide and observed data.
    Score,
    /// The model drawing its own latents (ancestral sampling, `vic sample`).
    Prior,
    /// The model with every latent enumerated over its finite support and scored
    /// (`guide exact` for finite discrete latents): the rows hold the joint support.
    Joint,
}

/// Evaluation state of one pass over one block.
pub struct Frame<'m> {
    pub model: &'m LoweredModel,
    pub pass: Pass,
    /// Rows of the batch (examples).
    pub base_rows: usize,
    /// The current rows: examples x samples x the values enumerated so far (see the
    /// module documentation).
    pub sample_rows: usize,
    /// Per-row log-weight of the enumerated values (`[rows at the last enumerated
    /// site]`; lift it to more rows): `None` when nothing was enumerated.
    pub log_weight: Option<Tensor>,
    pub train: bool,
    /// Batch data per `DataId` at `base_rows` rows (None: not bound, e.g. sampling).
    pub data: &'m [Option<Tensor>],
    /// Latent values per `LatentId` (whole value) and per step for stepped latents.
    pub latents: Vec<Option<Val>>,
    pub latent_steps: Vec<Vec<Option<Val>>>,
    /// Data values this pass made: drawn in `Prior` passes (for `vic sample`), completed
    /// by the guide for `partial` variables. Whole values, and per step for stepped
    /// sites (`x[t]`).
    pub drawn_data: Vec<Option<Val>>,
    pub drawn_steps: Vec<Vec<Option<Val>>>,
    /// Guide sites whose distribution parameters are given instead of computed.
    pub overrides: Overrides,
    /// The member distribution the batch comes from (`meta`): it picks the copy of a
    /// `@per_member` network.
    pub member: Option<usize>,
    /// Per `SetId`, the context sets of the base rows `[base_rows, N, ...]`.
    pub sets: &'m [Option<Tensor>],
    /// Evaluation with `vdrop` weights of log α above this pruned (see `NetCtx::prune`).
    pub prune: Option<f64>,
    locals: Vec<LocalVal>,
    /// Locals whose `let`s are not evaluated: their values were taken from another pass
    /// ([`Frame::adopt`]), or nothing that runs reads them ([`Frame::skip_dead_lets`]).
    skipped: Vec<bool>,
    loop_values: Vec<usize>,
    /// What each site did, in order.
    pub records: Vec<SiteRecord>,
    /// Per `DataId`, the `[base_rows]` mask of a `partial` variable: 1 where the value is
    /// observed, 0 where the guide draws it. `None` (or a short vector): all observed.
    pub observed: Vec<Option<Tensor>>,
}

/// Parameters substituted for guide sites' own (NumPyro's `substitute`): the bound "with
/// these parameters of this site" that semi-amortized refinement optimizes. Each entry is
/// a site (its variable and step) and its distribution's parameters, `[rows, ...]` at the
/// rows the site is built at (or fewer, lifted).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    sites: Vec<(SiteVar, Option<i64>, SiteParams)>,
}

/// A distribution's parameters by name, `[rows, ...]` each.
pub type SiteParams = Vec<(crate::ir::DistParam, Tensor)>;

impl Overrides {
    /// Give site `var` (at `step`) these parameters instead of its arguments' values.
    pub fn set(
        &mut self,
        var: SiteVar,
        step: Option<i64>,
        params: Vec<(crate::ir::DistParam, Tensor)>,
    ) {
        self.sites.retain(|(v, s, _)| !(*v == var && *s == step));
        self.sites.push((var, step, params));
    }

    pub fn get(
        &self,
        var: SiteVar,
        step: Option<i64>,
    ) -> Option<&[(crate::ir::DistParam, Tensor)]> {
        self.sites
            .iter()
            .find(|(v, s, _)| *v == var && *s == step)
            .map(|(_, _, p)| p.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }
}

impl<'m> Frame<'m> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: &'m LoweredModel,
        pass: Pass,
        locals: usize,
        loops: usize,
        base_rows: usize,
        sample_rows: usize,
        train: bool,
        data: &'m [Option<Tensor>],
    ) -> Frame<'m> {
        let n_latents = model.program.latents.len();
        Frame {
            model,
            pass,
            base_rows,
            sample_rows,
            log_weight: None,
            train,
            data,
            latents: vec![None; n_latents],
            latent_steps: vec![Vec::new(); n_latents],
            drawn_data: vec![None; model.program.data.len()],
            drawn_steps: vec![Vec::new(); model.program.data.len()],
            overrides: Overrides::default(),
            member: None,
            sets: &[],
            prune: None,
            locals: vec![LocalVal::Unset; locals],
            skipped: vec![false; locals],
            loop_values: vec![0; loops],
            records: Vec::new(),
            observed: Vec::new(),
        }
    }

    fn step_index(&self, step: &Step) -> Result<i64> {
        let base = match step.loop_id {
            Some(l) => *self.loop_values.get(l).unwrap_or(&0) as i64,
            None => 0,
        };
        Ok(base + step.offset)
    }

    fn data_value(&self, id: DataId) -> Result<Val> {
        if let Some(Some(v)) = self.drawn_data.get(id) {
            return Ok(v.clone());
        }
        if let Some(steps) = self.drawn_steps.get(id) {
            if !steps.is_empty() && steps.iter().all(|s| s.is_some()) {
                let ty = &self.model.program.data[id].ty;
                return stack_steps(steps, ty, self.base_rows);
            }
        }
        match self.data.get(id) {
            Some(Some(t)) => Ok(Val::Rows(t.clone())),
            _ => {
                let name = self
                    .model
                    .program
                    .data
                    .get(id)
                    .map(|d| d.name.as_str())
                    .unwrap_or("?");
                bail!("the data variable `{name}` has no value in this pass")
            }
        }
    }

    fn latent_value(&self, id: usize) -> Result<Val> {
        if let Some(Some(v)) = self.latents.get(id) {
            return Ok(v.clone());
        }
        // A stepped latent read whole: stack its steps along axis 1.
        if let Some(steps) = self.latent_steps.get(id) {
            if !steps.is_empty() && steps.iter().all(|s| s.is_some()) {
                return stack_steps(steps, &self.model.program.latents[id].ty, self.base_rows);
            }
        }
        let name = &self.model.program.latents[id].name;
        bail!("internal error: latent `{name}` read before it was drawn")
    }

    /// Evaluate an expression.
    pub fn eval(&mut self, e: &Expr, rng: &mut Rng) -> Result<Val> {
        let dev = self.model.device();
        match &e.kind {
            ExprKind::Number(v) => Ok(Val::Shared(Tensor::new(*v as f32, dev)?)),
            ExprKind::Fill(v) => Ok(Val::Shared(
                Tensor::ones(e.ty.shape.as_slice(), candle_core::DType::F32, dev)?
                    .affine(*v, 0.0)?,
            )),
            ExprKind::Ref(r) => match r {
                Ref::Data(id) => self.data_value(*id),
                Ref::Latent(id) => self.latent_value(*id),
                Ref::Param(id) => Ok(Val::Shared(self.model.param_value(*id)?)),
                Ref::Local(id) => match self.locals.get(*id) {
                    Some(LocalVal::Single(v)) => Ok(v.clone()),
                    _ => bail!("internal error: local read before it was set"),
                },
                Ref::LoopVar(l) => Ok(Val::Shared(Tensor::new(
                    *self.loop_values.get(*l).unwrap_or(&0) as f32,
                    dev,
                )?)),
                Ref::Set(id) => match self.sets.get(*id) {
                    Some(Some(t)) => Ok(Val::Rows(t.clone())),
                    _ => {
                        let name = self
                            .model
                            .program
                            .sets
                            .get(*id)
                            .map(|d| d.name.as_str())
                            .unwrap_or("?");
                        bail!("the context set `{name}` has no value in this pass")
                    }
                },
            },
            ExprKind::Step { base, step } => {
                let t = self.step_index(step)?;
                match &base.kind {
                    ExprKind::Ref(Ref::Local(id)) => match self.locals.get(*id) {
                        Some(LocalVal::Steps(v)) => match v.get(t.max(0) as usize) {
                            Some(Some(val)) if t >= 0 => Ok(val.clone()),
                            _ => bail!("internal error: sequence step {t} read before it was set"),
                        },
                        _ => bail!("internal error: sequence read before it was set"),
                    },
                    ExprKind::Ref(Ref::Data(id)) => self.data_at(*id, Some(t)),
                    ExprKind::Ref(Ref::Latent(id)) => {
                        if let Some(Some(v)) = self
                            .latent_steps
                            .get(*id)
                            .and_then(|s| s.get((t - 1).max(0) as usize))
                        {
                            return Ok(v.clone());
                        }
                        let whole = self.latent_value(*id)?;
                        narrow_step(&whole, t)
                    }
                    _ => {
                        let whole = self.eval(base, rng)?;
                        narrow_step(&whole, t)
                    }
                }
            }
            ExprKind::Select { base, index } => {
                let b = self.eval(base, rng)?;
                let i = self.eval(index, rng)?;
                select(&b, &i, &base.ty, &e.ty)
            }
            ExprKind::NetCall { net, args, head } => {
                let heads = self.call_net(*net, args, rng)?;
                let i = head.unwrap_or(0);
                heads
                    .into_iter()
                    .nth(i)
                    .map(Val::Rows)
                    .ok_or_else(|| candle_core::Error::Msg("internal error: no such head".into()))
            }
            ExprKind::Unary { op, arg } => {
                let v = self.eval(arg, rng)?;
                map_val(&v, |t| unary(*op, t))
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.eval(lhs, rng)?;
                let b = self.eval(rhs, rng)?;
                binary(*op, &a, &lhs.ty, &b, &rhs.ty, &e.ty)
            }
            ExprKind::Reduce { op, arg } => {
                let v = self.eval(arg, rng)?;
                let red = |t: &Tensor, from: usize| -> Result<Tensor> {
                    let mut t = t.clone();
                    while t.rank() > from {
                        t = match op {
                            Reduce::Sum => t.sum(D::Minus1)?,
                            Reduce::Mean => t.mean(D::Minus1)?,
                        };
                    }
                    Ok(t)
                };
                match &v {
                    Val::Shared(t) => Ok(Val::Shared(red(t, 0)?)),
                    Val::Rows(t) => Ok(Val::Rows(red(t, 1)?)),
                }
            }
            ExprKind::Concat(parts) => {
                let vals: Vec<(Val, Vec<usize>)> = parts
                    .iter()
                    .map(|p| Ok((self.eval(p, rng)?, value_shape(&p.ty))))
                    .collect::<Result<_>>()?;
                let rows = vals.iter().filter_map(|(v, _)| v.rows()).max();
                match rows {
                    None => {
                        let ts: Vec<Tensor> = vals
                            .iter()
                            .map(|(v, _)| match v {
                                Val::Shared(t) => t.clone(),
                                Val::Rows(t) => t.clone(),
                            })
                            .collect();
                        Ok(Val::Shared(Tensor::cat(&ts, 0)?))
                    }
                    Some(rows) => {
                        let ts: Vec<Tensor> = vals
                            .iter()
                            .map(|(v, s)| materialize(v, rows, s))
                            .collect::<Result<_>>()?;
                        Ok(Val::Rows(Tensor::cat(&ts, 1)?))
                    }
                }
            }
            ExprKind::Invalid => bail!("internal error: an unchecked expression reached lowering"),
        }
    }

    /// Call a network as written in the spec: its arguments evaluated, a `@per_member`
    /// network's copy chosen by the batch's member.
    pub fn call_net(&mut self, net: usize, args: &[Expr], rng: &mut Rng) -> Result<Vec<Tensor>> {
        let vals: Vec<Val> = args
            .iter()
            .map(|a| self.eval(a, rng))
            .collect::<Result<_>>()?;
        let def = &self.model.program.nets[net];
        let member = if def.per_member {
            match self.member {
                Some(m) => Some(m),
                None => bail!(
                    "the `@per_member` network `{}` is called outside a member's batch",
                    def.name
                ),
            }
        } else {
            None
        };
        self.call_copy(net, CopyKey { member, step: None }, &vals, rng)
    }

    /// Call copy `key` of a network on values: inputs materialized to the current rows,
    /// heads `[rows, ...]`.
    pub fn call_copy(
        &mut self,
        net: usize,
        key: CopyKey,
        vals: &[Val],
        rng: &mut Rng,
    ) -> Result<Vec<Tensor>> {
        let def = &self.model.program.nets[net];
        let rows = vals
            .iter()
            .filter_map(Val::rows)
            .max()
            .unwrap_or(self.base_rows);
        let inputs: Vec<Tensor> = vals
            .iter()
            .zip(&def.inputs)
            .map(|(v, input)| {
                let mut shape = value_shape(&input.ty);
                if input.set {
                    // A context set `[rows, N, ...T]`: its size is the value's.
                    let n = match v {
                        Val::Rows(t) => t.dim(1)?,
                        Val::Shared(t) => t.dim(0)?,
                    };
                    shape.insert(0, n);
                }
                // A per-row value keeps its own rows (the network lifts what it needs).
                materialize(v, v.rows().unwrap_or(rows), &shape)
            })
            .collect::<Result<_>>()?;
        let mut ctx = NetCtx {
            train: self.train,
            rng,
            prune: self.prune,
        };
        self.model
            .net(net, key)?
            .forward_rows(&inputs, rows, &mut ctx)
    }

    /// Take the values of the plan's shared locals from the guide's pass (`guide`), so
    /// that this (model) pass does not compute them again.
    pub fn adopt(&mut self, guide: &Frame<'_>, shared: &[crate::plan::SharedLocal]) {
        for s in shared {
            if let (Some(v), Some(slot)) = (guide.locals.get(s.guide), self.locals.get_mut(s.model))
            {
                *slot = v.clone();
                self.skipped[s.model] = true;
            }
        }
    }

    /// Mark the locals of the block `stmts` that nothing reads once the sites of
    /// [`Overrides`] take their given parameters (the encoder's outputs of a refined site,
    /// evaluated once per refinement step otherwise), so that their `let`s are skipped.
    /// A local stays live when a site that runs, a live `let`, anything inside a loop, or
    /// `keep` (the locals another pass adopts) reads it. Reads follow definitions, so one
    /// backward sweep over the top-level statements settles it.
    pub fn skip_dead_lets(&mut self, stmts: &[Stmt], keep: &[crate::ir::LocalId]) {
        if self.overrides.is_empty() {
            return;
        }
        let mut live = vec![false; self.skipped.len()];
        let scope = crate::ir::walk::Scope::of(self.model.program_body(self.pass));
        for &k in keep {
            if let Some(l) = live.get_mut(k) {
                *l = true;
            }
        }
        fn reads(e: &crate::ir::Expr, live: &mut [bool]) {
            crate::ir::walk::for_each_subexpr(e, &mut |e| {
                if let ExprKind::Ref(Ref::Local(id)) = &e.kind {
                    if let Some(l) = live.get_mut(*id) {
                        *l = true;
                    }
                }
            });
        }
        fn site_reads(site: &Site, scope: &crate::ir::walk::Scope<'_>, live: &mut [bool]) {
            for e in crate::ir::walk::site_exprs(site, scope) {
                reads(e, live)
            }
        }
        fn all_reads(stmts: &[Stmt], scope: &crate::ir::walk::Scope<'_>, live: &mut [bool]) {
            for stmt in stmts {
                match stmt {
                    Stmt::Let { value, .. } => reads(value, live),
                    Stmt::Sample(site) => site_reads(site, scope, live),
                    Stmt::Loop { body, .. } => all_reads(body, scope, live),
                }
            }
        }
        for stmt in stmts.iter().rev() {
            match stmt {
                Stmt::Let { targets, value, .. } => {
                    if targets.iter().any(|t| live.get(t.local) == Some(&true)) {
                        reads(value, &mut live);
                    }
                }
                Stmt::Sample(site) => {
                    let given = site.step.is_none() && self.overrides.get(site.var, None).is_some();
                    if given {
                        // The distribution's arguments are replaced; the flows still run.
                        for f in &site.flows {
                            f.context.iter().for_each(|e| reads(e, &mut live));
                        }
                    } else {
                        site_reads(site, &scope, &mut live);
                    }
                }
                Stmt::Loop { body, .. } => all_reads(body, &scope, &mut live),
            }
        }
        for stmt in stmts {
            if let Stmt::Let { targets, .. } = stmt {
                for t in targets {
                    if let (Some(d), Some(false)) =
                        (self.skipped.get_mut(t.local), live.get(t.local))
                    {
                        *d = true;
                    }
                }
            }
        }
    }

    /// The locals whose `let`s are skipped (in a guide pass: those
    /// [`Frame::skip_dead_lets`] marked).
    #[cfg(test)]
    pub(crate) fn skipped_locals(&self) -> Vec<usize> {
        (0..self.skipped.len())
            .filter(|&i| self.skipped[i])
            .collect()
    }

    /// Run the statements of a block.
    pub fn run(&mut self, stmts: &[Stmt], rng: &mut Rng) -> Result<()> {
        for stmt in stmts {
            match stmt {
                Stmt::Let { targets, .. }
                    if targets
                        .iter()
                        .all(|t| self.skipped.get(t.local) == Some(&true)) => {}
                Stmt::Let { targets, value, .. } => {
                    let heads: Vec<Val> = match (&value.kind, targets.len()) {
                        (
                            ExprKind::NetCall {
                                net,
                                args,
                                head: None,
                            },
                            n,
                        ) if n > 1 || targets.first().and_then(|t| t.head).is_some() => self
                            .call_net(*net, args, rng)?
                            .into_iter()
                            .map(Val::Rows)
                            .collect(),
                        _ => vec![self.eval(value, rng)?],
                    };
                    for (k, target) in targets.iter().enumerate() {
                        let v = heads
                            .get(target.head.unwrap_or(k))
                            .or_else(|| heads.first())
                            .cloned()
                            .ok_or_else(|| {
                                candle_core::Error::Msg("internal error: empty let".into())
                            })?;
                        self.set_local(target.local, target.step.as_ref(), v)?;
                    }
                }
                Stmt::Loop { loop_id, body, .. } => {
                    let def = &self.model.program_body(self.pass).loops[*loop_id];
                    let (from, to) = (def.from, def.to);
                    for t in from..=to {
                        if let Some(slot) = self.loop_values.get_mut(*loop_id) {
                            *slot = t;
                        }
                        self.run(body, rng)?;
                    }
                }
                Stmt::Sample(site) => self.site(site, rng)?,
            }
        }
        Ok(())
    }

    fn set_local(&mut self, id: usize, step: Option<&Step>, v: Val) -> Result<()> {
        let step = match step {
            Some(s) => Some(self.step_index(s)?),
            None => None,
        };
        let slot = self
            .locals
            .get_mut(id)
            .ok_or_else(|| candle_core::Error::Msg("internal error: no such local".into()))?;
        match step {
            None => *slot = LocalVal::Single(v),
            Some(t) => {
                let t = t.max(0) as usize;
                if !matches!(slot, LocalVal::Steps(_)) {
                    *slot = LocalVal::Steps(Vec::new());
                }
                if let LocalVal::Steps(steps) = slot {
                    if steps.len() <= t {
                        steps.resize(t + 1, None);
                    }
                    steps[t] = Some(v);
                }
            }
        }
        Ok(())
    }

    /// Build the distribution of a site at `rows` rows: from its arguments, or, for a
    /// guide site with a substitution (see [`Overrides`]), from the given parameters.
    fn dist(
        &mut self,
        site: &Site,
        step: Option<i64>,
        rows: usize,
        rng: &mut Rng,
    ) -> Result<DistValue> {
        if self.pass == Pass::Guide {
            if let Some(params) = self.overrides.get(site.var, step) {
                let params = params
                    .iter()
                    .map(|(p, t)| Ok((*p, lift(t, rows)?)))
                    .collect::<Result<Vec<_>>>()?;
                return DistValue::new(site.dist.kind, params, None, &site.ty.shape);
            }
        }
        build_dist(self, &site.dist, &site.ty, rows, rng)
    }

    /// A distribution of the block at `rows` rows, its arguments evaluated now.
    pub fn dist_of(
        &mut self,
        dist: &crate::ir::Dist,
        ty: &Type,
        rows: usize,
        rng: &mut Rng,
    ) -> Result<DistValue> {
        build_dist(self, dist, ty, rows, rng)
    }

    fn site(&mut self, site: &Site, rng: &mut Rng) -> Result<()> {
        let step = match &site.step {
            Some(s) => Some(self.step_index(s)?),
            None => None,
        };
        match (self.pass, site.var) {
            (Pass::Guide, SiteVar::Latent(id)) => self.guide_site(site, id, step, rng)?,
            (Pass::Guide, SiteVar::Data(id)) => self.partial_site(site, id, step, rng)?,
            (Pass::Joint, SiteVar::Latent(id)) => {
                // `guide exact` over finite latents: every value, weighted later by the
                // joint density.
                let dist = self.dist(site, step, self.sample_rows, rng)?;
                let (rows, value, dist) = support_rows(&dist, self.sample_rows)?;
                self.sample_rows = rows;
                self.store_latent(id, step, Val::Rows(value.clone()));
                self.records
                    .push(SiteRecord::new(site.var, step, dist, value, true));
            }
            (Pass::Score, SiteVar::Latent(id)) => {
                let global = self.model.program.latents[id].global;
                let rows = if global { 1 } else { self.sample_rows };
                let p = self.dist(site, step, rows, rng)?;
                let v = match step {
                    Some(t) => self
                        .latent_steps
                        .get(id)
                        .and_then(|s| s.get((t - 1).max(0) as usize))
                        .cloned()
                        .flatten()
                        .ok_or_else(|| {
                            candle_core::Error::Msg(
                                "internal error: stepped latent not drawn by the guide".into(),
                            )
                        })?,
                    None => self.latent_value(id)?,
                };
                let value = match &v {
                    Val::Shared(t) if global => t.unsqueeze(0)?,
                    v => materialize(v, rows, &value_shape(&site.ty))?,
                };
                self.records
                    .push(SiteRecord::new(site.var, step, p, value, false));
            }
            (Pass::Prior, SiteVar::Latent(id)) => {
                let global = self.model.program.latents[id].global;
                let rows = if global { 1 } else { self.sample_rows };
                let p = self.dist(site, step, rows, rng)?;
                let value = p.sample(rng)?;
                self.keep_draw(site, id, step, global, p, value, None)?;
            }
            (Pass::Score | Pass::Joint, SiteVar::Data(id)) => {
                let rows = self.sample_rows;
                let p = self.dist(site, step, rows, rng)?;
                let v = self.data_at(id, step)?;
                let value = materialize(&v, rows, &value_shape(&site.ty))?;
                self.records
                    .push(SiteRecord::new(site.var, step, p, value, false));
            }
            (Pass::Prior, SiteVar::Data(id)) => {
                let rows = self.sample_rows;
                let p = self.dist(site, step, rows, rng)?;
                let value = p.sample(rng)?;
                // Later statements read the drawn value (`x[t]` feeding a recurrent cell).
                self.keep_data(id, step, Val::Rows(value.clone()));
                self.records
                    .push(SiteRecord::new(site.var, step, p, value, false));
            }
        }
        Ok(())
    }

    /// A guide site of a latent: its distribution at the current rows (one row for a
    /// global latent), drawn by the estimator the plan gave it.
    fn guide_site(
        &mut self,
        site: &Site,
        id: usize,
        step: Option<i64>,
        rng: &mut Rng,
    ) -> Result<()> {
        let global = self.model.program.latents[id].global;
        let rows = if global { 1 } else { self.sample_rows };
        let q = self.dist(site, step, rows, rng)?;
        let estimator = self.model.estimator(site.var)?;
        match estimator.draw(self, site, &q, rng)? {
            Draw::Sampled { value, log_q } => {
                self.keep_draw(site, id, step, global, q, value, log_q)
            }
            Draw::Replaced {
                value,
                dist,
                uncertainty,
            } => {
                self.keep_draw(site, id, step, global, dist, value, None)?;
                if let Some(r) = self.records.last_mut() {
                    r.uncertainty = Some(uncertainty);
                }
                Ok(())
            }
            Draw::Enumerated {
                rows,
                value,
                dist,
                log_q,
            } => {
                self.weigh(rows, log_q)?;
                self.store_latent(id, step, Val::Rows(value.clone()));
                self.records
                    .push(SiteRecord::new(site.var, step, dist, value, true));
                Ok(())
            }
        }
    }

    /// Multiply the rows to `rows` and add `log_q` (`[rows]`) to their log-weights.
    fn weigh(&mut self, rows: usize, log_q: Tensor) -> Result<()> {
        self.log_weight = Some(match &self.log_weight {
            Some(w) => (lift(w, rows)? + log_q)?,
            None => log_q,
        });
        self.sample_rows = rows;
        Ok(())
    }

    /// The `[rows]` observed mask of `partial` variable `id` (`None`: all observed).
    pub fn observed_mask(&self, id: DataId, rows: usize) -> Result<Option<Tensor>> {
        match self.observed.get(id) {
            Some(Some(m)) => Ok(Some(lift(m, rows)?)),
            _ => Ok(None),
        }
    }

    /// The guide's site of a `partial` data variable: observed rows keep the data's
    /// value, hidden rows take the guide's value (the `condition` of a labelled row).
    /// The score pass reads the result in place of the data; the objective tells the two
    /// kinds of rows apart by the mask. Enumerated, the site multiplies the rows like an
    /// enumerated latent, and an observed row's value is forced by the log-weights (0 for
    /// the observed value, `-inf` for the others). A batch with every value observed is
    /// not drawn at all.
    fn partial_site(
        &mut self,
        site: &Site,
        id: DataId,
        step: Option<i64>,
        rng: &mut Rng,
    ) -> Result<()> {
        let before = self.sample_rows;
        let q = self.dist(site, step, before, rng)?;
        let shape = value_shape(&site.ty);
        let data = materialize(&self.data_at(id, step)?, before, &shape)?;
        let mask = match self.observed_mask(id, before)? {
            Some(m) if m.min(0)?.to_scalar::<f32>()? < 0.5 => Some(m),
            _ => None,
        };
        let Some(mask) = mask else {
            self.keep_data(id, step, Val::Rows(data.clone()));
            self.records
                .push(SiteRecord::new(site.var, step, q, data, false));
            return Ok(());
        };
        let estimator = self.model.estimator(site.var)?;
        let (dist, value, enumerated) = match estimator.draw(self, site, &q, rng)? {
            Draw::Enumerated {
                rows,
                value,
                dist,
                log_q,
            } => {
                // Observed rows: log 1 for the data's value, log 0 for the others.
                let data_rows = lift(&data, rows)?;
                let same = (value
                    .sub(&data_rows)?
                    .abs()?
                    .flatten_from(1)?
                    .max(1)?
                    .lt(0.5))?;
                let forced =
                    same.where_cond(&log_q.zeros_like()?, &log_q.affine(0.0, f64::NEG_INFINITY)?)?;
                let seen = lift(&mask, rows)?.gt(0.5)?;
                self.weigh(rows, seen.where_cond(&forced, &log_q)?)?;
                (dist, value, true)
            }
            Draw::Replaced { .. } => {
                bail!("a random function applies to latents, not to `partial` data")
            }
            Draw::Sampled { value: drawn, .. } => {
                let mut dims = vec![before];
                dims.extend(std::iter::repeat_n(1, shape.len()));
                let m = mask.reshape(dims)?;
                let value =
                    (data.broadcast_mul(&m)? + drawn.broadcast_mul(&m.affine(-1.0, 1.0)?)?)?;
                (q, value, false)
            }
        };
        self.keep_data(id, step, Val::Rows(value.clone()));
        self.records
            .push(SiteRecord::new(site.var, step, dist, value, enumerated));
        Ok(())
    }

    /// Remember a latent drawn in this pass (one shared copy for a global latent) and
    /// record the site.
    #[allow(clippy::too_many_arguments)]
    fn keep_draw(
        &mut self,
        site: &Site,
        id: usize,
        step: Option<i64>,
        global: bool,
        dist: DistValue,
        value: Tensor,
        log_q: Option<Tensor>,
    ) -> Result<()> {
        let val = if global {
            Val::Shared(value.squeeze(0)?)
        } else {
            Val::Rows(value.clone())
        };
        self.store_latent(id, step, val);
        let mut record = SiteRecord::new(site.var, step, dist, value, false);
        record.log_q = log_q;
        self.records.push(record);
        Ok(())
    }

    fn store_latent(&mut self, id: usize, step: Option<i64>, v: Val) {
        if let Some(slot) = self.latents.get_mut(id) {
            store_step(slot, &mut self.latent_steps[id], step, v);
        }
    }

    /// Remember the value a pass gave data variable `id` (a draw of the prior, or a
    /// `partial` variable's completed value), whole or at one step.
    fn keep_data(&mut self, id: DataId, step: Option<i64>, v: Val) {
        if let (Some(slot), Some(steps)) =
            (self.drawn_data.get_mut(id), self.drawn_steps.get_mut(id))
        {
            store_step(slot, steps, step, v);
        }
    }

    /// The value of data variable `id` (at one step, for a stepped site): drawn or
    /// completed in this pass, else the batch's.
    fn data_at(&self, id: DataId, step: Option<i64>) -> Result<Val> {
        match step {
            None => self.data_value(id),
            Some(t) => {
                if let Some(Some(v)) = self
                    .drawn_steps
                    .get(id)
                    .and_then(|s| s.get((t - 1).max(0) as usize))
                {
                    return Ok(v.clone());
                }
                narrow_step(&self.data_value(id)?, t)
            }
        }
    }
}

/// The steps of a `[T, ...]` variable (all set) stacked along axis 1, at the largest
/// row count among them.
fn stack_steps(steps: &[Option<Val>], ty: &Type, base_rows: usize) -> Result<Val> {
    let rows = steps
        .iter()
        .filter_map(|s| s.as_ref().and_then(Val::rows))
        .max()
        .unwrap_or(base_rows);
    let step_shape = value_shape(&Type::new(ty.domain, ty.shape[1..].to_vec()));
    let parts: Vec<Tensor> = steps
        .iter()
        .flatten()
        .map(|v| materialize(v, rows, &step_shape).and_then(|t| t.unsqueeze(1)))
        .collect::<Result<_>>()?;
    Ok(Val::Rows(Tensor::cat(&parts, 1)?))
}

/// Store a value whole (`step = None`) or at step `t` (1-based) of a sequence.
fn store_step(whole: &mut Option<Val>, steps: &mut Vec<Option<Val>>, step: Option<i64>, v: Val) {
    match step {
        None => *whole = Some(v),
        Some(t) => {
            let i = (t - 1).max(0) as usize;
            if steps.len() <= i {
                steps.resize(i + 1, None);
            }
            steps[i] = Some(v);
        }
    }
}

/// The distribution of a site, its parameters materialized to `[rows, ...]`.
fn build_dist(
    frame: &mut Frame<'_>,
    dist: &crate::ir::Dist,
    ty: &Type,
    rows: usize,
    rng: &mut Rng,
) -> Result<DistValue> {
    let mut params = Vec::with_capacity(dist.args.len());
    for (p, e) in &dist.args {
        let v = frame.eval(e, rng)?;
        let shape = param_shape(dist.kind, &e.ty, ty);
        params.push((*p, materialize(&v, rows, &shape)?));
    }
    match &dist.component {
        Some(c) => {
            let Some((_, logits)) = params.into_iter().next() else {
                bail!("internal error: a mixture without weights")
            };
            let k = logits.dims().last().copied().unwrap_or(1);
            // Component parameters carry a leading K axis.
            let mut comp_ty = ty.clone();
            comp_ty.shape.insert(0, k);
            let mut comp = Vec::with_capacity(c.args.len());
            for (p, e) in &c.args {
                let v = frame.eval(e, rng)?;
                let shape = param_shape(c.kind, &e.ty, &comp_ty);
                comp.push((*p, materialize(&v, rows, &shape)?));
            }
            DistValue::mixture(logits, c.kind, comp, &ty.shape)
        }
        None => DistValue::new(dist.kind, params, None, &ty.shape),
    }
}

/// The per-row shape a distribution parameter is materialized to.
fn param_shape(kind: crate::ir::DistKind, arg_ty: &Type, ty: &Type) -> Vec<usize> {
    use crate::ir::DistKind as K;
    match kind {
        // Categorical parameters have the variable's shape plus K (the one-hot axis).
        K::Categorical => value_shape(ty),
        // Mixture weights: [K].
        K::Mixture => arg_ty.shape.clone(),
        // A scalar component parameter stays scalar per row; others fill the variable.
        _ if arg_ty.shape.is_empty() => Vec::new(),
        _ => ty.shape.clone(),
    }
}

fn narrow_step(v: &Val, t: i64) -> Result<Val> {
    if t < 1 {
        bail!("internal error: step {t} of a variable indexed from 1");
    }
    let i = (t - 1) as usize;
    match v {
        Val::Rows(x) => Ok(Val::Rows(x.narrow(1, i, 1)?.squeeze(1)?)),
        Val::Shared(x) => Ok(Val::Shared(x.narrow(0, i, 1)?.squeeze(0)?)),
    }
}

/// `mu[c]`: contract `c`'s one-hot axis with `mu`'s leading `K` axis.
fn select(base: &Val, index: &Val, base_ty: &Type, out_ty: &Type) -> Result<Val> {
    let k = base_ty.shape.first().copied().unwrap_or(1);
    let rest: usize = value_shape(out_ty).iter().product::<usize>().max(1);
    let out_shape = value_shape(out_ty);
    let idx = match index {
        Val::Rows(t) => t.clone(),
        Val::Shared(t) => t.unsqueeze(0)?,
    };
    let rows = idx.dim(0)?;
    let idx = idx.reshape((rows, k))?;
    let out = match base {
        Val::Shared(m) => idx.matmul(&m.reshape((k, rest))?)?,
        Val::Rows(m) => {
            let m = lift(m, rows)?.reshape((rows, k, rest))?;
            idx.unsqueeze(1)?.matmul(&m)?.squeeze(1)?
        }
    };
    let mut dims = vec![rows];
    dims.extend(out_shape);
    Ok(Val::Rows(out.reshape(dims)?))
}

fn map_val(v: &Val, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Val> {
    Ok(match v {
        Val::Shared(t) => Val::Shared(f(t)?),
        Val::Rows(t) => Val::Rows(f(t)?),
    })
}

/// `log(1 + exp(x))`, stable for large |x|.
pub fn softplus(t: &Tensor) -> Result<Tensor> {
    let pos = t.relu()?;
    let tail = (t.abs()?.neg()?.exp()? + 1.0)?.log()?;
    pos + tail
}

fn unary(op: UnaryFn, t: &Tensor) -> Result<Tensor> {
    match op {
        UnaryFn::Neg => t.neg(),
        UnaryFn::Exp => t.exp(),
        UnaryFn::Log => t.log(),
        UnaryFn::Sqrt => t.sqrt(),
        UnaryFn::Abs => t.abs(),
        UnaryFn::Softplus => softplus(t),
        UnaryFn::Sigmoid => candle_nn::ops::sigmoid(t),
        UnaryFn::Tanh => t.tanh(),
        UnaryFn::Relu => t.relu(),
    }
}

fn binary(op: BinaryOp, a: &Val, at: &Type, b: &Val, bt: &Type, out: &Type) -> Result<Val> {
    let out_shape = value_shape(out);
    let rows = a.rows().into_iter().chain(b.rows()).max();
    let prep = |v: &Val, ty: &Type| -> Result<Tensor> {
        match (v, rows) {
            (Val::Shared(t), _) => Ok(t.clone()),
            (Val::Rows(t), Some(rows)) => {
                let t = lift(t, rows)?;
                if value_shape(ty).is_empty() && !out_shape.is_empty() {
                    let mut dims = vec![rows];
                    dims.extend(std::iter::repeat_n(1, out_shape.len()));
                    t.reshape(dims)
                } else {
                    Ok(t)
                }
            }
            (Val::Rows(t), None) => Ok(t.clone()),
        }
    };
    let (x, y) = (prep(a, at)?, prep(b, bt)?);
    let r = match op {
        BinaryOp::Add => x.broadcast_add(&y)?,
        BinaryOp::Sub => x.broadcast_sub(&y)?,
        BinaryOp::Mul => x.broadcast_mul(&y)?,
        BinaryOp::Div => x.broadcast_div(&y)?,
    };
    Ok(if rows.is_some() {
        Val::Rows(r)
    } else {
        Val::Shared(r)
    })
}
