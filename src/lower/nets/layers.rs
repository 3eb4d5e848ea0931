//! The building blocks of vic's networks: parameters initialized from vic's `Rng`, linear
//! maps (dense, convolution, transposed convolution) under `point` / `bayes` / `vdrop`
//! weights, layer and batch norm, activations, dropout, dense input gathering and heads.

use super::fused::FusedAct;
use super::fused_vdrop::{self, Term};
use super::NetCtx;
use crate::ir::{Activation, Head, HeadActivation, Norm, Weights};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor, Var, D};
use candle_nn::VarBuilder;

/// Floor added to a `Positive` head after softplus, so a scale never reaches 0.
pub const POSITIVE_FLOOR: f64 = 1e-4;
/// Initial log-variance of every `bayes` weight and bias (σ ≈ 0.0067).
pub const BAYES_INIT_LOGVAR: f64 = -10.0;
/// Initial log α of `vdrop` weights (almost no noise at first).
pub const VDROP_INIT_LOG_ALPHA: f64 = -8.0;
/// Initial log σ² of `vdrop` weights under the additive parameterization (Molchanov et
/// al.'s `ard_init`).
pub const VDROP_INIT_LOG_SIGMA2: f64 = -10.0;
/// The log α past which a weight of the additive form is 0 in training's mean (Molchanov
/// et al.'s `train_clip`, at the pruning threshold).
pub const PRUNE_IN_TRAINING: f64 = 3.0;
/// `vdrop` log α is clamped to this range in the forward pass and the KL (Molchanov et
/// al. 2017 clip it the same way), which keeps the noise finite. Under `kl = "kingma"`
/// the top is 0 (α <= 1, where Kingma et al.'s approximation holds).
pub const VDROP_LOG_ALPHA_RANGE: (f64, f64) = (-8.0, 8.0);
/// Added to the variance of local-reparameterization pre-activations before the square
/// root (the gradient of √v is infinite at 0).
const VAR_EPS: f64 = 1e-8;
/// Batch norm: PyTorch's defaults.
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
pub const NORM_EPS: f64 = 1e-5;

/// How a fresh parameter is initialized (a loaded one keeps its value).
#[derive(Clone, Copy, Debug)]
pub enum Init {
    /// Uniform on `(-bound, bound)`: PyTorch's default for dense, convolutional and
    /// recurrent layers (bound 1/√fan_in, 1/√H for cells).
    Uniform(f64),
    Const(f64),
}

/// A named parameter `[shape]` under `vb`: the existing variable when the var store has
/// it (a loaded checkpoint), else a new one initialized from vic's generator, so that the
/// same seed gives the same initial weights (candle's own generator cannot be seeded).
pub fn param(
    vb: &VarBuilder,
    rng: &mut Rng,
    name: &str,
    shape: &[usize],
    init: Init,
) -> Result<Tensor> {
    if vb.contains_tensor(name) {
        return vb.get(shape, name);
    }
    let n: usize = shape.iter().product();
    let values: Vec<f32> = match init {
        Init::Uniform(bound) => rng
            .uniform_vec(n)
            .into_iter()
            .map(|u| ((2.0 * u as f64 - 1.0) * bound) as f32)
            .collect(),
        Init::Const(c) => vec![c as f32; n],
    };
    let t = vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))?;
    let value = Tensor::from_vec(values, shape, vb.device())?.to_dtype(t.dtype())?;
    if t.is_variable() {
        Var::from_tensor(&t)?.set(&value)?;
        Ok(t)
    } else {
        Ok(value)
    }
}

// ---------------------------------------------------------------------------------
// Linear maps under a weights setting

/// The linear operation a weight tensor takes part in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `x [R, in] · Wᵀ`, `W [out, in]`.
    Matmul,
    /// `conv2d(x [R, c_in, h, w], W [c_out, c_in, k, k])`.
    Conv { stride: usize, padding: usize },
    /// `conv_transpose2d(x [R, c_in, h, w], W [c_in, c_out, k, k])`.
    ConvT {
        stride: usize,
        padding: usize,
        output_padding: usize,
    },
}

