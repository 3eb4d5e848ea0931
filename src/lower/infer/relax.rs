//! `@relax(temperature)`: the Concrete / Gumbel-softmax relaxation of a Categorical or
//! Bernoulli site (Maddison et al. 2017, Jang et al. 2017), reparameterized through the
//! relaxed value. Its KL is the exact `Σ q log q/p` of the unrelaxed pair where the plan
//! says analytic.

use super::{Draw, SiteEstimator};
use crate::ir::Site;
use crate::lower::dist::DistValue;
use crate::lower::eval::Frame;
use crate::rng::Rng;
use candle_core::Result;

pub struct Relax {
    pub temperature: f64,
}

impl SiteEstimator for Relax {
    fn strategy(&self) -> &'static str {
        "relax"
    }

    fn draw(&self, _: &mut Frame<'_>, _: &Site, q: &DistValue, rng: &mut Rng) -> Result<Draw> {
        Ok(Draw::Sampled {
            value: q.relaxed_sample(self.temperature, rng)?,
            log_q: None,
        })
    }
}
