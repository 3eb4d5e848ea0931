//! DRAW's selective attention (Gregor et al. 2015, section 3.2, eqs. 19-22):
//! `attend_read` extracts an N×N glimpse per channel through a grid of Gaussian filters,
//! `attend_write` paints an N×N patch back through the transposed filterbank.
//!
//! The five attention parameters come from the dense layer `params` of the state:
//! `(g̃x, g̃y, ln σ², ln δ̃, ln γ)`, and for an image of height B and width A
//! - grid centre `gx = (A + 1)/2 · (g̃x + 1)`, `gy = (B + 1)/2 · (g̃y + 1)` (eq. 22),
//! - stride `δ = (max(A, B) − 1)/(N − 1) · δ̃` (eq. 22; N = 1 divides by 1),
//! - filter centres `μx_i = gx + (i − N/2 − 0.5) δ`, `μy_j = gy + (j − N/2 − 0.5) δ`,
//!   i, j = 1..N (eqs. 19-20),
//! - `Fx[i, a] ∝ exp(−(a − μx_i)²/(2σ²))` over the columns a = 1..A (the paper's 1-based
//!   pixel coordinates, so g̃ = 0 is the image centre), each row normalized to sum 1 (as
//!   a softmax over the pixels, so no row is ever all zeros); `Fy` likewise over the rows
//!   (eq. 21).
//!
//! Read is `γ · Fy x Fxᵀ` per channel (eq. 27); write is `(1/γ) · Fyᵀ w Fx` with the
//! patch `w` from the dense layer `patch` (eq. 29).