impl Op {
    /// `act(conv(x, w) + b)` of a convolution (one fused op on the CPU).
    fn conv(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: FusedAct) -> Result<Tensor> {
        use super::fused_conv::{conv2d, conv_transpose2d};
        match *self {
            Op::Matmul => bail!("a dense map is not a convolution"),
            Op::Conv { stride, padding } => conv2d(x, w, b, act, stride, padding),
            Op::ConvT {
                stride,
                padding,
                output_padding,
            } => conv_transpose2d(x, w, b, act, stride, padding, output_padding),
        }
    }

    /// The axis of the weight tensor that indexes output units.
    fn unit_axis(&self) -> usize {
        match self {
            Op::ConvT { .. } => 1,
            _ => 0,
        }
    }

    fn add_bias(&self, y: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Op::Matmul => y.broadcast_add(b),
            _ => {
                let c = b.dim(0)?;
                y.broadcast_add(&b.reshape((1, c, 1, 1))?)
            }
        }
    }
}

/// The shape of one linear map: its op, weight shape, whether it has a bias, the
/// PyTorch init bound and the checkpoint names of its weight and bias.
pub struct LinearSpec<'n> {
    pub op: Op,
    pub w_shape: Vec<usize>,
    pub bias: bool,
    pub bound: f64,
    pub weight_name: &'n str,
    pub bias_name: &'n str,
}

impl LinearSpec<'_> {
    /// A dense layer `in → out` named `weight` / `bias`, PyTorch's `nn.Linear` init.
    pub fn dense(inp: usize, out: usize, bias: bool) -> LinearSpec<'static> {
        LinearSpec {
            op: Op::Matmul,
            w_shape: vec![out, inp],
            bias,
            bound: 1.0 / (inp.max(1) as f64).sqrt(),
            weight_name: "weight",
            bias_name: "bias",
        }
    }
}

enum Params {
    Point {
        w: Option<Tensor>,
        b: Option<Tensor>,
    },
    /// Means and log-variances; the prior is N(0, prior_var).
    Bayes {
        w: Option<(Tensor, Tensor)>,
        b: Option<(Tensor, Tensor)>,
        prior_var: f64,
    },
    /// θ and log α (per weight entry, or per output unit `[units]`), or under the
    /// additive parameterization θ and log σ² (`additive`); biases are point.
    Vdrop {
        w: Option<(Tensor, Tensor)>,
        b: Option<Tensor>,
        kl: crate::ir::VdropKl,
        additive: bool,
    },
}

/// A linear map (dense layer, convolution or transposed convolution, or one of the two
/// matrices of a recurrent cell) with its weights under `point`, `bayes` or `vdrop`.
///
/// - `point`: `weight`, `bias`.
/// - `bayes(prior_scale)`: `weight_mu`, `weight_logvar`, `bias_mu`, `bias_logvar`; in
///   training the pre-activations are sampled by the local reparameterization trick
///   (Kingma, Salimans & Welling 2015): `N(op(x, W_mu) + b_mu, op(x², exp W_logvar) +
///   exp b_logvar)`, one draw per row and unit from vic's generator; in evaluation the
///   mean weights are used. KL to `N(0, prior_scale²)` in closed form.
/// - `vdrop(kind, kl)`: `weight` (θ), `bias` (point), and `weight_log_alpha` — one per
///   weight entry (kind B) or one per output unit, shared along its row (kind A) — except
///   for kind B with `kl = "molchanov"` (sparse variational dropout), which learns
///   `weight_log_sigma2` instead (the additive noise reparameterization, log α =
///   log σ² − log θ²) and, as Molchanov et al. train, zeroes the mean of weights with
///   log α >= 3. The weight posterior is `N(θ, α θ²)`, sampled in training by local
///   reparameterization; in evaluation θ is used (or pruned, `NetCtx::prune`). KL to the
///   log-uniform prior by [`vdrop_kl`], per weight entry (kind A counts its unit's α once
///   per entry).
///
/// A fixed 0/1 `mask` (MADE) multiplies the weight means and variances, and the masked
/// entries are left out of the KL (they do not act on anything).
pub struct Linear {
    op: Op,
    params: Params,
    mask: Option<Tensor>,
    out_units: usize,
}

