//! `@reinforce`: the score-function estimator (Williams 1992) with a learned scalar
//! baseline per site. The value is drawn detached, so no pathwise gradient reaches q's
//! parameters; the estimator adds the surrogate `Σ_rows w (f − b) log q(value)` with `f`
//! the row's objective and `b` the baseline, value-neutral (its value 0), whose gradient
//! is the score-function estimate. The baseline, checkpointed as `@baseline.NAME`, follows
//! the mean objective its rows saw: `b ← b + rate (f − b)` after each step.
//!
//! An input-dependent baseline (a network of `x`) would reduce the variance further but
//! needs a way to name it in the spec.

use super::{Draw, ExtraTerm, SiteEstimator, TermsCx};
use crate::ir::Site;
use crate::lower::dist::DistValue;
use crate::lower::eval::{lift, Frame};
use crate::lower::params::ParamStore;
use crate::lower::BASELINE_PREFIX;
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// The step rate of the baseline: an exponential moving average of the objective over
/// about ten steps. The baseline learns by this rule rather than by the spec's
/// optimizer, whose step size (Adam: about `lr` per step) would take a scalar hundreds
/// of thousands of steps to reach an ELBO of a few hundred nats.
pub const BASELINE_RATE: f64 = 0.1;

pub struct Reinforce {
    /// `@baseline.NAME`.
    key: String,
    baseline: Tensor,
}

impl Reinforce {
    pub fn new(name: &str, store: &ParamStore) -> Result<Reinforce> {
        let key = format!("{BASELINE_PREFIX}{name}");
        let baseline = store.custom(&key, &[], |_| vec![0.0])?;
        Ok(Reinforce { key, baseline })
    }
}

impl SiteEstimator for Reinforce {
    fn strategy(&self) -> &'static str {
        "reinforce"
    }

    fn draw(&self, _: &mut Frame<'_>, _: &Site, q: &DistValue, rng: &mut Rng) -> Result<Draw> {
        Ok(Draw::Sampled {
            value: q.sample(rng)?.detach(),
            log_q: None,
        })
    }

    fn has_surrogate(&self) -> bool {
        true
    }

    fn extra_term(&self, cx: &TermsCx<'_>) -> Result<Option<ExtraTerm>> {
        let w = cx.row_weight;
        let rows = w.dim(0)?;
        let total = w.sum_all()?.to_scalar::<f32>()? as f64;
        if total <= 0.0 {
            return Ok(None);
        }
        let log_q = lift(&cx.record.log_q()?, rows)?;
        let advantage = cx.objective.broadcast_sub(&self.baseline)?.detach();
        let surrogate = (advantage * log_q)?.mul(w)?.sum_all()?;
        let mean_f = ((cx.objective * w)?.sum_all()?.to_scalar::<f32>()? as f64) / total;
        Ok(Some(ExtraTerm {
            loss: (surrogate.detach() - surrogate)?,
            target: Some(mean_f),
        }))
    }

    fn parameters(&self) -> Vec<String> {
        vec![self.key.clone()]
    }

    /// One plain SGD step of rate [`BASELINE_RATE`] on `(f - b)^2 / 2`.
    fn after_step(&self, store: &ParamStore, target: f64) -> Result<()> {
        let named = store.named();
        let Some((_, v)) = named.iter().find(|(n, _)| *n == self.key) else {
            bail!("internal error: no baseline `{}`", self.key)
        };
        let b = v.as_tensor().to_scalar::<f32>()? as f64;
        if target.is_finite() {
            v.set(&Tensor::new(
                (b + BASELINE_RATE * (target - b)) as f32,
                v.device(),
            )?)?;
        }
        Ok(())
    }
}
