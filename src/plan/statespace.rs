//! Whether a linear-Gaussian model is a state-space model, whose exact posterior a
//! Kalman filter and smoother compute step by step (`lower::kalman`) instead of one
//! dense Gaussian over every step's latents.
//!
//! The shape: optional latents before the loop (the initial state, with priors free of
//! latents), then one `for t in 1:T` loop whose stepped latents `z[t]` are the state at
//! step t and whose stepped observations `x[t]` are that step's data, then nothing that
//! samples. Markov of order one, decided on the program's text:
//! - a state latent's prior reads the previous step only: `z[t-1]`, or a sequence local
//!   read at `[t - 1]` whose steps are functions of that step's latents
//!   (`let s[t] = z[t]`), whose start `s[0]` may read the initial latents;
//! - an observation reads the current step only: `z[t]`, or such a local at `[t]`.
//!
//! A dependence that reaches further back (a carried state `s[t] = f(s[t-1], z[t])`, a
//! fixed step `z[3]`, an initial latent read directly inside the loop) is not a
//! first-order chain, and the model is left to the dense computation or refused.

use crate::ir::walk::{self, Dataflow};
use crate::ir::{
    Body, DataId, Expr, ExprKind, LatentId, LocalId, LoopId, Program, Ref, SiteVar, Stmt,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The parts of a state-space model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSpace {
    /// The loop over time.
    pub loop_id: LoopId,
    pub steps: usize,
    /// Latents sampled before the loop (the initial state), in statement order.
    pub initial: Vec<LatentId>,
    /// Latents sampled at every step (the state), in statement order.
    pub state: Vec<LatentId>,
    /// Data observed at every step, in statement order.
    pub observed: Vec<DataId>,
}

/// What an expression depends on among the latents, relative to the current step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Deps {
    /// Step offsets of state latents read (0: this step, -1: the previous one).
    offsets: BTreeSet<i64>,
    /// Reads the initial latents through a sequence's start, at the first step.
    initial: bool,
    /// Reads an initial latent directly (at every step, if inside the loop).
    direct: bool,
    /// Reads latents in a way no first-order chain allows.
    other: bool,
}

impl Deps {
    fn join(&mut self, o: Deps) {
        self.offsets.extend(o.offsets);
        self.initial |= o.initial;
        self.direct |= o.direct;
        self.other |= o.other;
    }

    fn shifted(&self, by: i64) -> Deps {
        Deps {
            offsets: self.offsets.iter().map(|o| o + by).collect(),
            ..self.clone()
        }
    }
}

struct Fold<'a> {
    program: &'a Program,
    body: &'a Body,
    loop_id: LoopId,
    initial: &'a [LatentId],
    /// Per local: the dependencies of its value at a step (relative to that step) and of
    /// its start or single value (absolute: initial latents only).
    at_step: Vec<Deps>,
    start: Vec<Deps>,
}

impl Dataflow for Fold<'_> {
    type Fact = Deps;

    fn join(&mut self, into: &mut Deps, other: Deps) {
        into.join(other)
    }

    fn reference(&mut self, r: Ref, e: &Expr) -> Deps {
        let _ = e;
        let mut d = Deps::default();
        match r {
            Ref::Latent(l) if self.initial.contains(&l) => d.direct = true,
            // A state latent read whole.
            Ref::Latent(_) => d.other = true,
            Ref::Local(l) => {
                d = self.start.get(l).cloned().unwrap_or_default();
                d.join(self.at_step.get(l).cloned().unwrap_or_default());
            }
            _ => {}
        }
        d
    }
}

