//! The typed IR: a checked spec with every name resolved, every dimension a number,
//! every expression typed (domain and shape), every network's architecture and every
//! `train` / `meta` setting resolved with its defaults.
//!
//! This is what lowering consumes, so it carries everything lowering needs for every
//! construct of the language (loops and sequence states, flows, inference strategies,
//! sets and `meta`, `guide exact`, Bayesian weights, `@per_member`). It is printed as
//! RON by `vic compile --emit ir` and reads back to an equal value.
//!
//! Conventions: shapes exclude the implicit example (batch) axis. Declarations are
//! referred to by index into the `Program`'s tables (`DataId`, `LatentId`, ...), locals
//! (`let` bindings) by index into their block's `locals` table.

use crate::span::Span;

pub mod walk;
use serde::{Deserialize, Serialize};

pub type ConstId = usize;
pub type DataId = usize;
pub type LatentId = usize;
pub type ParamId = usize;
pub type NetId = usize;
pub type SetId = usize;
pub type LocalId = usize;
pub type LoopId = usize;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Program {
    pub consts: Vec<ConstDef>,
    pub data: Vec<DataDef>,
    pub latents: Vec<LatentDef>,
    pub params: Vec<ParamDef>,
    pub nets: Vec<NetDef>,
    pub sets: Vec<SetDef>,
    pub model: Body,
    pub guide: Guide,
    pub train: TrainConfig,
    pub meta: Option<MetaConfig>,
}

// ---------------------------------------------------------------------------------
// Types

/// The value domains of LANGUAGE.md section 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Domain {
    Real,
    Positive,
    Unit,
    Binary,
    Count,
    Simplex,
    /// A class in `0..K`.
    Cat(usize),
    /// Only on expressions the checker could not type (never in a program without errors,
    /// except as the type of a multi-head `NetCall { head: None }`, the value of a tuple
    /// `let`, whose heads carry the types): accepted everywhere so that one mistake is
    /// reported once.
    Unknown,
}

impl Domain {
    /// `self ⊆ other` under `Binary ⊂ Unit ⊂ Real`, `Count ⊂ Real`, `Positive ⊂ Real`,
    /// `Simplex ⊂ Real` (componentwise).
    pub fn is_subdomain_of(self, other: Domain) -> bool {
        use Domain::*;
        match (self, other) {
            (Unknown, _) | (_, Unknown) => true,
            (a, b) if a == b => true,
            (Binary, Unit) => true,
            (Binary | Unit | Count | Positive | Simplex, Real) => true,
            _ => false,
        }
    }

    pub fn is_discrete(self) -> bool {
        matches!(self, Domain::Binary | Domain::Count | Domain::Cat(_))
    }

    pub fn name(self) -> String {
        match self {
            Domain::Real => "Real".into(),
            Domain::Positive => "Positive".into(),
            Domain::Unit => "Unit".into(),
            Domain::Binary => "Binary".into(),
            Domain::Count => "Count".into(),
            Domain::Simplex => "Simplex".into(),
            Domain::Cat(k) => format!("Cat({k})"),
            Domain::Unknown => "?".into(),
        }
    }
}

/// A domain and a shape (the example axis excluded). `Real` is `shape == []`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Type {
    pub domain: Domain,
    pub shape: Vec<usize>,
}

impl Type {
    pub fn new(domain: Domain, shape: Vec<usize>) -> Type {
        Type { domain, shape }
    }

    pub fn scalar(domain: Domain) -> Type {
        Type {
            domain,
            shape: Vec::new(),
        }
    }

    pub fn unknown() -> Type {
        Type::scalar(Domain::Unknown)
    }

    /// Number of scalars in one example's value (saturating: absurd shapes from user
    /// consts give `usize::MAX`, which the cost rule E017 rejects, instead of a panic).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    /// The width this value has when fed to a dense network: a `Cat(K)` value is one-hot.
    pub fn dense_width(&self) -> usize {
        match self.domain {
            Domain::Cat(k) => self.numel().saturating_mul(k),
            _ => self.numel(),
        }
    }

    /// How the type is written in a spec, with numbers for dimensions (`Real[32]`).
    pub fn display(&self) -> String {
        if self.shape.is_empty() {
            self.domain.name()
        } else {
            let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
            format!("{}[{}]", self.domain.name(), dims.join(", "))
        }
    }
}