impl Linear {
    pub fn new(
        spec: &LinearSpec,
        weights: &Weights,
        mask: Option<Tensor>,
        vb: &VarBuilder,
        rng: &mut Rng,
    ) -> Result<Linear> {
        let ws = spec.w_shape.as_slice();
        let out_units = ws.get(spec.op.unit_axis()).copied().unwrap_or(0);
        let has_w = ws.iter().product::<usize>() > 0;
        let (wn, bn) = (spec.weight_name, spec.bias_name);
        let u = Init::Uniform(spec.bound);
        let point_bias = |rng: &mut Rng| -> Result<Option<Tensor>> {
            if spec.bias {
                Ok(Some(param(vb, rng, bn, &[out_units], u)?))
            } else {
                Ok(None)
            }
        };
        let params = match weights {
            Weights::Point => {
                let w = if has_w {
                    Some(param(vb, rng, wn, ws, u)?)
                } else {
                    None
                };
                Params::Point {
                    w,
                    b: point_bias(rng)?,
                }
            }
            Weights::Bayes { prior_scale } => {
                let lv = Init::Const(BAYES_INIT_LOGVAR);
                let w = if has_w {
                    Some((
                        param(vb, rng, &format!("{wn}_mu"), ws, u)?,
                        param(vb, rng, &format!("{wn}_logvar"), ws, lv)?,
                    ))
                } else {
                    None
                };
                let b = if spec.bias {
                    Some((
                        param(vb, rng, &format!("{bn}_mu"), &[out_units], u)?,
                        param(vb, rng, &format!("{bn}_logvar"), &[out_units], lv)?,
                    ))
                } else {
                    None
                };
                Params::Bayes {
                    w,
                    b,
                    prior_var: prior_scale * prior_scale,
                }
            }
            Weights::Vdrop { kind, kl } => {
                let la = Init::Const(VDROP_INIT_LOG_ALPHA);
                // Sparse variational dropout learns each weight's noise variance σ² = α θ²
                // instead of α: the additive noise reparameterization of Molchanov et al.
                // (2017), whose gradient for θ does not grow with α.
                let additive =
                    *kind == crate::ir::VdropKind::B && *kl == crate::ir::VdropKl::Molchanov;
                let w = if has_w {
                    let theta = param(vb, rng, wn, ws, u)?;
                    let name = format!("{wn}_log_alpha");
                    let log_alpha = match kind {
                        crate::ir::VdropKind::B if additive => param(
                            vb,
                            rng,
                            &format!("{wn}_log_sigma2"),
                            ws,
                            Init::Const(VDROP_INIT_LOG_SIGMA2),
                        )?,
                        crate::ir::VdropKind::B => param(vb, rng, &name, ws, la)?,
                        crate::ir::VdropKind::A => {
                            // [units], broadcast along the unit axis of the weight.
                            let a = param(vb, rng, &name, &[out_units], la)?;
                            let mut shape = vec![1; ws.len()];
                            shape[spec.op.unit_axis()] = out_units;
                            a.reshape(shape)?
                        }
                    };
                    Some((theta, log_alpha))
                } else {
                    if *kind == crate::ir::VdropKind::A && out_units > 0 {
                        // arch counts one log α per row even for a weight with no
                        // columns (a GRU cell whose only input is its state); it acts
                        // on nothing, but the checkpoint has the count `arch` reports.
                        param(vb, rng, &format!("{wn}_log_alpha"), &[out_units], la)?;
                    }
                    None
                };
                Params::Vdrop {
                    w,
                    b: point_bias(rng)?,
                    kl: *kl,
                    additive,
                }
            }
        };
        Ok(Linear {
            op: spec.op,
            params,
            mask,
            out_units,
        })
    }

