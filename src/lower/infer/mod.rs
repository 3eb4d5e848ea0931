//! The estimators of guide sites (LANGUAGE.md section 8), one implementation of
//! [`SiteEstimator`] per strategy the plan chooses (`vic compile --emit plan`): how the
//! site draws its value, the log q of what it drew, the terms it adds to the objective
//! and the parameters it owns. Lowering builds one per guide site from the plan
//! ([`build`]) and never derives a strategy again; the interpreter (`eval`) hands each
//! guide site's distribution to its estimator, and the objective asks each for its extra
//! terms.
//!
//! - [`reparameterized`]: a pathwise draw (`Normal`, `LogNormal`, ...);
//! - [`flow`]: a pathwise draw pushed through inverse autoregressive flow steps, with the
//!   exact log q of the result;
//! - [`enumerate`]: every value of a finite support, the rows multiplied (see `eval`'s
//!   module documentation), each row weighted by its `q`;
//! - [`relax`]: a Concrete / Gumbel-softmax draw, pathwise through the relaxed value;
//! - [`reinforce`]: a detached draw and the score-function surrogate with a learned
//!   baseline, which it owns (`@baseline.NAME`);
//! - [`random_function`]: a pathwise draw from the site's Normal with a Gaussian-process
//!   error added to its parameters, whose KL it adds once per dataset and whose
//!   parameters it owns (`@gp.NAME.*`, trained with the guide's).
//!
//! `guide exact` is not a per-site estimator: its posterior is computed for the whole
//! program at once (`exact`, `exact_discrete`), and the plan says so
//! ([`crate::plan::Inference::Exact`]).

pub mod enumerate;
pub mod flow;
pub mod fused_gp;
pub mod random_function;
pub mod reinforce;
pub mod relax;
pub mod reparameterized;

use super::dist::DistValue;
use super::eval::Frame;
use super::params::ParamStore;
use super::SiteRecord;
use crate::ir::{Guide, Program, Site, SiteVar};
use crate::plan::{Estimator, SitePlan};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};

/// What an estimator did at its site.
pub enum Draw {
    /// One value per current row, `[rows, ...value]`. `log_q` is the log-density of the
    /// value when it is not `q.log_prob(value)` (a transformed draw); `None` otherwise.
    Sampled {
        value: Tensor,
        log_q: Option<Tensor>,
    },
    /// A value drawn from `dist`, which the estimator built in place of the site's `q`
    /// (a random function's error added to its parameters) and which the record keeps:
    /// its KL and log q are `dist`'s. `uncertainty` `[rows]` is the estimator's own
    /// measure of how uncertain `dist` is (the GP's predictive variance).
    Replaced {
        value: Tensor,
        dist: DistValue,
        uncertainty: Tensor,
    },
    /// Every value of the support: the `R0` current rows become `rows = R0 * K` (row
    /// `r * K + k` holds the k-th value), `value` `[rows, ...value]`, `q` lifted to those
    /// rows in `dist`, and `log_q` `[rows]` the log q of each row's value, with gradient.
    Enumerated {
        rows: usize,
        value: Tensor,
        dist: DistValue,
        log_q: Tensor,
    },
}

/// What the objective tells an estimator about a pass, for its extra terms.
pub struct TermsCx<'a> {
    /// The site's record in the guide trace.
    pub record: &'a SiteRecord,
    /// Each row's objective (the bound's integrand, KL weighted as in the loss),
    /// detached, `[rows]`.
    pub objective: &'a Tensor,
    /// Each row's share of the loss's mean over examples (examples' weights, over their
    /// samples, times the detached q of enumerated values), with the rows where the site
    /// draws nothing (observed `partial` values) at 0. `[rows]`.
    pub row_weight: &'a Tensor,
}

/// A term an estimator adds to the loss.
pub struct ExtraTerm {
    /// Added to the loss as it is (a surrogate is written value-neutral: its value 0, its
    /// gradient the estimator's).
    pub loss: Tensor,
    /// The value the estimator's own state tracks (a baseline's target), passed back to
    /// [`SiteEstimator::after_step`] after the optimizer step.
    pub target: Option<f64>,
}

