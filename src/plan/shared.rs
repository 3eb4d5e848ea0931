//! Which `model` locals the guide has already computed. A VRNN's model and guide both
//! write `let h[t] = cell(h[t - 1], x[t], z[t])`; with the latents the guide drew, the two
//! sequences are equal step for step, so the model's pass can take the guide's values and
//! skip the recurrent cell. The same holds for DRAW's decoder state and canvas.
//!
//! Two locals are *equivalent* when every definition of one (a whole value, or the value
//! at a step pattern such as `[0]` or `[t]`) has a matching definition of the other whose
//! expression is equivalent: the same operations on the same numbers, data, latents and
//! params, at the same steps of loops with the same ranges, with locals equivalent in
//! turn, through *deterministic* networks (point weights, no dropout, no batch norm: a
//! network that draws noise or updates running statistics per call must be called
//! twice). Recursive sequences make this a fixed point: start from every candidate pair
//! and drop the pairs whose definitions differ until none is dropped (every sequence is
//! defined from earlier steps, so the greatest fixed point is also the least).

use super::SharedLocal;
use crate::ir::walk::{self, Scope};
use crate::ir::{
    Arch, Body, Expr, ExprKind, LetTarget, LocalId, LoopDef, Norm, Program, Step, Weights,
};
use std::collections::BTreeSet;

/// One definition of a local: its step pattern, the head it takes, its value, and the
/// ranges of the loops around it.
struct Def<'ir> {
    step: Option<Step>,
    head: Option<usize>,
    value: &'ir Expr,
    loops: Vec<(usize, usize)>,
    body: &'ir Body,
}

fn defs<'ir>(body: &'ir Body) -> Vec<Vec<Def<'ir>>> {
    let mut out: Vec<Vec<Def<'ir>>> = (0..body.locals.len()).map(|_| Vec::new()).collect();
    walk::for_each_let(
        body,
        |targets: &'ir [LetTarget], value, _, scope: &Scope<'ir>| {
            let loops: Vec<(usize, usize)> = scope
                .loop_defs()
                .iter()
                .map(|l: &&LoopDef| (l.from, l.to))
                .collect();
            for (k, t) in targets.iter().enumerate() {
                if let Some(slot) = out.get_mut(t.local) {
                    slot.push(Def {
                        step: t.step,
                        // A tuple `let` of a network call takes head k (or the target's own).
                        head: t.head.or((targets.len() > 1).then_some(k)),
                        value,
                        loops: loops.clone(),
                        body,
                    });
                }
            }
        },
    );
    out
}

/// The model locals whose values equal a guide local's.
pub fn locals(program: &Program, model: &Body, guide: &Body) -> Vec<SharedLocal> {
    let (dm, dg) = (defs(model), defs(guide));
    let mut pairs: BTreeSet<(LocalId, LocalId)> = BTreeSet::new();
    for (m, lm) in model.locals.iter().enumerate() {
        for (g, lg) in guide.locals.iter().enumerate() {
            if lm.ty == lg.ty
                && lm.steps == lg.steps
                && dm[m].len() == dg[g].len()
                && !dm[m].is_empty()
            {
                pairs.insert((m, g));
            }
        }
    }
    loop {
        let keep: BTreeSet<(LocalId, LocalId)> = pairs
            .iter()
            .copied()
            .filter(|&(m, g)| {
                let cx = Cx {
                    program,
                    pairs: &pairs,
                };
                dm[m]
                    .iter()
                    .all(|d| dg[g].iter().any(|e| cx.same_def(d, e)))
            })
            .collect();
        if keep.len() == pairs.len() {
            break;
        }
        pairs = keep;
    }
    let mut out: Vec<SharedLocal> = Vec::new();
    for (m, g) in pairs {
        if out.iter().all(|s| s.model != m) {
            out.push(SharedLocal {
                name: model.locals[m].name.clone(),
                model: m,
                guide: g,
            });
        }
    }
    out
}

struct Cx<'a> {
    program: &'a Program,
    pairs: &'a BTreeSet<(LocalId, LocalId)>,
}

