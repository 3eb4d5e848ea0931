//! The GRU cell's gates as one candle op with its own backward pass: from the two gate
//! pre-activations `gi = x W_ihᵀ + b_ih`, `gh = h W_hhᵀ + b_hh` (`[R, 3H]`, blocks r, z, n
//! in PyTorch's order) and the state `h` `[R, H]`,
//!
//! `r = σ(gi_r + gh_r)`, `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r ⊙ gh_n)`,
//! `h' = (1 − z) ⊙ n + z ⊙ h`.
//!
//! Composed of candle's ops a cell step is about a dozen elementwise ops forward and
//! twice that backward, each a pass over `[R, H]` with an allocation; in a VRNN or DRAW
//! step the cells run T times. The backward recomputes r, z and n from the inputs (cheaper
//! than keeping them) and returns the gradients of `gi`, `gh` and `h`:
//!
//! `dn = g (1 − z)`, `dz = g (h − n)`, `dh = g z`; `dpn = dn (1 − n²)` gives `dgi_n = dpn`,
//! `dgh_n = dpn r`, `dr = dpn gh_n`; `dpr = dr r (1 − r)` goes to both `gi_r` and `gh_r`,
//! `dpz = dz z (1 − z)` to both `gi_z` and `gh_z`.
//!
//! Only contiguous `f32` CPU tensors take this path; anything else goes through [`plain`],
//! the composition the tests hold the op to.

use crate::lower::cpu::{contiguous_f32, fused_cpu, lanes, store_lanes, with_f32};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use candle_nn::ops::sigmoid;
use rayon::prelude::*;
use wide::f32x8;

/// `h'` from the gate pre-activations `gi`, `gh` `[R, 3H]` and the state `h` `[R, H]`.
pub fn gru_step(gi: &Tensor, gh: &Tensor, h: &Tensor) -> Result<Tensor> {
    let fusable = fused_cpu(gi)
        && [gi, gh, h].iter().all(|t| t.dtype() == DType::F32)
        && gi.dims() == gh.dims()
        && gi.rank() == 2
        && h.dims2()
            .is_ok_and(|(r, hs)| r == gi.dim(0).unwrap_or(0) && 3 * hs == gi.dim(1).unwrap_or(0));
    if fusable {
        // The op reads contiguous buffers; a strided operand (a state sliced from a wider
        // tensor) is copied first, and its gradient flows back through the copy.
        gi.contiguous()?
            .apply_op3(&gh.contiguous()?, &h.contiguous()?, GruGates)
    } else {
        plain(gi, gh, h)
    }
}

/// The same step composed of candle's ops.
pub fn plain(gi: &Tensor, gh: &Tensor, h: &Tensor) -> Result<Tensor> {
    let hsz = h.dim(1)?;
    let r = sigmoid(&(gi.narrow(1, 0, hsz)? + gh.narrow(1, 0, hsz)?)?)?;
    let z = sigmoid(&(gi.narrow(1, hsz, hsz)? + gh.narrow(1, hsz, hsz)?)?)?;
    let n = (gi.narrow(1, 2 * hsz, hsz)? + r.mul(&gh.narrow(1, 2 * hsz, hsz)?)?)?.tanh()?;
    &n + z.mul(&(h - &n)?)?
}

struct GruGates;

/// σ(x) in eight lanes, `wide`'s exponential (within a few ulp of libm's).
#[inline(always)]
fn sig8(x: f32x8) -> f32x8 {
    f32x8::ONE / (f32x8::ONE + (-x).exp())
}

/// tanh(x) = 1 − 2 / (e^{2x} + 1), in eight lanes; saturates cleanly at ±1.
#[inline(always)]
fn tanh8(x: f32x8) -> f32x8 {
    f32x8::ONE - f32x8::splat(2.0) / ((x + x).exp() + f32x8::ONE)
}

/// Rows per rayon task.
const ROWS: usize = 16;