// ---------------------------------------------------------------------------------
// Declarations

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConstDef {
    pub name: String,
    /// After `--set` overrides.
    pub value: usize,
    /// Whether the value came from a `--set` override.
    pub overridden: bool,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRole {
    Observed,
    Given,
    Partial,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataDef {
    pub name: String,
    pub ty: Type,
    pub role: DataRole,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentDef {
    pub name: String,
    pub ty: Type,
    /// One shared copy for the whole dataset (not per example).
    pub global: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    Value(f64),
    Normal { mean: f64, std: f64 },
    Uniform { low: f64, high: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamDef {
    pub name: String,
    /// The constrained domain: lowering keeps an unconstrained tensor and maps it
    /// (softplus for Positive, sigmoid for Unit, softmax for Simplex).
    pub ty: Type,
    /// Given in the constrained space. Default: `zeros` for Real, `ones` for Positive,
    /// `0.5` for Unit, uniform for Simplex.
    pub init: Init,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetDef {
    pub name: String,
    /// The type of one member of the set.
    pub ty: Type,
    pub size: usize,
    pub span: Span,
}

// ---------------------------------------------------------------------------------
// Networks

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetDef {
    pub name: String,
    pub inputs: Vec<NetInput>,
    /// One entry per head; a single-output network has one head named after the network
    /// (`single_output == true`).
    pub heads: Vec<Head>,
    pub single_output: bool,
    pub arch: Arch,
    pub weights: Weights,
    /// `@per_member`: one copy of the weights per member distribution of the `meta` family.
    pub per_member: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetInput {
    pub name: String,
    /// For a `Set[T]` input, the member type `T`.
    pub ty: Type,
    /// `Set[T]`: a context set of `T`s.
    pub set: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub name: String,
    pub ty: Type,
    /// The output activation implied by the head's domain (section 4).
    pub activation: HeadActivation,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadActivation {
    None,
    /// softplus plus a small floor (Positive heads).
    Softplus,
    /// Unit and Binary heads.
    Sigmoid,
    /// Simplex heads, over the last axis.
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Relu,
    Tanh,
    Softplus,
    Elu,
    LeakyRelu,
    Gelu,
    Sigmoid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Norm {
    None,
    Layer,
    Batch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pool {
    Mean,
    Sum,
    Max,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arch {
    Linear {
        bias: bool,
    },
    Mlp {
        hidden: Vec<usize>,
        act: Activation,
        dropout: f64,
        norm: Norm,
    },
    /// First input an image `[C, H, W]`; other inputs appended after flattening.
    Conv {
        channels: Vec<usize>,
        kernel: usize,
        stride: usize,
        act: Activation,
        hidden: Vec<usize>,
    },
    /// Dense inputs; one image head `[C, H, W]`.
    Deconv {
        channels: Vec<usize>,
        kernel: usize,
        stride: usize,
        act: Activation,
        hidden: Vec<usize>,
    },
    Gru,
    Lstm,
    /// Masked autoencoder, autoregressive in the first input.
    Made {
        hidden: Vec<usize>,
        act: Activation,
    },
    DeepSets {
        phi: Vec<usize>,
        rho: Vec<usize>,
        pool: Pool,
        act: Activation,
    },
    /// Gaussian filterbank read (DRAW), an `N x N` grid per channel.
    AttendRead {
        grid: usize,
    },
    AttendWrite {
        grid: usize,
    },
}

impl Arch {
    pub fn name(&self) -> &'static str {
        match self {
            Arch::Linear { .. } => "linear",
            Arch::Mlp { .. } => "mlp",
            Arch::Conv { .. } => "conv",
            Arch::Deconv { .. } => "deconv",
            Arch::Gru => "gru",
            Arch::Lstm => "lstm",
            Arch::Made { .. } => "made",
            Arch::DeepSets { .. } => "deepsets",
            Arch::AttendRead { .. } => "attend_read",
            Arch::AttendWrite { .. } => "attend_write",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VdropKind {
    A,
    B,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Weights {
    Point,
    /// Factorized Gaussian posterior over weights, local reparameterization trick.
    Bayes {
        prior_scale: f64,
    },
    /// Variational dropout with the log-uniform prior.
    Vdrop {
        kind: VdropKind,
        /// Which closed-form approximation of the KL to the log-uniform prior.
        #[serde(default)]
        kl: VdropKl,
    },
}

/// The approximations of the variational-dropout KL (its exact value has no closed form).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VdropKl {
    /// Molchanov, Ashukha & Vetrov 2017 (sparse variational dropout): valid for every α,
    /// log α clipped to [-8, 8].
    #[default]
    Molchanov,
    /// Kingma, Salimans & Welling 2015: a cubic in α, valid for α <= 1 (α is clipped there).
    Kingma,
}

// ---------------------------------------------------------------------------------
// Blocks, statements and expressions

/// The statements of `model` or of an amortized `guide`, and the `let` bindings and
/// loops they introduce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub locals: Vec<Local>,
    pub loops: Vec<LoopDef>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Guide {
    /// No `guide` item (allowed when there are no latents and no `partial` data).
    None,
    /// `guide exact`: the compiler derives the posterior (see `ExactPosterior`).
    Exact {
        posterior: ExactPosterior,
        span: Span,
    },
    Amortized(Body),
}

/// How `guide exact` computes the posterior.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExactPosterior {
    /// Every latent Normal, every observation Normal with a mean linear in the latents
    /// and a latent-free scale: a joint Gaussian posterior with full covariance.
    LinearGaussian,
    /// Every latent finite and discrete: enumeration over the joint support.
    Enumerate,
    /// Finite discrete latents enumerated, and given each of their values the
    /// remaining (continuous) latents linear-Gaussian.
    EnumerateLinearGaussian,
}

/// A `let` binding. A sequence (`let h[0] = ...`, `let h[t] = ...`) has `steps = Some(n)`:
/// values at steps `0..=n`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Local {
    pub name: String,
    /// The type of one value (one step, for a sequence).
    pub ty: Type,
    pub steps: Option<usize>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoopDef {
    pub var: String,
    /// Inclusive bounds, resolved.
    pub from: usize,
    pub to: usize,
    pub span: Span,
}

/// A time index: `t` (`loop = Some(l), offset = 0`), `t-1` (`offset = -1`), `0` or `T`
/// (`loop = None`, `offset = 0` or `T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub loop_id: Option<LoopId>,
    pub offset: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Stmt {
    Let {
        targets: Vec<LetTarget>,
        value: Expr,
        span: Span,
    },
    Sample(Site),
    Loop {
        loop_id: LoopId,
        body: Vec<Stmt>,
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LetTarget {
    pub local: LocalId,
    /// For a sequence: the step being defined.
    pub step: Option<Step>,
    /// For the tuple form: which head of the network call this target takes.
    pub head: Option<usize>,
    pub span: Span,
}

/// What a `~` statement samples or observes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SiteVar {
    Latent(LatentId),
    Data(DataId),
}

/// A sample statement (`x ~ ...`) of `model` or `guide`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Site {
    pub var: SiteVar,
    /// `z[t] ~ ...`: one time step of a `[T, ...]` variable.
    pub step: Option<Step>,
    /// The type of the value this statement draws (one step's slice for a stepped site).
    pub ty: Type,
    pub dist: Dist,
    /// `|> iaf(...)` flows, applied in order (guide sites only).
    pub flows: Vec<Flow>,
    /// How the guide estimates gradients through this site. `None` in `model`.
    pub strategy: Option<Strategy>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistKind {
    Normal,
    LogNormal,
    Laplace,
    StudentT,
    Uniform,
    Exponential,
    Gamma,
    Beta,
    Bernoulli,
    ContinuousBernoulli,
    Categorical,
    Poisson,
    Dirichlet,
    Mixture,
}

impl DistKind {
    pub fn name(self) -> &'static str {
        match self {
            DistKind::Normal => "Normal",
            DistKind::LogNormal => "LogNormal",
            DistKind::Laplace => "Laplace",
            DistKind::StudentT => "StudentT",
            DistKind::Uniform => "Uniform",
            DistKind::Exponential => "Exponential",
            DistKind::Gamma => "Gamma",
            DistKind::Beta => "Beta",
            DistKind::Bernoulli => "Bernoulli",
            DistKind::ContinuousBernoulli => "ContinuousBernoulli",
            DistKind::Categorical => "Categorical",
            DistKind::Poisson => "Poisson",
            DistKind::Dirichlet => "Dirichlet",
            DistKind::Mixture => "Mixture",
        }
    }

    /// Whether samples can be written as a differentiable function of parameter-free noise.
    pub fn has_rsample(self) -> bool {
        matches!(
            self,
            DistKind::Normal
                | DistKind::LogNormal
                | DistKind::Laplace
                | DistKind::StudentT
                | DistKind::Uniform
                | DistKind::Exponential
                | DistKind::ContinuousBernoulli
        )
    }
}

/// Whether KL(q || p) has a closed form for a guide family `q` and a model family `p`
/// (both without flows). The one table the rules (E011 `kl = analytic`), the plan and
/// lowering all consult.
pub fn has_analytic_kl(q: DistKind, p: DistKind) -> bool {
    use DistKind::*;
    matches!(
        (q, p),
        (Normal, Normal)
            | (LogNormal, LogNormal)
            | (Laplace, Laplace)
            | (Exponential, Exponential)
            | (Gamma, Gamma)
            | (Beta, Beta)
            | (Bernoulli, Bernoulli)
            | (Categorical, Categorical)
            | (Poisson, Poisson)
            | (Dirichlet, Dirichlet)
            | (Uniform, Uniform)
    )
}

/// Which named parameter an argument fills. `Bernoulli` and `Categorical` take exactly
/// one of `Probs` / `Logits`; the checker records which.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistParam {
    Loc,
    Scale,
    Df,
    Low,
    High,
    Rate,
    Concentration,
    A,
    B,
    Probs,
    Logits,
}

/// A distribution with its arguments resolved to named parameters (in the order of
/// LANGUAGE.md section 7), each argument typed and broadcast-checked against the
/// variable's shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dist {
    pub kind: DistKind,
    pub args: Vec<(DistParam, Expr)>,
    /// `Mixture(logits = w, component = ...)`: the component, whose arguments carry a
    /// leading `K` axis.
    pub component: Option<Box<Dist>>,
    /// The support, with the event shape of one draw.
    pub support: Type,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FlowKind {
    /// Inverse autoregressive flow: `steps` copies of the `made` network, called as
    /// `net(z, context...)`, with the order of `z` reversed between steps.
    Iaf { net: NetId, steps: usize },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub kind: FlowKind,
    /// Context inputs passed after `z` to the flow's network.
    pub context: Vec<Expr>,
    pub span: Span,
}

/// The gradient estimator of a guide site (section 8). Always resolved: a site without
/// `@` gets the default for its support.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    /// The default for continuous sites.
    Reparameterized,
    /// Exact sum over the finite support (the default for discrete sites).
    Enumerate,
    /// Concrete / Gumbel-softmax relaxation.
    Relax { temperature: f64 },
    /// Score function with a learned baseline.
    Reinforce,
    /// Semi-amortized refinement (SA-VAE).
    Refine {
        steps: usize,
        lr: f64,
        through: bool,
        /// Momentum of the refinement's gradient steps (SA-VAE's reference uses 0.5).
        #[serde(default = "default_refine_momentum")]
        momentum: f64,
        /// Each refined parameter's gradient is clipped to this norm per step (5).
        #[serde(default = "default_refine_clip")]
        clip: f64,
    },
    /// Gaussian-process random-function guide: the site's Normal parameters get a GP
    /// error over the input of the network that computes them. The checker resolves
    /// that network (`net`) and the expressions of its inputs (`inputs`) from the site's
    /// `loc` argument.
    RandomFunction {
        inducing: usize,
        kernel: Kernel,
        #[serde(default)]
        net: Option<NetId>,
        #[serde(default)]
        inputs: Vec<Expr>,
    },
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Reparameterized => "reparameterized",
            Strategy::Enumerate => "enumerate",
            Strategy::Relax { .. } => "relax",
            Strategy::Reinforce => "reinforce",
            Strategy::Refine { .. } => "refine",
            Strategy::RandomFunction { .. } => "random_function",
        }
    }
}

/// SA-VAE's reference refinement: momentum 0.5, gradients clipped at norm 5.
pub fn default_refine_momentum() -> f64 {
    0.5
}

pub fn default_refine_clip() -> f64 {
    5.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kernel {
    Rbf,
    Matern32,
    Matern52,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub ty: Type,
    pub span: Span,
}

/// What a name in an expression refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ref {
    Data(DataId),
    Latent(LatentId),
    Param(ParamId),
    Set(SetId),
    Local(LocalId),
    /// A loop variable used as a number (not as a time index).
    LoopVar(LoopId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryFn {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Softplus,
    Sigmoid,
    Tanh,
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reduce {
    Sum,
    Mean,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// A number (a literal or a const, already resolved).
    Number(f64),
    Ref(Ref),
    /// `h[t-1]`, `z[t]`, `c[T]`: one step of a sequence local or a `[T, ...]` variable.
    /// Data and latents are 1-based along their leading axis (`z[1]` is the first row).
    Step {
        base: Box<Expr>,
        step: Step,
    },
    /// `mu[c]`: selects along a leading `K` axis with a `Cat(K)` value.
    Select {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    /// `net(args)` (all heads; only as the value of a tuple `let`, typed
    /// `Type::unknown()`) or `net(args).head` / a single-output network (`head = Some(i)`,
    /// typed as that head).
    NetCall {
        net: NetId,
        args: Vec<Expr>,
        head: Option<usize>,
    },
    Unary {
        op: UnaryFn,
        arg: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `sum(e)` / `mean(e)` over all axes of one example.
    Reduce {
        op: Reduce,
        arg: Box<Expr>,
    },
    /// `concat(a, b, ...)` along the first axis.
    Concat(Vec<Expr>),
    /// `zeros(dims)` / `ones(dims)`: a constant filled tensor of `ty.shape`.
    Fill(f64),
    /// A checker-internal placeholder for an expression that failed to type (never
    /// present in a program without errors).
    Invalid,
}

// ---------------------------------------------------------------------------------
// train { } and meta { }

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub dataset: Dataset,
    pub binarize: Binarize,
    pub objective: Objective,
    pub kl: KlMode,
    pub beta: f64,
    pub anneal: Option<Anneal>,
    /// The learning-rate schedule.
    #[serde(default)]
    pub decay: Decay,
    /// Nats per latent (0 = off).
    pub free_bits: f64,
    pub optimizer: Optimizer,
    pub clip: Option<f64>,
    pub schedule: Schedule,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    /// How many examples keep their `partial` values (`None` = all).
    pub labels: Option<usize>,
    pub supervised_weight: f64,
    /// The estimator `vic eval` uses.
    pub eval: Objective,
    pub device: Device,
    /// Fraction held out as the test split when the data has none.
    pub split: f64,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            dataset: Dataset::Builtin("digits".into()),
            binarize: Binarize::Dynamic,
            objective: Objective::Elbo { samples: 1 },
            kl: KlMode::Auto,
            beta: 1.0,
            anneal: None,
            decay: Decay::None,
            free_bits: 0.0,
            optimizer: Optimizer::Adam {
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
            },
            clip: None,
            schedule: Schedule::Joint,
            batch: 128,
            epochs: 10,
            seed: 0,
            labels: None,
            supervised_weight: 0.1,
            eval: Objective::Iwae { samples: 1000 },
            device: Device::Cpu,
            split: 0.1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Dataset {
    /// `"digits"`, `"fashion-mnist"`, `"mnist"`.
    Builtin(String),
    /// A file path as written (resolved against the spec's directory by the CLI).
    Path(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Binarize {
    Dynamic,
    Threshold(f64),
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    Elbo { samples: usize },
    Iwae { samples: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KlMode {
    Auto,
    Analytic,
    Mc,
}

/// `train.decay`: how the learning rate changes over training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Decay {
    /// The optimizer's learning rate throughout.
    #[default]
    None,
    /// Constant until the fraction `from` of the training steps, then linearly to 0 at
    /// the end (Molchanov et al. 2017 decay from half-way: `from = 0.5`).
    Linear { from: f64 },
    /// Multiplied by `rate` per epoch (continuously within an epoch).
    Exponential { rate: f64 },
}

impl Decay {
    /// The learning rate's factor after `progress` epochs out of `epochs`.
    pub fn factor(&self, progress: f64, epochs: f64) -> f64 {
        match *self {
            Decay::None => 1.0,
            Decay::Linear { from } => {
                let p = (progress / epochs.max(1e-12)).clamp(0.0, 1.0);
                if p <= from {
                    1.0
                } else {
                    (1.0 - p) / (1.0 - from).max(1e-12)
                }
            }
            Decay::Exponential { rate } => rate.powf(progress.max(0.0)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anneal {
    /// Linear warm-up of the KL weight from 0 to `beta` over this many epochs.
    pub epochs: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Optimizer {
    Adam {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
        weight_decay: f64,
    },
    Adamax {
        lr: f64,
        betas: [f64; 2],
        eps: f64,
    },
    Sgd {
        lr: f64,
        momentum: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    Joint,
    Alternate { e_steps: usize, m_steps: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaConfig {
    pub family: Family,
    pub train: Members,
    pub test: Members,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Family {
    /// Rotation angles in degrees.
    Rotate(Vec<f64>),
    Scale(Vec<f64>),
    /// Shear angles in degrees.
    Shear(Vec<f64>),
    /// Each label value of the dataset is a member.
    Classes,
    Datasets(Vec<String>),
}

impl Family {
    /// The number of members when it is known without data.
    pub fn size(&self) -> Option<usize> {
        match self {
            Family::Rotate(v) | Family::Scale(v) | Family::Shear(v) => Some(v.len()),
            Family::Datasets(v) => Some(v.len()),
            Family::Classes => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Members {
    All,
    Even,
    Odd,
    List(Vec<usize>),
}

impl Members {
    /// The member indices selected out of `n` members.
    pub fn resolve(&self, n: usize) -> Vec<usize> {
        match self {
            Members::All => (0..n).collect(),
            Members::Even => (0..n).step_by(2).collect(),
            Members::Odd => (1..n).step_by(2).collect(),
            Members::List(v) => v.iter().copied().filter(|&i| i < n).collect(),
        }
    }
}
