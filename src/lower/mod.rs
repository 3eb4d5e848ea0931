//! Lowering: the typed IR and its plan turned into candle computations, and the one
//! generic objective (ELBO / IWAE) that the trainer drives. Every model family goes
//! through this code: nothing here knows what a VAE or a CVAE is.
//!
//! Value conventions shared by every part of lowering:
//! - every runtime value is an f32 tensor whose first axis is the *rows* axis `R`
//!   (examples x samples x enumerated values): a `Real[D]` value is `[R, D]`, a scalar
//!   value is `[R]`;
//! - a `Cat(K)` value is one-hot (exactly, or relaxed by Gumbel-softmax) along a
//!   trailing axis of length `K`: `Cat(K)` is `[R, K]`, `Cat(K)[T]` is `[R, T, K]`;
//!   indexing `mu[c]` is a contraction of that axis with `mu`'s leading `K` axis;
//! - `Binary` values are 0.0 / 1.0, `Count` values whole numbers, as f32;
//! - a context set `Set[T]` of size N is `[R, N, ...T]`;
//! - distribution parameters are broadcast to `[R, ...event shape]` (Categorical:
//!   `[R, ...shape, K]`); log-densities sum every event axis and return `[R]`.

mod avx;
mod cpu;
pub use cpu::unfused;
pub mod dist;
pub mod eval;
pub mod exact;
pub mod exact_discrete;
pub mod infer;
pub mod kalman;
pub mod linalg;
pub mod nets;
pub mod objective;
pub mod params;
pub mod refine;

use crate::ir::{Body, Domain, ExactPosterior, Guide, Init, NetId, ParamId, Program, SiteVar};
use crate::plan::{ExactMethod, Inference, Plan};
use candle_core::{bail, Device, Result, Tensor};
use dist::DistValue;
use eval::Pass;
use infer::SiteEstimator;
use nets::Network;
use params::ParamStore;

/// What one `~` statement did in a pass: its distribution and the value it drew or
/// scored (`[rows, ...]`).
#[derive(Clone, Debug)]
pub struct SiteRecord {
    pub var: SiteVar,
    /// The time step of a stepped site.
    pub step: Option<i64>,
    pub dist: DistValue,
    pub value: Tensor,
    /// The site was enumerated: `value` lists its support (see `eval`'s documentation)
    /// and `dist` is lifted to the same rows.
    pub enumerated: bool,
    /// `log q(value)` per row when the estimator computed it otherwise than
    /// `dist.log_prob(value)` (a transformed draw); `None` otherwise.
    pub log_q: Option<Tensor>,
    /// Per row, the estimator's measure of its own uncertainty about `dist` (a random
    /// function's predictive variance), `[rows]`.
    pub uncertainty: Option<Tensor>,
}

impl SiteRecord {
    pub fn new(
        var: SiteVar,
        step: Option<i64>,
        dist: DistValue,
        value: Tensor,
        enumerated: bool,
    ) -> SiteRecord {
        SiteRecord {
            var,
            step,
            dist,
            value,
            enumerated,
            log_q: None,
            uncertainty: None,
        }
    }

    /// The log-density of the recorded value under the recorded distribution, `[rows]`.
    pub fn log_q(&self) -> Result<Tensor> {
        match &self.log_q {
            Some(t) => Ok(t.clone()),
            None => self.dist.log_prob(&self.value),
        }
    }
}

/// A program lowered onto a device: its networks built, its parameters created, and an
/// estimator for every guide site, as its plan says.
pub struct LoweredModel {
    pub program: Program,
    pub plan: Plan,
    pub store: ParamStore,
    /// Every network's copies (one for most; see `nets`' documentation).
    nets: Vec<nets::NetCopies>,
    /// Unconstrained tensors of the `param`s, by `ParamId`.
    params: Vec<Tensor>,
    /// The estimator of each guide site's variable (one per variable: a stepped site's
    /// steps share it), from the plan.
    estimators: Vec<(SiteVar, Box<dyn SiteEstimator>)>,
}