use super::dense::{gather, widths};
use super::fused_attend::{attend, Attend, Dir};
use super::layers::{flat_input, head_activation, sum_kl, Linear, LinearSpec};
use super::{NetCtx, Network};
use crate::arch::image_chw;
use crate::ir::{Head, NetDef};
use crate::rng::Rng;
use candle_core::{bail, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// The filterbanks of one call: `Fx [R, 1, N, W]`, `Fy [R, 1, N, H]`, `γ [R, 1, 1, 1]`.
struct Banks {
    fx: Tensor,
    fy: Tensor,
    gamma: Tensor,
}

/// `Fx` / `Fy` of one axis of `len` pixels: `[R, N, len]`.
fn bank(centre: &Tensor, delta: &Tensor, var: &Tensor, n: usize, len: usize) -> Result<Tensor> {
    let dev = centre.device();
    let offsets: Vec<f32> = (1..=n).map(|i| i as f32 - n as f32 / 2.0 - 0.5).collect();
    let offsets = Tensor::from_vec(offsets, (1, n), dev)?.to_dtype(centre.dtype())?; // [1, N]
    let mu = centre.broadcast_add(&offsets.broadcast_mul(delta)?)?; // [R, N]
    let pixels = Tensor::arange(1u32, len as u32 + 1, dev)?
        .to_dtype(centre.dtype())?
        .reshape((1, 1, len))?; // [1, 1, len]: 1..=len
    let d = pixels.broadcast_sub(&mu.unsqueeze(2)?)?; // [R, N, len]
    let two_var = (var * 2.0)?.unsqueeze(2)?; // [R, 1, 1]
                                              // exp(−d²/2σ²) normalized over the pixels, as a softmax: every row sums to 1 exactly,
                                              // also for a filter centred far outside the image, where every exp underflows.
    candle_nn::ops::softmax(&d.sqr()?.broadcast_div(&two_var)?.neg()?, 2)
}

fn banks(p: &Tensor, chw: (usize, usize, usize), n: usize) -> Result<Banks> {
    let (_, h, w) = chw;
    let col = |i: usize| p.narrow(1, i, 1); // [R, 1]
    let gx = ((col(0)? + 1.0)? * ((w as f64 + 1.0) / 2.0))?;
    let gy = ((col(1)? + 1.0)? * ((h as f64 + 1.0) / 2.0))?;
    let var = col(2)?.exp()?;
    let scale = (h.max(w) as f64 - 1.0) / (n.max(2) as f64 - 1.0);
    let delta = (col(3)?.exp()? * scale)?;
    let gamma = col(4)?.exp()?;
    let r = p.dim(0)?;
    Ok(Banks {
        fx: bank(&gx, &delta, &var, n, w)?.unsqueeze(1)?,
        fy: bank(&gy, &delta, &var, n, h)?.unsqueeze(1)?,
        gamma: gamma.reshape((r, 1, 1, 1))?,
    })
}

/// Read (eq. 27): `γ · Fy x Fxᵀ` per channel, `[R, C, H, W]` → `[R, C, N, N]`.
fn read(x: &Tensor, b: &Banks) -> Result<Tensor> {
    let fy_x = b.fy.broadcast_matmul(x)?; // [R, C, N, W]
    fy_x.broadcast_matmul(&b.fx.transpose(2, 3)?)? // [R, C, N, N]
        .broadcast_mul(&b.gamma)
}

/// Write (eq. 29): `(1/γ) · Fyᵀ w Fx` per channel, `[R, C, N, N]` → `[R, C, H, W]`. With
/// γ = 1 it is the adjoint of [`read`]: `<read(x), w> = <x, write(w)>`.
fn write(patch: &Tensor, b: &Banks) -> Result<Tensor> {
    let painted = b.fy.transpose(2, 3)?.broadcast_matmul(patch)?; // [R, C, H, N]
    painted.broadcast_matmul(&b.fx)?.broadcast_div(&b.gamma) // [R, C, H, W]
}

/// [`read`] or [`write`] of `x` under the attention parameters `p` `[R, 5]`: the fused op
/// where it applies (`f32` on the CPU), else the composition above.
fn read_or_write(
    dir: Dir,
    p: &Tensor,
    x: &Tensor,
    chw: (usize, usize, usize),
    grid: usize,
) -> Result<Tensor> {
    if let Some(y) = attend(Attend { dir, chw, grid }, p, x)? {
        return Ok(y);
    }
    let b = banks(p, chw, grid)?;
    match dir {
        Dir::Read => read(x, &b),
        Dir::Write => write(x, &b),
    }
}

fn params_layer(inp: usize, net: &NetDef, vb: &VarBuilder, rng: &mut Rng) -> Result<Linear> {
    Linear::new(
        &LinearSpec::dense(inp, 5, true),
        &net.weights,
        None,
        &vb.pp("params"),
        rng,
    )
}

/// `attend_read(grid = N)`: the image is the first input with three axes (else the first
/// input); the other inputs, concatenated, are the state. One head, `C·N·N` values.
pub struct AttendRead {
    img: usize,
    chw: (usize, usize, usize),
    grid: usize,
    state: Vec<(usize, usize)>,
    params: Linear,
    head: Head,
}

impl AttendRead {
    pub fn new(net: &NetDef, grid: usize, vb: VarBuilder, rng: &mut Rng) -> Result<AttendRead> {
        let img = net
            .inputs
            .iter()
            .position(|i| i.ty.shape.len() == 3)
            .unwrap_or(0);
        let chw = match net.inputs.get(img) {
            Some(i) => image_chw(&i.ty),
            None => bail!("network `{}`: attend_read needs an image input", net.name),
        };
        let state: Vec<(usize, usize)> = widths(net, 0)
            .into_iter()
            .filter(|&(i, _)| i != img)
            .collect();
        let params = params_layer(state.iter().map(|x| x.1).sum(), net, &vb, rng)?;
        let head = match net.heads.as_slice() {
            [h] => h.clone(),
            _ => bail!("network `{}`: attend_read has one head", net.name),
        };
        Ok(AttendRead {
            img,
            chw,
            grid,
            state,
            params,
            head,
        })
    }
}

fn state_or_nothing(
    inputs: &[Tensor],
    state: &[(usize, usize)],
    rows: usize,
    dev: &Device,
) -> Result<Tensor> {
    if state.iter().any(|x| x.1 > 0) {
        gather(inputs, state)
    } else {
        Tensor::zeros((rows, 0), DType::F32, dev)
    }
}

impl Network for AttendRead {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let (c, h, w) = self.chw;
        let n = self.grid;
        let x = match inputs.get(self.img) {
            Some(x) => flat_input(x, c * h * w, self.img)?,
            None => bail!("attend_read called without its image"),
        };
        let r = x.dim(0)?;
        let x = x.reshape((r, c, h, w))?; // [R, C, H, W]
        let s = state_or_nothing(inputs, &self.state, r, x.device())?; // [R, state]
        let p = self.params.forward_act(&s, None, ctx)?; // [R, 5]
        let glimpse = read_or_write(Dir::Read, &p, &x, self.chw, n)?; // [R, C, N, N]
        let mut shape = vec![r];
        shape.extend_from_slice(&self.head.ty.shape);
        let out = glimpse.reshape(shape)?; // [R, ...head shape]
        Ok(vec![head_activation(&out, self.head.activation)?])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl([&self.params])
    }
}

/// `attend_write(grid = N)`: the inputs, concatenated, are the state; one image head
/// `[C, H, W]`.
pub struct AttendWrite {
    chw: (usize, usize, usize),
    grid: usize,
    state: Vec<(usize, usize)>,
    params: Linear,
    patch: Linear,
    head: Head,
}

