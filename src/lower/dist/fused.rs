//! The Bernoulli log-density in logits, `x·l − softplus(l)`, as one candle op with its own
//! backward pass (`∂/∂l = x − σ(l)`, `∂/∂x = l`).
//!
//! Composed of candle's ops it takes nine passes over the `[R, D]` logits forward and about
//! twenty backward; a VAE's decoder output is the largest activation of its step. Written
//! by hand because candle has no fused binary cross-entropy. Only contiguous `f32` tensors
//! of one shape on the CPU take this path; anything else goes through [`plain`], the
//! composition that also defines the semantics the tests hold the op to.

use super::special::softplus;
use crate::lower::avx;
use crate::lower::cpu::{contiguous_f32, fused_cpu, map3, with_f32};
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use wide::f32x8;

/// `x·l − softplus(l)` elementwise, `x` and `l` of one shape.
pub fn bernoulli_logits_log_density(x: &Tensor, l: &Tensor) -> Result<Tensor> {
    let fusable = fused_cpu(x)
        && x.dtype() == DType::F32
        && l.dtype() == DType::F32
        && x.dims() == l.dims()
        && x.is_contiguous()
        && l.is_contiguous();
    if fusable {
        x.apply_op2(l, BernoulliLogits)
    } else {
        plain(x, l)
    }
}

/// The same density composed of candle's ops.
pub fn plain(x: &Tensor, l: &Tensor) -> Result<Tensor> {
    (x * l)? - softplus(l)?
}

struct BernoulliLogits;

/// Elements per rayon task (the exponentials and logarithms make each one worth a thread).
const CHUNK: usize = 8 * 1024;

/// `x·l − softplus(l)` in eight lanes, `softplus(l) = max(l, 0) + ln(1 + e^{−|l|})` as
/// [`softplus`] computes it (`ln` rather than `ln_1p`: they differ by under 1e-7 where
/// `e^{−|l|}` is below f32's epsilon). The exponential and logarithm are `wide`'s
/// polynomial ones (within a few ulp of libm's), vectorized where libm's are scalar calls:
/// they were most of this op's time.
#[inline(always)]
fn density8(x: f32x8, l: f32x8) -> f32x8 {
    let e = (-l.abs()).exp();
    x * l - (l.max(f32x8::ZERO) + (f32x8::ONE + e).ln())
}

/// `g·(x − σ(l))` in eight lanes, `σ(l)` without overflow in either tail: with
/// `e = e^{−|l|}`, `1/(1+e)` for `l ≥ 0` and `e/(1+e)` below.
#[inline(always)]
fn dlogits8(g: f32x8, x: f32x8, l: f32x8) -> f32x8 {
    let e = (-l.abs()).exp();
    let r = f32x8::ONE / (f32x8::ONE + e);
    let s = l.simd_ge(f32x8::ZERO).select(r, e * r);
    g * (x - s)
}

/// The values of a contiguous `f32` CPU storage under a layout.
fn values<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match contiguous_f32(s, l) {
        Some(v) => Ok(v),
        None => bail!("fused Bernoulli log-density: {what} is not a contiguous f32 buffer"),
    }
}

