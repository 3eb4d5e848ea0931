//! Special functions for the distributions, written with candle's elementwise ops only so
//! that they differentiate (autodiff of `lgamma` is `digamma`, of `digamma` the trigamma)
//! and run on every device: candle has neither `lgamma` nor `digamma`.

use candle_core::{DType, Result, Tensor, D};

/// `0.5 * log(2π)`.
pub const HALF_LOG_2PI: f64 = 0.918_938_533_204_672_8;

/// How far `lgamma` / `digamma` shift their argument up by the recurrence before the
/// asymptotic series: at `x + 6 >= 6` the truncated series is accurate to about 1e-10.
const SHIFT: usize = 6;

/// `c0 + y (c1 + y (c2 + ...))`.
fn horner(y: &Tensor, coeffs: &[f64]) -> Result<Tensor> {
    let mut iter = coeffs.iter().rev();
    let mut acc = match iter.next() {
        Some(&last) => y.ones_like()?.affine(last, 0.0)?,
        None => return y.zeros_like(),
    };
    for &c in iter {
        acc = (acc * y)?.affine(1.0, c)?;
    }
    Ok(acc)
}

/// `log Γ(x)`, elementwise, for `x > 0` (NaN elsewhere).
///
/// `log Γ(x) = log Γ(x + 6) - log(x (x+1) ... (x+5))`, then Stirling's series at `z = x + 6`:
/// `(z - 1/2) log z - z + log(2π)/2 + 1/(12z) - 1/(360z³) + 1/(1260z⁵) - 1/(1680z⁷)`.
/// The product is summed as logs so that a large `x` cannot overflow it.
pub fn lgamma(x: &Tensor) -> Result<Tensor> {
    let mut shift = x.log()?;
    for k in 1..SHIFT {
        shift = (shift + x.affine(1.0, k as f64)?.log()?)?;
    }
    let z = x.affine(1.0, SHIFT as f64)?;
    let zr = z.recip()?;
    let series = (&zr
        * horner(
            &zr.sqr()?,
            &[1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0],
        )?)?;
    let stirling = ((z.affine(1.0, -0.5)? * z.log()?)? - &z)?.affine(1.0, HALF_LOG_2PI)?;
    (stirling + series)? - shift
}

/// `ψ(x) = d/dx log Γ(x)`, elementwise, for `x > 0`.
///
/// `ψ(x) = ψ(x + 6) - Σ_{k<6} 1/(x+k)`, then the asymptotic series at `z = x + 6`:
/// `log z - 1/(2z) - 1/(12z²) + 1/(120z⁴) - 1/(252z⁶) + 1/(240z⁸) - 1/(132z¹⁰)`.
pub fn digamma(x: &Tensor) -> Result<Tensor> {
    let mut shift = x.recip()?;
    for k in 1..SHIFT {
        shift = (shift + x.affine(1.0, k as f64)?.recip()?)?;
    }
    let z = x.affine(1.0, SHIFT as f64)?;
    let zr = z.recip()?;
    let zr2 = zr.sqr()?;
    let series = (&zr2
        * horner(
            &zr2,
            &[
                -1.0 / 12.0,
                1.0 / 120.0,
                -1.0 / 252.0,
                1.0 / 240.0,
                -1.0 / 132.0,
            ],
        )?)?;
    ((z.log()? - zr.affine(0.5, 0.0)?)? + series)? - shift
}

/// `log Γ(x)` for one host number (the Poisson sampler's acceptance test), same method.
pub fn lgamma_f64(x: f64) -> f64 {
    let mut shift = 0.0;
    for k in 0..SHIFT {
        shift += (x + k as f64).ln();
    }
    let z = x + SHIFT as f64;
    let y = 1.0 / (z * z);
    let series = (1.0 / z) * (1.0 / 12.0 + y * (-1.0 / 360.0 + y * (1.0 / 1260.0 - y / 1680.0)));
    (z - 0.5) * z.ln() - z + HALF_LOG_2PI + series - shift
}

/// `log(1 + exp(x))` without overflow: `relu(x) + log(1 + exp(-|x|))`.
/// (Its gradient is `sigmoid(x)` everywhere, 1/2 at 0, with candle's subgradients
/// `relu'(0) = |·|'(0) = 1`; a test pins this.)
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}

/// `log sigmoid(x) = -softplus(-x)`.
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    softplus(&x.neg()?)?.neg()
}

/// `sigmoid(x)`, through `log_sigmoid` so that neither tail overflows.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    log_sigmoid(x)?.exp()
}

/// `log Σ exp(x)` along `dim` (removed). The shift by the maximum is detached (it cancels
/// in value and gradient) and replaced by 0 where the maximum is infinite, so that a slice
/// of `-inf` gives `-inf`, not NaN.
pub fn logsumexp<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    let finite = m.abs()?.lt(f64::INFINITY)?;
    let m = finite.where_cond(&m, &m.zeros_like()?)?;
    let s = x.broadcast_sub(&m)?.exp()?.sum_keepdim(dim)?.log()?;
    (s + m)?.squeeze(dim)
}

/// `log softmax(x)` along the last axis (kept).
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let finite = m.abs()?.lt(f64::INFINITY)?;
    let m = finite.where_cond(&m, &m.zeros_like()?)?;
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// The smallest probability `probs` are clamped to (and 1 - it the largest) where a log of
/// a probability is unavoidable: machine epsilon of the dtype, as torch's `clamp_probs`.
pub fn prob_eps(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 | DType::BF16 => 1e-3,
        _ => f32::EPSILON as f64,
    }
}

/// `probs` clamped into `(eps, 1 - eps)`.
pub fn clamp_probs(p: &Tensor) -> Result<Tensor> {
    let eps = prob_eps(p.dtype());
    p.clamp(eps, 1.0 - eps)
}

/// A tensor like `t` filled with `v` (any float, infinities included).
pub fn full_like(t: &Tensor, v: f64) -> Result<Tensor> {
    t.ones_like()?.affine(v, 0.0)
}

/// Elementwise "and" of two comparison masks.
pub fn and(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    a.to_dtype(DType::F32)?
        .mul(&b.to_dtype(DType::F32)?)?
        .gt(0.5)
}

/// Sum of every axis after the first: `[R, ...] -> [R]`.
pub fn sum_after_rows(t: &Tensor) -> Result<Tensor> {
    if t.rank() <= 1 {
        Ok(t.clone())
    } else {
        t.flatten_from(1)?.sum(1)
    }
}