/// One strategy of a guide site.
pub trait SiteEstimator: Send + Sync {
    /// The strategy's name, as the plan prints it.
    fn strategy(&self) -> &'static str;

    /// Draw the site's value from its guide distribution `q`, built at the frame's
    /// current rows (one row for a global latent). The frame is there for strategies
    /// that evaluate more of the guide (a flow's context).
    fn draw(
        &self,
        frame: &mut Frame<'_>,
        site: &Site,
        q: &DistValue,
        rng: &mut Rng,
    ) -> Result<Draw>;

    /// Whether it adds a training surrogate to the loss ([`SiteEstimator::extra_term`]);
    /// the objective prepares the rows' objective and weights only when some estimator
    /// does.
    fn has_surrogate(&self) -> bool {
        false
    }

    /// What it adds to the loss besides the site's KL term (none by default).
    fn extra_term(&self, cx: &TermsCx<'_>) -> Result<Option<ExtraTerm>> {
        let _ = cx;
        Ok(None)
    }

    /// A KL term its own variational parameters add to the objective once per dataset
    /// (a random function's GP posterior against its prior), scaled per example as a
    /// global latent's.
    fn dataset_kl(&self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The checkpoint-name prefix of parameters it owns that the spec's optimizer trains
    /// with the guide's (`@gp.z.`): they join the guide's group under `alternate`.
    fn trained_prefix(&self) -> Option<String> {
        None
    }

    /// Checkpoint names of the parameters it owns (trained by its own rule, not the
    /// spec's optimizer).
    fn parameters(&self) -> Vec<String> {
        Vec::new()
    }

    /// After an optimizer step, with the target its extra term reported.
    fn after_step(&self, store: &ParamStore, target: f64) -> Result<()> {
        let _ = (store, target);
        Ok(())
    }
}

/// The estimator of a planned guide site, its own parameters created in `store`.
pub fn build(
    program: &Program,
    site: &SitePlan,
    store: &ParamStore,
) -> Result<Box<dyn SiteEstimator>> {
    Ok(match &site.estimator {
        Estimator::Reparameterized if !site.flows.is_empty() => {
            Box::new(flow::Iaf::new(program, site)?)
        }
        Estimator::Reparameterized => Box::new(reparameterized::Reparameterized),
        // The refinement itself runs around the objective (`lower::refine`); the site
        // draws by reparameterization at whatever parameters it is given.
        Estimator::Refine { .. } => Box::new(reparameterized::Refined),
        Estimator::Enumerate => Box::new(enumerate::Enumerate),
        Estimator::Relax { temperature } => Box::new(relax::Relax {
            temperature: *temperature,
        }),
        Estimator::Reinforce => Box::new(reinforce::Reinforce::new(
            &var_name(program, site.var),
            store,
        )?),
        Estimator::RandomFunction { .. } => {
            Box::new(random_function::RandomFunction::new(program, site, store)?)
        }
        other => bail!(
            "the `{}` strategy of `{}` is not lowered by this release",
            other.name(),
            site.name
        ),
    })
}

/// The first guide site of `var` in the IR.
pub fn guide_site(program: &Program, var: SiteVar) -> Result<&Site> {
    let mut found = None;
    if let Guide::Amortized(body) = &program.guide {
        crate::ir::walk::for_each_site(body, |s, _| {
            if found.is_none() && s.var == var {
                found = Some(s);
            }
        });
    }
    match found {
        Some(s) => Ok(s),
        None => bail!(
            "internal error: the guide has no site of `{}`",
            var_name(program, var)
        ),
    }
}

/// The name of a site's variable.
pub fn var_name(program: &Program, var: SiteVar) -> String {
    match var {
        SiteVar::Latent(id) => program.latents.get(id).map(|d| d.name.clone()),
        SiteVar::Data(id) => program.data.get(id).map(|d| d.name.clone()),
    }
    .unwrap_or_default()
}
