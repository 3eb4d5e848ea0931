//! The per-weight terms of `vdrop` weights as three fused elementwise ops: the mean
//! weights (θ, zeroed where log α passes the pruning threshold), the weight variances
//! `α θ²`, and the summed KL to the log-uniform prior, each one pass over the weights
//! forward and one backward.
//!
//! candle composes them from its elementwise ops: log α alone is a square, an add, a log,
//! a subtraction and a clamp (two comparisons and selections), the KL a sigmoid, a
//! softplus and four affine maps, each a pass over every weight with its own buffer,
//! and as many again backward. On LeNet-300-100 (266k weights, `specs/lenet_vdrop.vi`)
//! those passes were most of a training step, more than its matrix products. Written by
//! hand because candle has no fused elementwise kernels; the arithmetic is `wide`'s
//! eight-lane vectors, as in [`super::fused`].
//!
//! Only `f32` CPU weights whose log α (or log σ²) has θ's shape (kind B) take this path;
//! the rest take [`super::layers`]' candle composition, which the tests hold these to.

use super::layers::{KINGMA_C, KINGMA_C0, MOLCHANOV_K, VDROP_LOG_ALPHA_RANGE};
use crate::ir::VdropKl;
use crate::lower::avx;
use crate::lower::cpu::{f32_operand, fused_cpu, lanes, store_lanes, with_f32};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use wide::f32x8;

/// Molchanov et al.'s and Kingma et al.'s constants (see `layers::vdrop_kl`).
const K1: f32 = MOLCHANOV_K[0] as f32;
const K2: f32 = MOLCHANOV_K[1] as f32;
const K3: f32 = MOLCHANOV_K[2] as f32;
const C1: f32 = KINGMA_C[0] as f32;
const C2: f32 = KINGMA_C[1] as f32;
const C3: f32 = KINGMA_C[2] as f32;
/// Added to θ² before its log, as `layers::vdrop_log_alpha` does.
const THETA2_EPS: f32 = 1e-16;
/// Weights per task: a fixed split, so that the KL's sum does not depend on scheduling.
const CHUNK: usize = 8192;

/// What the op returns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Term {
    /// θ where log α <= the threshold, else 0.
    Mean(f32),
    /// α θ².
    Var,
    /// The KL summed over every weight (a scalar).
    Kl,
}

/// `e^x`: the AVX2/FMA kernel in code compiled for it (`AVX`, see [`run`]), else `wide`'s.
#[inline(always)]
fn exp<const AVX: bool>(x: f32x8) -> f32x8 {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: `AVX` code runs only where `avx::available()` (see `run`).
        return unsafe { avx::exp8(x) };
    }
    x.exp()
}

/// `ln x`, as [`exp`].
#[inline(always)]
fn ln<const AVX: bool>(x: f32x8) -> f32x8 {
    #[cfg(target_arch = "x86_64")]
    if AVX {
        // SAFETY: as in `exp`.
        return unsafe { avx::ln8(x) };
    }
    x.ln()
}

/// The form of log α and the KL approximation.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Form {
    kl: VdropKl,
    additive: bool,
}

impl Form {
    fn top(self) -> f32 {
        match self.kl {
            VdropKl::Molchanov => VDROP_LOG_ALPHA_RANGE.1 as f32,
            VdropKl::Kingma => 0.0,
        }
    }

    /// `(clamped log α, 1 where the clamp passes the gradient else 0, ∂ raw log α / ∂θ)`.
    #[inline(always)]
    fn log_alpha<const AVX: bool>(self, theta: f32x8, second: f32x8) -> (f32x8, f32x8, f32x8) {
        let (raw, dtheta) = if self.additive {
            let t2 = theta * theta + f32x8::splat(THETA2_EPS);
            (second - ln::<AVX>(t2), f32x8::splat(-2.0) * theta / t2)
        } else {
            (second, f32x8::ZERO)
        };
        let lo = f32x8::splat(VDROP_LOG_ALPHA_RANGE.0 as f32);
        let hi = f32x8::splat(self.top());
        let inside = raw.simd_ge(lo) & raw.simd_le(hi);
        let inside = inside.select(f32x8::ONE, f32x8::ZERO);
        (raw.max(lo).min(hi), inside, dtheta)
    }

