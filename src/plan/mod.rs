//! The inference plan: per guide site its estimator, per latent its KL, per network its
//! parameters, per example FLOPs and activation memory (`vic compile --emit plan`).
//! Lowering reads the same `Plan`, so what is printed is what will run.
//!
//! # How the plan decides
//!
//! Estimators come from the guide site's resolved [`Strategy`]; for `guide exact` every
//! latent is `exact` (linear-Gaussian with full covariance, or enumeration for the finite
//! discrete latents). A `partial` data variable's guide site is planned like a latent's
//! and used where the value is missing.
//!
//! KL, per latent, first rule that applies: `guide exact` → none (exact marginal
//! likelihood); `iwae` objective → Monte Carlo log-weights; flows on the guide site →
//! Monte Carlo; `train.kl = mc` → Monte Carlo; [`ir::has_analytic_kl`] for the (guide, model)
//! family pair → analytic; otherwise Monte Carlo with the objective's samples. Global
//! latents, Bayesian / vdrop weights and `@random_function` GP errors have their KL once
//! per dataset, scaled per minibatch (by batch / dataset size).
//!
//! Costs, per example: every network call in `model` and `guide` costs
//! [`arch::call_cost`] (a `deepsets` call on a set of size n runs `phi` n times), times
//! - the steps of every enclosing loop,
//! - the support size of every distinct enumerated site the call's arguments depend on
//!   (through `let`s; per step for a stepped site),
//! - the objective's samples when the arguments depend on a sampled latent (calls that see
//!   only data, such as an amortized encoder, run once),
//! - 1 + steps when they depend on an `@refine`d site (each refinement step re-evaluates
//!   them; the backward passes are not counted),
//! - and an `iaf` flow calls its network once per step. Per batch is per example ×
//!   `train.batch`. Memory is the f32 activations those calls keep for backward.
//!
//! The exact posterior's own linear algebra, REINFORCE baselines and GP inducing-point
//! parameters are not counted.

use crate::arch::{self, Cardinality, Copies, Layer};
use crate::ir::walk::{self, Dataflow, Visitor};
use crate::ir::{
    self, Body, DataRole, ExactPosterior, Expr, FlowKind, Guide, Kernel, KlMode, LatentId, NetId,
    Objective, Program, Ref, Site, SiteVar, Stmt, Strategy, Weights,
};
use crate::span::Span;
use serde::{Deserialize, Serialize};

mod shared;
pub mod statespace;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The training objective (`elbo` or `iwae`) with its samples.
    pub objective: Objective,
    /// How the posterior is computed: the guide's sites, each by its estimator, or in
    /// closed form (`guide exact`).
    pub inference: Inference,
    /// The model's exact log p(x) when it has one, whatever the guide: reported beside
    /// the bound (the EM picture of `schedule = alternate(...)`).
    pub exact_evidence: Option<ExactMethod>,
    /// `model` locals computed exactly as a `guide` local is (the same expression of the
    /// same data, latents and equally shared locals, through deterministic networks): the
    /// model's pass takes the guide's values instead of computing them again (a VRNN's
    /// recurrent state, DRAW's decoder state and canvas).
    #[serde(default)]
    pub shared: Vec<SharedLocal>,
    pub sites: Vec<SitePlan>,
    pub kl: Vec<KlPlan>,
    pub nets: Vec<NetPlan>,
    /// Scalars of the `param` declarations.
    pub param_scalars: u64,
    /// Networks with their copies plus `param`s.
    pub total_params: u64,
    /// Some `@per_member` network's member count is known only from the data (`classes()`):
    /// it is counted once.
    pub members_unknown: bool,
    /// The joint number of values the guide enumerates (1 when nothing is enumerated).
    pub enumeration: Cardinality,
    pub cost: Cost,
}

impl Plan {
    /// The plan of the guide site that samples `var` (the first one, for a stepped site).
    pub fn site(&self, var: SiteVar) -> Option<&SitePlan> {
        self.sites.iter().find(|s| s.var == var)
    }

    /// The KL term of a subject.
    pub fn kl_of(&self, subject: &KlSubject) -> Option<&KlPlan> {
        self.kl.iter().find(|k| &k.subject == subject)
    }

    /// The plan of network `id`.
    pub fn net(&self, id: NetId) -> Option<&NetPlan> {
        self.nets.iter().find(|n| n.id == id)
    }
}

/// A `model` local whose every value equals a `guide` local's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedLocal {
    pub name: String,
    pub model: ir::LocalId,
    pub guide: ir::LocalId,
}

/// How the posterior is computed, for the whole program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Inference {
    /// No latent and no `partial` data: the objective is the data's log-likelihood (and
    /// any weight posterior's KL).
    None,
    /// An amortized `guide`: every site drawn by its estimator ([`SitePlan::estimator`]).
    Amortized,
    /// `guide exact`: the posterior and the marginal likelihood in closed form.
    Exact(ExactMethod),
}

/// How an exact posterior is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExactMethod {
    /// A joint Gaussian over every latent with full covariance (`lower::exact`).
    LinearGaussian,
    /// Finite discrete latents summed over their joint support.
    Enumerate,
    /// Discrete latents enumerated and the rest linear-Gaussian given them.
    EnumerateLinearGaussian,
    /// A linear-Gaussian state-space model: a Kalman filter and smoother over its steps
    /// (`lower::kalman`, [`statespace`]).
    Kalman,
}

impl ExactMethod {
    pub fn describe(self) -> &'static str {
        match self {
            ExactMethod::LinearGaussian => "linear-Gaussian posterior with full covariance",
            ExactMethod::Enumerate => "enumeration of the discrete latents' joint support",
            ExactMethod::EnumerateLinearGaussian => {
                "enumeration of the discrete latents, linear-Gaussian given each of their values"
            }
            ExactMethod::Kalman => "a Kalman filter and smoother over the time steps",
        }
    }
}

/// How one guide site (or, for `guide exact`, one latent) is inferred.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SitePlan {
    pub name: String,
    pub var: SiteVar,
    /// Steps of the enclosing loops (1 outside loops).
    pub steps: u64,
    pub estimator: Estimator,
    /// Values summed over per draw, for enumerated sites.
    pub values: Option<Cardinality>,
    pub flows: Vec<FlowPlan>,
    pub reason: String,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimator {
    Reparameterized,
    Enumerate,
    Relax {
        temperature: f64,
    },
    Reinforce,
    Refine {
        steps: usize,
        lr: f64,
        through: bool,
        #[serde(default = "ir::default_refine_momentum")]
        momentum: f64,
        #[serde(default = "ir::default_refine_clip")]
        clip: f64,
    },
    RandomFunction {
        inducing: usize,
        kernel: Kernel,
    },
    Exact,
}