impl Fold<'_> {
    /// The dependencies of `e`, with steps resolved: `z[t+k]` is offset k, `s[t+k]` the
    /// sequence's step value shifted by k (and its start, when `t+k` can be 0).
    fn deps(&mut self, e: &Expr) -> Deps {
        if let ExprKind::Step { base, step } = &e.kind {
            let in_loop = step.loop_id == Some(self.loop_id);
            return match (&base.kind, in_loop) {
                (ExprKind::Ref(Ref::Latent(l)), true) if !self.initial.contains(l) => Deps {
                    offsets: BTreeSet::from([step.offset]),
                    ..Deps::default()
                },
                (ExprKind::Ref(Ref::Local(l)), true) => {
                    let mut d = self
                        .at_step
                        .get(*l)
                        .cloned()
                        .unwrap_or_default()
                        .shifted(step.offset);
                    let from = self
                        .body
                        .loops
                        .get(self.loop_id)
                        .map(|l| l.from as i64)
                        .unwrap_or(1);
                    if from + step.offset <= 0 {
                        d.join(self.start.get(*l).cloned().unwrap_or_default());
                    }
                    d
                }
                // `s[0]` read outside the loop: the start.
                (ExprKind::Ref(Ref::Local(l)), false) if step.offset == 0 => {
                    self.start.get(*l).cloned().unwrap_or_default()
                }
                _ => {
                    let mut d = self.deps(base);
                    if !d.offsets.is_empty() || d.initial {
                        d.other = true;
                    }
                    d
                }
            };
        }
        match &e.kind {
            ExprKind::Ref(r) => self.reference(*r, e),
            _ => {
                let mut acc = Deps::default();
                for c in walk::children(e) {
                    let d = self.deps(c);
                    acc.join(d);
                }
                acc
            }
        }
    }
}

/// The state-space form of `program`'s model, if it has one.
pub fn state_space(program: &Program) -> Option<StateSpace> {
    let body = &program.model;
    // Top level: lets and initial latents, one loop, then no site.
    let mut initial = Vec::new();
    let mut the_loop: Option<(LoopId, &[Stmt])> = None;
    for st in &body.stmts {
        match st {
            Stmt::Let { .. } => {}
            Stmt::Sample(site) => match (site.var, the_loop) {
                (SiteVar::Latent(l), None) if site.step.is_none() => initial.push(l),
                _ => return None,
            },
            Stmt::Loop {
                loop_id, body: b, ..
            } => {
                if the_loop.is_some() {
                    return None;
                }
                the_loop = Some((*loop_id, b));
            }
        }
    }
    let (loop_id, stmts) = the_loop?;
    let def = body.loops.get(loop_id)?;
    if def.from != 1 {
        return None;
    }
    let (mut state, mut observed) = (Vec::new(), Vec::new());
    for st in stmts {
        match st {
            Stmt::Loop { .. } => return None,
            Stmt::Let { .. } => {}
            Stmt::Sample(site) => {
                let step = site.step?;
                if step.loop_id != Some(loop_id) || step.offset != 0 {
                    return None;
                }
                match site.var {
                    SiteVar::Latent(l) if !state.contains(&l) => state.push(l),
                    SiteVar::Data(d) if !observed.contains(&d) => observed.push(d),
                    _ => return None,
                }
            }
        }
    }
    if state.is_empty() || program.latents.iter().any(|l| l.global) {
        return None;
    }
    for &l in &state {
        if program.latents.get(l)?.ty.shape.first() != Some(&def.to) {
            return None;
        }
    }
    let n = body.locals.len();
    let mut fold = Fold {
        program,
        body,
        loop_id,
        initial: &initial,
        at_step: vec![Deps::default(); n],
        start: vec![Deps::default(); n],
    };
    // The locals' dependencies, to a fixed point (a carried state grows its offsets
    // without bound: stop once any reaches back more than one step).
    // Each target: its local, whether it defines a step in the loop, and whether it
    // starts a sequence (`s[0]`, where reading an initial latent is the chain's start).
    type Targets = Vec<(LocalId, bool, bool)>;
    let mut lets: Vec<(Targets, &Expr)> = Vec::new();
    walk::for_each_let(body, |targets, value, _, scope| {
        let in_loop = scope.loops.contains(&loop_id);
        let t: Vec<(LocalId, bool, bool)> = targets
            .iter()
            .map(|t| {
                let stepped = in_loop && t.step.is_some_and(|s| s.loop_id == Some(loop_id));
                let start = t.step.is_some_and(|s| s.loop_id.is_none());
                (t.local, stepped, start)
            })
            .collect();
        lets.push((t, value));
    });
    for _ in 0..(4 * n + 4) {
        let before = (fold.at_step.clone(), fold.start.clone());
        for (targets, value) in &lets {
            let d = fold.deps(value);
            for &(l, stepped, start) in targets {
                let mut d = d.clone();
                if start && d.direct {
                    d.direct = false;
                    d.initial = true;
                }
                let slot = if stepped {
                    &mut fold.at_step[l]
                } else {
                    &mut fold.start[l]
                };
                slot.join(d);
            }
        }
        if fold
            .at_step
            .iter()
            .any(|d| d.offsets.iter().any(|o| *o < -1))
        {
            return None;
        }
        if before == (fold.at_step.clone(), fold.start.clone()) {
            break;
        }
    }
    let _ = fold.program;
    // Initial latents: priors free of latents.
    for st in &body.stmts {
        if let Stmt::Sample(site) = st {
            if fold.deps_dist(&site.dist) != Deps::default() {
                return None;
            }
        }
    }
    for st in stmts {
        if let Stmt::Sample(site) = st {
            let d = fold.deps_dist(&site.dist);
            let allowed: &[i64] = match site.var {
                SiteVar::Latent(_) => &[-1],
                SiteVar::Data(_) => &[0],
            };
            let initial_ok = matches!(site.var, SiteVar::Latent(_));
            if d.other
                || d.direct
                || d.offsets.iter().any(|o| !allowed.contains(o))
                || (d.initial && !initial_ok)
            {
                return None;
            }
        }
    }
    Some(StateSpace {
        loop_id,
        steps: def.to,
        initial,
        state,
        observed,
    })
}