    fn masked(&self, w: &Tensor) -> Result<Tensor> {
        match &self.mask {
            Some(m) => w.mul(m),
            None => Ok(w.clone()),
        }
    }

    /// Zeros `[R, out]`: the product with a weight of no entries (a cell with no input).
    fn no_weight(&self, x: &Tensor) -> Result<Tensor> {
        Tensor::zeros((x.dim(0)?, self.out_units), x.dtype(), x.device())
    }

    /// The weight `[out, in]` and bias of a dense map with point weights, a bias and no
    /// mask.
    pub fn point_dense(&self) -> Option<(&Tensor, &Tensor)> {
        match (&self.params, &self.mask, self.op) {
            (
                Params::Point {
                    w: Some(w),
                    b: Some(b),
                },
                None,
                Op::Matmul,
            ) => Some((w, b)),
            _ => None,
        }
    }

    /// `act(op(x, masked w) + b)`: one fused op on the CPU, for a dense map
    /// ([`super::fused::dense`], a zero bias standing in for none) and for convolutions. A
    /// mask (MADE) multiplies the weight first: a pass over the weight, not over the
    /// batch's pre-activations.
    fn map(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: FusedAct) -> Result<Tensor> {
        let w = self.masked(w)?;
        match self.op {
            Op::Matmul => {
                let zero;
                let b = match b {
                    Some(b) => b,
                    None => {
                        zero = Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?;
                        &zero
                    }
                };
                super::fused::dense(x, &w, b, act)
            }
            _ => self.op.conv(x, &w, b, act),
        }
    }

    fn with_bias(&self, y: Tensor, b: Option<&Tensor>) -> Result<Tensor> {
        match b {
            Some(b) => self.op.add_bias(&y, b),
            None => Ok(y),
        }
    }

    /// `mean + √(var + ε) · noise`, the noise drawn from vic's generator.
    fn sample(mean: Tensor, var: Tensor, ctx: &mut NetCtx) -> Result<Tensor> {
        let noise = ctx
            .rng
            .normal(mean.dims(), mean.device())?
            .to_dtype(mean.dtype())?;
        mean + (var + VAR_EPS)?.sqrt()?.mul(&noise)?
    }