impl Estimator {
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::Reparameterized => "reparameterized",
            Estimator::Enumerate => "enumerate",
            Estimator::Relax { .. } => "relax",
            Estimator::Reinforce => "reinforce",
            Estimator::Refine { .. } => "refine",
            Estimator::RandomFunction { .. } => "random_function",
            Estimator::Exact => "exact",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowPlan {
    pub net: NetId,
    pub name: String,
    pub steps: usize,
    /// Steps of the same network's flows earlier in the guide: this flow's step k uses
    /// the network's copy `first + k` (`ar.step{first + k}`, k from 1).
    #[serde(default)]
    pub first: usize,
}

/// One KL term of the objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KlPlan {
    pub name: String,
    pub subject: KlSubject,
    pub method: KlMethod,
    /// Per example, or once per dataset scaled per minibatch.
    pub per_dataset: bool,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KlSubject {
    Latent(LatentId),
    /// A `partial` data variable, where its value is missing.
    Partial(ir::DataId),
    /// The weight posterior of a `bayes` / `vdrop` network.
    Weights(NetId),
    /// The GP error of a `@random_function` site of this latent.
    RandomFunction(LatentId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlMethod {
    Analytic,
    MonteCarlo,
    /// A closed-form approximation (variational dropout's log-uniform prior).
    Approximate,
    /// An enumerated site: `Σ_v q(v) (log q(v) - log p(v))`, exact, over the rows of its
    /// values.
    Enumerated,
    /// No KL term (`guide exact`).
    None,
}

impl KlMethod {
    pub fn name(self) -> &'static str {
        match self {
            KlMethod::Analytic => "analytic",
            KlMethod::MonteCarlo => "monte carlo",
            KlMethod::Approximate => "approximate",
            KlMethod::Enumerated => "enumerated",
            KlMethod::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetPlan {
    pub id: NetId,
    pub name: String,
    pub arch: String,
    pub weights: Weights,
    /// The layers of one copy, in build order (see `crate::arch`).
    pub layers: Vec<Layer>,
    pub params_per_copy: u64,
    pub copies: Copies,
    /// `params_per_copy × copies.total()`.
    pub params: u64,
    /// Forward calls per example, with all multipliers.
    pub calls: u64,
    pub flops: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The objective's samples.
    pub samples: usize,
    pub flops_per_example: u64,
    /// f32 bytes of activations kept for backward.
    pub bytes_per_example: u64,
    pub batch: usize,
    pub flops_per_batch: u64,
    pub bytes_per_batch: u64,
}

/// Plan a checked program.
pub fn plan(program: &Program) -> Plan {
    let samples = match program.train.objective {
        Objective::Elbo { samples } | Objective::Iwae { samples } => samples.max(1),
    };
    let sites = plan_sites(program);
    let kl = plan_kl(program, samples);
    let costs = costs(program, samples);
    let mut nets = Vec::new();
    for (id, net) in program.nets.iter().enumerate() {
        let copies = arch::copies(program, id);
        let per = arch::param_count(net);
        let c = costs.get(&id).copied().unwrap_or_default();
        nets.push(NetPlan {
            id,
            name: net.name.clone(),
            arch: net.arch.name().into(),
            weights: net.weights.clone(),
            layers: arch::layers(net),
            params_per_copy: per,
            copies,
            params: per.saturating_mul(copies.total()),
            calls: c.calls,
            flops: c.flops,
            bytes: c.bytes,
        });
    }
    let param_scalars = program
        .params
        .iter()
        .fold(0u64, |a, p| a.saturating_add(p.ty.numel() as u64));
    let total_params = nets
        .iter()
        .fold(param_scalars, |a, n| a.saturating_add(n.params));
    let members_unknown = nets
        .iter()
        .any(|n| n.copies.per_member && n.copies.members.is_none());
    let enumeration = match &program.guide {
        Guide::Exact { .. } => sites
            .iter()
            .filter_map(|s| s.values)
            .fold(Cardinality::ONE, Cardinality::times),
        _ => sites
            .iter()
            .filter_map(|s| s.values.map(|v| v.pow(s.steps)))
            .fold(Cardinality::ONE, Cardinality::times),
    };
    let flops = nets.iter().fold(0u64, |a, n| a.saturating_add(n.flops));
    let bytes = nets.iter().fold(0u64, |a, n| a.saturating_add(n.bytes));
    let batch = program.train.batch;
    let inference = match &program.guide {
        Guide::None => Inference::None,
        Guide::Amortized(_) => Inference::Amortized,
        Guide::Exact { posterior, .. } => Inference::Exact(match posterior {
            ExactPosterior::LinearGaussian if statespace::state_space(program).is_some() => {
                ExactMethod::Kalman
            }
            ExactPosterior::LinearGaussian => ExactMethod::LinearGaussian,
            ExactPosterior::Enumerate => ExactMethod::Enumerate,
            ExactPosterior::EnumerateLinearGaussian => ExactMethod::EnumerateLinearGaussian,
        }),
    };
    let shared = match &program.guide {
        Guide::Amortized(guide) => shared::locals(program, &program.model, guide),
        _ => Vec::new(),
    };
    Plan {
        objective: program.train.objective,
        inference,
        exact_evidence: exact_evidence(program),
        shared,
        sites,
        kl,
        nets,
        param_scalars,
        total_params,
        members_unknown,
        enumeration,
        cost: Cost {
            samples,
            flops_per_example: flops,
            bytes_per_example: bytes,
            batch,
            flops_per_batch: flops.saturating_mul(batch as u64),
            bytes_per_batch: bytes.saturating_mul(batch as u64),
        },
    }
}

/// The model's exact log p(x), when it has one: a linear-Gaussian model (every latent and
/// every observation of a latent Normal, with means affine in the latents and latent-free
/// scales) with no loop and no global latent (a dense Gaussian), or one whose loop is a
/// first-order chain (a Kalman filter); or under `guide exact` one whose latents are all
/// finite and discrete.
fn exact_evidence(program: &Program) -> Option<ExactMethod> {
    if let Guide::Exact {
        posterior: ExactPosterior::Enumerate,
        ..
    } = program.guide
    {
        return Some(ExactMethod::Enumerate);
    }
    let simple = program.model.stmts.iter().all(|st| match st {
        Stmt::Loop { .. } => false,
        Stmt::Sample(site) => match site.var {
            SiteVar::Latent(id) => program.latents.get(id).is_some_and(|d| !d.global),
            SiteVar::Data(_) => true,
        },
        Stmt::Let { .. } => true,
    });
    let mut has_latent = false;
    walk::for_each_site(&program.model, |s, _| {
        has_latent |= matches!(s.var, SiteVar::Latent(_))
    });
    if !has_latent || !crate::check::rules::linear_gaussian(program) {
        return None;
    }
    if simple {
        Some(ExactMethod::LinearGaussian)
    } else {
        statespace::state_space(program).map(|_| ExactMethod::Kalman)
    }
}

// ---------------------------------------------------------------------------------
// Sites

fn plan_sites(program: &Program) -> Vec<SitePlan> {
    let mut out = Vec::new();
    match &program.guide {
        Guide::None => {}
        Guide::Amortized(body) => {
            walk::for_each_site(body, |site, scope| {
                out.push(plan_site(program, site, scope.iterations()));
            });
            // Number each network's flow steps across the guide, as its copies are.
            let mut taken: BTreeMap<NetId, usize> = BTreeMap::new();
            for f in out.iter_mut().flat_map(|s| s.flows.iter_mut()) {
                let n = taken.entry(f.net).or_default();
                f.first = *n;
                *n += f.steps;
            }
        }
        Guide::Exact { posterior, .. } => {
            for (id, lat) in program.latents.iter().enumerate() {
                let values = arch::support_size(&lat.ty);
                let reason = match (posterior, values) {
                    (ExactPosterior::LinearGaussian, _) => match exact_evidence(program) {
                        Some(ExactMethod::Kalman) => {
                            "guide exact: Kalman filter and smoother over the time steps".to_string()
                        }
                        Some(_) => {
                            "guide exact: linear-Gaussian posterior with full covariance".to_string()
                        }
                        None => "guide exact: linear-Gaussian, not lowered by this release (a global latent, or a loop that is not a first-order chain)".to_string(),
                    },
                    (_, Some(v)) => format!(
                        "guide exact: {}: summed exactly over its {} values",
                        lat.ty.display(),
                        v.describe()
                    ),
                    (_, None) => "guide exact: linear-Gaussian posterior with full covariance, given each value of the enumerated discrete latents".to_string(),
                };
                let mut span = lat.span;
                walk::for_each_site(&program.model, |s, _| {
                    if s.var == SiteVar::Latent(id) && span == lat.span {
                        span = s.span;
                    }
                });
                out.push(SitePlan {
                    name: lat.name.clone(),
                    var: SiteVar::Latent(id),
                    steps: 1,
                    estimator: Estimator::Exact,
                    values,
                    flows: Vec::new(),
                    reason,
                    span,
                });
            }
        }
    }
    out
}

fn plan_site(program: &Program, site: &Site, steps: u64) -> SitePlan {
    let dist = site.dist.kind.name();
    let values = arch::site_support(site);
    let strategy = site.strategy.clone().unwrap_or(if values.is_some() {
        Strategy::Enumerate
    } else {
        Strategy::Reparameterized
    });
    let flows: Vec<FlowPlan> = site
        .flows
        .iter()
        .map(|f| {
            let FlowKind::Iaf { net, steps } = f.kind;
            FlowPlan {
                net,
                name: program
                    .nets
                    .get(net)
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
                steps,
                first: 0,
            }
        })
        .collect();
    let flow_note = if flows.is_empty() {
        String::new()
    } else {
        let n: usize = flows.iter().map(|f| f.steps).sum();
        format!(" through {n} iaf step{}", if n == 1 { "" } else { "s" })
    };
    let (estimator, mut reason) = match strategy {
        Strategy::Reparameterized => (
            Estimator::Reparameterized,
            format!("continuous {dist}{flow_note}: reparameterized sampling"),
        ),
        Strategy::Enumerate => {
            let v = values.unwrap_or(Cardinality::ONE);
            let per = if steps > 1 {
                format!(" at each of {steps} steps")
            } else {
                String::new()
            };
            (
                Estimator::Enumerate,
                format!(
                    "{}: summed exactly over {} values{per} (default for finite supports)",
                    site.ty.display(),
                    v.describe()
                ),
            )
        }
        Strategy::Relax { temperature } => (
            Estimator::Relax { temperature },
            format!(
                "@relax(temperature = {temperature}) given: Concrete / Gumbel-softmax relaxation, reparameterized through the relaxed sample"
            ),
        ),
        Strategy::Reinforce => (
            Estimator::Reinforce,
            "@reinforce given: score function with a learned baseline".to_string(),
        ),
        Strategy::Refine {
            steps: s,
            lr,
            through,
            momentum,
            clip,
        } => (
            Estimator::Refine {
                steps: s,
                lr,
                through,
                momentum,
                clip,
            },
            format!(
                "@refine(steps = {s}, lr = {lr}, through = {through}) given: semi-amortized, the network's {dist} parameters take {s} gradient steps (momentum {momentum}, clipped at norm {clip}) on this example's ELBO, {}",
                if through {
                    "with gradients through the refinement"
                } else {
                    "with gradients stopped at the refined values"
                }
            ),
        ),
        Strategy::RandomFunction {
            inducing,
            kernel,
            net,
            ..
        } => (
            Estimator::RandomFunction { inducing, kernel },
            format!(
                "@random_function(inducing = {inducing}, kernel = \"{}\") given: the output of `{}` plus a sparse GP error over its input ({inducing} inducing points, whitened), reparameterized",
                kernel_name(kernel),
                net.and_then(|n| program.nets.get(n))
                    .map(|d| d.name.as_str())
                    .unwrap_or("?")
            ),
        ),
    };
    if steps > 1 && estimator != Estimator::Enumerate {
        reason.push_str(&format!(", at each of {steps} steps"));
    }
    if let SiteVar::Data(d) = site.var {
        if program.data.get(d).map(|d| d.role) == Some(DataRole::Partial) {
            reason.push_str(" (used where the value is missing)");
        }
    }
    SitePlan {
        name: arch::site_name(program, site),
        var: site.var,
        steps,
        estimator,
        values: if matches!(site.strategy, Some(Strategy::Enumerate) | None) {
            values
        } else {
            None
        },
        flows,
        reason,
        span: site.span,
    }
}

fn kernel_name(k: Kernel) -> &'static str {
    match k {
        Kernel::Rbf => "rbf",
        Kernel::Matern32 => "matern32",
        Kernel::Matern52 => "matern52",
    }
}

// ---------------------------------------------------------------------------------
// KL terms

const PER_DATASET: &str = "KL once per dataset, scaled per minibatch";

fn first_site(body: &Body, var: SiteVar) -> Option<Site> {
    let mut found = None;
    walk::for_each_site(body, |s, _| {
        if found.is_none() && s.var == var {
            found = Some(s.clone());
        }
    });
    found
}

fn plan_kl(program: &Program, samples: usize) -> Vec<KlPlan> {
    let mut out = Vec::new();
    let mut subjects: Vec<(String, SiteVar, KlSubject, bool)> = program
        .latents
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.name.clone(),
                SiteVar::Latent(i),
                KlSubject::Latent(i),
                l.global,
            )
        })
        .collect();
    subjects.extend(
        program
            .data
            .iter()
            .enumerate()
            .filter(|(_, d)| d.role == DataRole::Partial)
            .map(|(i, d)| {
                (
                    d.name.clone(),
                    SiteVar::Data(i),
                    KlSubject::Partial(i),
                    false,
                )
            }),
    );
    for (name, var, subject, global) in subjects {
        let (method, mut reason) = kl_rule(program, var, samples);
        if let KlSubject::Partial(_) = subject {
            reason.push_str(" (only where the value is missing)");
        }
        if global && method != KlMethod::None {
            reason = format!("{reason}; global: {PER_DATASET}");
        }
        out.push(KlPlan {
            name: name.clone(),
            subject,
            method,
            per_dataset: global,
            reason,
        });
        if let (Guide::Amortized(body), SiteVar::Latent(id)) = (&program.guide, var) {
            if let Some(Strategy::RandomFunction { inducing, .. }) =
                first_site(body, var).and_then(|s| s.strategy)
            {
                out.push(KlPlan {
                    name: format!("{name} (GP error)"),
                    subject: KlSubject::RandomFunction(id),
                    method: KlMethod::Analytic,
                    per_dataset: true,
                    reason: format!(
                        "sparse GP posterior against the GP prior over {inducing} inducing points: closed form; {PER_DATASET}"
                    ),
                });
            }
        }
    }
    for (id, net) in program.nets.iter().enumerate() {
        let (method, what) = match net.weights {
            Weights::Point => continue,
            Weights::Bayes { prior_scale } => (
                KlMethod::Analytic,
                format!("factorized Gaussian weights against Normal(0, {prior_scale}): closed form"),
            ),
            Weights::Vdrop { kind, .. } => (
                KlMethod::Approximate,
                format!(
                    "variational dropout (kind {kind:?}) against the log-uniform prior: the approximation of Molchanov et al. 2017"
                ),
            ),
        };
        out.push(KlPlan {
            name: format!("{} (weights)", net.name),
            subject: KlSubject::Weights(id),
            method,
            per_dataset: true,
            reason: format!("{what}; {PER_DATASET}"),
        });
    }
    out
}

fn kl_rule(program: &Program, var: SiteVar, samples: usize) -> (KlMethod, String) {
    let body = match &program.guide {
        Guide::Exact { .. } => {
            return (
                KlMethod::None,
                "exact marginal likelihood: no KL".to_string(),
            )
        }
        Guide::None => {
            return (
                KlMethod::MonteCarlo,
                "no guide site: Monte Carlo".to_string(),
            )
        }
        Guide::Amortized(b) => b,
    };
    if let Objective::Iwae { .. } = program.train.objective {
        return (
            KlMethod::MonteCarlo,
            "iwae bound: no separate KL term, Monte Carlo log-weights".to_string(),
        );
    }
    let Some(q) = first_site(body, var) else {
        return (
            KlMethod::MonteCarlo,
            "no guide site: Monte Carlo".to_string(),
        );
    };
    // A flow of zero steps is the identity: the diagonal guide's KL applies.
    if walk::flow_nets(&q).any(|(_, steps, _)| steps > 0) {
        return (
            KlMethod::MonteCarlo,
            "the iaf-transformed guide has no closed-form density ratio".to_string(),
        );
    }
    if q.strategy == Some(Strategy::Enumerate) {
        return (
            KlMethod::Enumerated,
            "enumerated: Σ q log q/p over its values, exact".to_string(),
        );
    }
    if program.train.kl == KlMode::Mc {
        return (
            KlMethod::MonteCarlo,
            format!("train.kl = mc: Monte Carlo with {samples} sample(s)"),
        );
    }
    let Some(p) = first_site(&program.model, var) else {
        return (
            KlMethod::MonteCarlo,
            "no model site: Monte Carlo".to_string(),
        );
    };
    let (qk, pk) = (q.dist.kind, p.dist.kind);
    if ir::has_analytic_kl(qk, pk) {
        (
            KlMethod::Analytic,
            format!("closed form KL({} ‖ {})", qk.name(), pk.name()),
        )
    } else {
        (
            KlMethod::MonteCarlo,
            format!(
                "no closed form for KL({} ‖ {}): Monte Carlo with {samples} sample(s)",
                qk.name(),
                pk.name()
            ),
        )
    }
}

// ---------------------------------------------------------------------------------
// Costs

#[derive(Clone, Copy, Debug, Default)]
struct NetCost {
    calls: u64,
    flops: u64,
    bytes: u64,
}

/// What a value depends on, for cost multipliers.
#[derive(Clone, Debug, Default, PartialEq)]
struct Taint {
    /// Distinct enumerated sources and their per-draw support sizes.
    enumerated: BTreeMap<(u8, usize), u64>,
    /// Depends on a sampled latent.
    sampled: bool,
    /// The largest `1 + steps` of the refined sites it depends on.
    refine: u64,
}

impl Taint {
    fn join(&mut self, other: &Taint) {
        for (k, v) in &other.enumerated {
            self.enumerated.insert(*k, *v);
        }
        self.sampled |= other.sampled;
        self.refine = self.refine.max(other.refine);
    }