impl CustomOp3 for GruGates {
    fn name(&self) -> &'static str {
        "fused-gru-gates"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, hs) = l3.shape().dims2()?;
        let (Some(gi), Some(gh), Some(h)) = (
            contiguous_f32(s1, l1),
            contiguous_f32(s2, l2),
            contiguous_f32(s3, l3),
        ) else {
            bail!("fused GRU: an operand is not a contiguous f32 buffer")
        };
        if gi.len() != rows * 3 * hs || gh.len() != gi.len() || h.len() != rows * hs {
            bail!("fused GRU: operand sizes differ");
        }
        let mut out = vec![0f32; rows * hs];
        out.par_chunks_mut(ROWS * hs)
            .enumerate()
            .for_each(|(c, block)| {
                for (k, o) in block.chunks_mut(hs).enumerate() {
                    let row = c * ROWS + k;
                    let gi = &gi[row * 3 * hs..(row + 1) * 3 * hs];
                    let gh = &gh[row * 3 * hs..(row + 1) * 3 * hs];
                    let h = &h[row * hs..(row + 1) * hs];
                    let mut j = 0;
                    while j < hs {
                        let w = (hs - j).min(8);
                        let at = |v: &[f32], off: usize| lanes(&v[off + j..off + j + w]);
                        let r = sig8(at(gi, 0) + at(gh, 0));
                        let z = sig8(at(gi, hs) + at(gh, hs));
                        let n = tanh8(at(gi, 2 * hs) + r * at(gh, 2 * hs));
                        let y = n + z * (at(h, 0) - n);
                        store_lanes(&mut o[j..j + w], y);
                        j += w;
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, hs))))
    }

    fn bwd(
        &self,
        gi: &Tensor,
        gh: &Tensor,
        h: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, hs) = h.dims2()?;
        let (dgi, dgh, dh) = with_f32(grad, |g| {
            with_f32(gi, |gi| {
                with_f32(gh, |gh| {
                    with_f32(h, |h| {
                        let mut dgi = vec![0f32; rows * 3 * hs];
                        let mut dgh = vec![0f32; rows * 3 * hs];
                        let mut dh = vec![0f32; rows * hs];
                        dgi.par_chunks_mut(3 * hs)
                            .zip(dgh.par_chunks_mut(3 * hs))
                            .zip(dh.par_chunks_mut(hs))
                            .enumerate()
                            .for_each(|(row, ((dgi, dgh), dh))| {
                                let (gi, gh) = (
                                    &gi[row * 3 * hs..(row + 1) * 3 * hs],
                                    &gh[row * 3 * hs..(row + 1) * 3 * hs],
                                );
                                let (h, g) =
                                    (&h[row * hs..(row + 1) * hs], &g[row * hs..(row + 1) * hs]);
                                let mut j = 0;
                                while j < hs {
                                    let w = (hs - j).min(8);
                                    let at =
                                        |v: &[f32], off: usize| lanes(&v[off + j..off + j + w]);
                                    let r = sig8(at(gi, 0) + at(gh, 0));
                                    let z = sig8(at(gi, hs) + at(gh, hs));
                                    let ghn = at(gh, 2 * hs);
                                    let n = tanh8(at(gi, 2 * hs) + r * ghn);
                                    let gj = at(g, 0);
                                    let one = f32x8::ONE;
                                    let dn = gj * (one - z);
                                    let dz = gj * (at(h, 0) - n);
                                    let dpn = dn * (one - n * n);
                                    let dpr = dpn * ghn * r * (one - r);
                                    let dpz = dz * z * (one - z);
                                    let put = |dst: &mut [f32], off: usize, v: f32x8| {
                                        store_lanes(&mut dst[off + j..off + j + w], v);
                                    };
                                    put(dh, 0, gj * z);
                                    put(dgi, 2 * hs, dpn);
                                    put(dgh, 2 * hs, dpn * r);
                                    put(dgi, 0, dpr);
                                    put(dgh, 0, dpr);
                                    put(dgi, hs, dpz);
                                    put(dgh, hs, dpz);
                                    j += w;
                                }
                            });
                        Ok((dgi, dgh, dh))
                    })
                })
            })
        })?;
        let dev = gi.device();
        Ok((
            Some(Tensor::from_vec(dgi, (rows, 3 * hs), dev)?),
            Some(Tensor::from_vec(dgh, (rows, 3 * hs), dev)?),
            Some(Tensor::from_vec(dh, (rows, hs), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::max_diff;
    use candle_core::{Device, Var};

    /// Values and the gradients of all three operands agree with the composition, for
    /// one row, odd sizes, a strided state and pre-activations far out in the tails.
    #[test]
    fn fused_gru_matches_candle() {
        let mut rng = crate::rng::Rng::seed(3);
        for (rows, hs) in [(1, 1), (3, 5), (17, 33), (64, 256)] {
            let dev = Device::Cpu;
            let mut v = rng.normal_vec(rows * 3 * hs);
            v.iter_mut().for_each(|x| *x *= 3.0);
            v[0] = 40.0;
            let gi = Var::from_tensor(&Tensor::from_vec(v, (rows, 3 * hs), &dev).unwrap()).unwrap();
            let gh = Var::from_tensor(&rng.normal(&[rows, 3 * hs], &dev).unwrap()).unwrap();
            // The state as a column slice of a wider tensor: strided.
            let wide = Var::from_tensor(&rng.normal(&[rows, hs + 2], &dev).unwrap()).unwrap();
            let w = rng.normal(&[rows, hs], &dev).unwrap();
            let run = |f: fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| {
                let h = wide.as_tensor().narrow(1, 1, hs).unwrap();
                let y = f(gi.as_tensor(), gh.as_tensor(), &h).unwrap();
                let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
                (
                    y,
                    g.get(gi.as_tensor()).unwrap().clone(),
                    g.get(gh.as_tensor()).unwrap().clone(),
                    g.get(wide.as_tensor()).unwrap().clone(),
                )
            };
            let a = run(gru_step);
            let b = run(plain);
            assert!(max_diff(&a.0, &b.0) < 1e-5, "{rows}x{hs} value");
            assert!(max_diff(&a.1, &b.1) < 1e-5, "{rows}x{hs} d gi");
            assert!(max_diff(&a.2, &b.2) < 1e-5, "{rows}x{hs} d gh");
            assert!(max_diff(&a.3, &b.3) < 1e-5, "{rows}x{hs} d h");
        }
    }
}