impl AttendWrite {
    pub fn new(net: &NetDef, grid: usize, vb: VarBuilder, rng: &mut Rng) -> Result<AttendWrite> {
        let head = match net.heads.as_slice() {
            [h] => h.clone(),
            _ => bail!("network `{}`: attend_write has one image head", net.name),
        };
        let chw = image_chw(&head.ty);
        let state = widths(net, 0);
        let inp = state.iter().map(|x| x.1).sum();
        let params = params_layer(inp, net, &vb, rng)?;
        let patch = Linear::new(
            &LinearSpec::dense(inp, chw.0 * grid * grid, true),
            &net.weights,
            None,
            &vb.pp("patch"),
            rng,
        )?;
        Ok(AttendWrite {
            chw,
            grid,
            state,
            params,
            patch,
            head,
        })
    }
}

impl Network for AttendWrite {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let (c, _, _) = self.chw;
        let n = self.grid;
        let s = gather(inputs, &self.state)?; // [R, state]
        let r = s.dim(0)?;
        let p = self.params.forward_act(&s, None, ctx)?; // [R, 5]
        let patch = self
            .patch
            .forward_act(&s, None, ctx)?
            .reshape((r, c, n, n))?; // [R, C, N, N]
        let painted = read_or_write(Dir::Write, &p, &patch, self.chw, n)?; // [R, C, H, W]
        let mut shape = vec![r];
        shape.extend_from_slice(&self.head.ty.shape);
        let out = painted.reshape(shape)?;
        Ok(vec![head_activation(&out, self.head.activation)?])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl([&self.params, &self.patch])
    }
}

#[cfg(test)]
mod tests {
    //! The filterbanks against the equations of Gregor et al. 2015 (section 3.2).
    use super::*;

    /// Attention parameters `(g̃x, g̃y, ln σ², ln δ̃, ln γ)` for `rows` rows.
    fn params(rows: &[[f64; 5]]) -> Tensor {
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        Tensor::from_vec(flat, (rows.len(), 5), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    }

    fn random(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f64> = Rng::seed(seed)
            .normal_vec(n)
            .into_iter()
            .map(f64::from)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    const ROWS: [[f64; 5]; 3] = [
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [0.4, -0.7, -1.2, -0.5, 0.0],
        [-0.9, 0.2, 0.8, 0.3, 0.0],
    ];

    #[test]
    fn every_filterbank_row_sums_to_one() {
        let b = banks(&params(&ROWS), (1, 9, 7), 4).unwrap();
        for (f, len) in [(&b.fx, 7), (&b.fy, 9)] {
            assert_eq!(f.dims(), &[3, 1, 4, len]);
            for s in values(&f.sum(3).unwrap()) {
                assert!((s - 1.0).abs() < 1e-6, "a filter sums to {s}");
            }
        }
    }

    #[test]
    fn write_is_the_adjoint_of_read() {
        // γ = 1 (ln γ = 0 in every row); with γ the two differ by γ².
        let b = banks(&params(&ROWS), (2, 9, 7), 4).unwrap();
        let x = random(&[3, 2, 9, 7], 1);
        let w = random(&[3, 2, 4, 4], 2);
        let lhs = (read(&x, &b).unwrap() * &w)
            .unwrap()
            .sum((1, 2, 3))
            .unwrap();
        let rhs = (&x * write(&w, &b).unwrap())
            .unwrap()
            .sum((1, 2, 3))
            .unwrap();
        for (l, r) in values(&lhs).iter().zip(values(&rhs)) {
            assert!(
                (l - r).abs() < 1e-9 * l.abs().max(1.0),
                "<read(x), w> {l} vs <x, write(w)> {r}"
            );
        }
    }

    #[test]
    fn a_full_grid_with_stride_one_and_no_blur_reads_the_image() {
        // N = the image side, g̃ = 0 (the centre), δ̃ = 1 (δ = (A - 1)/(N - 1) = 1),
        // σ² = e^-12: each filter is a unit spike on its own pixel.
        let side = 6;
        let b = banks(
            &params(&[[0.0, 0.0, -12.0, 0.0, 0.0]]),
            (1, side, side),
            side,
        )
        .unwrap();
        let x = random(&[1, 1, side, side], 3);
        let got = read(&x, &b).unwrap();
        for (g, want) in values(&got).iter().zip(values(&x)) {
            assert!((g - want).abs() < 1e-9, "{g} vs {want}");
        }
        // And writing a patch back paints it unchanged.
        let painted = write(&x, &b).unwrap();
        for (g, want) in values(&painted).iter().zip(values(&x)) {
            assert!((g - want).abs() < 1e-9, "{g} vs {want}");
        }
    }

    #[test]
    fn filter_centres_follow_the_grid_equations() {
        // eq. 22: gx = (A + 1)/2 (g̃x + 1), δ = (max(A, B) - 1)/(N - 1) δ̃; eq. 19-20:
        // μx_i = gx + (i - N/2 - 0.5) δ for i = 1..N, in 1-based pixel coordinates. With a
        // small σ well inside the image, each filter's mean position is its centre.
        // σ = 1 keeps the discretized Gaussian's mean on its centre (to e^-2π²σ²), and the
        // centres are more than 8σ inside the image.
        let (a, bh, n) = (41usize, 37usize, 4usize);
        let (gx, gy, ld) = (0.1f64, -0.2f64, (0.3f64).ln());
        let b = banks(&params(&[[gx, gy, 0.0, ld, 0.0]]), (1, bh, a), n).unwrap();
        let delta = (a.max(bh) as f64 - 1.0) / (n as f64 - 1.0) * 0.3;
        for (f, len, g_tilde) in [(&b.fx, a, gx), (&b.fy, bh, gy)] {
            let g = (len as f64 + 1.0) / 2.0 * (g_tilde + 1.0);
            let rows = values(f);
            for i in 1..=n {
                let want = g + (i as f64 - n as f64 / 2.0 - 0.5) * delta;
                let row = &rows[(i - 1) * len..i * len];
                let mean: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(p, w)| (p + 1) as f64 * w)
                    .sum();
                assert!(
                    (mean - want).abs() < 1e-6,
                    "filter {i}: centre {mean} vs {want}"
                );
            }
        }
    }
}

#[cfg(test)]
mod fused_tests {
    //! The fused read and write ([`super::super::fused_attend`]) against the composition
    //! above: values, and the gradients of the parameters and of the image or patch.
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::assert_close;
    use candle_core::Var;

    fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = Rng::seed(seed)
            .normal_vec(n)
            .into_iter()
            .map(|x| x * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Over non-square images, one and two channels, grids of 1, 3 and 5, and parameters
    /// that put filters inside, across the edge and outside the image, with blurs from
    /// sharp to wide.
    #[test]
    fn fused_read_and_write_match_the_composition() {
        let rows = 7;
        for (k, &(c, h, w, n)) in [(1, 9, 7, 3), (2, 12, 10, 5), (1, 6, 8, 1), (2, 28, 28, 5)]
            .iter()
            .enumerate()
        {
            let seed = 10 * k as u64;
            let p = Var::from_tensor(&random(&[rows, 5], seed, 0.8)).unwrap();
            let img = Var::from_tensor(&random(&[rows, c, h, w], seed + 1, 1.0)).unwrap();
            let patch = Var::from_tensor(&random(&[rows, c, n, n], seed + 2, 1.0)).unwrap();
            for dir in [Dir::Read, Dir::Write] {
                let x = if dir == Dir::Read { &img } else { &patch };
                let out_shape: &[usize] = match dir {
                    Dir::Read => &[rows, c, n, n],
                    Dir::Write => &[rows, c, h, w],
                };
                let weights = random(out_shape, seed + 3, 1.0);
                let run = |fused: bool| {
                    let y = if fused {
                        let op = Attend {
                            dir,
                            chw: (c, h, w),
                            grid: n,
                        };
                        attend(op, p.as_tensor(), x.as_tensor()).unwrap().unwrap()
                    } else {
                        let b = banks(p.as_tensor(), (c, h, w), n).unwrap();
                        match dir {
                            Dir::Read => read(x.as_tensor(), &b).unwrap(),
                            Dir::Write => write(x.as_tensor(), &b).unwrap(),
                        }
                    };
                    let g = (&y * &weights)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .backward()
                        .unwrap();
                    (
                        y,
                        g.get(p.as_tensor()).unwrap().clone(),
                        g.get(x.as_tensor()).unwrap().clone(),
                    )
                };
                let (a, b) = (run(true), run(false));
                for (what, u, v) in [
                    ("value", &a.0, &b.0),
                    ("∂p", &a.1, &b.1),
                    ("∂x", &a.2, &b.2),
                ] {
                    let at = format!("{dir:?} c={c} h={h} w={w} n={n} {what}");
                    assert_close(u, v, 2e-5, &at);
                }
            }
        }
    }

    #[test]
    fn f64_is_left_to_the_composition() {
        let p = Tensor::zeros((2, 5), DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::zeros((2, 1, 4, 4), DType::F64, &Device::Cpu).unwrap();
        let op = Attend {
            dir: Dir::Read,
            chw: (1, 4, 4),
            grid: 2,
        };
        assert!(attend(op, &p, &x).unwrap().is_none());
    }
}
