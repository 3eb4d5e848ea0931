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
//!   pixel coordinates, so g̃ = 0 is the image centre), each row normalized to sum 1 (a
//!   1e-8 floor keeps the sum positive); `Fy` likewise over the rows (eq. 21).
//!
//! Read is `γ · Fy x Fxᵀ` per channel (eq. 27); write is `(1/γ) · Fyᵀ w Fx` with the
//! patch `w` from the dense layer `patch` (eq. 29).

use super::dense::{gather, widths};
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
    let f = d.sqr()?.broadcast_div(&two_var)?.neg()?.exp()?;
    let z = (f.sum_keepdim(2)? + 1e-8)?; // [R, N, 1]
    f.broadcast_div(&z)
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
        let p = self.params.forward(&s, ctx)?; // [R, 5]
        let b = banks(&p, self.chw, n)?;
        let fy_x = b.fy.broadcast_matmul(&x)?; // [R, C, N, W]
        let glimpse = fy_x.broadcast_matmul(&b.fx.transpose(2, 3)?)?; // [R, C, N, N]
        let glimpse = glimpse.broadcast_mul(&b.gamma)?;
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
        let p = self.params.forward(&s, ctx)?; // [R, 5]
        let patch = self.patch.forward(&s, ctx)?.reshape((r, c, n, n))?; // [R, C, N, N]
        let b = banks(&p, self.chw, n)?;
        let painted = b.fy.transpose(2, 3)?.broadcast_matmul(&patch)?; // [R, C, H, N]
        let painted = painted.broadcast_matmul(&b.fx)?; // [R, C, H, W]
        let painted = painted.broadcast_div(&b.gamma)?;
        let mut shape = vec![r];
        shape.extend_from_slice(&self.head.ty.shape);
        let out = painted.reshape(shape)?;
        Ok(vec![head_activation(&out, self.head.activation)?])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl([&self.params, &self.patch])
    }
}