    fn multiplier(&self, samples: u64) -> u64 {
        let mut m = self
            .enumerated
            .values()
            .fold(1u64, |a, v| a.saturating_mul(*v));
        if self.sampled {
            m = m.saturating_mul(samples);
        }
        m.saturating_mul(self.refine.max(1))
    }
}

fn var_key(v: SiteVar) -> (u8, usize) {
    match v {
        SiteVar::Latent(i) => (0, i),
        SiteVar::Data(i) => (1, i),
    }
}

struct CostWalk<'a> {
    program: &'a Program,
    samples: u64,
    /// How each latent / partial variable taints what reads it.
    vars: BTreeMap<(u8, usize), Taint>,
    locals: Vec<Taint>,
    record: bool,
    /// Walking the guide: a site's variable inherits the taint of its arguments.
    in_guide: bool,
    costs: BTreeMap<NetId, NetCost>,
}

fn costs(program: &Program, samples: usize) -> BTreeMap<NetId, NetCost> {
    let mut vars: BTreeMap<(u8, usize), Taint> = BTreeMap::new();
    match &program.guide {
        Guide::Amortized(body) => walk::for_each_site(body, |site, _| {
            let mut t = Taint::default();
            match &site.strategy {
                Some(Strategy::Enumerate) | None if arch::site_support(site).is_some() => {
                    let v = arch::site_support(site)
                        .and_then(|c| c.exact)
                        .unwrap_or(u64::MAX);
                    t.enumerated.insert(var_key(site.var), v);
                }
                Some(Strategy::Refine { steps, .. }) => {
                    t.sampled = true;
                    t.refine = (*steps as u64).saturating_add(1);
                }
                _ => t.sampled = true,
            }
            vars.insert(var_key(site.var), t);
        }),
        Guide::Exact { .. } => {
            for (i, l) in program.latents.iter().enumerate() {
                let mut t = Taint::default();
                if let Some(c) = arch::support_size(&l.ty) {
                    t.enumerated.insert((0, i), c.exact.unwrap_or(u64::MAX));
                }
                vars.insert((0, i), t);
            }
        }
        Guide::None => {}
    }
    // Latents the guide does not sample (a spec with errors) count as sampled.
    for i in 0..program.latents.len() {
        vars.entry((0, i)).or_insert_with(|| Taint {
            sampled: true,
            ..Taint::default()
        });
    }
    let mut walk = CostWalk {
        program,
        samples: samples as u64,
        vars,
        locals: Vec::new(),
        record: false,
        in_guide: false,
        costs: BTreeMap::new(),
    };
    // The guide first, so that a latent drawn from arguments downstream of an enumerated
    // site carries that site's multiplier into the model.
    if let Guide::Amortized(b) = &program.guide {
        walk.in_guide = true;
        walk.body(b);
        walk.in_guide = false;
    }
    walk.body(&program.model);
    walk.costs
}