    /// The KL of each weight at (clamped) log α.
    #[inline(always)]
    fn kl<const AVX: bool>(self, la: f32x8) -> f32x8 {
        let one = f32x8::ONE;
        match self.kl {
            VdropKl::Molchanov => {
                let sig = one / (one + exp::<AVX>(-(f32x8::splat(K3) * la + f32x8::splat(K2))));
                // softplus(−la) = max(−la, 0) + ln(1 + e^{−|la|}).
                let sp = (-la).max(f32x8::ZERO) + ln::<AVX>(one + exp::<AVX>(-la.abs()));
                let k1 = f32x8::splat(K1);
                k1 - k1 * sig + f32x8::splat(0.5) * sp
            }
            VdropKl::Kingma => {
                let a = exp::<AVX>(la);
                let poly = ((f32x8::splat(C3) * a + f32x8::splat(C2)) * a + f32x8::splat(C1)) * a;
                -(f32x8::splat(KINGMA_C0 as f32) + f32x8::splat(0.5) * la + poly)
            }
        }
    }

    /// The derivative of [`Form::kl`] in log α.
    #[inline(always)]
    fn kl_deriv<const AVX: bool>(self, la: f32x8) -> f32x8 {
        let one = f32x8::ONE;
        match self.kl {
            VdropKl::Molchanov => {
                let sig = one / (one + exp::<AVX>(-(f32x8::splat(K3) * la + f32x8::splat(K2))));
                // d softplus(−la) / d la = −σ(−la).
                let sig_neg = one / (one + exp::<AVX>(la));
                -(f32x8::splat(K1 * K3) * sig * (one - sig)) - f32x8::splat(0.5) * sig_neg
            }
            VdropKl::Kingma => {
                let a = exp::<AVX>(la);
                let dpoly =
                    (f32x8::splat(3.0 * C3) * a + f32x8::splat(2.0 * C2)) * a + f32x8::splat(C1);
                -(f32x8::splat(0.5) + dpoly * a)
            }
        }
    }
}

/// The op's `term` of `vdrop` weights θ and their second parameter (log α, or log σ²
/// under the additive form), fused on the CPU for `f32` when both have one shape; `None`
/// otherwise (the caller composes it from candle's ops).
pub fn term(
    theta: &Tensor,
    second: &Tensor,
    kl: VdropKl,
    additive: bool,
    term: Term,
) -> Result<Option<Tensor>> {
    let fusable = fused_cpu(theta)
        && theta.dtype() == DType::F32
        && second.dtype() == DType::F32
        && theta.dims() == second.dims();
    if !fusable {
        return Ok(None);
    }
    let op = Vdrop {
        form: Form { kl, additive },
        term,
    };
    Ok(Some(theta.apply_op2(second, op)?))
}

struct Vdrop {
    form: Form,
    term: Term,
}

impl Vdrop {
    /// One chunk of the forward pass's values, eight weights at a time.
    #[inline(always)]
    fn values_chunk<const AVX: bool>(&self, theta: &[f32], second: &[f32], out: &mut [f32]) {
        let form = self.form;
        for ((o8, t8), s8) in out.chunks_mut(8).zip(theta.chunks(8)).zip(second.chunks(8)) {
            let (t, s) = (lanes(t8), lanes(s8));
            let (la, _, _) = form.log_alpha::<AVX>(t, s);
            let v = match self.term {
                Term::Mean(th) => la.simd_le(f32x8::splat(th)).select(t, f32x8::ZERO),
                Term::Var => t * t * exp::<AVX>(la),
                Term::Kl => form.kl::<AVX>(la),
            };
            store_lanes(o8, v);
        }
    }

    /// One chunk's KL, summed in f64.
    #[inline(always)]
    fn kl_chunk<const AVX: bool>(&self, theta: &[f32], second: &[f32]) -> f64 {
        let form = self.form;
        let mut acc = 0f64;
        for (t8, s8) in theta.chunks(8).zip(second.chunks(8)) {
            let v = form.kl::<AVX>(form.log_alpha::<AVX>(lanes(t8), lanes(s8)).0);
            acc += v.as_array()[..t8.len()]
                .iter()
                .map(|&x| x as f64)
                .sum::<f64>();
        }
        acc
    }