impl CustomOp2 for BernoulliLogits {
    fn name(&self) -> &'static str {
        "fused-bernoulli-logits"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = values(s1, l1, "the value")?;
        let l = values(s2, l2, "the logits")?;
        if x.len() != l.len() {
            bail!("fused Bernoulli log-density: value and logits sizes differ");
        }
        let mut out = vec![0f32; x.len()];
        // Elementwise, so splitting among threads cannot change a value.
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(l.par_chunks(CHUNK)))
            .for_each(|(out, (x, l))| {
                if !avx::bernoulli_density(out, x, l) {
                    map3(out, x, l, l, |x, l, _| density8(x, l));
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        l: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // The operands' own buffers where they are contiguous (the gradient of a sum is
        // usually a broadcast view, copied).
        let (dl, dx) = with_f32(grad, |g| {
            with_f32(x, |xs| {
                with_f32(l, |ls| {
                    if g.len() != xs.len() || g.len() != ls.len() {
                        bail!("fused Bernoulli log-density: gradient and operand sizes differ");
                    }
                    let mut dl = vec![0f32; g.len()];
                    dl.par_chunks_mut(CHUNK)
                        .zip(
                            g.par_chunks(CHUNK)
                                .zip(xs.par_chunks(CHUNK).zip(ls.par_chunks(CHUNK))),
                        )
                        .for_each(|(dl, (g, (x, l)))| {
                            if !avx::bernoulli_dlogits(dl, g, x, l) {
                                map3(dl, g, x, l, dlogits8)
                            }
                        });
                    // ∂/∂x only where a gradient flows to the value (rarely: it is usually
                    // data).
                    let dx = x
                        .track_op()
                        .then(|| g.iter().zip(ls).map(|(&g, &l)| g * l).collect::<Vec<f32>>());
                    Ok((dl, dx))
                })
            })
        })?;
        let dl = Tensor::from_vec(dl, l.shape(), l.device())?;
        let dx = match dx {
            Some(dx) => Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            None => None,
        };
        Ok((dx, Some(dl)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::max_diff;
    use candle_core::{Device, Var};

    /// Values and gradients (of the logits and of a relaxed value) agree with the
    /// composition, including logits far in both tails, batch 1 and odd sizes.
    #[test]
    fn fused_bernoulli_matches_candle() {
        let mut rng = crate::rng::Rng::seed(11);
        for shape in [vec![1, 1], vec![1, 17], vec![3, 5, 7], vec![128, 784]] {
            // Logits spread widely, the first two far out in each tail.
            let mut l: Vec<f32> = rng.normal_vec(shape.iter().product());
            l.iter_mut().for_each(|v| *v *= 6.0);
            l[0] = -90.0;
            if let Some(v) = l.get_mut(1) {
                *v = 90.0;
            }
            let l = Tensor::from_vec(l, shape.as_slice(), &Device::Cpu).unwrap();
            let l = Var::from_tensor(&l).unwrap();
            let x = Var::from_tensor(&rng.uniform(&shape, &Device::Cpu).unwrap()).unwrap();
            let w = rng.normal(&shape, &Device::Cpu).unwrap();
            let run = |f: fn(&Tensor, &Tensor) -> Result<Tensor>| {
                let y = f(x.as_tensor(), l.as_tensor()).unwrap();
                let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gx = g.get(x.as_tensor()).unwrap().clone();
                let gl = g.get(l.as_tensor()).unwrap().clone();
                (y, gx, gl)
            };
            let (y1, gx1, gl1) = run(bernoulli_logits_log_density);
            let (y2, gx2, gl2) = run(plain);
            assert!(max_diff(&y1, &y2) < 1e-4, "{shape:?}");
            assert!(max_diff(&gx1, &gx2) < 1e-4, "{shape:?}");
            assert!(max_diff(&gl1, &gl2) < 1e-5, "{shape:?}");
        }
    }

    /// Data values get no gradient; a broadcast (non-contiguous) value takes the plain path.
    #[test]
    fn fused_bernoulli_data_and_broadcast() {
        let mut rng = crate::rng::Rng::seed(5);
        let l = Var::from_tensor(&rng.normal(&[4, 6], &Device::Cpu).unwrap()).unwrap();
        let x = Tensor::new(&[[0f32, 1.0, 1.0, 0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let y = bernoulli_logits_log_density(&x.broadcast_as((4, 6)).unwrap(), l.as_tensor());
        let y2 = plain(&x.broadcast_as((4, 6)).unwrap(), l.as_tensor()).unwrap();
        assert!(max_diff(&y.unwrap(), &y2) < 1e-6);
        let x = x.broadcast_as((4, 6)).unwrap().contiguous().unwrap();
        let y = bernoulli_logits_log_density(&x, l.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        assert!(g.get(l.as_tensor()).is_some());
    }
}