impl CostWalk<'_> {
    fn body(&mut self, body: &Body) {
        self.locals = vec![Taint::default(); body.locals.len()];
        // Loop-carried states (`h[t-1]`) make taint flow backwards: iterate to a fixpoint
        // (taints only grow, and there are finitely many sources), then record.
        self.record = false;
        for _ in 0..64 {
            let before = (self.locals.clone(), self.vars.clone());
            walk::walk_body(self, body);
            if before == (self.locals.clone(), self.vars.clone()) {
                break;
            }
        }
        self.record = true;
        walk::walk_body(self, body);
    }

    fn call(&mut self, net: NetId, set_size: usize, t: &Taint, mult: u64) {
        if !self.record {
            return;
        }
        let Some(def) = self.program.nets.get(net) else {
            return;
        };
        let times = mult.saturating_mul(t.multiplier(self.samples));
        let c = arch::call_cost(def, set_size);
        let e = self.costs.entry(net).or_default();
        e.calls = e.calls.saturating_add(times);
        e.flops = e.flops.saturating_add(c.flops.saturating_mul(times));
        e.bytes = e.bytes.saturating_add(c.bytes.saturating_mul(times));
    }

    /// The taint of `e`, recording its network calls `mult` times each.
    fn expr(&mut self, e: &Expr, mult: u64) -> Taint {
        walk::flow(&mut Costed { walk: self, mult }, e)
    }
}