    /// One chunk of ∂/∂θ and ∂/∂second from the upstream gradient `g` (one per weight of
    /// the chunk, or one for the KL's sum).
    #[inline(always)]
    fn gradients_chunk<const AVX: bool>(
        &self,
        (t, s, g): (&[f32], &[f32], &[f32]),
        dt: &mut [f32],
        ds: &mut [f32],
    ) {
        let form = self.form;
        for (j, (a8, b8)) in dt.chunks_mut(8).zip(ds.chunks_mut(8)).enumerate() {
            let (at, m) = (8 * j, a8.len());
            let g8 = match g {
                [one] => f32x8::splat(*one),
                _ => lanes(&g[at..at + m]),
            };
            let (t8, s8) = (lanes(&t[at..at + m]), lanes(&s[at..at + m]));
            let (la, inside, dla) = form.log_alpha::<AVX>(t8, s8);
            let (x, y) = match self.term {
                Term::Mean(th) => (
                    la.simd_le(f32x8::splat(th)).select(g8, f32x8::ZERO),
                    f32x8::ZERO,
                ),
                Term::Var => {
                    let alpha = exp::<AVX>(la);
                    let v = t8 * t8 * alpha;
                    let dv_dla = v * inside;
                    (
                        g8 * (f32x8::splat(2.0) * t8 * alpha + dv_dla * dla),
                        g8 * dv_dla,
                    )
                }
                Term::Kl => {
                    let dk = g8 * form.kl_deriv::<AVX>(la) * inside;
                    (dk * dla, dk)
                }
            };
            store_lanes(a8, x);
            store_lanes(b8, y);
        }
    }

    /// The chunk loops compiled for AVX2 and FMA: the `#[inline(always)]` loops, the
    /// form's terms and `exp`/`ln` inline here down to `avx::exp8` and `avx::ln8`, so the
    /// exponentials and logarithms run on 256-bit vectors (the crate's baseline build runs
    /// `wide`'s as two 4-lane halves).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (`avx::available()`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn values_chunk_avx2(&self, theta: &[f32], second: &[f32], out: &mut [f32]) {
        self.values_chunk::<true>(theta, second, out)
    }

    /// See [`Vdrop::values_chunk_avx2`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn kl_chunk_avx2(&self, theta: &[f32], second: &[f32]) -> f64 {
        self.kl_chunk::<true>(theta, second)
    }

    /// See [`Vdrop::values_chunk_avx2`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gradients_chunk_avx2(
        &self,
        ins: (&[f32], &[f32], &[f32]),
        dt: &mut [f32],
        ds: &mut [f32],
    ) {
        self.gradients_chunk::<true>(ins, dt, ds)
    }

    /// The forward pass's values: one per weight, or (`Term::Kl`) their sum; in fixed
    /// chunks (in parallel), so the sum does not depend on scheduling.
    fn forward(&self, theta: &[f32], second: &[f32]) -> Vec<f32> {
        let avx = avx::available();
        if self.term == Term::Kl {
            let parts: Vec<f64> = theta
                .par_chunks(CHUNK)
                .zip(second.par_chunks(CHUNK))
                .map(|(t, s)| {
                    #[cfg(target_arch = "x86_64")]
                    if avx {
                        // SAFETY: the CPU has AVX2 and FMA.
                        return unsafe { self.kl_chunk_avx2(t, s) };
                    }
                    self.kl_chunk::<false>(t, s)
                })
                .collect();
            return vec![parts.iter().sum::<f64>() as f32];
        }
        let mut out = vec![0f32; theta.len()];
        out.par_chunks_mut(CHUNK)
            .zip(theta.par_chunks(CHUNK).zip(second.par_chunks(CHUNK)))
            .for_each(|(o, (t, s))| {
                #[cfg(target_arch = "x86_64")]
                if avx {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { self.values_chunk_avx2(t, s, o) };
                }
                self.values_chunk::<false>(t, s, o)
            });
        out
    }

    /// ∂/∂θ and ∂/∂second of every weight, in fixed chunks (in parallel).
    fn backward(&self, t: &[f32], s: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let avx = avx::available();
        let (mut dt, mut ds) = (vec![0f32; t.len()], vec![0f32; t.len()]);
        dt.par_chunks_mut(CHUNK)
            .zip(ds.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (dt, ds))| {
                let (at, n) = (c * CHUNK, dt.len());
                let gc = if g.len() == 1 { g } else { &g[at..at + n] };
                let ins = (&t[at..at + n], &s[at..at + n], gc);
                #[cfg(target_arch = "x86_64")]
                if avx {
                    // SAFETY: the CPU has AVX2 and FMA.
                    return unsafe { self.gradients_chunk_avx2(ins, dt, ds) };
                }
                self.gradients_chunk::<false>(ins, dt, ds)
            });
        (dt, ds)
    }
}