    /// Input `[R, in]` (dense) or `[R, C, H, W]` (convolutions) to the op's output.
    pub fn forward(&self, x: &Tensor, ctx: &mut NetCtx) -> Result<Tensor> {
        match &self.params {
            Params::Point { w: Some(w), b } => self.map(x, w, b.as_ref(), FusedAct::Identity),
            Params::Point { w: None, b } => self.with_bias(self.no_weight(x)?, b.as_ref()),
            Params::Bayes { w, b, .. } => {
                let b_mu = b.as_ref().map(|(mu, _)| mu);
                let mean = match w {
                    Some((mu, _)) => self.map(x, mu, b_mu, FusedAct::Identity)?,
                    None => self.with_bias(self.no_weight(x)?, b_mu)?,
                };
                if !ctx.train {
                    return Ok(mean);
                }
                let b_var = b.as_ref().map(|(_, lv)| lv.exp()).transpose()?;
                let var = match w {
                    Some((_, lv)) => {
                        self.map(&x.sqr()?, &lv.exp()?, b_var.as_ref(), FusedAct::Identity)?
                    }
                    None => self.with_bias(mean.zeros_like()?, b_var.as_ref())?,
                };
                Self::sample(mean, var, ctx)
            }
            Params::Vdrop { w, b, kl, additive } => {
                let Some((theta, second)) = w else {
                    return self.with_bias(self.no_weight(x)?, b.as_ref());
                };
                // Pruned evaluation: θ where log α <= the threshold, else 0; in training the
                // additive form zeroes the weights past PRUNE_IN_TRAINING in the mean, as
                // Molchanov et al. train.
                let threshold = match (ctx.train, ctx.prune) {
                    (false, Some(th)) => Some(th),
                    (true, _) if *additive => Some(PRUNE_IN_TRAINING),
                    _ => None,
                };
                let fused = |t: Term| match self.mask {
                    None => fused_vdrop::term(theta, second, *kl, *additive, t),
                    Some(_) => Ok(None),
                };
                let mean_w = match threshold {
                    Some(th) => match fused(Term::Mean(th as f32))? {
                        Some(m) => m,
                        None => {
                            let la = vdrop_log_alpha(theta, second, *kl, *additive)?;
                            theta.broadcast_mul(&la.le(th)?.to_dtype(theta.dtype())?)?
                        }
                    },
                    None => theta.clone(),
                };
                let mean = self.map(x, &mean_w, b.as_ref(), FusedAct::Identity)?;
                if !ctx.train {
                    return Ok(mean);
                }
                // The noise of every weight, pruned or not (as Molchanov et al. compute it):
                // [w_shape] α θ², α broadcast along the units for kind A.
                let wvar = match fused(Term::Var)? {
                    Some(v) => v,
                    None => {
                        let la = vdrop_log_alpha(theta, second, *kl, *additive)?;
                        theta.sqr()?.broadcast_mul(&la.exp()?)?
                    }
                };
                let var = self.map(&x.sqr()?, &wvar, None, FusedAct::Identity)?;
                Self::sample(mean, var, ctx)
            }
        }
    }

    /// `act(forward(x))`, one fused op ([`Linear::map`]) for point weights under any
    /// activation but gelu; else the two steps.
    pub fn forward_act(
        &self,
        x: &Tensor,
        act: Option<Activation>,
        ctx: &mut NetCtx,
    ) -> Result<Tensor> {
        if let (Params::Point { w: Some(w), b }, Some(fused)) = (&self.params, FusedAct::of(act)) {
            return self.map(x, w, b.as_ref(), fused);
        }
        let y = self.forward(x, ctx)?;
        match act {
            Some(act) => activate(&y, act),
            None => Ok(y),
        }
    }

    /// The KL of this map's weight posterior to its prior (a scalar), `None` for point weights.
    pub fn kl(&self) -> Result<Option<Tensor>> {
        match &self.params {
            Params::Point { .. } => Ok(None),
            Params::Bayes { w, b, prior_var } => {
                let mut total: Option<Tensor> = None;
                if let Some((mu, lv)) = w {
                    let k = gaussian_kl(mu, lv, *prior_var)?;
                    total = Some(self.masked(&k)?.sum_all()?);
                }
                if let Some((mu, lv)) = b {
                    let k = gaussian_kl(mu, lv, *prior_var)?.sum_all()?;
                    total = Some(match total {
                        Some(t) => (t + k)?,
                        None => k,
                    });
                }
                Ok(total)
            }
            Params::Vdrop {
                w, kl, additive, ..
            } => match w {
                Some((theta, second)) => {
                    if self.mask.is_none() {
                        if let Some(k) = fused_vdrop::term(theta, second, *kl, *additive, Term::Kl)?
                        {
                            return Ok(Some(k));
                        }
                    }
                    let la = vdrop_log_alpha(theta, second, *kl, *additive)?;
                    let k = vdrop_kl(&la, *kl)?.broadcast_as(theta.shape())?;
                    Ok(Some(self.masked(&k)?.sum_all()?))
                }
                None => Ok(None),
            },
        }
    }
}

/// log α of a `vdrop` weight, clipped: the learned log α, or under the additive
/// parameterization `log σ² − log θ²` (a θ of 0 has the largest α).
pub fn vdrop_log_alpha(
    theta: &Tensor,
    second: &Tensor,
    kl: crate::ir::VdropKl,
    additive: bool,
) -> Result<Tensor> {
    if additive {
        let log_theta2 = (theta.sqr()? + 1e-16)?.log()?;
        clamp_log_alpha(&(second - log_theta2)?, kl)
    } else {
        clamp_log_alpha(second, kl)
    }
}