impl Fold<'_> {
    fn deps_dist(&mut self, dist: &crate::ir::Dist) -> Deps {
        let mut acc = Deps::default();
        for (_, e) in &dist.args {
            let d = self.deps(e);
            acc.join(d);
        }
        if let Some(c) = &dist.component {
            let d = self.deps_dist(c);
            acc.join(d);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::e2e::program;

    fn lds(transition: &str, emission: &str, extra: &str) -> String {
        format!(
            "
const T = 6
data x : Real[T, 3]
latent z : Real[T, 2]
{extra}
param q : Positive = 0.5
param r : Positive[3] = 1.0
net trans(z: Real[2]) -> Real[2] = linear()
net emit(z: Real[2]) -> Real[3] = linear()
model {{
  let s[0] = zeros(2)
  for t in 1:T {{
    z[t] ~ Normal({transition}, q)
    x[t] ~ Normal({emission}, r)
    let s[t] = z[t]
  }}
}}
guide exact
"
        )
    }

    fn ss(src: &str) -> Option<StateSpace> {
        state_space(&program(src).unwrap())
    }

    #[test]
    fn a_linear_dynamical_system_is_a_chain() {
        let s = ss(&lds("trans(s[t - 1])", "emit(z[t])", "")).unwrap();
        assert_eq!(
            (s.steps, s.initial.len(), s.state, s.observed),
            (6, 0, vec![0], vec![0])
        );
        // The emission may read the state through the sequence at the current step.
        let through = lds("trans(s[t - 1])", "emit(s[t] * 2)", "").replace(
            "    x[t] ~ Normal(emit(s[t] * 2), r)\n    let s[t] = z[t]",
            "    let s[t] = z[t]\n    x[t] ~ Normal(emit(s[t] * 2), r)",
        );
        assert!(ss(&through).is_some());
    }

    #[test]
    fn an_initial_latent_starts_the_chain() {
        let src = lds("trans(s[t - 1])", "emit(z[t])", "latent z0 : Real[2]").replace(
            "  let s[0] = zeros(2)",
            "  z0 ~ Normal(0, 1)\n  let s[0] = z0",
        );
        let s = ss(&src).unwrap();
        assert_eq!(s.initial, vec![1]);
    }

    #[test]
    fn what_reaches_further_back_is_not_a_chain() {
        // An emission reading the previous state.
        assert!(ss(&lds("trans(s[t - 1])", "emit(s[t - 1])", "")).is_none());
        // A carried state: s[t] depends on all earlier steps.
        let carried = lds("trans(s[t - 1])", "emit(z[t])", "")
            .replace("let s[t] = z[t]", "let s[t] = z[t] + s[t - 1]");
        assert!(ss(&carried).is_none());
        // An initial latent read directly at every step.
        let src = lds("trans(s[t - 1]) + z0", "emit(z[t])", "latent z0 : Real[2]").replace(
            "  let s[0] = zeros(2)",
            "  z0 ~ Normal(0, 1)\n  let s[0] = zeros(2)",
        );
        assert!(ss(&src).is_none());
    }
}
