//! The pathwise estimator: `z = g(ε; λ)` with parameter-free noise ε, so gradients flow
//! through the value (the default for continuous sites).

use super::{Draw, SiteEstimator};
use crate::ir::Site;
use crate::lower::dist::DistValue;
use crate::lower::eval::Frame;
use crate::rng::Rng;
use candle_core::Result;

pub struct Reparameterized;

/// An `@refine` site: drawn as [`Reparameterized`] is, at the parameters the refinement
/// substitutes (`lower::refine`).
pub struct Refined;

impl SiteEstimator for Refined {
    fn strategy(&self) -> &'static str {
        "refine"
    }

    fn draw(&self, _: &mut Frame<'_>, _: &Site, q: &DistValue, rng: &mut Rng) -> Result<Draw> {
        Ok(Draw::Sampled {
            value: q.rsample(rng)?,
            log_q: None,
        })
    }
}

impl SiteEstimator for Reparameterized {
    fn strategy(&self) -> &'static str {
        "reparameterized"
    }

    fn draw(&self, _: &mut Frame<'_>, _: &Site, q: &DistValue, rng: &mut Rng) -> Result<Draw> {
        Ok(Draw::Sampled {
            value: q.rsample(rng)?,
            log_q: None,
        })
    }
}
