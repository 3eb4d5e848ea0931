//! Drawing from a [`DistValue`]: reparameterized samples (`rsample`), detached samples
//! (`sample`), Concrete / Gumbel-softmax relaxations (`relaxed_sample`) and the finite
//! support of a discrete site (`enumerate_support`).
//!
//! Parameter-free noise (standard normal, uniform, exponential, Laplace, logistic, Gumbel)
//! is drawn on the host from vic's [`Rng`] and uploaded; the reparameterized transforms run
//! on the parameters' device. Gamma (Marsaglia–Tsang), Beta and Dirichlet (through gammas,
//! in log space so that tiny concentrations do not underflow to 0/0) and Poisson (Knuth
//! below rate 10, Hörmann's PTRS above) draw on the host from the parameter values.

use super::special::{lgamma_f64, log_softmax_last, prob_eps, sigmoid};
use super::{cb_split, dist_error, special_horner, DistValue};
use crate::ir::{DistKind, DistParam};
use crate::rng::Rng;
use candle_core::{DType, Result, Tensor, D};

/// One uniform in the open interval (0, 1), with 53 random bits.
fn unif(rng: &mut Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / 9_007_199_254_740_992.0)
}

/// One standard normal (Box–Muller).
fn std_normal(rng: &mut Rng) -> f64 {
    let (u1, u2) = (unif(rng), unif(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `log G` for `G ~ Gamma(a, 1)`, `a > 0` (Marsaglia & Tsang 2000; for `a < 1`,
/// `G = G' U^(1/a)` with `G' ~ Gamma(a + 1, 1)`, kept in log space).
fn log_gamma_draw(a: f64, rng: &mut Rng) -> f64 {
    if !a.is_finite() || a <= 0.0 {
        return f64::NAN;
    }
    if a < 1.0 {
        return log_gamma_draw(a + 1.0, rng) + unif(rng).ln() / a;
    }
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = std_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = unif(rng);
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d.ln() + v.ln();
        }
    }
}

/// One Poisson draw with rate `lam` (Knuth's product of uniforms for `lam < 10`; Hörmann's
/// transformed rejection PTRS (1993) above, as numpy does).
fn poisson_draw(lam: f64, rng: &mut Rng) -> f64 {
    if !lam.is_finite() || lam < 0.0 {
        return f64::NAN;
    }
    if lam < 10.0 {
        let limit = (-lam).exp();
        let mut k = 0.0;
        let mut prod = unif(rng);
        while prod > limit {
            k += 1.0;
            prod *= unif(rng);
        }
        return k;
    }
    let slam = lam.sqrt();
    let loglam = lam.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let invalpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = unif(rng) - 0.5;
        let v = unif(rng);
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lam + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + invalpha.ln() - (a / (us * us) + b).ln()
            <= -lam + k * loglam - lgamma_f64(k + 1.0)
        {
            return k;
        }
    }
}

/// A parameter's values on the host, row-major over its full shape.
fn host(t: &Tensor) -> Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

impl DistValue {
    /// Host noise of this distribution's value shape, as a tensor on its device and dtype.
    fn noise(&self, draw: impl FnMut() -> f64) -> Result<Tensor> {
        let shape = self.value_shape();
        let n: usize = shape.iter().product();
        let v: Vec<f64> = std::iter::repeat_with(draw).take(n).collect();
        Tensor::from_vec(v, shape.as_slice(), &self.device())?.to_dtype(self.dtype())
    }

    /// Standard normal noise of this distribution's value shape, drawn in its dtype
    /// (rand's ziggurat sampler: f32 draws for an f32 distribution, with no f64 pass and
    /// conversion between).
    fn normal_noise(&self, rng: &mut Rng) -> Result<Tensor> {
        let shape = self.value_shape();
        let n: usize = shape.iter().product();
        let dev = self.device();
        match self.dtype() {
            DType::F32 => Tensor::from_vec(rng.normal_vec(n), shape.as_slice(), &dev),
            dt => Tensor::from_vec(rng.normal_vec_f64(n), shape.as_slice(), &dev)?.to_dtype(dt),
        }
    }

    /// A reparameterized draw `[R, ...event_shape]`: a differentiable function of the
    /// parameters and parameter-free noise, for the families of
    /// [`DistKind::has_rsample`]. StudentT's chi-square draw is sampled on the host and
    /// carries no gradient to `df` (it does to `loc` and `scale`).
    pub fn rsample(&self, rng: &mut Rng) -> Result<Tensor> {
        use DistParam::*;
        match self.kind {
            DistKind::Normal => {
                let eps = self.normal_noise(rng)?;
                self.get(Loc)? + (self.get(Scale)? * eps)?
            }
            DistKind::LogNormal => {
                let eps = self.normal_noise(rng)?;
                (self.get(Loc)? + (self.get(Scale)? * eps)?)?.exp()
            }
            DistKind::Laplace => {
                // Standard Laplace by inversion: -sign(v) log(1 - |v|), v uniform in (-1, 1).
                let e = self.noise(|| {
                    let v = 2.0 * unif(rng) - 1.0;
                    -v.signum() * (1.0 - v.abs()).ln()
                })?;
                self.get(Loc)? + (self.get(Scale)? * e)?
            }
            DistKind::StudentT => {
                let df = host(self.get(Df)?)?;
                let mut i = 0;
                let t = self.noise(|| {
                    let nu = df.get(i).copied().unwrap_or(f64::NAN);
                    i += 1;
                    let z = std_normal(rng);
                    // chi2(nu) = 2 Gamma(nu / 2, 1)
                    let chi2 = 2.0 * log_gamma_draw(0.5 * nu, rng).exp();
                    z * (nu / chi2).sqrt()
                })?;
                self.get(Loc)? + (self.get(Scale)? * t)?
            }
            DistKind::Uniform => {
                let u = self.noise(|| unif(rng))?;
                let low = self.get(Low)?;
                low + (u * (self.get(High)? - low)?)?
            }
            DistKind::Exponential => {
                let e = self.noise(|| -unif(rng).ln())?;
                e / self.get(Rate)?
            }
            DistKind::ContinuousBernoulli => {
                let u = self.noise(|| unif(rng))?;
                cb_icdf(&self.logits()?, &u)
            }
            _ => dist_error(format!(
                "{} has no reparameterized sampler: sample it with `sample` (and estimate \
                 gradients with @reinforce), or relax it",
                self.kind.name()
            )),
        }
    }

    /// A detached draw `[R, ...event_shape]` for every family: Bernoulli gives 0/1,
    /// Categorical one-hot `[R, ...shape, K]`, Poisson whole numbers.
    pub fn sample(&self, rng: &mut Rng) -> Result<Tensor> {
        use DistParam::*;
        let drawn = match self.kind {
            k if k.has_rsample() => self.rsample(rng)?,
            DistKind::Bernoulli => {
                let p = match self.param(Logits) {
                    Some(l) => sigmoid(l)?,
                    None => self.get(Probs)?.clone(),
                };
                let u = self.noise(|| unif(rng))?;
                u.lt(&p)?.to_dtype(self.dtype())?
            }
            DistKind::Categorical => {
                let g = self.noise(|| -(-unif(rng).ln()).ln())?;
                argmax_one_hot(&(self.log_probs()? + g)?)?
            }
            DistKind::Poisson => {
                let rate = host(self.get(Rate)?)?;
                self.host_tensor(rate.iter().map(|&lam| poisson_draw(lam, rng)).collect())?
            }
            DistKind::Gamma => {
                let a = host(self.get(Concentration)?)?;
                let b = host(self.get(Rate)?)?;
                let tiny = min_positive(self.dtype());
                let v = a
                    .iter()
                    .zip(&b)
                    .map(|(&a, &b)| floor(log_gamma_draw(a, rng).exp() / b, tiny))
                    .collect();
                self.host_tensor(v)?
            }
            DistKind::Beta => {
                let a = host(self.get(A)?)?;
                let b = host(self.get(B)?)?;
                let eps = prob_eps(self.dtype());
                let tiny = min_positive(self.dtype());
                let v = a
                    .iter()
                    .zip(&b)
                    .map(|(&a, &b)| {
                        let (x, y) = (log_gamma_draw(a, rng), log_gamma_draw(b, rng));
                        // x / (x + y) in log space
                        let m = x.max(y);
                        let p = (x - m - ((x - m).exp() + (y - m).exp()).ln()).exp();
                        p.clamp(tiny, 1.0 - eps)
                    })
                    .collect();
                self.host_tensor(v)?
            }
            DistKind::Dirichlet => {
                let a = host(self.get(Concentration)?)?;
                let k = self.categories.unwrap_or(1).max(1);
                let tiny = min_positive(self.dtype());
                let mut v = Vec::with_capacity(a.len());
                for row in a.chunks(k) {
                    let logs: Vec<f64> = row.iter().map(|&a| log_gamma_draw(a, rng)).collect();
                    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let lse = m + logs.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
                    v.extend(logs.iter().map(|l| floor((l - lse).exp(), tiny)));
                }
                self.host_tensor(v)?
            }
            DistKind::Mixture => {
                let c = self.get_component()?;
                let logw = log_softmax_last(self.get(Logits)?)?; // [R, K]
                let g = Tensor::from_vec(
                    std::iter::repeat_with(|| -(-unif(rng).ln()).ln())
                        .take(logw.elem_count())
                        .collect::<Vec<f64>>(),
                    logw.dims(),
                    &self.device(),
                )?
                .to_dtype(self.dtype())?;
                let pick = argmax_one_hot(&(logw + g)?)?; // [R, K]
                let all = c.sample(rng)?; // [R, K, ...]
                let mut shape = pick.dims().to_vec();
                shape.extend(std::iter::repeat_n(1, all.rank() - 2));
                pick.reshape(shape.as_slice())?
                    .broadcast_mul(&all)?
                    .sum(1)?
            }
            _ => {
                return dist_error(format!(
                    "internal compiler error: no sampler for {}; please report this",
                    self.kind.name()
                ))
            }
        };
        Ok(drawn.detach())
    }

    fn host_tensor(&self, v: Vec<f64>) -> Result<Tensor> {
        Tensor::from_vec(v, self.value_shape().as_slice(), &self.device())?.to_dtype(self.dtype())
    }

    /// A reparameterized relaxed draw of a discrete site at `temperature` > 0:
    /// Categorical gives a Gumbel-softmax point of the simplex `[R, ...shape, K]`
    /// (softmax((log p + Gumbel) / t)), Bernoulli a binary Concrete value in (0, 1)
    /// (sigmoid((logit + Logistic) / t)).
    pub fn relaxed_sample(&self, temperature: f64, rng: &mut Rng) -> Result<Tensor> {
        if !temperature.is_finite() || temperature <= 0.0 {
            return dist_error(format!(
                "a relaxation temperature must be a positive number, got {temperature}"
            ));
        }
        match self.kind {
            DistKind::Categorical => {
                let g = self.noise(|| -(-unif(rng).ln()).ln())?;
                let y = ((self.log_probs()? + g)? / temperature)?;
                log_softmax_last(&y)?.exp()
            }
            DistKind::Bernoulli => {
                let l = self.noise(|| {
                    let u = unif(rng);
                    u.ln() - (1.0 - u).ln()
                })?;
                sigmoid(&((self.logits()? + l)? / temperature)?)
            }
            _ => dist_error(format!(
                "{} has no relaxation (only Categorical and Bernoulli do)",
                self.kind.name()
            )),
        }
    }

    /// Every value of a discrete site, for exact enumeration, each `[R, ...value]`: a
    /// Categorical with `n` elements per row (event shape `[]`: one) gives its `K^n`
    /// joint values, one-hot `[R, ...shape, K]`; a Bernoulli with `n` elements per row
    /// its `2^n` joint values. The first element varies slowest (value `v` has element
    /// `i`'s class as digit `i` of `v` in base `K`, most significant first). Any other
    /// family (a support that is not finite) is an error for the caller to report; the
    /// checker keeps the count within E017's limit.
    pub fn enumerate_support(&self) -> Result<Vec<Tensor>> {
        let shape = self.value_shape();
        let dev = self.device();
        let n: usize = self.event_shape.iter().product();
        let base = match self.kind {
            DistKind::Categorical => self.categories.unwrap_or(0),
            DistKind::Bernoulli => 2,
            _ => {
                return dist_error(format!(
                    "{} has no finite support to enumerate",
                    self.kind.name()
                ))
            }
        };
        let count = (base as u64)
            .checked_pow(n as u32)
            .filter(|&c| c <= 1 << 20);
        let Some(count) = count else {
            return dist_error(format!(
                "{} with {n} elements per example has too many joint values to enumerate",
                self.kind.name()
            ));
        };
        (0..count as usize)
            .map(|v| {
                // Element i's class: digit i of v in base K (most significant first).
                let digits: Vec<usize> = (0..n)
                    .map(|i| (v / base.pow((n - 1 - i) as u32)) % base)
                    .collect();
                let one: Vec<f32> = match self.kind {
                    DistKind::Categorical => digits
                        .iter()
                        .flat_map(|&d| (0..base).map(move |k| if k == d { 1.0 } else { 0.0 }))
                        .collect(),
                    _ => digits.iter().map(|&d| d as f32).collect(),
                };
                let value = Tensor::from_vec(one, &shape[1..], &dev)?.to_dtype(self.dtype())?;
                value
                    .unsqueeze(0)?
                    .broadcast_as(shape.as_slice())?
                    .contiguous()
            })
            .collect()
    }
}

/// One-hot of the arg-max along the last axis (ties have probability 0 under continuous
/// noise).
fn argmax_one_hot(scores: &Tensor) -> Result<Tensor> {
    let m = scores.max_keepdim(D::Minus1)?;
    scores.broadcast_eq(&m)?.to_dtype(scores.dtype())
}

/// `max(v, lo)`, keeping NaN (`f64::max` would drop it).
fn floor(v: f64, lo: f64) -> f64 {
    if v < lo {
        lo
    } else {
        v
    }
}

/// The smallest positive normal number of a dtype: where Gamma / Beta / Dirichlet draws
/// are floored, so that their log-densities stay finite.
fn min_positive(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F16 => 6.1e-5,
        _ => f32::MIN_POSITIVE as f64,
    }
}