impl CustomOp2 for Vdrop {
    fn name(&self) -> &'static str {
        "fused-vdrop"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let theta = f32_operand(s1, l1, "fused vdrop", "θ")?;
        let second = f32_operand(s2, l2, "fused vdrop", "the second parameter")?;
        let out = self.forward(theta, second);
        let shape = match self.term {
            Term::Kl => Shape::from(()),
            _ => Shape::from(l1.dims()),
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        theta: &Tensor,
        second: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dev, shape) = (theta.device(), theta.dims());
        let (dt, ds) = with_f32(theta, |t| {
            with_f32(second, |s| with_f32(grad, |g| Ok(self.backward(t, s, g))))
        })?;
        let ds = match self.term {
            Term::Mean(_) => None,
            _ => Some(Tensor::from_vec(ds, shape, dev)?),
        };
        Ok((Some(Tensor::from_vec(dt, shape, dev)?), ds))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::max_diff;
    use crate::lower::nets::layers::{vdrop_kl, vdrop_log_alpha};
    use candle_core::{Device, Var};

    /// The candle composition of each term, as `layers::Linear` computes it off this path.
    fn composed(t: &Tensor, s: &Tensor, kl: VdropKl, additive: bool, term: Term) -> Tensor {
        let la = vdrop_log_alpha(t, s, kl, additive).unwrap();
        match term {
            Term::Mean(th) => t
                .broadcast_mul(&la.le(th as f64).unwrap().to_dtype(DType::F32).unwrap())
                .unwrap(),
            Term::Var => t.sqr().unwrap().broadcast_mul(&la.exp().unwrap()).unwrap(),
            Term::Kl => vdrop_kl(&la, kl).unwrap().sum_all().unwrap(),
        }
    }

