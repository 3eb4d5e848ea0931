//! The random-function guide's per-output terms as fused ops, one pass each way:
//!
//! - [`factors`]: the whitened posterior's Cholesky factors `L_o` from their stored form
//!   `[O, M, M]` (strictly lower part as it is, diagonal as its log, zeros above), laid side
//!   by side as `[M, O · M]` (column block o is `L_o`) for the variances' one GEMM;
//! - [`factor_kl_part`]: `Σ_o (‖L_o‖²_F − 2 Σ_i log L_o,ii)`, the factors' share of the KL
//!   to the GP prior, from the stored form;
//! - [`group_sumsq`]: `out[r, g] = Σ_j t[r, g · width + j]²`, the quadratic forms
//!   `aᵀ S_o a = ‖aᵀ L_o‖²` of every row and output.
//!
//! candle composes each from masks, the identity and broadcasts: the factors alone were
//! four passes over the `O · M²` stored values (262,144 of them on
//! `specs/random_function.vi`) and a transposing copy, made twice a step (once for the
//! variances, once for the KL), and as many again backward. Written by hand because
//! candle has no fused kernels. Only contiguous `f32` CPU tensors take this path; the rest
//! take the composition in [`super::random_function`], which the tests hold these to.

use crate::lower::cpu::{f32_operand, fused_cpu, with_f32};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn fusable(t: &Tensor) -> bool {
    fused_cpu(t) && t.dtype() == DType::F32
}

/// The first `outputs` factors side by side `[M, outputs · M]` from the stored form
/// `[O, M, M]`; `None` off the fused path.
pub fn factors(stored: &Tensor, outputs: usize) -> Result<Option<Tensor>> {
    if !fusable(stored) {
        return Ok(None);
    }
    let op = Factors { outputs };
    Ok(Some(stored.contiguous()?.apply_op1(op)?))
}

/// `Σ_o (‖L_o‖²_F − 2 Σ_i log L_o,ii)` over every output from the stored form, a scalar;
/// `None` off the fused path.
pub fn factor_kl_part(stored: &Tensor) -> Result<Option<Tensor>> {
    if !fusable(stored) {
        return Ok(None);
    }
    Ok(Some(stored.contiguous()?.apply_op1(FactorKl)?))
}

/// `[R, G · width]` → `[R, G]`, the sums of squares of each group of `width` values;
/// `None` off the fused path.
pub fn group_sumsq(t: &Tensor, width: usize) -> Result<Option<Tensor>> {
    if !fusable(t) || width == 0 {
        return Ok(None);
    }
    Ok(Some(t.contiguous()?.apply_op1(GroupSumsq { width })?))
}

/// `(O, M)` of a stored factor tensor `[O, M, M]`.
fn stored_dims(dims: &[usize]) -> Result<(usize, usize)> {
    match dims {
        [o, m, m2] if m == m2 => Ok((*o, *m)),
        _ => candle_core::bail!("fused GP terms: stored factors of shape {dims:?}, not [O, M, M]"),
    }
}

struct Factors {
    outputs: usize,
}

impl CustomOp1 for Factors {
    fn name(&self) -> &'static str {
        "fused-gp-factors"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = f32_operand(s, l, "fused GP factors", "the stored factors")?;
        let (o, m) = stored_dims(l.dims())?;
        let k = self.outputs.min(o);
        // Row i of the result holds row i of every factor in turn.
        let mut out = vec![0f32; m * k * m];
        out.par_chunks_mut(k * m).enumerate().for_each(|(i, row)| {
            for (oi, block) in row.chunks_exact_mut(m).enumerate() {
                let src = &v[(oi * m + i) * m..(oi * m + i) * m + m];
                block[..i].copy_from_slice(&src[..i]);
                block[i] = src[i].exp();
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((m, k * m))))
    }

    fn bwd(&self, stored: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (o, m) = stored_dims(stored.dims())?;
        let k = self.outputs.min(o);
        let ds = with_f32(res, |res| {
            with_f32(grad, |g| {
                let mut ds = vec![0f32; o * m * m];
                ds.par_chunks_mut(m * m)
                    .take(k)
                    .enumerate()
                    .for_each(|(oi, d)| {
                        for (i, drow) in d.chunks_exact_mut(m).enumerate() {
                            let at = i * k * m + oi * m;
                            drow[..i].copy_from_slice(&g[at..at + i]);
                            // L_ii = exp(s_ii): ∂s_ii = ∂L_ii · L_ii.
                            drow[i] = g[at + i] * res[at + i];
                        }
                    });
                Ok(ds)
            })
        })?;
        Ok(Some(Tensor::from_vec(ds, stored.dims(), stored.device())?))
    }
}