/// The checkpoint prefix of parameters an estimator owns (`@baseline.NAME` of
/// `@reinforce`). `@` cannot start a spec name, so no network or param can collide with
/// it.
pub const BASELINE_PREFIX: &str = "@baseline.";

/// softplus⁻¹(y) = log(exp(y) - 1), for initializing Positive params.
fn softplus_inverse(y: f64) -> f64 {
    if y > 20.0 {
        y
    } else {
        (y.exp_m1()).max(1e-30).ln()
    }
}

impl LoweredModel {
    /// Build every network and param of `program` in declaration order, taking values
    /// from `store` (seeded or loaded), then the estimators of the plan's guide sites.
    pub fn new(program: Program, store: ParamStore) -> Result<LoweredModel> {
        if let Some(why) = refusal(&program) {
            bail!("{why}");
        }
        let plan = crate::plan::plan(&program);
        // Network initialization draws from the run's seeded stream.
        let mut init_rng = store.fork_rng()?;
        let members = crate::arch::training_members(&program);
        let nets = nets::build_all(&program, &store, members.as_deref(), &mut init_rng)?;
        let mut params = Vec::with_capacity(program.params.len());
        for def in &program.params {
            params.push(param_tensor(def, &store)?);
        }
        let mut estimators: Vec<(SiteVar, Box<dyn SiteEstimator>)> = Vec::new();
        if plan.inference == Inference::Amortized {
            for site in &plan.sites {
                if !estimators.iter().any(|(v, _)| *v == site.var) {
                    estimators.push((site.var, infer::build(&program, site, &store)?));
                }
            }
        }
        Ok(LoweredModel {
            program,
            plan,
            store,
            nets,
            params,
            estimators,
        })
    }

    /// Whether the model's log p(x) has a closed form (whatever the guide), which
    /// evaluation reports beside the bound.
    pub fn has_exact_log_px(&self) -> bool {
        matches!(
            self.plan.exact_evidence,
            Some(ExactMethod::LinearGaussian | ExactMethod::Kalman)
        )
    }

    /// The exact log p(x) and posterior means of a linear-Gaussian model, by the plan's
    /// method: one dense Gaussian, or a Kalman filter and smoother.
    pub fn exact_gaussian(
        &self,
        batch: &objective::Batch,
        rng: &mut crate::rng::Rng,
    ) -> Result<exact::Exact> {
        let method = match self.plan.inference {
            Inference::Exact(m) => Some(m),
            _ => self.plan.exact_evidence,
        };
        match method {
            Some(ExactMethod::LinearGaussian) => self.exact_linear_gaussian(batch, rng),
            Some(ExactMethod::Kalman) => self.exact_kalman(batch, rng),
            _ => bail!("internal error: the model has no exact Gaussian marginal likelihood"),
        }
    }