    /// The loops compiled for AVX2 (the path of the composition test on a CPU with it) and
    /// the baseline loops (`wide`'s exponential and logarithm) agree on every term, form
    /// and gradient, over log α across the clamps.
    #[test]
    fn the_avx2_and_baseline_loops_agree() {
        if !avx::available() {
            return;
        }
        let mut rng = crate::rng::Rng::seed(8);
        let n = 1003;
        let u = rng.uniform_vec(3 * n);
        let t: Vec<f32> = (0..n)
            .map(|i| (1.0 - 2.0 * u[i]) * 10f32.powf(-4.0 * u[n + i]))
            .collect();
        let s: Vec<f32> = (0..n).map(|i| -14.0 + 24.0 * u[2 * n + i]).collect();
        let g = rng.normal_vec(n);
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{what}: {x} vs {y}"
                );
            }
        };
        for kl in [VdropKl::Molchanov, VdropKl::Kingma] {
            for additive in [true, false] {
                for term in [Term::Mean(3.0), Term::Var, Term::Kl] {
                    let op = Vdrop {
                        form: Form { kl, additive },
                        term,
                    };
                    let what = format!("{kl:?} additive {additive} {term:?}");
                    let (mut v1, mut v2) = (vec![0f32; n], vec![0f32; n]);
                    op.values_chunk::<false>(&t, &s, &mut v1);
                    // SAFETY: checked `avx::available()` above.
                    unsafe { op.values_chunk_avx2(&t, &s, &mut v2) };
                    close(&v2, &v1, &what);
                    let (k1, k2) = (op.kl_chunk::<false>(&t, &s), unsafe {
                        op.kl_chunk_avx2(&t, &s)
                    });
                    assert!(
                        (k1 - k2).abs() <= 1e-5 * (1.0 + k1.abs()),
                        "{what}: KL {k2} vs {k1}"
                    );
                    let (mut a1, mut b1, mut a2, mut b2) =
                        (vec![0f32; n], vec![0f32; n], vec![0f32; n], vec![0f32; n]);
                    op.gradients_chunk::<false>((&t, &s, &g), &mut a1, &mut b1);
                    unsafe { op.gradients_chunk_avx2((&t, &s, &g), &mut a2, &mut b2) };
                    close(&a2, &a1, &what);
                    close(&b2, &b1, &what);
                }
            }
        }
    }

    /// Values and both gradients agree with the composition, for each term, each KL form,
    /// both parameterizations, and log α on both sides of each clamp and of the pruning
    /// threshold (θ from 1e-4 to 1, the second parameter from -14 to 10), over a size
    /// that is not a multiple of the lanes or the chunk.
    #[test]
    fn fused_terms_match_the_composition() {
        let mut rng = crate::rng::Rng::seed(5);
        let (rows, cols) = (1181, 7); // 8,267 weights
        let n = rows * cols;
        assert!(n > CHUNK && n % 8 != 0);
        let u = rng.uniform_vec(2 * n);
        let theta: Vec<f32> = (0..n)
            .map(|i| {
                let mag = 10f32.powf(-4.0 * u[i]);
                if i % 2 == 0 {
                    mag
                } else {
                    -mag
                }
            })
            .collect();
        let second: Vec<f32> = (0..n).map(|i| -14.0 + 24.0 * u[n + i]).collect();
        let dev = Device::Cpu;
        let t = Var::from_tensor(&Tensor::from_vec(theta, (rows, cols), &dev).unwrap()).unwrap();
        let s = Var::from_tensor(&Tensor::from_vec(second, (rows, cols), &dev).unwrap()).unwrap();
        let weights = rng.normal(t.dims(), &dev).unwrap();
        for kl in [VdropKl::Molchanov, VdropKl::Kingma] {
            for additive in [true, false] {
                for term in [Term::Mean(3.0), Term::Var, Term::Kl] {
                    let run = |fused: bool| {
                        let y = if fused {
                            super::term(t.as_tensor(), s.as_tensor(), kl, additive, term)
                                .unwrap()
                                .unwrap()
                        } else {
                            composed(t.as_tensor(), s.as_tensor(), kl, additive, term)
                        };
                        let loss = if term == Term::Kl {
                            y.clone()
                        } else {
                            (&y * &weights).unwrap().sum_all().unwrap()
                        };
                        let g = loss.backward().unwrap();
                        let gt = g
                            .get(t.as_tensor())
                            .cloned()
                            .unwrap_or_else(|| t.as_tensor().zeros_like().unwrap());
                        let gs = g
                            .get(s.as_tensor())
                            .cloned()
                            .unwrap_or_else(|| s.as_tensor().zeros_like().unwrap());
                        (y, gt, gs)
                    };
                    let (a, b) = (run(true), run(false));
                    let what = format!("{kl:?} additive={additive} {term:?}");
                    // The KL sums 8k terms of up to 7 nats: relative error.
                    let scale = |x: &Tensor| {
                        x.abs()
                            .unwrap()
                            .max_all()
                            .unwrap()
                            .to_scalar::<f32>()
                            .unwrap()
                            .max(1.0)
                    };
                    for (i, (x, y)) in [(&a.0, &b.0), (&a.1, &b.1), (&a.2, &b.2)]
                        .iter()
                        .enumerate()
                    {
                        let d = max_diff(x, y);
                        assert!(
                            d <= 2e-5 * scale(y) + 1e-6,
                            "{what} part {i}: {d} of {}",
                            scale(y)
                        );
                    }
                }
            }
        }
    }

    /// Kind A's per-unit log α (another shape) and f64 are left to the composition.
    #[test]
    fn other_shapes_and_dtypes_are_not_fused() {
        let dev = Device::Cpu;
        let t = Tensor::ones((3, 4), DType::F32, &dev).unwrap();
        let s = Tensor::ones((3, 1), DType::F32, &dev).unwrap();
        assert!(term(&t, &s, VdropKl::Molchanov, false, Term::Var)
            .unwrap()
            .is_none());
        let t = Tensor::ones((3, 4), DType::F64, &dev).unwrap();
        assert!(term(&t, &t, VdropKl::Molchanov, false, Term::Var)
            .unwrap()
            .is_none());
    }
}
