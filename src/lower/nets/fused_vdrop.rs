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
use crate::lower::cpu::{f32_operand, fused_cpu, lanes, with_f32};
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
    fn log_alpha(self, theta: f32x8, second: f32x8) -> (f32x8, f32x8, f32x8) {
        let (raw, dtheta) = if self.additive {
            let t2 = theta * theta + f32x8::splat(THETA2_EPS);
            (second - t2.ln(), f32x8::splat(-2.0) * theta / t2)
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
    fn kl(self, la: f32x8) -> f32x8 {
        let one = f32x8::ONE;
        match self.kl {
            VdropKl::Molchanov => {
                let sig = one / (one + (-(f32x8::splat(K3) * la + f32x8::splat(K2))).exp());
                // softplus(−la) = max(−la, 0) + ln(1 + e^{−|la|}).
                let sp = (-la).max(f32x8::ZERO) + (one + (-la.abs()).exp()).ln();
                let k1 = f32x8::splat(K1);
                k1 - k1 * sig + f32x8::splat(0.5) * sp
            }
            VdropKl::Kingma => {
                let a = la.exp();
                let poly = ((f32x8::splat(C3) * a + f32x8::splat(C2)) * a + f32x8::splat(C1)) * a;
                -(f32x8::splat(KINGMA_C0 as f32) + f32x8::splat(0.5) * la + poly)
            }
        }
    }

    /// The derivative of [`Form::kl`] in log α.
    #[inline(always)]
    fn kl_deriv(self, la: f32x8) -> f32x8 {
        let one = f32x8::ONE;
        match self.kl {
            VdropKl::Molchanov => {
                let sig = one / (one + (-(f32x8::splat(K3) * la + f32x8::splat(K2))).exp());
                // d softplus(−la) / d la = −σ(−la).
                let sig_neg = one / (one + la.exp());
                -(f32x8::splat(K1 * K3) * sig * (one - sig)) - f32x8::splat(0.5) * sig_neg
            }
            VdropKl::Kingma => {
                let a = la.exp();
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

/// Calls `f` on eight lanes of θ and the second parameter at a time, in fixed chunks
/// (in parallel), writing eight outputs; `out` has their length.
fn for_lanes(
    theta: &[f32],
    second: &[f32],
    out: &mut [f32],
    f: impl Fn(f32x8, f32x8) -> f32x8 + Sync,
) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, o)| {
        let base = c * CHUNK;
        for (j, o8) in o.chunks_mut(8).enumerate() {
            let at = base + 8 * j;
            let n = o8.len();
            let r = f(lanes(&theta[at..at + n]), lanes(&second[at..at + n]));
            o8.copy_from_slice(&r.as_array()[..n]);
        }
    });
}

/// `f(θ, second, upstream)` of every weight, eight lanes at a time in fixed chunks (in
/// parallel), its two results into two fresh buffers; `g` the upstream gradient, one per
/// weight or one for all (the KL's sum).
fn gradients(t: &[f32], s: &[f32], g: &[f32], f: &WeightGrad) -> (Vec<f32>, Vec<f32>) {
    let (mut da, mut db) = (vec![0f32; t.len()], vec![0f32; t.len()]);
    da.par_chunks_mut(CHUNK)
        .zip(db.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (da, db))| {
            for (j, (a8, b8)) in da.chunks_mut(8).zip(db.chunks_mut(8)).enumerate() {
                let (at, m) = (c * CHUNK + 8 * j, a8.len());
                let g8 = match g {
                    [one] => f32x8::splat(*one),
                    _ => lanes(&g[at..at + m]),
                };
                let (x, y) = f(lanes(&t[at..at + m]), lanes(&s[at..at + m]), g8);
                a8.copy_from_slice(&x.as_array()[..m]);
                b8.copy_from_slice(&y.as_array()[..m]);
            }
        });
    (da, db)
}

/// The elementwise derivative [`gradients`] applies.
type WeightGrad = dyn Fn(f32x8, f32x8, f32x8) -> (f32x8, f32x8) + Sync;

/// The sum of `f` over the weights: per chunk in f64, the chunks added in order.
fn sum_lanes(theta: &[f32], second: &[f32], f: impl Fn(f32x8, f32x8) -> f32x8 + Sync) -> f64 {
    let parts: Vec<f64> = theta
        .par_chunks(CHUNK)
        .zip(second.par_chunks(CHUNK))
        .map(|(t, s)| {
            let mut acc = 0f64;
            for (t8, s8) in t.chunks(8).zip(s.chunks(8)) {
                let v = f(lanes(t8), lanes(s8));
                acc += v.as_array()[..t8.len()]
                    .iter()
                    .map(|&x| x as f64)
                    .sum::<f64>();
            }
            acc
        })
        .collect();
    parts.iter().sum()
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
        let form = self.form;
        let mut out = vec![0f32; theta.len()];
        match self.term {
            Term::Mean(th) => {
                let th = f32x8::splat(th);
                for_lanes(theta, second, &mut out, |t, s| {
                    let (la, _, _) = form.log_alpha(t, s);
                    la.simd_le(th).select(t, f32x8::ZERO)
                });
            }
            Term::Var => for_lanes(theta, second, &mut out, |t, s| {
                let (la, _, _) = form.log_alpha(t, s);
                t * t * la.exp()
            }),
            Term::Kl => {
                let total = sum_lanes(theta, second, |t, s| form.kl(form.log_alpha(t, s).0));
                return Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())));
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(l1.dims())))
    }

    fn bwd(
        &self,
        theta: &Tensor,
        second: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let form = self.form;
        let (dev, shape) = (theta.device(), theta.dims());
        // ∂/∂θ and ∂/∂second of one weight from the upstream gradient.
        let f: Box<WeightGrad> = match self.term {
            Term::Mean(th) => {
                let th = f32x8::splat(th);
                Box::new(move |t8, s8, g8| {
                    let (la, _, _) = form.log_alpha(t8, s8);
                    (la.simd_le(th).select(g8, f32x8::ZERO), f32x8::ZERO)
                })
            }
            Term::Var => Box::new(move |t8, s8, g8| {
                let (la, inside, dla) = form.log_alpha(t8, s8);
                let alpha = la.exp();
                let v = t8 * t8 * alpha;
                let dv_dla = v * inside;
                (
                    g8 * (f32x8::splat(2.0) * t8 * alpha + dv_dla * dla),
                    g8 * dv_dla,
                )
            }),
            Term::Kl => Box::new(move |t8, s8, g8| {
                let (la, inside, dla) = form.log_alpha(t8, s8);
                let dk = g8 * form.kl_deriv(la) * inside;
                (dk * dla, dk)
            }),
        };
        let (dt, ds) = with_f32(theta, |t| {
            with_f32(second, |s| with_f32(grad, |g| Ok(gradients(t, s, g, &*f))))
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
