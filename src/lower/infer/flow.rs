//! Inverse autoregressive flows (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling
//! 2016): `z ~ Normal(m, s) |> iaf(ar, h, steps = K)` draws `z` from the diagonal guide by
//! reparameterization, then pushes it through K steps, each its own copy of the `made`
//! network `ar` (`ar.step1`, `ar.step2`, ...; see `nets`' documentation), called as
//! `ar(z, h)`. Step k computes `(m_k, s_k) = ar_k(z, h)`, `σ = sigmoid(s_k + 2)`,
//! `z ← σ ⊙ z + (1 − σ) ⊙ m_k` and `log q ← log q − Σ log σ`: the numerically stable update
//! of the paper's Algorithm 2. The `+ 2` is its forget-gate bias: at initialization (`s`
//! near 0) σ ≈ 0.88, so every step starts close to the identity; it is the same as
//! initializing the bias of the `s` head at 2 (Adam's updates do not depend on the
//! offset). The order of `z` is reversed between steps, so that each variable is
//! conditioned on all the others over two steps. Because output i of a MADE depends only
//! on `z[0..i]`, each step's Jacobian is triangular with diagonal σ, and `log q` of the
//! final `z` is exact.

use super::{Draw, SiteEstimator};
use crate::ir::{NetId, Program, Site};
use crate::lower::dist::DistValue;
use crate::lower::eval::{Frame, Val};
use crate::lower::nets::CopyKey;
use crate::plan::SitePlan;
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// The bias added to the `s` head before the sigmoid (see the module documentation).
pub const FORGET_BIAS: f64 = 2.0;

pub struct Iaf {
    /// Per flow of the site: its network, its steps, and the number of steps of the same
    /// network's flows before it in the guide (the copy of its first step is `first + 1`).
    flows: Vec<(NetId, usize, usize)>,
    /// The indices of the `m` and `s` heads of each flow's network.
    heads: Vec<(usize, usize)>,
}

impl Iaf {
    /// The flows the plan gives a site, each step's copy numbered as the plan says.
    pub fn new(program: &Program, site: &SitePlan) -> Result<Iaf> {
        let mut flows = Vec::new();
        let mut heads = Vec::new();
        for f in &site.flows {
            let Some(def) = program.nets.get(f.net) else {
                bail!("internal error: no network {}", f.net)
            };
            let find = |name: &str, default: usize| {
                def.heads
                    .iter()
                    .position(|h| h.name == name)
                    .unwrap_or(default)
            };
            flows.push((f.net, f.steps, f.first));
            heads.push((find("m", 0), find("s", 1)));
        }
        Ok(Iaf { flows, heads })
    }
}

/// One IAF step on `z` `[R, Z]` with the step's heads `m`, `s`: the new `z` and the
/// `Σ log σ` it subtracts from `log q` `[R]`.
pub fn step(z: &Tensor, m: &Tensor, s: &Tensor) -> Result<(Tensor, Tensor)> {
    let shifted = (s + FORGET_BIAS)?;
    let sigma = candle_nn::ops::sigmoid(&shifted)?;
    let next = ((&sigma * z)? + (sigma.affine(-1.0, 1.0)? * m)?)?;
    // log σ(x) = −softplus(−x), stable for both signs.
    let log_sigma = crate::lower::eval::softplus(&shifted.neg()?)?.neg()?;
    Ok((
        next,
        crate::lower::dist::special::sum_after_rows(&log_sigma)?,
    ))
}

/// `z` with its last axis in reverse order.
fn reversed(z: &Tensor) -> Result<Tensor> {
    let n = z.dim(candle_core::D::Minus1)?;
    let idx: Vec<u32> = (0..n as u32).rev().collect();
    let idx = Tensor::new(idx, z.device())?;
    z.index_select(&idx, z.rank() - 1)
}

impl SiteEstimator for Iaf {
    fn strategy(&self) -> &'static str {
        "reparameterized"
    }

    fn draw(
        &self,
        frame: &mut Frame<'_>,
        site: &Site,
        q: &DistValue,
        rng: &mut Rng,
    ) -> Result<Draw> {
        let mut z = q.rsample(rng)?; // [R, Z]
        let mut log_q = q.log_prob(&z)?; // [R]
        let mut taken = 0usize;
        for (((net, steps, first), (mh, sh)), flow) in
            self.flows.iter().zip(&self.heads).zip(&site.flows)
        {
            let context: Vec<Val> = flow
                .context
                .iter()
                .map(|e| frame.eval(e, rng))
                .collect::<Result<_>>()?;
            for k in 0..*steps {
                if taken > 0 {
                    z = reversed(&z)?;
                }
                let mut inputs = vec![Val::Rows(z.clone())];
                inputs.extend(context.iter().cloned());
                let key = CopyKey {
                    member: None,
                    step: Some(first + k + 1),
                };
                let heads = frame.call_copy(*net, key, &inputs, rng)?;
                let (Some(m), Some(s)) = (heads.get(*mh), heads.get(*sh)) else {
                    bail!("internal error: a flow network without its `m` and `s` heads")
                };
                let (next, log_sigma) = step(&z, m, s)?;
                z = next;
                log_q = (log_q - log_sigma)?;
                taken += 1;
            }
        }
        Ok(Draw::Sampled {
            value: z,
            log_q: Some(log_q),
        })
    }
}