struct FactorKl;

impl CustomOp1 for FactorKl {
    fn name(&self) -> &'static str {
        "fused-gp-factor-kl"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = f32_operand(s, l, "fused GP KL", "the stored factors")?;
        let (_, m) = stored_dims(l.dims())?;
        // Per output in f64, the outputs added in order.
        let parts: Vec<f64> = v
            .par_chunks(m * m.max(1))
            .map(|f| {
                let mut acc = 0f64;
                for (i, row) in f.chunks_exact(m).enumerate() {
                    acc += row[..i]
                        .iter()
                        .map(|&x| (x as f64) * (x as f64))
                        .sum::<f64>();
                    let d = row[i] as f64;
                    acc += (2.0 * d).exp() - 2.0 * d;
                }
                acc
            })
            .collect();
        let total: f64 = parts.iter().sum();
        Ok((CpuStorage::F32(vec![total as f32]), Shape::from(())))
    }

    fn bwd(&self, stored: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, m) = stored_dims(stored.dims())?;
        let g = grad.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let ds = with_f32(stored, |v| {
            let mut ds = vec![0f32; v.len()];
            ds.par_chunks_mut(m * m.max(1))
                .zip(v.par_chunks(m * m.max(1)))
                .for_each(|(d, f)| {
                    for (i, (drow, row)) in d.chunks_exact_mut(m).zip(f.chunks_exact(m)).enumerate()
                    {
                        for (dv, &x) in drow[..i].iter_mut().zip(&row[..i]) {
                            *dv = 2.0 * g * x;
                        }
                        drow[i] = g * (2.0 * (2.0 * row[i]).exp() - 2.0);
                    }
                });
            Ok(ds)
        })?;
        Ok(Some(Tensor::from_vec(ds, stored.dims(), stored.device())?))
    }
}

struct GroupSumsq {
    width: usize,
}

impl CustomOp1 for GroupSumsq {
    fn name(&self) -> &'static str {
        "fused-group-sumsq"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = f32_operand(s, l, "fused group sum of squares", "the input")?;
        let (rows, cols) = l.shape().dims2()?;
        if cols % self.width != 0 {
            candle_core::bail!(
                "fused group sum of squares: {cols} columns in groups of {}",
                self.width
            );
        }
        let groups = cols / self.width;
        let mut out = vec![0f32; rows * groups];
        out.par_chunks_mut(groups.max(1))
            .zip(v.par_chunks(cols.max(1)))
            .for_each(|(o, row)| {
                for (ov, grp) in o.iter_mut().zip(row.chunks_exact(self.width)) {
                    *ov = sumsq(grp);
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, groups))))
    }

    fn bwd(&self, t: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (rows, cols) = t.dims2()?;
        let groups = cols / self.width;
        let dt = with_f32(t, |v| {
            with_f32(grad, |g| {
                let mut dt = vec![0f32; rows * cols];
                dt.par_chunks_mut(cols.max(1))
                    .zip(v.par_chunks(cols.max(1)))
                    .zip(g.par_chunks(groups.max(1)))
                    .for_each(|((d, row), gr)| {
                        for ((dg, grp), &gv) in d
                            .chunks_exact_mut(self.width)
                            .zip(row.chunks_exact(self.width))
                            .zip(gr)
                        {
                            let two_g = 2.0 * gv;
                            for (dv, &x) in dg.iter_mut().zip(grp) {
                                *dv = two_g * x;
                            }
                        }
                    });
                Ok(dt)
            })
        })?;
        Ok(Some(Tensor::from_vec(dt, t.dims(), t.device())?))
    }
}