impl<'ir> Visitor<'ir> for CostWalk<'_> {
    fn let_stmt(
        &mut self,
        targets: &'ir [ir::LetTarget],
        value: &'ir Expr,
        _: Span,
        scope: &walk::Scope<'ir>,
    ) {
        let t = self.expr(value, scope.iterations());
        for tg in targets {
            if let Some(slot) = self.locals.get_mut(tg.local) {
                slot.join(&t);
            }
        }
    }

    fn site(&mut self, site: &'ir Site, scope: &walk::Scope<'ir>) {
        let mult = scope.iterations();
        let args = walk::flow_dist(&mut Costed { walk: self, mult }, &site.dist);
        if self.in_guide {
            self.vars.entry(var_key(site.var)).or_default().join(&args);
        }
        for (net, steps, f) in walk::flow_nets(site) {
            let mut t = args.clone();
            for e in &f.context {
                t.join(&self.expr(e, mult));
            }
            if let Some(v) = self.vars.get(&var_key(site.var)) {
                t.join(&v.clone());
            }
            t.sampled = true;
            self.call(net, 1, &t, mult.saturating_mul(steps as u64));
        }
    }
}

/// The taint fold of one statement, whose network calls run `mult` times per pass.
struct Costed<'w, 'a> {
    walk: &'w mut CostWalk<'a>,
    mult: u64,
}

impl Dataflow for Costed<'_, '_> {
    type Fact = Taint;

    fn join(&mut self, into: &mut Taint, other: Taint) {
        into.join(&other)
    }

    fn reference(&mut self, r: Ref, _: &Expr) -> Taint {
        let w = &self.walk;
        match r {
            Ref::Latent(i) => w.vars.get(&(0, i)).cloned().unwrap_or_default(),
            Ref::Data(i) => w.vars.get(&(1, i)).cloned().unwrap_or_default(),
            Ref::Local(l) => w.locals.get(l).cloned().unwrap_or_default(),
            Ref::Param(_) | Ref::Set(_) | Ref::LoopVar(_) => Taint::default(),
        }
    }

    fn call(&mut self, net: NetId, args: &[Expr], joined: Taint, _: &Expr) -> Taint {
        let set_size = args
            .first()
            .map(|a| arch::set_size_of(self.walk.program, a))
            .unwrap_or(1);
        self.walk.call(net, set_size, &joined, self.mult);
        joined
    }
}

// ---------------------------------------------------------------------------------
// Display

/// `1234567` → `1.23 M`.
fn human(n: u64, unit: &str) -> String {
    let x = n as f64;
    let (v, p) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        return format!("{n} {unit}");
    };
    format!("{v:.2} {p}{unit}")
}