fn clamp_log_alpha(la: &Tensor, kl: crate::ir::VdropKl) -> Result<Tensor> {
    let top = match kl {
        crate::ir::VdropKl::Molchanov => VDROP_LOG_ALPHA_RANGE.1,
        crate::ir::VdropKl::Kingma => 0.0,
    };
    la.clamp(VDROP_LOG_ALPHA_RANGE.0, top)
}

/// Entrywise `KL(N(mu, exp lv) ‖ N(0, prior_var))`
/// `= ½(ln prior_var − lv) + (exp lv + mu²)/(2 prior_var) − ½`.
pub fn gaussian_kl(mu: &Tensor, lv: &Tensor, prior_var: f64) -> Result<Tensor> {
    let log_ratio = lv.affine(-0.5, 0.5 * prior_var.ln())?;
    let quad = ((lv.exp()? + mu.sqr()?)? * (0.5 / prior_var))?;
    (log_ratio + quad)? - 0.5
}

/// Entrywise KL of a weight's `N(θ, αθ²)` posterior to the log-uniform prior. It has no
/// closed form (`−KL = ½ ln α − E log|1 + √α ε| + C`, ε ~ N(0, 1), with the improper
/// prior's constant C = −(γ + ln 2)/2 chosen so that KL → 0 as α → ∞); two
/// approximations:
/// - Molchanov, Ashukha & Vetrov (2017), for every α (log α clipped to [−8, 8]):
///   `−KL ≈ k1·σ(k2 + k3 ln α) − ½ ln(1 + 1/α) − k1`, k1 = 0.63576, k2 = 1.87320,
///   k3 = 1.48695 (within 0.01 nats of the exact value over log α in [−8, 8]);
/// - Kingma, Salimans & Welling (2015), for α <= 1 (clipped there):
///   `−KL ≈ c0 + ½ ln α + c1 α + c2 α² + c3 α³`, c1 = 1.16145124, c2 = −1.50204118,
///   c3 = 0.58629921, with [`KINGMA_C0`] the constant that makes the cubic's largest error
///   against the exact value over log α in [−8, 0] smallest (0.020 nats).
pub fn vdrop_kl(log_alpha: &Tensor, form: crate::ir::VdropKl) -> Result<Tensor> {
    let la = clamp_log_alpha(log_alpha, form)?;
    match form {
        crate::ir::VdropKl::Molchanov => {
            let [k1, k2, k3] = MOLCHANOV_K;
            let sig = candle_nn::ops::sigmoid(&la.affine(k3, k2)?)?;
            // ln(1 + 1/α) = softplus(−ln α)
            let log1p_inv = softplus(&la.neg()?)?;
            // KL = k1 − k1 σ(·) + ½ ln(1 + 1/α)
            sig.affine(-k1, k1)? + (log1p_inv * 0.5)?
        }
        crate::ir::VdropKl::Kingma => {
            let [c1, c2, c3] = KINGMA_C;
            let a = la.exp()?;
            // Horner: ((c3 a + c2) a + c1) a
            let poly = ((a.affine(c3, c2)? * &a)?.affine(1.0, c1)? * &a)?;
            let neg_kl = ((la * 0.5)? + poly)?.affine(1.0, KINGMA_C0)?;
            neg_kl.neg()
        }
    }
}

/// Molchanov et al.'s k1, k2, k3 (see [`vdrop_kl`]).
pub const MOLCHANOV_K: [f64; 3] = [0.63576, 1.87320, 1.48695];
/// Kingma et al.'s c1, c2, c3 (see [`vdrop_kl`]).
pub const KINGMA_C: [f64; 3] = [1.16145124, -1.50204118, 0.58629921];

