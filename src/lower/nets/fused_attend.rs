//! DRAW's read and write (see [`super::attend`] for the equations) as one fused op each:
//! the filterbanks of a row built from its five attention parameters, then the glimpse
//! `γ · Fy x Fxᵀ` (read) or the painted image `(1/γ) · Fyᵀ w Fx` (write), forward and
//! backward in one pass over the rows.
//!
//! candle composes a filterbank from a dozen ops on `[R, N, len]` tensors (offsets,
//! centres, squared distances, a division, a softmax) and the products from batched
//! matmuls of 5 × 28 matrices, each an op with its own buffer and its own backward; on
//! `specs/draw.vi` those were a fifth of a training step for under 1% of its arithmetic.
//! Written by hand because candle has no fused kernels; the per-row work is small
//! (N·H·W multiply-adds per channel), so each row is one task, the filterbanks rebuilt
//! in the backward pass rather than kept.
//!
//! Only `f32` CPU operands take this path; the rest take the composition in
//! [`super::attend`], which the tests hold this to.

use crate::lower::avx;
use crate::lower::cpu::{f32_operand, fused_cpu, with_f32};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Which of the two ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dir {
    /// `[R, C, H, W]` image → `[R, C, N, N]` glimpse.
    Read,
    /// `[R, C, N, N]` patch → `[R, C, H, W]` image.
    Write,
}

/// The op: the image shape `(C, H, W)` and the grid side N.
#[derive(Clone, Copy, Debug)]
pub struct Attend {
    pub dir: Dir,
    pub chw: (usize, usize, usize),
    pub grid: usize,
}

/// `read` or `write` of `x` (the image or the patch) under the attention parameters `p`
/// `[R, 5]`, fused on the CPU for `f32`; `None` otherwise (the caller composes it).
pub fn attend(op: Attend, p: &Tensor, x: &Tensor) -> Result<Option<Tensor>> {
    let fusable = fused_cpu(p) && p.dtype() == DType::F32 && x.dtype() == DType::F32;
    if !fusable {
        return Ok(None);
    }
    Ok(Some(p.contiguous()?.apply_op2(&x.contiguous()?, op)?))
}

/// One row's filterbanks and the parameters they came from.
struct Banks {
    /// `[N, W]`, each row summing to 1.
    fx: Vec<f32>,
    /// `[N, H]`.
    fy: Vec<f32>,
    gx: f32,
    gy: f32,
    var: f32,
    delta: f32,
    gamma: f32,
}

impl Attend {
    fn sizes(&self) -> (usize, usize) {
        let (c, h, w) = self.chw;
        let n = self.grid;
        match self.dir {
            Dir::Read => (c * h * w, c * n * n),
            Dir::Write => (c * n * n, c * h * w),
        }
    }

    /// The grid offsets `i − N/2 − 0.5`, i = 1..N.
    fn offsets(&self) -> Vec<f32> {
        let n = self.grid;
        (1..=n).map(|i| i as f32 - n as f32 / 2.0 - 0.5).collect()
    }

    fn banks(&self, p: &[f32], offsets: &[f32]) -> Banks {
        let (_, h, w) = self.chw;
        let n = self.grid;
        let scale = (h.max(w) as f32 - 1.0) / (n.max(2) as f32 - 1.0);
        let gx = (p[0] + 1.0) * ((w as f32 + 1.0) / 2.0);
        let gy = (p[1] + 1.0) * ((h as f32 + 1.0) / 2.0);
        let var = p[2].exp();
        let delta = p[3].exp() * scale;
        Banks {
            fx: bank(gx, delta, var, offsets, w),
            fy: bank(gy, delta, var, offsets, h),
            gx,
            gy,
            var,
            delta,
            gamma: p[4].exp(),
        }
    }

    /// ∂/∂p of one row from the gradients of its filterbanks and of γ.
    fn params_grad(
        &self,
        b: &Banks,
        offsets: &[f32],
        dfx: &[f32],
        dfy: &[f32],
        dgamma: f32,
    ) -> [f32; 5] {
        let (_, h, w) = self.chw;
        let (dgx, ddx, dvx) = bank_grad(&b.fx, dfx, b.gx, b.delta, b.var, offsets, w);
        let (dgy, ddy, dvy) = bank_grad(&b.fy, dfy, b.gy, b.delta, b.var, offsets, h);
        [
            dgx * ((w as f32 + 1.0) / 2.0),
            dgy * ((h as f32 + 1.0) / 2.0),
            (dvx + dvy) * b.var,
            (ddx + ddy) * b.delta,
            dgamma * b.gamma,
        ]
    }
}

