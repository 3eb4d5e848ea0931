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

mod cpu;
pub mod dist;
pub mod eval;
pub mod exact;
pub mod exact_discrete;
pub mod nets;
pub mod objective;
pub mod params;

use crate::ir::{Body, Domain, ExactPosterior, Guide, Init, NetId, ParamId, Program, SiteVar};
use crate::plan::Plan;
use candle_core::{bail, Device, Result, Tensor};
use dist::DistValue;
use eval::Pass;
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
}

/// A program lowered onto a device: its networks built and its parameters created.
pub struct LoweredModel {
    pub program: Program,
    pub plan: Plan,
    pub store: ParamStore,
    nets: Vec<Box<dyn Network>>,
    /// Unconstrained tensors of the `param`s, by `ParamId`.
    params: Vec<Tensor>,
    /// The model is linear-Gaussian (and within what `exact` computes): its log p(x) is
    /// exact, whatever the guide.
    exact_log_px: bool,
    /// The learned baseline of each `@reinforce` guide site (one scalar per variable,
    /// shared by its steps), checkpointed as `@baseline.NAME`.
    baselines: Vec<(SiteVar, Tensor)>,
}

/// The checkpoint prefix of `@reinforce` baselines. `@` cannot start a spec name, so no
/// network or param can collide with it.
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
    /// from `store` (seeded or loaded).
    pub fn new(program: Program, store: ParamStore) -> Result<LoweredModel> {
        if let Some(why) = refusal(&program) {
            bail!("{why}");
        }
        let plan = crate::plan::plan(&program);
        let mut nets = Vec::with_capacity(program.nets.len());
        // Network initialization draws from the run's seeded stream.
        let mut init_rng = store.fork_rng()?;
        for def in &program.nets {
            if def.per_member {
                bail!(
                    "`@per_member` network `{}` is not lowered by this release",
                    def.name
                );
            }
            nets.push(nets::build_with_rng(
                def,
                store.builder(&def.name),
                &mut init_rng,
            )?);
        }
        let mut params = Vec::with_capacity(program.params.len());
        for def in &program.params {
            let n = def.ty.numel().max(1);
            let domain = def.ty.domain;
            let init = def.init.clone();
            let t = store.custom(&def.name, &def.ty.shape, |rng| {
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
            })?;
            params.push(t);
        }
        let exact_log_px = exact::computes(&program);
        // A scalar baseline per `@reinforce` site, trained to minimize (f - b)^2, where f
        // is the per-row objective. An input-dependent baseline (a network of x) would
        // reduce variance further but needs a way to name it in the spec.
        let mut baselines: Vec<(SiteVar, Tensor)> = Vec::new();
        if let Guide::Amortized(body) = &program.guide {
            let mut sites: Vec<SiteVar> = Vec::new();
            crate::ir::walk::for_each_site(body, |s, _| {
                if s.strategy == Some(crate::ir::Strategy::Reinforce) && !sites.contains(&s.var) {
                    sites.push(s.var);
                }
            });
            for var in sites {
                let name = match var {
                    SiteVar::Latent(id) => &program.latents[id].name,
                    SiteVar::Data(id) => &program.data[id].name,
                };
                let t = store.custom(&format!("{BASELINE_PREFIX}{name}"), &[], |_| vec![0.0])?;
                baselines.push((var, t));
            }
        }
        Ok(LoweredModel {
            program,
            plan,
            store,
            nets,
            params,
            exact_log_px,
            baselines,
        })
    }

    /// Whether `exact_linear_gaussian` applies: the model's log p(x) has a closed form.
    pub fn has_exact_log_px(&self) -> bool {
        self.exact_log_px
    }

    /// Whether training and evaluation use the exact posterior (`guide exact` on a
    /// linear-Gaussian model).
    pub fn exact_guide(&self) -> bool {
        matches!(
            self.program.guide,
            Guide::Exact {
                posterior: ExactPosterior::LinearGaussian,
                ..
            }
        )
    }

    pub fn device(&self) -> &Device {
        self.store.device()
    }

    pub fn net(&self, id: NetId) -> Result<&dyn Network> {
        match self.nets.get(id) {
            Some(n) => Ok(n.as_ref()),
            None => bail!("internal error: no network {id}"),
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

    /// The learned baseline of a `@reinforce` site (a scalar).
    pub fn baseline(&self, var: SiteVar) -> Result<&Tensor> {
        match self.baselines.iter().find(|(v, _)| *v == var) {
            Some((_, t)) => Ok(t),
            None => bail!("internal error: no baseline for a @reinforce site"),
        }
    }

    /// Move each `@reinforce` baseline towards the mean objective `f` its site saw in a
    /// training step: `b <- b + rate (f - b)`, one plain SGD step of rate `rate` on
    /// `(f - b)^2 / 2`. The baseline learns by this rule rather than by the spec's
    /// optimizer, whose step size (Adam: about `lr` per step) would take a scalar
    /// hundreds of thousands of steps to reach an ELBO of a few hundred nats.
    pub fn update_baselines(&self, targets: &[(SiteVar, f64)], rate: f64) -> Result<()> {
        let named = self.store.named();
        for (var, f) in targets {
            let name = match var {
                SiteVar::Latent(id) => &self.program.latents[*id].name,
                SiteVar::Data(id) => &self.program.data[*id].name,
            };
            let key = format!("{BASELINE_PREFIX}{name}");
            let Some((_, v)) = named.iter().find(|(n, _)| *n == key) else {
                bail!("internal error: no baseline `{key}`")
            };
            let b = v.as_tensor().to_scalar::<f32>()? as f64;
            if f.is_finite() {
                v.set(&Tensor::new((b + rate * (f - b)) as f32, v.device())?)?;
            }
        }
        Ok(())
    }

    /// The block a pass runs.
    pub fn program_body(&self, pass: Pass) -> &Body {
        match (pass, &self.program.guide) {
            (Pass::Guide, Guide::Amortized(body)) => body,
            _ => &self.program.model,
        }
    }

    /// Checkpoint names of the guide's parameters (networks and params used only in
    /// `guide`): the E-step group of `schedule = alternate(...)`. Everything else is the
    /// model's (M-step) group.
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
        out
    }
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
                if !exact::computes(program) {
                    return Some(
                        "`guide exact` on a linear-Gaussian model with a `for` loop or a global latent"
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
    if program.meta.is_some() || !program.sets.is_empty() {
        return Some("a `meta` family with context sets".into());
    }
    if let Some(n) = program.nets.iter().find(|n| n.per_member) {
        return Some(format!("`@per_member` network `{}`", n.name));
    }
    let mut out = None;
    if let Guide::Amortized(body) = &program.guide {
        crate::ir::walk::for_each_site(body, |site, _| {
            if out.is_some() {
                return;
            }
            let name = crate::arch::site_name(program, site);
            if !site.flows.is_empty() {
                out = Some(format!("the flow on `{name}`"));
            } else if let Some(s) = &site.strategy {
                if !matches!(
                    s,
                    Strategy::Reparameterized
                        | Strategy::Enumerate
                        | Strategy::Relax { .. }
                        | Strategy::Reinforce
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