/// `Σ x²` over eight independent sums, so that the loop vectorizes.
fn sumsq(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = v.chunks_exact(8);
    let tail: f32 = c.remainder().iter().map(|x| x * x).sum();
    for x in c {
        for k in 0..8 {
            acc[k] += x[k] * x[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    //! Each fused term against its candle composition (the one `random_function` takes off
    //! this path): value and gradient.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::assert_close;
    use candle_core::{Device, Var, D};

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v = crate::rng::Rng::seed(seed).normal_vec(n);
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// The stored form's factors `[O, M, M]` by masks, as `posterior_factor` builds them.
    fn composed_factors(s: &Tensor) -> Tensor {
        let m = s.dim(1).unwrap();
        let dev = s.device();
        let eye = Tensor::eye(m, DType::F32, dev).unwrap();
        let mask: Vec<f32> = (0..m * m)
            .map(|k| if k % m < k / m { 1.0 } else { 0.0 })
            .collect();
        let lower = Tensor::from_vec(mask, (m, m), dev).unwrap();
        let diag = s
            .broadcast_mul(&eye)
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap();
        (s.broadcast_mul(&lower).unwrap() + diag.exp().unwrap().broadcast_mul(&eye).unwrap())
            .unwrap()
    }

    /// The value and the gradient of `⟨y, weights⟩` (or of the scalar y) in `x`.
    fn value_and_grad(x: &Var, y: Tensor, weights: Option<&Tensor>) -> (Tensor, Tensor) {
        let loss = match weights {
            Some(w) => (&y * w).unwrap().sum_all().unwrap(),
            None => y.clone(),
        };
        let g = loss.backward().unwrap();
        (y, g.get(x.as_tensor()).unwrap().clone())
    }

    fn both_close(a: &(Tensor, Tensor), b: &(Tensor, Tensor), what: &str) {
        assert_close(&a.0, &b.0, 1e-5, &format!("{what} value"));
        assert_close(&a.1, &b.1, 1e-5, &format!("{what} gradient"));
    }

    #[test]
    fn factors_side_by_side_match_the_masks() {
        let (o, m) = (5, 7);
        let s = Var::from_tensor(&random(&[o, m, m], 1)).unwrap();
        for outputs in [o, 2] {
            let w = random(&[m, outputs * m], 2);
            let fused = factors(s.as_tensor(), outputs).unwrap().unwrap();
            let composed = composed_factors(s.as_tensor())
                .narrow(0, 0, outputs)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((m, outputs * m))
                .unwrap();
            both_close(
                &value_and_grad(&s, fused, Some(&w)),
                &value_and_grad(&s, composed, Some(&w)),
                &format!("factors of {outputs} outputs"),
            );
        }
    }

    #[test]
    fn the_factors_kl_part_matches_its_composition() {
        let (o, m) = (4, 9);
        let s = Var::from_tensor(&(random(&[o, m, m], 3) * 0.5).unwrap()).unwrap();
        let fused = factor_kl_part(s.as_tensor()).unwrap().unwrap();
        // ‖L‖²_F − 2 Σ log diag L, the log diagonal being the stored diagonal.
        let l = composed_factors(s.as_tensor());
        let eye = Tensor::eye(m, DType::F32, &Device::Cpu).unwrap();
        let log_diag = s
            .as_tensor()
            .broadcast_mul(&eye)
            .unwrap()
            .sum_all()
            .unwrap();
        let composed = (l.sqr().unwrap().sum_all().unwrap() - (log_diag * 2.0).unwrap()).unwrap();
        both_close(
            &value_and_grad(&s, fused, None),
            &value_and_grad(&s, composed, None),
            "the KL part",
        );
    }

    #[test]
    fn group_sums_of_squares_match_their_composition() {
        let (rows, groups, width) = (6, 3, 11);
        let t = Var::from_tensor(&random(&[rows, groups * width], 4)).unwrap();
        let w = random(&[rows, groups], 5);
        let fused = group_sumsq(t.as_tensor(), width).unwrap().unwrap();
        let composed = t
            .as_tensor()
            .reshape((rows, groups, width))
            .unwrap()
            .sqr()
            .unwrap()
            .sum(D::Minus1)
            .unwrap();
        both_close(
            &value_and_grad(&t, fused, Some(&w)),
            &value_and_grad(&t, composed, Some(&w)),
            "group sums of squares",
        );
    }

    #[test]
    fn f64_is_left_to_the_composition() {
        let s = Tensor::zeros((2, 3, 3), DType::F64, &Device::Cpu).unwrap();
        assert!(factors(&s, 2).unwrap().is_none());
        assert!(factor_kl_part(&s).unwrap().is_none());
        assert!(group_sumsq(&s.reshape((2, 9)).unwrap(), 3)
            .unwrap()
            .is_none());
    }
}