/// `F[i, a] = softmax_a(−(a − μ_i)² / 2σ²)` over the pixels a = 1..len, with
/// `μ_i = centre + offset_i · δ`: `[N, len]`.
fn bank(centre: f32, delta: f32, var: f32, offsets: &[f32], len: usize) -> Vec<f32> {
    let mut f = vec![0f32; offsets.len() * len];
    let inv = 1.0 / (2.0 * var);
    for (row, &o) in f.chunks_exact_mut(len).zip(offsets) {
        let mu = centre + o * delta;
        let mut top = f32::NEG_INFINITY;
        for (a, v) in row.iter_mut().enumerate() {
            let d = (a + 1) as f32 - mu;
            *v = -(d * d) * inv;
            top = top.max(*v);
        }
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = (*v - top).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
    f
}

/// The gradients of a bank's centre, stride and variance from the bank's gradient `df`.
fn bank_grad(
    f: &[f32],
    df: &[f32],
    centre: f32,
    delta: f32,
    var: f32,
    offsets: &[f32],
    len: usize,
) -> (f32, f32, f32) {
    let (mut dc, mut dd, mut dv) = (0f32, 0f32, 0f32);
    for ((fr, dfr), &o) in f.chunks_exact(len).zip(df.chunks_exact(len)).zip(offsets) {
        let mu = centre + o * delta;
        let dot: f32 = fr.iter().zip(dfr).map(|(a, b)| a * b).sum();
        let (mut dmu, mut dvar) = (0f32, 0f32);
        for (a, (&fa, &dfa)) in fr.iter().zip(dfr).enumerate() {
            // The softmax's backward, then s = −d²/2σ²: ∂s/∂μ = d/σ², ∂s/∂σ² = d²/2σ⁴.
            let ds = fa * (dfa - dot);
            let d = (a + 1) as f32 - mu;
            dmu += ds * d;
            dvar += ds * d * d;
        }
        dmu /= var;
        dc += dmu;
        dd += o * dmu;
        dv += dvar / (2.0 * var * var);
    }
    (dc, dd, dv)
}

/// `Σ a_k b_k` over eight independent sums, so that the loop vectorizes (a single f32
/// sum is a chain the compiler may not reorder).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[i, b] += Σ_a m[i, a] · x[a, b]`: `m` `[I, A]`, `x` `[A, B]`, `out` `[I, B]`.
#[inline(always)]
fn mul_acc(out: &mut [f32], m: &[f32], x: &[f32], a_len: usize, b_len: usize) {
    for (o, mr) in out.chunks_exact_mut(b_len).zip(m.chunks_exact(a_len)) {
        for (&mv, xr) in mr.iter().zip(x.chunks_exact(b_len)) {
            for (ov, &xv) in o.iter_mut().zip(xr) {
                *ov += mv * xv;
            }
        }
    }
}

/// `out[i, j] += Σ_b x[i, b] · m[j, b]`: `x` `[I, B]`, `m` `[J, B]`, `out` `[I, J]`.
#[inline(always)]
fn mul_t_acc(out: &mut [f32], x: &[f32], m: &[f32], b_len: usize, j_len: usize) {
    for (o, xr) in out.chunks_exact_mut(j_len).zip(x.chunks_exact(b_len)) {
        for (ov, mr) in o.iter_mut().zip(m.chunks_exact(b_len)) {
            *ov += dot(xr, mr);
        }
    }
}

/// `out[a, b] += Σ_i m[i, a] · y[i, b]` (the transpose of `m` times `y`): `m` `[I, A]`,
/// `y` `[I, B]`, `out` `[A, B]`.
#[inline(always)]
fn t_mul_acc(out: &mut [f32], m: &[f32], y: &[f32], a_len: usize, b_len: usize) {
    for (mr, yr) in m.chunks_exact(a_len).zip(y.chunks_exact(b_len)) {
        for (o, &mv) in out.chunks_exact_mut(b_len).zip(mr) {
            for (ov, &yv) in o.iter_mut().zip(yr) {
                *ov += mv * yv;
            }
        }
    }
}

impl Attend {
    /// The forward pass of one row: `o` the output, `p` its parameters, `x` its input.
    #[inline(always)]
    fn fwd_row(&self, o: &mut [f32], p: &[f32], x: &[f32], offsets: &[f32]) {
        let (_, h, w) = self.chw;
        let n = self.grid;
        let b = self.banks(p, offsets);
        let mut tmp = vec![0f32; n * w];
        match self.dir {
            Dir::Read => {
                for (oc, xc) in o.chunks_exact_mut(n * n).zip(x.chunks_exact(h * w)) {
                    tmp.fill(0.0);
                    mul_acc(&mut tmp, &b.fy, xc, h, w); // Fy x: [N, W]
                    mul_t_acc(oc, &tmp, &b.fx, w, n); // (Fy x) Fxᵀ: [N, N]
                    oc.iter_mut().for_each(|v| *v *= b.gamma);
                }
            }
            Dir::Write => {
                let inv = 1.0 / b.gamma;
                for (oc, wc) in o.chunks_exact_mut(h * w).zip(x.chunks_exact(n * n)) {
                    tmp.fill(0.0);
                    mul_acc(&mut tmp, wc, &b.fx, n, w); // w Fx: [N, W]
                    t_mul_acc(oc, &b.fy, &tmp, h, w); // Fyᵀ (w Fx): [H, W]
                    oc.iter_mut().for_each(|v| *v *= inv);
                }
            }
        }
    }

    /// The backward pass of one row: `dp` and `dx` the gradients of its parameters and
    /// input, from `g`, the output's.
    #[inline(always)]
    fn bwd_row(
        &self,
        dp: &mut [f32],
        dx: &mut [f32],
        p: &[f32],
        x: &[f32],
        g: &[f32],
        offsets: &[f32],
    ) {
        let (_, h, w) = self.chw;
        let n = self.grid;
        let b = self.banks(p, offsets);
        let mut dfx = vec![0f32; n * w];
        let mut dfy = vec![0f32; n * h];
        let mut tmp = vec![0f32; n * w];
        let mut dtmp = vec![0f32; n * w];
        let mut dgamma = 0f32;
        match self.dir {
            Dir::Read => {
                // out = γ (Fy x) Fxᵀ per channel.
                let mut raw = vec![0f32; n * n];
                let mut gg = vec![0f32; n * n];
                for ((dxc, xc), gc) in dx
                    .chunks_exact_mut(h * w)
                    .zip(x.chunks_exact(h * w))
                    .zip(g.chunks_exact(n * n))
                {
                    tmp.fill(0.0);
                    mul_acc(&mut tmp, &b.fy, xc, h, w);
                    raw.fill(0.0);
                    mul_t_acc(&mut raw, &tmp, &b.fx, w, n);
                    dgamma += dot(&raw, gc);
                    gg.iter_mut().zip(gc).for_each(|(s, v)| *s = v * b.gamma);
                    // ∂tmp = gg Fx, ∂Fx += ggᵀ tmp.
                    dtmp.fill(0.0);
                    mul_acc(&mut dtmp, &gg, &b.fx, n, w);
                    t_mul_acc(&mut dfx, &gg, &tmp, n, w);
                    // ∂x = Fyᵀ ∂tmp, ∂Fy += ∂tmp xᵀ.
                    t_mul_acc(dxc, &b.fy, &dtmp, h, w);
                    mul_t_acc(&mut dfy, &dtmp, xc, w, h);
                }
            }
            Dir::Write => {
                // out = (1/γ) Fyᵀ (w Fx) per channel.
                let inv = 1.0 / b.gamma;
                let mut gs = vec![0f32; h * w];
                for ((dwc, wc), gc) in dx
                    .chunks_exact_mut(n * n)
                    .zip(x.chunks_exact(n * n))
                    .zip(g.chunks_exact(h * w))
                {
                    tmp.fill(0.0);
                    mul_acc(&mut tmp, wc, &b.fx, n, w);
                    gs.iter_mut().zip(gc).for_each(|(s, v)| *s = v * inv);
                    // ∂tmp = Fy gs, ∂Fy += tmp gsᵀ.
                    dtmp.fill(0.0);
                    mul_acc(&mut dtmp, &b.fy, &gs, h, w);
                    mul_t_acc(&mut dfy, &tmp, &gs, w, h);
                    // ∂γ: out = raw/γ, so ∂γ = −Σ g·out/γ = −Σ ∂tmp·tmp/γ.
                    dgamma -= dot(&dtmp, &tmp) * inv;
                    // ∂w = ∂tmp Fxᵀ, ∂Fx += wᵀ ∂tmp.
                    mul_t_acc(dwc, &dtmp, &b.fx, w, n);
                    t_mul_acc(&mut dfx, wc, &dtmp, n, w);
                }
            }
        }
        dp.copy_from_slice(&self.params_grad(&b, offsets, &dfx, &dfy, dgamma));
    }
}

#[cfg(target_arch = "x86_64")]
impl Attend {
    /// [`Attend::fwd_row`] compiled for AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fwd_row_avx2(&self, o: &mut [f32], p: &[f32], x: &[f32], offsets: &[f32]) {
        self.fwd_row(o, p, x, offsets)
    }

    /// [`Attend::bwd_row`] compiled for AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn bwd_row_avx2(
        &self,
        dp: &mut [f32],
        dx: &mut [f32],
        p: &[f32],
        x: &[f32],
        g: &[f32],
        offsets: &[f32],
    ) {
        self.bwd_row(dp, dx, p, x, g, offsets)
    }
}

