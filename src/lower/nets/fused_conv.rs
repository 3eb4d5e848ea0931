//! 2-D convolution and transposed convolution as im2col and one gemm, forward and
//! backward, on the CPU for `f32`.
//!
//! candle's CPU convolution unfolds patches tile by tile, and its backward pass is made of
//! further convolutions: the input gradient a transposed convolution (a direct loop in
//! candle), the kernel gradient a convolution of the input by the output gradient with
//! the stride as dilation, which falls to a direct loop with a dot product per output
//! entry. On the convolutional VAE of `specs/conv_vae.vi` those loops were most of a
//! training step. Here each of the six products (forward, input gradient and weight
//! gradient of both ops) is one gemm over the whole batch, from the same patch matrix:
//!
//! - `conv2d(x, W)`: `cols = im2col(x)` `[R·OH·OW, C·k·k]`, `y = cols · Wᵀ`;
//!   backward `dW = gᵀ · cols`, `dx = col2im(g · W)`.
//! - `conv_transpose2d(x, W)`: the adjoint, `y = col2im(x · W)`; backward
//!   `dW = xᵀ · im2col(g)`, `dx = im2col(g) · Wᵀ`.
//!
//! The patch matrix is built channels last: its rows are output positions, its columns
//! `(ky, kx, channel)`, so that each kernel row of a patch is one contiguous copy of
//! `k · channels` values of the channels-last image (a column order `(channel, ky, kx)`
//! would copy `k` values at a time). The weight is permuted to that order (`[units, k, k,
//! channels]`, a small copy whose gradient candle permutes back), and each channel-first
//! tensor is transposed once each way. Written by hand because candle offers no unfold op
//! and its convolutions cannot be given another backward pass from outside the crate;
//! the products are the `gemm` crate's, as in [`super::fused`]. Anything off the CPU or
//! not `f32` takes candle's own ops, which the tests hold these to.

use super::fused::{matmul, FusedAct, Mat, Split};
use super::layers::activate;
use crate::lower::cpu::{contiguous_f32_cpu, f32_operand, fused_cpu, map3, with_f32};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Mutex;

/// The geometry shared by a convolution and its adjoint: a channels-last image
/// `[h, w, c]` and the grid of `oh × ow` patch positions a `k × k` kernel visits with
/// stride `s` after zero padding `p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geom {
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

impl Geom {
    /// Values of one image.
    fn image(&self) -> usize {
        self.c * self.h * self.w
    }
    /// Rows of one image's patch matrix.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
    /// Columns of the patch matrix: `(ky, kx, channel)`.
    fn patch(&self) -> usize {
        self.k * self.k * self.c
    }

    /// The image row (or column) that kernel offset `kk` reaches from grid index `o`, if
    /// it lies inside the image of side `side`.
    #[inline(always)]
    fn at(&self, o: usize, kk: usize, side: usize) -> Option<usize> {
        (o * self.s + kk).checked_sub(self.p).filter(|&i| i < side)
    }

    /// The first image column a patch at grid column `ox` reads, when its whole row of
    /// `k` columns lies inside the image (the common case, copied as one slice).
    #[inline(always)]
    fn inside(&self, ox: usize) -> Option<usize> {
        (ox * self.s)
            .checked_sub(self.p)
            .filter(|&ix| ix + self.k <= self.w)
    }