/// The constant of Kingma et al.'s approximation in the convention of [`vdrop_kl`]:
/// `−(γ + ln 2)/2` plus the midpoint of the cubic's residual range over log α in [−8, 0].
pub const KINGMA_C0: f64 = -0.655546;

// ---------------------------------------------------------------------------------
// Activations, dropout, norms

/// `ln(1 + eˣ)`, computed stably as `relu(x) + ln(1 + e^{−|x|})`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}

/// The hidden activations of LANGUAGE.md section 5 (`leaky_relu` with slope 0.01, `gelu`
/// exact (erf), `elu` with α = 1, as PyTorch's defaults).
pub fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Relu => x.relu(),
        Activation::Tanh => x.tanh(),
        Activation::Softplus => softplus(x),
        Activation::Elu => x.elu(1.0),
        Activation::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
        Activation::Gelu => x.gelu_erf(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
}

/// Inverted dropout: in training each entry is kept with probability 1 − p and scaled by
/// 1/(1 − p), the mask drawn from vic's generator; in evaluation the identity.
pub fn dropout(x: &Tensor, p: f64, ctx: &mut NetCtx) -> Result<Tensor> {
    if !ctx.train || p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let keep = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = ctx
        .rng
        .uniform_vec(x.elem_count())
        .into_iter()
        .map(|u| if (u as f64) < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
    x.mul(&mask)
}

/// Layer or batch norm over the features of `[R, width]`: a gain `weight` (init 1) and a
/// shift `bias` (init 0), always point estimates.
///
/// Batch norm normalizes with the statistics of the rows in training (biased variance)
/// and updates the running averages `running_mean` (init 0) and `running_var` (init 1,
/// unbiased variance) with momentum 0.1, as PyTorch's `BatchNorm1d`; in evaluation it uses
/// the running averages. The running averages are variables of the var store, so they are
/// saved with the checkpoint, but they are buffers, not learned: no gradient reaches them
/// (the optimizer skips variables without a gradient) and [`is_buffer`] names them.
pub struct NormLayer {
    kind: Norm,
    gain: Tensor,
    shift: Tensor,
    running: Option<(Var, Var)>,
}

/// Whether a checkpoint key names a non-learned buffer (batch norm running averages):
/// they are not counted as parameters.
pub fn is_buffer(key: &str) -> bool {
    key.ends_with(".running_mean") || key.ends_with(".running_var")
}

impl NormLayer {
    pub fn new(kind: Norm, width: usize, vb: &VarBuilder, rng: &mut Rng) -> Result<NormLayer> {
        let gain = param(vb, rng, "weight", &[width], Init::Const(1.0))?;
        let shift = param(vb, rng, "bias", &[width], Init::Const(0.0))?;
        let running = if kind == Norm::Batch {
            let m = param(vb, rng, "running_mean", &[width], Init::Const(0.0))?;
            let v = param(vb, rng, "running_var", &[width], Init::Const(1.0))?;
            // Detached copies of the running averages would not be updated in place.
            Some((Var::from_tensor(&m)?, Var::from_tensor(&v)?))
        } else {
            None
        };
        Ok(NormLayer {
            kind,
            gain,
            shift,
            running,
        })
    }

    /// `[R, width]` to `[R, width]`.
    pub fn forward(&self, x: &Tensor, ctx: &mut NetCtx) -> Result<Tensor> {
        let normed = match (self.kind, &self.running) {
            (Norm::None, _) => return Ok(x.clone()),
            (Norm::Layer, _) => {
                let mean = x.mean_keepdim(D::Minus1)?; // [R, 1]
                let centered = x.broadcast_sub(&mean)?;
                let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
                centered.broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
            }
            (Norm::Batch, Some((rm, rv))) => {
                if ctx.train {
                    let n = x.dim(0)?;
                    let mean = x.mean_keepdim(0)?; // [1, width]
                    let centered = x.broadcast_sub(&mean)?;
                    let var = centered.sqr()?.mean_keepdim(0)?;
                    let unbiased = if n > 1 {
                        (var.detach() * (n as f64 / (n as f64 - 1.0)))?
                    } else {
                        var.detach()
                    };
                    let mom = BATCH_NORM_MOMENTUM;
                    let new_m =
                        ((rm.as_tensor() * (1.0 - mom))? + (mean.detach().squeeze(0)? * mom)?)?;
                    let new_v = ((rv.as_tensor() * (1.0 - mom))? + (unbiased.squeeze(0)? * mom)?)?;
                    rm.set(&new_m)?;
                    rv.set(&new_v)?;
                    centered.broadcast_div(&(var + NORM_EPS)?.sqrt()?)?
                } else {
                    let m = rm.as_tensor().detach();
                    let v = rv.as_tensor().detach();
                    x.broadcast_sub(&m)?
                        .broadcast_div(&(v + NORM_EPS)?.sqrt()?)?
                }
            }
            (Norm::Batch, None) => bail!("internal: batch norm without running averages"),
        };
        normed.broadcast_mul(&self.gain)?.broadcast_add(&self.shift)
    }
}

// ---------------------------------------------------------------------------------
// Inputs and heads

/// Rows and `[R, width]` of one network input whose value has `width` scalars per row.
pub fn flat_input(x: &Tensor, width: usize, which: usize) -> Result<Tensor> {
    let r = match x.dims().first() {
        Some(&r) => r,
        None => bail!("network input {which} has no rows axis (a scalar tensor)"),
    };
    if x.elem_count() != r * width {
        bail!(
            "network input {which} has shape {:?}; expected [R, ...] with {width} values per row",
            x.dims()
        );
    }
    x.reshape((r, width))
}

/// The given inputs flattened to `[R, width_i]` and concatenated in order: `[R, Σ width_i]`.
pub fn dense_cat(inputs: &[(&Tensor, usize, usize)]) -> Result<Tensor> {
    let flat = inputs
        .iter()
        .map(|&(x, width, which)| flat_input(x, width, which))
        .collect::<Result<Vec<_>>>()?;
    match flat.len() {
        0 => bail!("a dense network needs at least one input"),
        1 => Ok(flat[0].clone()),
        _ => Tensor::cat(&flat, 1),
    }
}

/// Applies a head's output activation (section 4): softplus + [`POSITIVE_FLOOR`],
/// sigmoid, softmax over the last axis, or nothing.
pub fn head_activation(x: &Tensor, act: HeadActivation) -> Result<Tensor> {
    match act {
        HeadActivation::None => Ok(x.clone()),
        HeadActivation::Softplus => softplus(x)? + POSITIVE_FLOOR,
        HeadActivation::Sigmoid => candle_nn::ops::sigmoid(x),
        // Not `softmax_last_dim`: that fused op has no backward pass in candle 0.11.
        HeadActivation::Softmax => candle_nn::ops::softmax(x, D::Minus1),
    }
}

/// Splits `[R, Σ numel]` into the heads in head order, each reshaped to `[R, ...shape]`
/// and activated.
pub fn split_heads(out: &Tensor, heads: &[Head]) -> Result<Vec<Tensor>> {
    let r = out.dim(0)?;
    let mut start = 0;
    let mut res = Vec::with_capacity(heads.len());
    for h in heads {
        let n = h.ty.numel();
        let mut shape = vec![r];
        shape.extend_from_slice(&h.ty.shape);
        let part = out.narrow(1, start, n)?.reshape(shape)?;
        res.push(head_activation(&part, h.activation)?);
        start += n;
    }
    Ok(res)
}

/// Sums the KL terms of some layers; `None` when none has one.
pub fn sum_kl<'l>(layers: impl IntoIterator<Item = &'l Linear>) -> Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    for l in layers {
        if let Some(k) = l.kl()? {
            total = Some(match total {
                Some(t) => (t + k)?,
                None => k,
            });
        }
    }
    Ok(total)
}