fn objective_text(o: Objective) -> String {
    match o {
        Objective::Elbo { samples } => format!("elbo(samples = {samples})"),
        Objective::Iwae { samples } => format!("iwae(samples = {samples})"),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "objective: {}", objective_text(self.objective))?;
        match self.inference {
            Inference::None => writeln!(f, "inference: none (no latent)")?,
            Inference::Amortized => writeln!(f, "inference: amortized guide")?,
            Inference::Exact(m) => writeln!(f, "inference: exact, {}", m.describe())?,
        }
        if let (Some(m), false) = (
            self.exact_evidence,
            matches!(self.inference, Inference::Exact(_)),
        ) {
            writeln!(
                f,
                "exact log p(x): {} (reported beside the bound)",
                m.describe()
            )?;
        }
        if !self.shared.is_empty() {
            let names: Vec<&str> = self.shared.iter().map(|s| s.name.as_str()).collect();
            writeln!(
                f,
                "shared with the guide: {} (the model's pass reuses the guide's values)",
                names.join(", ")
            )?;
        }
        let w = self
            .sites
            .iter()
            .map(|s| s.name.len())
            .chain(self.kl.iter().map(|k| k.name.len()))
            .chain(self.nets.iter().map(|n| n.name.len()))
            .max()
            .unwrap_or(0)
            .max(5);

        writeln!(f, "\nsites:")?;
        if self.sites.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for s in &self.sites {
            writeln!(
                f,
                "  {:w$}  {:15}  {}",
                s.name,
                s.estimator.name(),
                s.reason
            )?;
        }
        if self.enumeration.exact != Some(1) {
            writeln!(
                f,
                "  enumerated jointly: {} values",
                self.enumeration.describe()
            )?;
        }

        writeln!(f, "\nkl:")?;
        if self.kl.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for k in &self.kl {
            writeln!(f, "  {:w$}  {:15}  {}", k.name, k.method.name(), k.reason)?;
        }

        writeln!(f, "\nnetworks:")?;
        for n in &self.nets {
            let mut copies = Vec::new();
            if n.copies.flow {
                let s = if n.copies.iaf == 1 { "" } else { "s" };
                copies.push(format!("{} iaf step{s}", n.copies.iaf));
            }
            if n.copies.per_member {
                match n.copies.members {
                    Some(m) => copies.push(format!("{m} training members")),
                    None => {
                        copies.push("members (unknown until the data is read; counted once)".into())
                    }
                }
            }
            let weights = match n.weights {
                Weights::Point => String::new(),
                Weights::Bayes { .. } => ", bayes weights".into(),
                Weights::Vdrop { kind, .. } => format!(", vdrop {kind:?} weights"),
            };
            let count = if copies.is_empty() {
                format!("{} parameters", n.params)
            } else {
                format!(
                    "{} parameters × {} = {}",
                    n.params_per_copy,
                    copies.join(" × "),
                    n.params
                )
            };
            writeln!(
                f,
                "  {:w$}  {:15}  {count}{weights}; {} call{}/example",
                n.name,
                n.arch,
                n.calls,
                if n.calls == 1 { "" } else { "s" }
            )?;
        }
        if self.param_scalars > 0 {
            writeln!(
                f,
                "  {:w$}  {:15}  {} parameters",
                "params", "", self.param_scalars
            )?;
        }
        writeln!(
            f,
            "  {:w$}  {:15}  {} parameters ({})",
            "total",
            "",
            self.total_params,
            human(self.total_params, "")
        )?;

        let c = &self.cost;
        writeln!(f, "\ncost (forward, {} sample(s)):", c.samples)?;
        writeln!(
            f,
            "  per example: {} FLOPs ({}), {} bytes of activations ({})",
            c.flops_per_example,
            human(c.flops_per_example, "FLOP"),
            c.bytes_per_example,
            human(c.bytes_per_example, "B")
        )?;
        writeln!(
            f,
            "  per batch of {}: {} FLOPs ({}), {} bytes of activations ({})",
            c.batch,
            c.flops_per_batch,
            human(c.flops_per_batch, "FLOP"),
            c.bytes_per_batch,
            human(c.bytes_per_batch, "B")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::testkit::*;
    use crate::ir::*;

    const ENC_FLOPS: u64 = 2 * (784 * 512 + 512 * 512 + 512 * 64);
    const DEC_FLOPS: u64 = 2 * (32 * 512 + 512 * 512 + 512 * 784);

    #[test]
    fn vae_plan() {
        let p = plan(&vae());
        assert_eq!(p.sites.len(), 1);
        assert_eq!(p.sites[0].estimator, Estimator::Reparameterized);
        assert_eq!(
            p.sites[0].reason,
            "continuous Normal: reparameterized sampling"
        );
        assert_eq!(p.kl.len(), 1);
        assert_eq!(p.kl[0].method, KlMethod::Analytic);
        assert_eq!(p.kl[0].reason, "closed form KL(Normal ‖ Normal)");
        assert!(!p.kl[0].per_dataset);
        let enc = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 64 + 64;
        let dec = 32 * 512 + 512 + 512 * 512 + 512 + 512 * 784 + 784;
        assert_eq!(p.nets[0].params, enc);
        assert_eq!(p.nets[1].params, dec);
        assert_eq!(p.total_params, enc + dec);
        assert_eq!(p.cost.flops_per_example, ENC_FLOPS + DEC_FLOPS);
        assert_eq!(
            p.cost.bytes_per_example,
            4 * ((512 + 512 + 64) + (512 + 512 + 784))
        );
        assert_eq!(p.cost.flops_per_batch, 128 * (ENC_FLOPS + DEC_FLOPS));
        let text = p.to_string();
        assert!(text.contains("continuous Normal: reparameterized sampling"));
        assert!(text.contains(&format!("{} parameters", enc + dec)));
        assert_eq!(text, plan(&vae()).to_string(), "deterministic");
    }

    #[test]
    fn samples_multiply_only_downstream_of_sampled_latents() {
        let mut prog = vae();
        prog.train.objective = Objective::Elbo { samples: 5 };
        let p = plan(&prog);
        // The encoder sees only x: once. The decoder sees z: five times.
        assert_eq!(p.nets[0].calls, 1);
        assert_eq!(p.nets[1].calls, 5);
        assert_eq!(p.cost.flops_per_example, ENC_FLOPS + 5 * DEC_FLOPS);
    }

    #[test]
    fn iwae_kl_is_monte_carlo() {
        let mut prog = vae();
        prog.train.objective = Objective::Iwae { samples: 50 };
        let p = plan(&prog);
        assert_eq!(p.kl[0].method, KlMethod::MonteCarlo);
        assert_eq!(
            p.kl[0].reason,
            "iwae bound: no separate KL term, Monte Carlo log-weights"
        );
        assert!(p.to_string().contains("iwae(samples = 50)"));
        prog.train.objective = Objective::Elbo { samples: 1 };
        prog.train.kl = KlMode::Mc;
        assert_eq!(plan(&prog).kl[0].method, KlMethod::MonteCarlo);
    }

    #[test]
    fn flow_site() {
        let mut prog = vae();
        let ar = prog.nets.len();
        prog.nets.push(net(
            "ar",
            &[("z", real(&[32])), ("h", real(&[8]))],
            &[("m", real(&[32])), ("s", real(&[32]))],
            Arch::Made {
                hidden: vec![64],
                act: Activation::Elu,
            },
        ));
        if let Guide::Amortized(b) = &mut prog.guide {
            if let Stmt::Sample(site) = &mut b.stmts[1] {
                site.flows.push(Flow {
                    kind: FlowKind::Iaf { net: ar, steps: 2 },
                    context: vec![num(0.0)],
                    span: Span::Artificial,
                });
            }
        }
        let p = plan(&prog);
        assert_eq!(
            p.sites[0].reason,
            "continuous Normal through 2 iaf steps: reparameterized sampling"
        );
        assert_eq!(p.kl[0].method, KlMethod::MonteCarlo);
        assert_eq!(
            p.kl[0].reason,
            "the iaf-transformed guide has no closed-form density ratio"
        );
        let per = 40 * 64 + 64 + 64 * 64 + 64;
        assert_eq!(p.nets[ar].params_per_copy, per);
        assert_eq!(p.nets[ar].params, 2 * per);
        assert_eq!(p.nets[ar].calls, 2);
        assert!(p.to_string().contains("× 2 iaf steps"));
    }

    /// A Gaussian-mixture VAE: `c ~ Categorical` enumerated, `z | c` Normal.
    fn gmvae(k: usize) -> Program {
        let mut p = P::new();
        let x = p.data("x", binary(&[784]), DataRole::Observed);
        let c = p.latent("c", cat(k, &[]), false);
        let z = p.latent("z", real(&[8]), false);
        let qc = p.net(
            "q_c",
            &[("x", binary(&[784]))],
            &[("q_c", real(&[k]))],
            Arch::Linear { bias: true },
        );
        let qz = p.net(
            "q_z",
            &[("x", binary(&[784])), ("c", cat(k, &[]))],
            &[("loc", real(&[8])), ("scale", pos(&[8]))],
            Arch::Linear { bias: true },
        );
        let dec = p.net(
            "dec",
            &[("z", real(&[8]))],
            &[("dec", real(&[784]))],
            Arch::Linear { bias: true },
        );
        let xr = || reference(Ref::Data(0), binary(&[784]));
        let _ = x;
        p.0.model = body(
            vec![
                sample(
                    SiteVar::Latent(c),
                    cat(k, &[]),
                    dist(
                        DistKind::Categorical,
                        vec![(DistParam::Logits, num(0.0))],
                        cat(k, &[]),
                    ),
                    None,
                    1,
                ),
                sample(
                    SiteVar::Latent(z),
                    real(&[8]),
                    normal(num(0.0), num(1.0), real(&[8])),
                    None,
                    2,
                ),
                sample(
                    SiteVar::Data(0),
                    binary(&[784]),
                    dist(
                        DistKind::Bernoulli,
                        vec![(
                            DistParam::Logits,
                            call(
                                dec,
                                vec![reference(Ref::Latent(z), real(&[8]))],
                                Some(0),
                                real(&[784]),
                            ),
                        )],
                        binary(&[784]),
                    ),
                    None,
                    3,
                ),
            ],
            vec![],
        );
        p.0.guide = Guide::Amortized(body(
            vec![
                sample(
                    SiteVar::Latent(c),
                    cat(k, &[]),
                    dist(
                        DistKind::Categorical,
                        vec![(DistParam::Logits, call(qc, vec![xr()], Some(0), real(&[k])))],
                        cat(k, &[]),
                    ),
                    Some(Strategy::Enumerate),
                    4,
                ),
                let_heads(
                    &[0, 1],
                    call(
                        qz,
                        vec![xr(), reference(Ref::Latent(c), cat(k, &[]))],
                        None,
                        real(&[16]),
                    ),
                ),
                sample(
                    SiteVar::Latent(z),
                    real(&[8]),
                    normal(
                        reference(Ref::Local(0), real(&[8])),
                        reference(Ref::Local(1), pos(&[8])),
                        real(&[8]),
                    ),
                    Some(Strategy::Reparameterized),
                    5,
                ),
            ],
            vec![local("m", real(&[8])), local("s", pos(&[8]))],
        ));
        p.0
    }

    #[test]
    fn enumerated_cat_site() {
        let p = plan(&gmvae(10));
        assert_eq!(p.sites[0].estimator, Estimator::Enumerate);
        assert_eq!(
            p.sites[0].reason,
            "Cat(10): summed exactly over 10 values (default for finite supports)"
        );
        assert_eq!(p.enumeration.exact, Some(10));
        assert_eq!(p.kl[0].method, KlMethod::Enumerated);
        // q_c sees x only; q_z sees c (×10); dec sees z, drawn downstream of c (×10).
        assert_eq!(p.nets[0].calls, 1);
        assert_eq!(p.nets[1].calls, 10);
        assert_eq!(p.nets[2].calls, 10);
        assert!(p.to_string().contains("enumerated jointly: 10 values"));
    }

    #[test]
    fn other_strategies() {
        let mut prog = gmvae(10);
        let set = |prog: &mut Program, s: Strategy| {
            if let Guide::Amortized(b) = &mut prog.guide {
                if let Stmt::Sample(site) = &mut b.stmts[0] {
                    site.strategy = Some(s);
                }
            }
        };
        set(&mut prog, Strategy::Reinforce);
        let p = plan(&prog);
        assert_eq!(p.sites[0].estimator, Estimator::Reinforce);
        assert_eq!(
            p.sites[0].reason,
            "@reinforce given: score function with a learned baseline"
        );
        assert_eq!(p.enumeration.exact, Some(1));
        set(&mut prog, Strategy::Relax { temperature: 0.5 });
        let p = plan(&prog);
        assert!(p.sites[0]
            .reason
            .starts_with("@relax(temperature = 0.5) given"));
        // Refinement re-evaluates what depends on the refined latent.
        let mut prog = vae();
        if let Guide::Amortized(b) = &mut prog.guide {
            if let Stmt::Sample(site) = &mut b.stmts[1] {
                site.strategy = Some(Strategy::Refine {
                    steps: 20,
                    lr: 1.0,
                    through: true,
                    momentum: 0.5,
                    clip: 5.0,
                });
            }
        }
        let p = plan(&prog);
        assert_eq!(p.sites[0].estimator.name(), "refine");
        assert_eq!(p.nets[1].calls, 21);
        assert_eq!(p.kl[0].method, KlMethod::Analytic);
    }

    #[test]
    fn guide_exact_plan() {
        // Factor analysis: z ~ Normal(0, 1); x ~ Normal(load(z), noise).
        let mut p = P::new();
        p.data("x", real(&[5]), DataRole::Observed);
        let z = p.latent("z", real(&[2]), false);
        p.param("noise", pos(&[5]));
        let load = p.net(
            "load",
            &[("z", real(&[2]))],
            &[("load", real(&[5]))],
            Arch::Linear { bias: true },
        );
        p.0.model = body(
            vec![
                sample(
                    SiteVar::Latent(z),
                    real(&[2]),
                    normal(num(0.0), num(1.0), real(&[2])),
                    None,
                    7,
                ),
                sample(
                    SiteVar::Data(0),
                    real(&[5]),
                    normal(
                        call(
                            load,
                            vec![reference(Ref::Latent(z), real(&[2]))],
                            Some(0),
                            real(&[5]),
                        ),
                        reference(Ref::Param(0), pos(&[5])),
                        real(&[5]),
                    ),
                    None,
                    8,
                ),
            ],
            vec![],
        );
        p.0.guide = Guide::Exact {
            posterior: ExactPosterior::LinearGaussian,
            span: Span::Artificial,
        };
        let pl = plan(&p.0);
        assert_eq!(pl.sites[0].estimator, Estimator::Exact);
        assert_eq!(
            pl.sites[0].reason,
            "guide exact: linear-Gaussian posterior with full covariance"
        );
        assert_eq!(pl.sites[0].span, Span::Src(7, 8));
        assert_eq!(pl.kl[0].method, KlMethod::None);
        assert_eq!(pl.kl[0].reason, "exact marginal likelihood: no KL");
        assert_eq!(pl.param_scalars, 5);
        assert_eq!(pl.total_params, 2 * 5 + 5 + 5);
        assert_eq!(pl.nets[0].calls, 1);
    }

    #[test]
    fn globals_and_weights_are_per_dataset() {
        let mut prog = vae();
        prog.latents[0].global = true;
        prog.nets[1].weights = Weights::Bayes { prior_scale: 1.0 };
        let p = plan(&prog);
        assert!(p.kl[0].per_dataset);
        assert!(p.kl[0]
            .reason
            .ends_with("KL once per dataset, scaled per minibatch"));
        let w = p.kl.iter().find(|k| k.subject == KlSubject::Weights(1));
        assert!(w.is_some_and(|w| w.per_dataset && w.method == KlMethod::Analytic));
        assert_eq!(
            p.nets[1].params,
            2 * (32 * 512 + 512 + 512 * 512 + 512 + 512 * 784 + 784)
        );
        assert_eq!(p.nets[1].flops, 2 * DEC_FLOPS);
    }

    #[test]
    fn non_analytic_pair_and_loops() {
        let mut prog = vae();
        // A Laplace prior under a Normal guide: no closed form.
        if let Stmt::Sample(site) = &mut prog.model.stmts[0] {
            site.dist.kind = DistKind::Laplace;
        }
        let p = plan(&prog);
        assert_eq!(p.kl[0].method, KlMethod::MonteCarlo);
        assert!(p.kl[0].reason.contains("KL(Normal ‖ Laplace)"));

        // A decoder called inside a loop of 7 steps.
        let mut prog = vae();
        let obs = prog.model.stmts.remove(1);
        prog.model.loops.push(LoopDef {
            var: "t".into(),
            from: 1,
            to: 7,
            span: Span::Artificial,
        });
        prog.model.stmts.push(Stmt::Loop {
            loop_id: 0,
            body: vec![obs],
            span: Span::Artificial,
        });
        assert_eq!(plan(&prog).nets[1].calls, 7);
    }

    #[test]
    fn model_without_latents() {
        // The variational-dropout classifier of the appendix: no latent, no guide.
        let mut p = P::new();
        p.data("x", real(&[20]), DataRole::Given);
        p.data("y", cat(10, &[]), DataRole::Observed);
        let clf = p.net(
            "clf",
            &[("x", real(&[20]))],
            &[("clf", real(&[10]))],
            mlp(&[64]),
        );
        p.0.nets[clf].weights = Weights::Vdrop {
            kind: VdropKind::B,
            kl: crate::ir::VdropKl::Molchanov,
        };
        p.0.model = body(
            vec![sample(
                SiteVar::Data(1),
                cat(10, &[]),
                dist(
                    DistKind::Categorical,
                    vec![(
                        DistParam::Logits,
                        call(
                            clf,
                            vec![reference(Ref::Data(0), real(&[20]))],
                            Some(0),
                            real(&[10]),
                        ),
                    )],
                    cat(10, &[]),
                ),
                None,
                1,
            )],
            vec![],
        );
        let pl = plan(&p.0);
        assert!(pl.sites.is_empty());
        let w = pl.kl_of(&KlSubject::Weights(clf));
        assert!(w.is_some_and(|w| w.method == KlMethod::Approximate && w.per_dataset));
        let weights = 20 * 64 + 64 * 10;
        assert_eq!(pl.total_params, weights + 64 + 10 + weights);
        assert_eq!(pl.net(clf).map(|n| n.calls), Some(1));
        assert_eq!(pl.cost.flops_per_example, 2 * 2 * weights);
        let text = pl.to_string();
        assert!(text.contains("sites:\n  (none)"), "{text}");
        assert!(text.contains("vdrop B weights"), "{text}");
    }

    #[test]
    fn plan_round_trips_through_serde() {
        let p = plan(&gmvae(3));
        let json = serde_json::to_string(&p).unwrap_or_default();
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        let ron_text = ron::to_string(&p).unwrap_or_default();
        let back: Plan = ron::from_str(&ron_text).unwrap();
        assert_eq!(back, p);
    }
}

#[cfg(test)]
mod e2e_tests {
    use super::*;
    use crate::arch::e2e;

    fn program(src: &str) -> Program {
        match e2e::program(src) {
            Ok(p) => p,
            Err(d) => panic!("{d:#?}"),
        }
    }

    #[test]
    fn vae_from_source() {
        let p = plan(&program(e2e::VAE));
        assert_eq!(
            p.nets[0].params,
            784 * 512 + 512 + 512 * 512 + 512 + 512 * 64 + 64
        );
        assert_eq!(
            p.nets[1].params,
            32 * 512 + 512 + 512 * 512 + 512 + 512 * 784 + 784
        );
        assert_eq!(
            p.sites[0].reason,
            "continuous Normal: reparameterized sampling"
        );
        assert_eq!(p.kl[0].reason, "closed form KL(Normal ‖ Normal)");
    }

    #[test]
    fn vrnn_from_source() {
        let p = plan(&program(e2e::VRNN));
        let calls: Vec<(&str, u64)> = p.nets.iter().map(|n| (n.name.as_str(), n.calls)).collect();
        // Every call sits in a loop of 4 steps; the cell is called from model and guide.
        assert_eq!(
            calls,
            vec![("cell", 8), ("prior", 4), ("post", 4), ("emit", 4)]
        );
        // GRUCell(I = 8 + 2, H = 16).
        assert_eq!(p.nets[0].params, 3 * 16 * (10 + 16) + 6 * 16);
        assert_eq!(p.sites[0].steps, 4);
        assert_eq!(
            p.sites[0].reason,
            "continuous Normal: reparameterized sampling, at each of 4 steps"
        );
    }

    #[test]
    fn m2_from_source() {
        let p = plan(&program(e2e::M2));
        assert_eq!(p.sites[0].name, "y");
        assert_eq!(p.sites[0].estimator, Estimator::Enumerate);
        assert_eq!(
            p.sites[0].reason,
            "Cat(10): summed exactly over 10 values (default for finite supports) (used where the value is missing)"
        );
        let calls: Vec<u64> = p.nets.iter().map(|n| n.calls).collect();
        // classify sees x; encode sees y (×10); decode sees z and y (×10).
        assert_eq!(calls, vec![1, 10, 10]);
        let y = p.kl.iter().find(|k| k.subject == KlSubject::Partial(1));
        assert!(y.is_some_and(|k| k.method == KlMethod::Enumerated));
    }

    #[test]
    fn draw_from_source() {
        let p = plan(&program(e2e::DRAW));
        let write = p.nets.iter().find(|n| n.name == "write");
        // 32 → 5 and 32 → 1·5·5, called once per step in model and guide.
        assert!(write.is_some_and(|w| w.params == (32 * 5 + 5) + (32 * 25 + 25) && w.calls == 6));
        assert!(p.cost.flops_per_example > 0);
    }
}

#[cfg(test)]
mod e2e_strategy_tests {
    use super::*;
    use crate::arch::e2e;

    fn vae_with(guide_site: &str, extra: &str) -> Plan {
        let src = format!(
            r#"
const D = 20
const Z = 4
const C = 3
data x : Binary[D]
latent z : Real[Z]
net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[C]) = mlp(hidden = [16], act = elu)
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [16])
{extra}
model {{ z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }}
guide {{ let (m, s, h) = enc(x); {guide_site} }}
"#
        );
        match e2e::program(&src) {
            Ok(p) => plan(&p),
            Err(d) => panic!("{d:#?}"),
        }
    }

    #[test]
    fn iaf_from_source() {
        let p = vae_with(
            "z ~ Normal(m, s) |> iaf(ar, h, steps = 2)",
            "net ar(z: Real[Z], h: Real[C]) -> (m: Real[Z], s: Real[Z]) = made(hidden = [32], act = elu)",
        );
        let ar = p.nets.iter().find(|n| n.name == "ar");
        let per = (4 + 3) * 32 + 32 + 32 * 8 + 8;
        assert!(ar.is_some_and(|a| a.params == 2 * per && a.calls == 2));
        assert_eq!(p.kl[0].method, KlMethod::MonteCarlo);
        assert_eq!(p.sites[0].flows.len(), 1);
    }

    #[test]
    fn refine_and_random_function_from_source() {
        let p = vae_with("z ~ Normal(m, s) @refine(steps = 20, lr = 1.0)", "");
        assert_eq!(
            p.sites[0].estimator,
            Estimator::Refine {
                steps: 20,
                lr: 1.0,
                through: true,
                momentum: 0.5,
                clip: 5.0,
            }
        );
        assert_eq!(p.nets[1].calls, 21);
        let p = vae_with("z ~ Normal(m, s) @random_function(inducing = 64)", "");
        assert_eq!(p.sites[0].estimator.name(), "random_function");
        let gp = p.kl_of(&KlSubject::RandomFunction(0));
        assert!(gp.is_some_and(|k| k.per_dataset));
    }
}