    /// How the plan computes the posterior.
    pub fn inference(&self) -> &Inference {
        &self.plan.inference
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// Network `id` (its copy `key`: a flow step's, a member's; the default key for a
    /// network with one copy).
    pub fn net(&self, id: NetId, key: nets::CopyKey) -> Result<&dyn Network> {
        match self.nets.get(id).and_then(|n| n.get(key)) {
            Some(n) => Ok(n),
            None => bail!(
                "internal error: network `{}` has no copy `{}`",
                self.program
                    .nets
                    .get(id)
                    .map(|d| d.name.as_str())
                    .unwrap_or("?"),
                key.prefix("")
            ),
        }
    }

    /// Every copy of network `id`.
    pub fn net_copies(&self, id: NetId) -> Result<&nets::NetCopies> {
        match self.nets.get(id) {
            Some(n) => Ok(n),
            None => bail!("internal error: no network {id}"),
        }
    }

    /// The estimator of the guide site of `var`.
    pub fn estimator(&self, var: SiteVar) -> Result<&dyn SiteEstimator> {
        match self.estimators.iter().find(|(v, _)| *v == var) {
            Some((_, e)) => Ok(e.as_ref()),
            None => bail!(
                "internal error: the plan has no estimator for `{}`",
                infer::var_name(&self.program, var)
            ),
        }
    }

    /// A param's value in its constrained domain.
    pub fn param_value(&self, id: ParamId) -> Result<Tensor> {
        let (Some(t), Some(def)) = (self.params.get(id), self.program.params.get(id)) else {
            bail!("internal error: no param {id}")
        };
        match def.ty.domain {
            Domain::Positive => eval::softplus(t),
            Domain::Unit => candle_nn::ops::sigmoid(t),
            // softmax_last_dim has no backward pass in candle 0.11.
            Domain::Simplex => candle_nn::ops::softmax(t, candle_core::D::Minus1),
            _ => Ok(t.clone()),
        }
    }

    /// After an optimizer step: each estimator's own state follows the target its extra
    /// term reported (a `@reinforce` baseline moves towards the objective its rows saw).
    pub fn after_step(&self, targets: &[(SiteVar, f64)]) -> Result<()> {
        for (var, target) in targets {
            self.estimator(*var)?.after_step(&self.store, *target)?;
        }
        Ok(())
    }

    /// Checkpoint names of what estimators own and train by their own rules: the
    /// optimizer leaves them alone.
    pub fn estimator_parameters(&self) -> Vec<String> {
        self.estimators
            .iter()
            .flat_map(|(_, e)| e.parameters())
            .collect()
    }

    /// The block a pass runs.
    pub fn program_body(&self, pass: Pass) -> &Body {
        match (pass, &self.program.guide) {
            (Pass::Guide, Guide::Amortized(body)) => body,
            _ => &self.program.model,
        }
    }

    /// Checkpoint-name prefixes of the guide's parameters (networks and params used only
    /// in `guide`): the E-step group of `schedule = alternate(...)`. Everything else is
    /// the model's (M-step) group. A network's prefix ends with its `.`, and a param's is
    /// its whole name, so use [`LoweredModel::is_guide_parameter`] to match them.
    pub fn guide_parameter_prefixes(&self) -> Vec<String> {
        let Guide::Amortized(guide) = &self.program.guide else {
            return Vec::new();
        };
        let used_in = |body: &Body| {
            let mut nets = std::collections::BTreeSet::new();
            let mut params = std::collections::BTreeSet::new();
            crate::lower::objective::visit_refs(body, &mut |r| match r {
                Used::Net(n) => {
                    nets.insert(n);
                }
                Used::Param(p) => {
                    params.insert(p);
                }
            });
            (nets, params)
        };
        let (gn, gp) = used_in(guide);
        let (mn, mp) = used_in(&self.program.model);
        let mut out: Vec<String> = gn
            .difference(&mn)
            .filter_map(|&n| self.program.nets.get(n).map(|d| format!("{}.", d.name)))
            .collect();
        out.extend(
            gp.difference(&mp)
                .filter_map(|&p| self.program.params.get(p).map(|d| d.name.clone())),
        );
        // What the guide's estimators own and the optimizer trains (a GP's `@gp.z.`).
        out.extend(
            self.estimators
                .iter()
                .filter_map(|(_, e)| e.trained_prefix()),
        );
        out
    }

    /// Whether checkpoint name `name` belongs to the guide's parameters: a guide
    /// network's (`enc.layer0.weight` under `enc.`) or a guide param's (exactly `s`, not
    /// `scales` or `summary.layer0.weight`).
    pub fn is_guide_parameter(prefixes: &[String], name: &str) -> bool {
        prefixes.iter().any(|p| {
            if p.ends_with('.') {
                name.starts_with(p.as_str())
            } else {
                name == p
            }
        })
    }
}

/// The unconstrained tensor of a `param`, initialized in its constrained space.
fn param_tensor(def: &crate::ir::ParamDef, store: &ParamStore) -> Result<Tensor> {
    let n = def.ty.numel().max(1);
    let domain = def.ty.domain;
    let init = def.init.clone();
    store.custom(&def.name, &def.ty.shape, |rng| {
        let constrained: Vec<f64> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Value(v) => vec![v; n],
            Init::Normal { mean, std } => rng
                .normal_vec(n)
                .into_iter()
                .map(|z| mean + std * z as f64)
                .collect(),
            Init::Uniform { low, high } => rng
                .uniform_vec(n)
                .into_iter()
                .map(|u| low + (high - low) * u as f64)
                .collect(),
        };
        constrained
            .into_iter()
            .map(|y| match domain {
                Domain::Positive => softplus_inverse(y.max(1e-6)) as f32,
                Domain::Unit => {
                    let y = y.clamp(1e-6, 1.0 - 1e-6);
                    (y / (1.0 - y)).ln() as f32
                }
                Domain::Simplex => y.max(1e-6).ln() as f32,
                _ => y as f32,
            })
            .collect()
    })
}