/// Below this |logit| the inverse CDF uses its series (the closed form divides a rounded
/// logarithm by `l`).
const CB_ICDF_TAYLOR: f64 = 0.2;

/// The ContinuousBernoulli inverse CDF's series in the logit `l`: the coefficient of `lⁿ`
/// is `u(1-u) P_n(u) / (n+1)!`, `P_n` given by its coefficients in ascending powers of `u`
/// (derived with sympy from `log(1 + u (e^l - 1)) / l`).
const CB_ICDF_SERIES: [(&[f64], f64); 6] = [
    (&[1.0], 2.0),
    (&[1.0, -2.0], 6.0),
    (&[1.0, -6.0, 6.0], 24.0),
    (&[1.0, -14.0, 36.0, -24.0], 120.0),
    (&[1.0, -30.0, 150.0, -240.0, 120.0], 720.0),
    (&[1.0, -62.0, 540.0, -1560.0, 1800.0, -720.0], 5040.0),
];

/// The ContinuousBernoulli inverse CDF at `u` in logits:
/// `x = log(1 + u (e^l - 1)) / l`, computed as
/// `(max(l, 0) + log((1 - u) e^{-max(l,0)} + u e^{l - max(l,0)})) / l` so that neither
/// exponential overflows, and for small `|l|` by its series
/// `u + w Σ_{n=1..6} lⁿ P_n(u) / (n+1)!` with `w = u(1-u)` and the polynomials of
/// [`CB_ICDF_SERIES`] (truncation error below 1e-10 at |l| < 0.2).
pub(super) fn cb_icdf(l: &Tensor, u: &Tensor) -> Result<Tensor> {
    let (small, large_l, small_l) = cb_split(l, CB_ICDF_TAYLOR)?;
    let m = large_l.relu()?;
    let one_minus_u = u.neg()?.affine(1.0, 1.0)?;
    let inner = ((&one_minus_u * m.neg()?.exp()?)? + (u * (&large_l - &m)?.exp()?)?)?;
    let closed = ((m + inner.log()?)? / &large_l)?;
    let w = (u * &one_minus_u)?;
    // Horner in l over the coefficients P_n(u) / (n+1)!, highest order first.
    let mut acc = small_l.zeros_like()?;
    for (poly, div) in CB_ICDF_SERIES.iter().rev() {
        let c = special_horner(u, poly)?.affine(1.0 / div, 0.0)?;
        acc = (c + (&small_l * acc)?)?;
    }
    let series = (u + (w * (&small_l * acc)?)?)?;
    small.where_cond(&series, &closed)?.clamp(0.0, 1.0)
}