    /// One image's patch matrix `[oh·ow, k·k·c]` into `dst` (every entry written; padding
    /// reads as 0).
    fn im2col(&self, img: &[f32], dst: &mut [f32]) {
        let (k, c) = (self.k, self.c);
        let line = self.w * c;
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &mut dst[(oy * self.ow + ox) * self.patch()..][..self.patch()];
                let inside = self.inside(ox);
                for (ky, out) in row.chunks_exact_mut(k * c).enumerate() {
                    match (self.at(oy, ky, self.h), inside) {
                        (None, _) => out.fill(0.0),
                        (Some(iy), Some(ix)) => {
                            out.copy_from_slice(&img[iy * line + ix * c..][..k * c]);
                        }
                        (Some(iy), None) => {
                            for (kx, o) in out.chunks_exact_mut(c).enumerate() {
                                match self.at(ox, kx, self.w) {
                                    Some(ix) => o.copy_from_slice(&img[iy * line + ix * c..][..c]),
                                    None => o.fill(0.0),
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Geom::im2col`]: each patch entry added back to the image value it
    /// was read from (`img` is overwritten).
    fn col2im(&self, cols: &[f32], img: &mut [f32]) {
        img.fill(0.0);
        let (k, c) = (self.k, self.c);
        let line = self.w * c;
        let add = |dst: &mut [f32], src: &[f32]| {
            dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
        };
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &cols[(oy * self.ow + ox) * self.patch()..][..self.patch()];
                let inside = self.inside(ox);
                for (ky, src) in row.chunks_exact(k * c).enumerate() {
                    let Some(iy) = self.at(oy, ky, self.h) else {
                        continue;
                    };
                    match inside {
                        Some(ix) => add(&mut img[iy * line + ix * c..][..k * c], src),
                        None => {
                            for (kx, v) in src.chunks_exact(c).enumerate() {
                                if let Some(ix) = self.at(ox, kx, self.w) {
                                    add(&mut img[iy * line + ix * c..][..c], v);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A fresh buffer of `len` floats, every one of them written by `fill` before it is
/// read (so the buffer is not zeroed first: for the patch matrices, megabytes a step).
fn filled(len: usize, fill: impl FnOnce(&mut [f32])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: every caller's `fill` writes each of the `len` entries (im2col every patch
    // entry, col2im zeroes the images first, swap_last every transposed position) and
    // reads none before writing it; f32 has no invalid bit patterns. As in
    // `fused::matmul`.
    unsafe {
        fill(std::slice::from_raw_parts_mut(v.as_mut_ptr(), len));
        v.set_len(len);
    }
    v
}

/// The patch matrices of a batch of channels-last images, `[R·oh·ow, k·k·c]`, one image
/// per task.
fn im2col(g: &Geom, imgs: &[f32]) -> Vec<f32> {
    let rows = g.positions() * g.patch();
    let n = imgs.len() / g.image().max(1);
    filled(n * rows, |dst| {
        if rows == 0 {
            return;
        }
        dst.par_chunks_mut(rows)
            .zip(imgs.par_chunks(g.image().max(1)))
            .for_each(|(d, img)| g.im2col(img, d));
    })
}

/// The images of a batch of patch matrices summed back ([`Geom::col2im`]), `[R, h, w, c]`.
fn col2im(g: &Geom, cols: &[f32]) -> Vec<f32> {
    let rows = g.positions() * g.patch();
    let n = cols.len() / rows.max(1);
    filled(n * g.image(), |dst| {
        if g.image() == 0 {
            return;
        }
        dst.par_chunks_mut(g.image())
            .zip(cols.par_chunks(rows.max(1)))
            .for_each(|(img, c)| g.col2im(c, img));
    })
}

/// `[R, c, n]` (channels first) to `[R, n, c]` (channels last), or back with the two
/// sizes swapped: one transposed copy per example.
fn swap_last(src: &[f32], c: usize, n: usize) -> Vec<f32> {
    let per = c * n;
    filled(src.len(), |dst| {
        if per == 0 {
            return;
        }
        dst.par_chunks_mut(per)
            .zip(src.par_chunks(per))
            .for_each(|(d, s)| {
                for (ci, plane) in s.chunks_exact(n).enumerate() {
                    for (j, &v) in plane.iter().enumerate() {
                        d[j * c + ci] = v;
                    }
                }
            });
    })
}

/// The split of a product among threads: by rows when there are many (the batch's
/// positions), else by columns.
fn split_for(m: usize, n: usize) -> Split {
    if m >= n {
        Split::Rows
    } else {
        Split::Cols
    }
}

fn fusable(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    fused_cpu(x)
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && b.is_none_or(|b| b.dtype() == DType::F32 && b.rank() == 1)
        && x.rank() == 4
        && w.rank() == 4
        && w.dim(2).ok() == w.dim(3).ok()
}

/// `act(y + b)` for `y [R, c, h, w]` and `b [c]` composed of candle's ops (the path off the
/// CPU, and the semantics the fused op is held to).
fn bias_act(y: Tensor, b: Option<&Tensor>, act: FusedAct) -> Result<Tensor> {
    let y = match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
        None => y,
    };
    match act.activation() {
        Some(a) => activate(&y, a),
        None => Ok(y),
    }
}

/// `act(conv2d(x [R, c_in, h, w], W [c_out, c_in, k, k]) + b)` with square stride and
/// padding (PyTorch's `Conv2d`): one fused op on the CPU for `f32`, else candle's ops.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: FusedAct,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let candle = || bias_act(x.conv2d(w, padding, stride, 1, 1)?, b, act);
    if !fusable(x, w, b) {
        return candle();
    }
    let (_, c, h, wd) = x.dims4()?;
    let (c_out, cw, k, _) = w.dims4()?;
    if c != cw || stride == 0 || h + 2 * padding < k || wd + 2 * padding < k {
        // candle's own error for the mismatch.
        return candle();
    }
    let geom = Geom {
        c,
        h,
        w: wd,
        k,
        s: stride,
        p: padding,
        oh: (h + 2 * padding - k) / stride + 1,
        ow: (wd + 2 * padding - k) / stride + 1,
    };
    apply(x, w, b, c_out, Conv::new(geom, false, act, w.track_op()))
}

/// `act(conv_transpose2d(x [R, c_in, h, w], W [c_in, c_out, k, k]) + b)` with square
/// stride, padding and output padding (PyTorch's `ConvTranspose2d`): one fused op on the
/// CPU for `f32`, else candle's ops.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    act: FusedAct,
    stride: usize,
    padding: usize,
    output_padding: usize,
) -> Result<Tensor> {
    let candle = || {
        let y = x.conv_transpose2d(w, padding, output_padding, stride, 1)?;
        bias_act(y, b, act)
    };
    if !fusable(x, w, b) {
        return candle();
    }
    let (_, c_in, h, wd) = x.dims4()?;
    let (cw, c_out, k, _) = w.dims4()?;
    let side = |n: usize| ((n.max(1) - 1) * stride + k + output_padding).checked_sub(2 * padding);
    let (Some(oh), Some(ow)) = (side(h), side(wd)) else {
        return candle();
    };
    // The output image's patch grid must be the input's: output padding below the stride.
    if c_in != cw || stride == 0 || output_padding >= stride || h == 0 || wd == 0 {
        return candle();
    }
    let geom = Geom {
        c: c_out,
        h: oh,
        w: ow,
        k,
        s: stride,
        p: padding,
        oh: h,
        ow: wd,
    };
    apply(x, w, b, c_out, Conv::new(geom, true, act, w.track_op()))
}

/// The op on contiguous operands, the weight permuted to `[units, k, k, channels]` (the
/// patch matrix's column order), a zero bias standing in for none (it tracks no
/// gradient).
fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c_out: usize, op: Conv) -> Result<Tensor> {
    let b = match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(c_out, DType::F32, x.device())?,
    };
    let w = w.permute((0, 2, 3, 1))?.contiguous()?;
    x.contiguous()?.apply_op3(&w, &b, op)
}

/// Both ops, with the bias and activation that follow. `geom` is the image side and patch
/// grid: for the convolution the input image and the output grid; for the transposed one
/// the output image and the input grid.
struct Conv {
    geom: Geom,
    transposed: bool,
    act: FusedAct,
    /// The forward pass's matrix that the weight gradient reads again (the patches of the
    /// convolution, the channels-last input of the transposed one), kept from the forward
    /// pass when a gradient will be asked for and taken by the backward pass (which
    /// recomputes it if it is gone).
    kept: Mutex<Option<Vec<f32>>>,
    keep: bool,
}

impl Conv {
    fn new(geom: Geom, transposed: bool, act: FusedAct, keep: bool) -> Conv {
        Conv {
            geom,
            transposed,
            act,
            kept: Mutex::new(None),
            keep,
        }
    }

    fn store(&self, v: Vec<f32>) {
        if self.keep {
            if let Ok(mut k) = self.kept.lock() {
                *k = Some(v);
            }
        }
    }

    /// The kept matrix if it has `len` values, else `make()`.
    fn kept_or(&self, len: usize, make: impl FnOnce() -> Vec<f32>) -> Vec<f32> {
        match self.kept.lock().ok().and_then(|mut k| k.take()) {
            Some(v) if v.len() == len => v,
            _ => make(),
        }
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        if self.transposed {
            "fused-conv-transpose2d"
        } else {
            "fused-conv2d"
        }
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
        let g = &self.geom;
        let x = f32_operand(s1, l1, "fused convolution", "the input")?;
        let w = f32_operand(s2, l2, "fused convolution", "the weight")?;
        let b = f32_operand(s3, l3, "fused convolution", "the bias")?;
        let r = l1.dims()[0];
        let n = g.positions();
        let (mut y, c_out, plane) = if !self.transposed {
            // y [R·n, c_out] = im2col(x channels last) · W'ᵀ, then channels first.
            let c_out = l2.dims()[0];
            let cols = im2col(g, &swap_last(x, g.c, g.h * g.w));
            let cm = Mat::new(&cols, r * n, g.patch(), g.patch(), 1, "the patches")?;
            let wm = Mat::new(w, c_out, g.patch(), g.patch(), 1, "the weight")?;
            let y = matmul(&cm, &wm.t(), split_for(r * n, c_out))?;
            self.store(cols);
            (swap_last(&y, n, c_out), c_out, n)
        } else {
            // cols [R·n, k·k·c_out] = xᵀ · W', summed back into the output images.
            let c_in = l1.dims()[1];
            let xt = swap_last(x, c_in, n);
            let xm = Mat::new(&xt, r * n, c_in, c_in, 1, "the input")?;
            let wm = Mat::new(w, c_in, g.patch(), g.patch(), 1, "the weight")?;
            let cols = matmul(&xm, &wm, split_for(r * n, g.patch()))?;
            self.store(xt);
            let plane = g.h * g.w;
            (swap_last(&col2im(g, &cols), plane, g.c), g.c, plane)
        };
        if b.len() != c_out {
            bail!(
                "fused convolution: a bias of {} for {c_out} channels",
                b.len()
            );
        }
        // Bias and activation in one pass over each channel's plane.
        let act = self.act;
        if plane > 0 && c_out > 0 {
            y.par_chunks_mut(c_out * plane).for_each(|img| {
                let mut z = Vec::new();
                for (p, &bc) in img.chunks_exact_mut(plane).zip(b) {
                    match act {
                        FusedAct::Identity => p.iter_mut().for_each(|v| *v += bc),
                        FusedAct::Relu => p.iter_mut().for_each(|v| *v = (*v + bc).max(0.0)),
                        _ => {
                            z.clear();
                            z.extend(p.iter().map(|&v| v + bc));
                            map3(p, &z, &z, &z, |z, _, _| act.apply8(z));
                        }
                    }
                }
            });
        }
        let shape = if self.transposed {
            Shape::from((r, g.c, g.h, g.w))
        } else {
            Shape::from((r, c_out, g.oh, g.ow))
        };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = &self.geom;
        let dev = x.device();
        let (r, c_x, _, _) = x.dims4()?;
        let n = g.positions();
        let wants_dx = x.track_op();
        // ∂/∂(pre-activation), channels first like the output.
        let gpre = with_f32(grad, |gin| {
            let mut gp = gin.to_vec();
            if self.act == FusedAct::Identity {
                return Ok(gp);
            }
            let (ys, yl) = res.storage_and_layout();
            let y = match contiguous_f32_cpu(&ys, yl) {
                Some(v) if v.len() == gin.len() => v,
                _ => bail!("fused convolution: its output is not a contiguous f32 CPU buffer"),
            };
            if self.act == FusedAct::Relu {
                gp.iter_mut()
                    .zip(y)
                    .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
            } else {
                let act = self.act;
                map3(&mut gp, gin, y, y, |g, y, _| g * act.deriv8(y));
            }
            Ok(gp)
        })?;
        let c_out = b.dim(0)?;
        let plane = gpre.len() / (r * c_out).max(1);
        // The bias gradient: each channel's plane summed, examples in order.
        let mut db = vec![0f32; c_out];
        if plane > 0 {
            for img in gpre.chunks_exact(c_out * plane) {
                for (d, p) in db.iter_mut().zip(img.chunks_exact(plane)) {
                    *d += p.iter().sum::<f32>();
                }
            }
        }
        let want_w = super::fused::weight_gradients();
        let db = (want_w && b.track_op())
            .then(|| Tensor::from_vec(db, c_out, dev))
            .transpose()?;
        let (dx, dw) = with_f32(x, |xv| {
            with_f32(w, |wv| {
                if !self.transposed {
                    // gᵀ [R·n, c_out]; dW' = (gᵀ)ᵀ · cols; dx = col2im(gᵀ · W').
                    let gt = swap_last(&gpre, c_out, n);
                    let gm = Mat::new(&gt, r * n, c_out, c_out, 1, "the gradient")?;
                    let dw = if want_w {
                        let cols = self.kept_or(r * n * g.patch(), || {
                            im2col(g, &swap_last(xv, g.c, g.h * g.w))
                        });
                        let cm = Mat::new(&cols, r * n, g.patch(), g.patch(), 1, "the patches")?;
                        Some(matmul(&gm.t(), &cm, split_for(c_out, g.patch()))?)
                    } else {
                        None
                    };
                    let dx = if wants_dx {
                        let wm = Mat::new(wv, c_out, g.patch(), g.patch(), 1, "the weight")?;
                        let dcols = matmul(&gm, &wm, split_for(r * n, g.patch()))?;
                        Some(swap_last(&col2im(g, &dcols), g.h * g.w, g.c))
                    } else {
                        None
                    };
                    Ok((dx, dw))
                } else {
                    // im2col(g channels last) [R·n, k·k·c_out]; dW' = (xᵀ)ᵀ · it;
                    // dxᵀ = it · W'ᵀ.
                    let gcols = im2col(g, &swap_last(&gpre, g.c, g.h * g.w));
                    let gm = Mat::new(&gcols, r * n, g.patch(), g.patch(), 1, "the gradient")?;
                    let dw = if want_w {
                        let xt = self.kept_or(r * n * c_x, || swap_last(xv, c_x, n));
                        let xm = Mat::new(&xt, r * n, c_x, c_x, 1, "the input")?;
                        Some(matmul(&xm.t(), &gm, split_for(c_x, g.patch()))?)
                    } else {
                        None
                    };
                    let dx = if wants_dx {
                        let wm = Mat::new(wv, c_x, g.patch(), g.patch(), 1, "the weight")?;
                        let dxt = matmul(&gm, &wm.t(), split_for(r * n, c_x))?;
                        Some(swap_last(&dxt, n, c_x))
                    } else {
                        None
                    };
                    Ok((dx, dw))
                }
            })
        })?;
        let dx = dx.map(|v| Tensor::from_vec(v, x.dims(), dev)).transpose()?;
        let dw = dw.map(|v| Tensor::from_vec(v, w.dims(), dev)).transpose()?;
        Ok((dx, dw, db))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::assert_close;
    use candle_core::{Device, Var};

    fn randn(rng: &mut crate::rng::Rng, shape: &[usize]) -> Tensor {
        rng.normal(shape, &Device::Cpu).unwrap()
    }

    /// The output and the gradients of input, weight and bias under a weighted sum, through
    /// `f`.
    fn run(
        v: [&Var; 3],
        f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
        rng: &mut crate::rng::Rng,
        weights: &mut Option<Tensor>,
    ) -> [Tensor; 4] {
        let y = f(v[0].as_tensor(), v[1].as_tensor(), v[2].as_tensor()).unwrap();
        let m = weights.get_or_insert_with(|| randn(rng, y.dims())).clone();
        let g = (&y * &m).unwrap().sum_all().unwrap().backward().unwrap();
        let [x, w, b] = v.map(|t| g.get(t.as_tensor()).unwrap().clone());
        [y, x, w, b]
    }

    fn close(a: &Tensor, b: &Tensor, what: &str) {
        assert_close(a, b, 1e-4, what);
    }

    type Op3<'a> = &'a dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

    /// Fresh x, W and b of the given shapes through `ours` and `theirs`: the outputs and
    /// the three gradients agree.
    fn agree(rng: &mut crate::rng::Rng, shapes: [&[usize]; 3], ours: Op3, theirs: Op3, what: &str) {
        let [x, w, b] = shapes.map(|s| Var::from_tensor(&randn(rng, s)).unwrap());
        let mut m = None;
        let a = run([&x, &w, &b], ours, rng, &mut m);
        let t = run([&x, &w, &b], theirs, rng, &mut m);
        for (i, part) in ["forward", "dx", "dW", "db"].iter().enumerate() {
            close(&a[i], &t[i], &format!("{what} {part}"));
        }
    }

    const ACTS: [FusedAct; 3] = [FusedAct::Identity, FusedAct::Relu, FusedAct::Softplus];

    /// Forward values and the gradients of input, weight and bias agree with candle's
    /// convolution, bias and activation for strides 1-3, padding, odd sides, one channel
    /// and batch 1.
    #[test]
    fn conv2d_matches_candle() {
        let mut rng = crate::rng::Rng::seed(11);
        // (R, c_in, h, w, c_out, k, stride, padding)
        let cases = [
            (2, 1, 28, 28, 4, 4, 2, 1),
            (3, 3, 7, 9, 5, 3, 1, 1),
            (1, 2, 8, 8, 3, 2, 2, 0),
            // Square where the stride leaves pixels unread: candle's backward takes one
            // output padding for both sides, from the height.
            (4, 5, 11, 11, 2, 3, 3, 2),
            (2, 3, 9, 7, 2, 3, 2, 1),
            (2, 32, 14, 14, 64, 4, 2, 1),
            (2, 2, 5, 5, 3, 5, 1, 0),
        ];
        for &(r, ci, h, wd, co, k, s, p) in &cases {
            for act in ACTS {
                agree(
                    &mut rng,
                    [&[r, ci, h, wd], &[co, ci, k, k], &[co]],
                    &|x, w, b| conv2d(x, w, Some(b), act, s, p),
                    &|x, w, b| bias_act(x.conv2d(w, p, s, 1, 1)?, Some(b), act),
                    &format!("conv2d {r}x{ci}x{h}x{wd} -> {co} k{k} s{s} p{p} {act:?}"),
                );
            }
        }
    }

    /// The same for the transposed convolution, with output padding.
    #[test]
    fn conv_transpose2d_matches_candle() {
        let mut rng = crate::rng::Rng::seed(12);
        // (R, c_in, h, w, c_out, k, stride, padding, output padding)
        let cases = [
            (2, 64, 7, 7, 32, 4, 2, 1, 0),
            (2, 32, 14, 14, 1, 4, 2, 1, 0),
            (3, 3, 5, 6, 2, 3, 2, 1, 1),
            (1, 2, 4, 4, 3, 3, 1, 0, 0),
            (2, 4, 3, 3, 2, 5, 3, 2, 2),
            (2, 1, 1, 1, 3, 2, 2, 0, 1),
        ];
        for &(r, ci, h, wd, co, k, s, p, op) in &cases {
            for act in ACTS {
                agree(
                    &mut rng,
                    [&[r, ci, h, wd], &[ci, co, k, k], &[co]],
                    &|x, w, b| conv_transpose2d(x, w, Some(b), act, s, p, op),
                    &|x, w, b| bias_act(x.conv_transpose2d(w, p, op, s, 1)?, Some(b), act),
                    &format!(
                        "conv_transpose2d {r}x{ci}x{h}x{wd} -> {co} k{k} s{s} p{p} op{op} {act:?}"
                    ),
                );
            }
        }
    }

    /// On a non-square image whose width leaves pixels unread by the stride (where candle's
    /// own backward pass returns a narrower gradient), every input gradient equals the
    /// central difference of the loss, which is linear in the input (so exact up to
    /// rounding).
    #[test]
    fn conv2d_input_gradient_is_the_finite_difference() {
        let mut rng = crate::rng::Rng::seed(14);
        let (s, p) = (3, 2);
        let x = Var::from_tensor(&randn(&mut rng, &[2, 2, 7, 10])).unwrap();
        let w = randn(&mut rng, &[3, 2, 3, 3]);
        let y = conv2d(x.as_tensor(), &w, None, FusedAct::Identity, s, p).unwrap();
        let m = randn(&mut rng, y.dims());
        let loss = |x: &Tensor| -> f64 {
            let y = conv2d(x, &w, None, FusedAct::Identity, s, p).unwrap();
            (y * &m)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let g = (&y * &m).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap();
        let gx = gx.to_vec1::<f32>().unwrap();
        let xv = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let h = 0.5f32;
        for i in 0..xv.len() {
            let at = |d: f32| {
                let mut v = xv.clone();
                v[i] += d;
                loss(&Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap())
            };
            let fd = (at(h) - at(-h)) / (2.0 * h as f64);
            assert!(
                (fd - gx[i] as f64).abs() < 1e-3,
                "entry {i}: {fd} vs {}",
                gx[i]
            );
        }
    }

    /// No input gradient is computed for data, and the weight gradient is unchanged.
    #[test]
    fn conv2d_skips_the_data_gradient() {
        let mut rng = crate::rng::Rng::seed(13);
        let x = randn(&mut rng, &[2, 1, 6, 6]);
        let w = Var::from_tensor(&randn(&mut rng, &[3, 1, 3, 3])).unwrap();
        let g = conv2d(&x, w.as_tensor(), None, FusedAct::Relu, 1, 1)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_none());
        let g2 = bias_act(
            x.conv2d(w.as_tensor(), 1, 1, 1, 1).unwrap(),
            None,
            FusedAct::Relu,
        )
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
        close(
            g.get(w.as_tensor()).unwrap(),
            g2.get(w.as_tensor()).unwrap(),
            "dW",
        );
    }

    /// f64 takes candle's own op.
    #[test]
    fn conv2d_falls_back_for_f64() {
        let x = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let w = Tensor::ones((1, 1, 2, 2), DType::F64, &Device::Cpu).unwrap();
        let y = conv2d(&x, &w, None, FusedAct::Identity, 1, 0).unwrap();
        assert_eq!(y.dtype(), DType::F64);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            vec![4.0; 4]
        );
    }
}