/// Why `program` cannot be trained by this release, if it cannot.
/// `t.broadcast_as(shape)`, or `t` itself when it has that shape already. candle records a
/// broadcast to the same shape as an op whose backward pass is a sum over no axes, a full
/// strided copy of the gradient (two per VAE step over the `[128, 784]` logits).
pub(crate) fn broadcast_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.dims() == shape {
        Ok(t.clone())
    } else {
        t.broadcast_as(shape)
    }
}

pub fn refusal(program: &Program) -> Option<String> {
    not_lowered_yet(program).map(|what| {
        format!(
            "{what} is not lowered by this release of vic: the spec checks and compiles \
             (`vic check`, `vic compile --emit plan`), but `vic train` cannot run it yet"
        )
    })
}

/// The first construct of `program` that lowering does not handle yet, in words.
pub fn not_lowered_yet(program: &Program) -> Option<String> {
    use crate::ir::Strategy;
    if let Guide::Exact { posterior, .. } = &program.guide {
        match posterior {
            ExactPosterior::LinearGaussian => {
                if crate::plan::plan(program).exact_evidence.is_none() {
                    return Some(
                        "`guide exact` on a linear-Gaussian model with a global latent, or with a \
                         loop that is not a first-order chain (the Kalman filter takes `z[t]` \
                         reading step t-1 and `x[t]` reading step t)"
                            .into(),
                    );
                }
            }
            // Finite discrete latents: the joint support is enumerated (`exact_discrete`).
            ExactPosterior::Enumerate => {}
            ExactPosterior::EnumerateLinearGaussian => {
                return Some(
                    "`guide exact` over discrete and linear-Gaussian latents together".into(),
                )
            }
        }
    }
    if let Some(crate::ir::MetaConfig {
        family: crate::ir::Family::Datasets(_),
        ..
    }) = &program.meta
    {
        return Some("a `datasets(...)` family".into());
    }
    let mut out = None;
    if let Guide::Amortized(body) = &program.guide {
        crate::ir::walk::for_each_site(body, |site, _| {
            if out.is_some() {
                return;
            }
            let name = crate::arch::site_name(program, site);
            if let Some(s) = &site.strategy {
                if !matches!(
                    s,
                    Strategy::Reparameterized
                        | Strategy::Enumerate
                        | Strategy::Relax { .. }
                        | Strategy::Reinforce
                        | Strategy::Refine { .. }
                        | Strategy::RandomFunction { .. }
                ) {
                    out = Some(format!("the `{}` strategy of `{name}`", s.name()));
                }
            }
        });
    }
    out
}

/// A network or param an expression uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Used {
    Net(NetId),
    Param(ParamId),
}