impl Cx<'_> {
    fn same_def(&self, d: &Def<'_>, e: &Def<'_>) -> bool {
        d.head == e.head
            && d.loops == e.loops
            && self.same_step(d.step.as_ref(), e.step.as_ref(), d, e)
            && self.same_expr(d.value, e.value, d, e)
    }

    /// Steps are the same when their offsets are and they count along loops of the same
    /// depth (the ranges are compared with the definitions).
    fn same_step(&self, a: Option<&Step>, b: Option<&Step>, d: &Def<'_>, e: &Def<'_>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let depth = |s: &Step, def: &Def<'_>| {
                    s.loop_id
                        .map(|l| def.body.loops.get(l).map(|l| (l.from, l.to)))
                };
                a.offset == b.offset && depth(a, d) == depth(b, e)
            }
            _ => false,
        }
    }

    fn deterministic(&self, net: usize) -> bool {
        self.program.nets.get(net).is_some_and(|n| {
            n.weights == Weights::Point
                && match &n.arch {
                    Arch::Mlp { dropout, norm, .. } => *dropout == 0.0 && *norm != Norm::Batch,
                    _ => true,
                }
        })
    }

    fn same_expr(&self, a: &Expr, b: &Expr, d: &Def<'_>, e: &Def<'_>) -> bool {
        use ExprKind as K;
        if a.ty != b.ty {
            return false;
        }
        let kinds = match (&a.kind, &b.kind) {
            (K::Number(x), K::Number(y)) | (K::Fill(x), K::Fill(y)) => x == y,
            (K::Ref(x), K::Ref(y)) => match (x, y) {
                (crate::ir::Ref::Local(l), crate::ir::Ref::Local(m)) => {
                    self.pairs.contains(&(*l, *m))
                }
                (crate::ir::Ref::LoopVar(l), crate::ir::Ref::LoopVar(m)) => {
                    let range =
                        |l: usize, def: &Def<'_>| def.body.loops.get(l).map(|l| (l.from, l.to));
                    range(*l, d) == range(*m, e)
                }
                (x, y) => x == y,
            },
            (K::Step { step: s, .. }, K::Step { step: t, .. }) => {
                self.same_step(Some(s), Some(t), d, e)
            }
            (K::Select { .. }, K::Select { .. }) | (K::Concat(_), K::Concat(_)) => true,
            (
                K::NetCall {
                    net: n, head: h, ..
                },
                K::NetCall {
                    net: m, head: k, ..
                },
            ) => n == m && h == k && self.deterministic(*n),
            (K::Unary { op: o, .. }, K::Unary { op: p, .. }) => o == p,
            (K::Binary { op: o, .. }, K::Binary { op: p, .. }) => o == p,
            (K::Reduce { op: o, .. }, K::Reduce { op: p, .. }) => o == p,
            _ => false,
        };
        let (ca, cb) = (walk::children(a), walk::children(b));
        kinds && ca.len() == cb.len() && ca.iter().zip(&cb).all(|(x, y)| self.same_expr(x, y, d, e))
    }
}

#[cfg(test)]
mod tests {
    use crate::arch::e2e::program;

    fn shared(src: &str) -> Vec<String> {
        let p = program(src).unwrap();
        super::super::plan(&p)
            .shared
            .into_iter()
            .map(|s| s.name)
            .collect()
    }

    const VRNN: &str = "
const T = 3
data x : Binary[T, 4]
latent z : Real[T, 2]
net cell(h: Real[5], x: Binary[4], z: Real[2]) -> Real[5] = gru()
net prior(h: Real[5]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [5])
net post(h: Real[5], x: Binary[4]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [5])
net emit(h: Real[5], z: Real[2]) -> Real[4] = mlp(hidden = [5])
model {
  let h[0] = zeros(5)
  for t in 1:T {
    let (pm, ps) = prior(h[t - 1])
    z[t] ~ Normal(pm, ps)
    x[t] ~ Bernoulli(logits = emit(h[t - 1], z[t]))
    let h[t] = cell(h[t - 1], x[t], z[t])
  }
}
guide {
  let h[0] = zeros(5)
  for t in 1:T {
    let (qm, qs) = post(h[t - 1], x[t])
    z[t] ~ Normal(qm, qs)
    let h[t] = cell(h[t - 1], x[t], z[t])
  }
}
";

    #[test]
    fn a_vrnn_state_is_shared_and_its_networks_heads_are_not() {
        assert_eq!(shared(VRNN), ["h"]);
    }

    #[test]
    fn a_different_start_an_input_or_a_noisy_network_breaks_the_sharing() {
        assert!(shared(&VRNN.replacen("let h[0] = zeros(5)", "let h[0] = ones(5)", 1)).is_empty());
        let swapped = VRNN.replacen(
            "cell(h[t - 1], x[t], z[t])",
            "cell(h[t - 1], x[t], z[t] * 2)",
            1,
        );
        assert!(shared(&swapped).is_empty());
        // Dropout draws a mask per call: two calls are not one.
        let noisy = VRNN.replace(
            "-> Real[5] = gru()",
            "-> Real[5] = mlp(hidden = [5], dropout = 0.5)",
        );
        assert!(noisy.contains("dropout"));
        assert!(shared(&noisy).is_empty());
        let plain = VRNN.replace("-> Real[5] = gru()", "-> Real[5] = mlp(hidden = [5])");
        assert_eq!(shared(&plain), ["h"]);
    }
}