impl CustomOp2 for Attend {
    fn name(&self) -> &'static str {
        match self.dir {
            Dir::Read => "fused-attend-read",
            Dir::Write => "fused-attend-write",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (c, h, w) = self.chw;
        let n = self.grid;
        let (inp, outp) = self.sizes();
        let p = f32_operand(s1, l1, "fused attention", "the parameters")?;
        let x = f32_operand(s2, l2, "fused attention", "the image")?;
        let r = l1.dims().first().copied().unwrap_or(0);
        if p.len() != r * 5 || x.len() != r * inp {
            candle_core::bail!(
                "fused attention: parameters {:?} and input {:?} do not fit {} rows",
                l1.dims(),
                l2.dims(),
                r
            );
        }
        let offsets = self.offsets();
        let mut out = vec![0f32; r * outp];
        out.par_chunks_mut(outp.max(1))
            .zip(p.par_chunks(5))
            .zip(x.par_chunks(inp.max(1)))
            .for_each(|((o, p), x)| {
                #[cfg(target_arch = "x86_64")]
                if avx::available() {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    return unsafe { self.fwd_row_avx2(o, p, x, &offsets) };
                }
                self.fwd_row(o, p, x, &offsets)
            });
        let shape = match self.dir {
            Dir::Read => Shape::from((r, c, n, n)),
            Dir::Write => Shape::from((r, c, h, w)),
        };
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        p: &Tensor,
        x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (inp, outp) = self.sizes();
        let r = p.dim(0)?;
        let offsets = self.offsets();
        let (dp, dx) = with_f32(p, |p| {
            with_f32(x, |x| {
                with_f32(grad, |g| {
                    let mut dp = vec![0f32; r * 5];
                    let mut dx = vec![0f32; r * inp];
                    dp.par_chunks_mut(5)
                        .zip(dx.par_chunks_mut(inp.max(1)))
                        .zip(p.par_chunks(5))
                        .zip(x.par_chunks(inp.max(1)))
                        .zip(g.par_chunks(outp.max(1)))
                        .for_each(|((((dp, dx), p), x), g)| {
                            #[cfg(target_arch = "x86_64")]
                            if avx::available() {
                                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                                return unsafe { self.bwd_row_avx2(dp, dx, p, x, g, &offsets) };
                            }
                            self.bwd_row(dp, dx, p, x, g, &offsets)
                        });
                    Ok((dp, dx))
                })
            })
        })?;
        let dev = p.device();
        Ok((
            Some(Tensor::from_vec(dp, p.dims(), dev)?),
            Some(Tensor::from_vec(dx, x.dims(), dev)?),
        ))
    }
}
