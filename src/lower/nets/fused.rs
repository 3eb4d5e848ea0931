//! A fused dense layer, `act(x · Wᵀ + b)`, as one candle op with its own backward pass.
//!
//! candle composes a dense layer as matmul, broadcast add and activation, and its
//! backward as a dozen passes over `[R, out]` buffers (the relu mask built by `ge`, cast
//! and multiplied, the bias gradient reduced, each gradient accumulated into a zeroed
//! buffer). Here the forward pass is one gemm, then bias and activation in one pass in
//! place; the backward pass is one pass for the activation's derivative, a column sum for
//! the bias, and two gemm calls reading the operands through their strides (no transposed
//! copies). Written by hand because candle has no fused linear layer; the matrix products
//! are the `gemm` crate's, the same kernels that candle's own matmul calls.
//!
//! Only `f32` tensors on the CPU take this path; anything else (another device or dtype)
//! goes through the plain candle composition [`dense_plain`], which also defines the
//! semantics the tests hold the fused op to.
//!
//! Determinism: the gemm calls split the output among threads, never the reduction, and
//! the bias gradient sums rows in order, so results do not depend on scheduling.

use super::layers::activate;
use crate::ir::Activation;
use crate::lower::avx;
use crate::lower::cpu::{
    contiguous_f32, contiguous_f32_cpu, f32_operand, fused_cpu, map3, with_f32, with_flag,
};
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use wide::f32x8;

/// The activation fused into the layer: every activation of LANGUAGE.md section 4 whose
/// derivative is a function of its output, so that the backward pass needs only the
/// layer's output (gelu's needs the pre-activation: it is applied apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FusedAct {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
    Softplus,
    Elu,
    LeakyRelu,
}

/// leaky_relu's slope below zero, as `layers::activate` applies it.
const LEAKY_SLOPE: f32 = 0.01;

/// Rows of `width` values per parallel task of the elementwise passes around a product
/// (bias, activation, their gradients): about 16k values, at least one row.
fn rows_per_task(width: usize) -> usize {
    (16384 / width.max(1)).max(1)
}

impl FusedAct {
    /// The fused form of a layer's activation (`None`: no activation), or `None` for one
    /// that is applied apart.
    pub fn of(act: Option<Activation>) -> Option<FusedAct> {
        Some(match act {
            None => FusedAct::Identity,
            Some(Activation::Relu) => FusedAct::Relu,
            Some(Activation::Tanh) => FusedAct::Tanh,
            Some(Activation::Sigmoid) => FusedAct::Sigmoid,
            Some(Activation::Softplus) => FusedAct::Softplus,
            Some(Activation::Elu) => FusedAct::Elu,
            Some(Activation::LeakyRelu) => FusedAct::LeakyRelu,
            Some(Activation::Gelu) => return None,
        })
    }

    pub(super) fn activation(self) -> Option<Activation> {
        match self {
            FusedAct::Identity => None,
            FusedAct::Relu => Some(Activation::Relu),
            FusedAct::Tanh => Some(Activation::Tanh),
            FusedAct::Sigmoid => Some(Activation::Sigmoid),
            FusedAct::Softplus => Some(Activation::Softplus),
            FusedAct::Elu => Some(Activation::Elu),
            FusedAct::LeakyRelu => Some(Activation::LeakyRelu),
        }
    }

    /// The activation of eight pre-activations `z` (the transcendental ones with `wide`'s
    /// vectorized exponential, logarithm and tanh).
    #[inline(always)]
    pub(super) fn apply8(self, z: f32x8) -> f32x8 {
        let zero = f32x8::ZERO;
        match self {
            FusedAct::Identity => z,
            FusedAct::Relu => z.max(zero),
            FusedAct::Tanh => z.tanh(),
            // 1/(1 + e^{−z}): e^{−z} overflows to ∞ far below zero, giving 0.
            FusedAct::Sigmoid => f32x8::ONE / (f32x8::ONE + (-z).exp()),
            // max(z, 0) + ln(1 + e^{−|z|}), as `special::softplus`.
            FusedAct::Softplus => z.max(zero) + (f32x8::ONE + (-z.abs()).exp()).ln(),
            FusedAct::Elu => z.simd_gt(zero).select(z, z.exp_m1()),
            FusedAct::LeakyRelu => z.max(zero) + z.min(zero) * f32x8::splat(LEAKY_SLOPE),
        }
    }

    /// The derivative at the pre-activation whose output is `y`.
    #[inline(always)]
    pub(super) fn deriv8(self, y: f32x8) -> f32x8 {
        let (zero, one) = (f32x8::ZERO, f32x8::ONE);
        match self {
            FusedAct::Identity => one,
            FusedAct::Relu => y.simd_gt(zero).select(one, zero),
            FusedAct::Tanh => one - y * y,
            FusedAct::Sigmoid => y * (one - y),
            // σ(z) = 1 − e^{−softplus(z)}, as −expm1(−y) to keep small values.
            FusedAct::Softplus => -(-y).exp_m1(),
            // e^z = y + 1 below zero.
            FusedAct::Elu => y.simd_gt(zero).select(one, y + one),
            FusedAct::LeakyRelu => y.simd_gt(zero).select(one, f32x8::splat(LEAKY_SLOPE)),
        }
    }
}

thread_local! {
    /// Set while a backward pass needs only the gradients of inputs (see
    /// [`without_weight_gradients`]).
    static INPUT_GRADIENTS_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (a backward pass) with the fused layers' weight and bias gradients skipped:
/// they return gradients for their inputs only. For a gradient in a point that is not a
/// parameter (a refinement step's gradient in the guide's λ), where candle's backward
/// pass would otherwise also compute every weight gradient on the way. candle cannot be
/// asked for the gradients of some leaves only.
pub fn without_weight_gradients<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&INPUT_GRADIENTS_ONLY, f)
}

/// Whether the fused layers compute weight and bias gradients now.
pub(super) fn weight_gradients() -> bool {
    !INPUT_GRADIENTS_ONLY.with(|c| c.get())
}

/// A fused dense layer's weight and bias gradients left to the caller of a backward pass
/// (inside [`deferring_weight_gradients`]): the layer's input `x [rows, in]` and the
/// gradient `g [rows, out]` of its pre-activation, of which `dW = gᵀ x` and `db = Σ_rows g`.
pub struct DeferredDense {
    w: Tensor,
    b: Tensor,
    x: Tensor,
    g: Vec<f32>,
}

/// The weight and bias gradients of one weight over deferred passes
/// ([`combine_deferred`]), for the tensors `w` and `b` the layer was given.
pub struct DenseGradients {
    pub w: Tensor,
    pub dw: Tensor,
    pub b: Tensor,
    pub db: Tensor,
}

thread_local! {
    /// The passes deferred so far, while inside [`deferring_weight_gradients`].
    static DEFERRED: std::cell::RefCell<Option<Vec<DeferredDense>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a backward pass) with the fused dense layers' weight and bias gradients
/// deferred: each layer returns its input's gradient and leaves the operands of its
/// weight gradient, returned beside `f`'s result. For a caller that needs the weight
/// gradients of many backward passes only as a weighted sum (semi-amortized
/// refinement's Hessian terms): [`combine_deferred`] computes that sum as one product
/// per weight over all the passes' rows, instead of one small product per pass (or a
/// second backward pass through each graph). Other ops' gradients are unchanged.
pub fn deferring_weight_gradients<R>(f: impl FnOnce() -> R) -> (R, Vec<DeferredDense>) {
    struct Restore(Option<Vec<DeferredDense>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFERRED.with(|d| *d.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(DEFERRED.with(|d| d.replace(Some(Vec::new()))));
    let r = f();
    let mine = DEFERRED.with(|d| d.replace(None)).unwrap_or_default();
    (r, mine)
}

/// Whether this thread is inside [`deferring_weight_gradients`].
fn deferring() -> bool {
    DEFERRED.with(|d| d.borrow().is_some())
}

/// Hands a pass's weight-gradient operands to [`deferring_weight_gradients`]'s caller.
fn push_deferred(pass: DeferredDense) {
    DEFERRED.with(|d| {
        if let Some(list) = d.borrow_mut().as_mut() {
            list.push(pass)
        }
    })
}

/// For every weight of the deferred passes `parts` (each a coefficient `c` and the passes
/// of one backward pass), `dW = Σ c gᵀ x` and `db = Σ c Σ_rows g` over the passes through
/// it: the passes' rows stacked, each scaled by its `c`, and one product per weight. In the
/// order the weights first appear.
pub fn combine_deferred(parts: &[(f64, &[DeferredDense])]) -> Result<Vec<DenseGradients>> {
    let mut groups: Vec<Vec<(f32, &DeferredDense)>> = Vec::new();
    for (c, passes) in parts {
        for p in passes.iter() {
            match groups.iter_mut().find(|g| g[0].1.w.id() == p.w.id()) {
                Some(g) => g.push((*c as f32, p)),
                None => groups.push(vec![(*c as f32, p)]),
            }
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let first = group[0].1;
            let (out, inp) = first.w.dims2()?;
            let total = group
                .iter()
                .map(|(_, p)| p.g.len() / out.max(1))
                .sum::<usize>();
            // The stacked operands, one parallel task per pass (each writes its own rows).
            let mut g = vec![0f32; total * out];
            let mut x = vec![0f32; total * inp];
            let mut slots = Vec::with_capacity(group.len());
            let (mut gs, mut xs) = (g.as_mut_slice(), x.as_mut_slice());
            for &(c, p) in &group {
                let (rows, cols) = p.x.dims2()?;
                if cols != inp || p.g.len() != rows * out {
                    bail!("fused dense: deferred passes of one weight differ in shape");
                }
                let (ga, gb) = std::mem::take(&mut gs).split_at_mut(rows * out);
                let (xa, xb) = std::mem::take(&mut xs).split_at_mut(rows * inp);
                slots.push((c, p, ga, xa));
                (gs, xs) = (gb, xb);
            }
            slots
                .into_par_iter()
                .map(|(c, p, gd, xd)| {
                    gd.iter_mut().zip(&p.g).for_each(|(d, &v)| *d = c * v);
                    with_f32(&p.x, |v| {
                        xd.copy_from_slice(v);
                        Ok(())
                    })
                })
                .collect::<Result<Vec<()>>>()?;
            let db = column_sums(&g, out);
            let gm = Mat::new(&g, total, out, out, 1, "the gradient")?;
            let xm = Mat::new(&x, total, inp, inp, 1, "the input")?;
            let dw = matmul(&gm.t(), &xm, Split::Rows)?;
            let dev = first.w.device();
            Ok(DenseGradients {
                w: first.w.clone(),
                dw: Tensor::from_vec(dw, (out, inp), dev)?,
                b: first.b.clone(),
                db: Tensor::from_vec(db, out, dev)?,
            })
        })
        .collect()
}

/// The sums of the columns of the row-major `g` (rows of `out` values): each task's rows
/// summed in order, then the tasks in order (the split depends on the shape only, so the
/// sum does not depend on the threads).
fn column_sums(g: &[f32], out: usize) -> Vec<f32> {
    let task = rows_per_task(out) * out.max(1);
    let parts: Vec<Vec<f32>> = g
        .par_chunks(task)
        .map(|block| {
            let mut s = vec![0f32; out];
            for row in block.chunks_exact(out.max(1)) {
                s.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            }
            s
        })
        .collect();
    let mut db = vec![0f32; out];
    for p in &parts {
        db.iter_mut().zip(p).for_each(|(s, &v)| *s += v);
    }
    db
}

/// `act(x · Wᵀ + b)` for `x [R, in]`, `W [out, in]`, `b [out]`: the fused op on the CPU
/// for `f32`, else the plain candle composition.
pub fn dense(x: &Tensor, w: &Tensor, b: &Tensor, act: FusedAct) -> Result<Tensor> {
    let fusable = fused_cpu(x)
        && [x.dtype(), w.dtype(), b.dtype()]
            .iter()
            .all(|&d| d == DType::F32)
        && x.rank() == 2
        && w.rank() == 2
        && b.rank() == 1;
    if fusable {
        x.apply_op3(w, b, Dense { act })
    } else {
        dense_plain(x, w, b, act)
    }
}

/// The same layer composed of candle's ops.
pub fn dense_plain(x: &Tensor, w: &Tensor, b: &Tensor, act: FusedAct) -> Result<Tensor> {
    let y = x.matmul(&w.t()?)?.broadcast_add(b)?;
    match act.activation() {
        Some(a) => activate(&y, a),
        None => Ok(y),
    }
}

struct Dense {
    act: FusedAct,
}

/// A rank-2 operand of a gemm call: its values from the start offset, and its strides.
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// The matrix a CPU storage holds under a rank-2 layout, checked to lie inside it.
    pub(super) fn of(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<Mat<'a>> {
        let data = match s {
            CpuStorage::F32(v) => v.as_slice(),
            _ => bail!("fused dense: {what} is not f32"),
        };
        let (dims, strides) = (l.dims(), l.stride());
        let (&[rows, cols], &[rs, cs]) = (dims, strides) else {
            bail!("fused dense: {what} has shape {dims:?}; expected a matrix");
        };
        let data = data.get(l.start_offset()..).unwrap_or(&[]);
        Mat::new(data, rows, cols, rs, cs, what)
    }

    pub(super) fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
        what: &str,
    ) -> Result<Mat<'a>> {
        // The last entry read must lie in the slice (gemm reads through raw pointers).
        if rows > 0 && cols > 0 && (rows - 1) * rs + (cols - 1) * cs >= data.len() {
            bail!("fused dense: {what}'s layout reaches past its storage");
        }
        Ok(Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// The transpose (a view: strides swapped).
    pub(super) fn t(&self) -> Mat<'a> {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// How a product's output is shared among threads: in blocks of its columns or of its
/// rows, one `gemm` call per block with the `gemm` crate's own threading off.
///
/// Why not `gemm::Parallelism::Rayon`: for these shapes (a batch of 128 rows against
/// weights of a few hundred columns) its own split barely uses the second thread when the
/// right operand is transposed (the forward pass reads `Wᵀ` through its strides): on 2
/// cores the six forward products of the VAE of LANGUAGE.md section 1 took 2.69 ms with
/// it and 1.65 ms split by columns here; the weight gradient `gᵀ·x`, whose inner
/// dimension is the batch, is fastest split by rows (1.30 ms against 1.37 by columns).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Split {
    Cols,
    Rows,
}

/// A raw pointer that may cross to another thread: each block of [`matmul_into`] writes
/// only its own entries of the destination.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: see `matmul_into`; the blocks write disjoint entries and are joined before the
// destination borrow ends.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst [m, n] (row-major) = lhs [m, k] · rhs [k, n]`, the output split among rayon's
/// threads as `split` says. Every entry of `dst` is written and none is read.
fn matmul_into(dst: &mut [f32], lhs: &Mat, rhs: &Mat, split: Split) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.len() != m * n {
        bail!("fused dense: gemm shapes do not agree");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        dst.fill(0.0);
        return Ok(());
    }
    // Blocks of whole 16-float vectors (one AVX-512 register), at most one per thread, and
    // none for products too small to be worth a second thread.
    let threads = rayon::current_num_threads();
    let (len, step) = match split {
        Split::Cols => (n, n.div_ceil(threads).next_multiple_of(16)),
        Split::Rows => (m, m.div_ceil(threads).next_multiple_of(16)),
    };
    let step = if threads > 1 && m * n * k >= 64 * 64 * 64 {
        step
    } else {
        len
    };
    let base = SendPtr(dst.as_mut_ptr());
    let block = |lo: usize| {
        let hi = (lo + step).min(len);
        let (bm, bn, d, l, r) = match split {
            // SAFETY (offsets): lo < n, lo < m, so each offset stays inside its operand
            // (`Mat::new` checked every entry the strides reach).
            Split::Cols => (
                m,
                hi - lo,
                unsafe { base.get().add(lo) },
                lhs.data.as_ptr(),
                unsafe { rhs.data.as_ptr().add(lo * rhs.cs) },
            ),
            Split::Rows => (
                hi - lo,
                n,
                unsafe { base.get().add(lo * n) },
                unsafe { lhs.data.as_ptr().add(lo * lhs.rs) },
                rhs.data.as_ptr(),
            ),
        };
        // SAFETY: the block's destination is rows (or columns) [lo, hi) of the row-major
        // m × n `dst`, written by this call only; the operands are read through strides
        // `Mat::new` checked; `dst` does not alias them (it is borrowed mutably).
        unsafe {
            gemm::gemm(
                bm,
                bn,
                k,
                d,
                1,
                n as isize,
                false,
                l,
                lhs.cs as isize,
                lhs.rs as isize,
                r,
                rhs.cs as isize,
                rhs.rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if step >= len {
        block(0);
    } else {
        (0..len).into_par_iter().step_by(step).for_each(block);
    }
    Ok(())
}

/// `lhs [m, k] · rhs [k, n]`, row-major, in a fresh buffer.
pub(super) fn matmul(lhs: &Mat, rhs: &Mat, split: Split) -> Result<Vec<f32>> {
    let len = lhs.rows * rhs.cols;
    if lhs.cols == 0 || len == 0 {
        return Ok(vec![0f32; len]);
    }
    let mut dst: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: with k > 0, `matmul_into` writes every one of the m × n entries and reads
    // none, so the buffer is fully initialized before it is read; skipping the
    // zero fill saves a pass over each weight gradient. On an error the length stays 0.
    unsafe {
        let spare = std::slice::from_raw_parts_mut(dst.as_mut_ptr(), len);
        matmul_into(spare, lhs, rhs, split)?;
        dst.set_len(len);
    }
    Ok(dst)
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "fused-dense"
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
        let x = Mat::of(s1, l1, "the input")?;
        let w = Mat::of(s2, l2, "the weight")?;
        let out = w.rows;
        if x.cols != w.cols {
            bail!(
                "fused dense: input [{}, {}] against weight [{out}, {}]",
                x.rows,
                x.cols,
                w.cols
            );
        }
        let bias = match contiguous_f32(s3, l3) {
            Some(v) if v.len() == out => v,
            _ => bail!("fused dense: the bias is not a contiguous f32 vector of {out}"),
        };
        // The product, then bias and activation in one pass over it.
        let mut y = matmul(&x, &w.t(), Split::Cols)?;
        let act = self.act;
        let rows_per = rows_per_task(out);
        y.par_chunks_mut(rows_per * out.max(1)).for_each(|block| {
            let mut z = Vec::new();
            for row in block.chunks_exact_mut(out.max(1)) {
                match act {
                    FusedAct::Identity | FusedAct::Relu => {
                        let relu = act == FusedAct::Relu;
                        for (v, &b) in row.iter_mut().zip(bias) {
                            let z = *v + b;
                            *v = if relu { z.max(0.0) } else { z };
                        }
                    }
                    FusedAct::Softplus if avx::softplus_add(row, bias) => {}
                    _ => {
                        z.clear();
                        z.extend(row.iter().zip(bias).map(|(&v, &b)| v + b));
                        map3(row, &z, &z, &z, |z, _, _| act.apply8(z));
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((x.rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, out) = res.dims2()?;
        let inp = w.dim(1)?;
        // ∂/∂(pre-activation), row-major [rows, out], and the bias gradient (rows summed
        // in order) in one pass over the incoming gradient.
        let mut g = vec![0f32; rows * out];
        let task = rows_per_task(out) * out.max(1);
        let act = self.act;
        with_f32(grad, |gin| {
            if gin.len() != rows * out {
                bail!("fused dense: output and gradient sizes differ");
            }
            if act == FusedAct::Identity {
                g.par_chunks_mut(task)
                    .zip(gin.par_chunks(task))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                return Ok(());
            }
            // The output is the op's own fresh, contiguous [rows, out] buffer.
            let (ys, yl) = res.storage_and_layout();
            let y = match contiguous_f32_cpu(&ys, yl) {
                Some(v) if v.len() == gin.len() => v,
                _ => bail!("fused dense: its output is not a contiguous f32 CPU buffer"),
            };
            g.par_chunks_mut(task)
                .zip(gin.par_chunks(task))
                .zip(y.par_chunks(task))
                .for_each(|((d, gin), y)| {
                    if act == FusedAct::Relu {
                        for ((d, &g), &y) in d.iter_mut().zip(gin).zip(y) {
                            *d = if y > 0.0 { g } else { 0.0 };
                        }
                    } else if !(act == FusedAct::Softplus && avx::softplus_grad(d, gin, y)) {
                        map3(d, gin, y, y, |g, y, _| g * act.deriv8(y));
                    }
                });
            Ok(())
        })?;
        let dev = x.device();
        // dx = g · W: skipped for an input no gradient flows to (the data).
        let dx = if x.track_op() {
            let (ws, wl) = w.storage_and_layout();
            let candle_core::Storage::Cpu(ws) = &*ws else {
                bail!("fused dense: backward pass off the CPU")
            };
            let gm = Mat::new(&g, rows, out, out, 1, "the gradient")?;
            let wm = Mat::of(ws, wl, "the weight")?;
            Some(Tensor::from_vec(
                matmul(&gm, &wm, Split::Cols)?,
                (rows, inp),
                dev,
            )?)
        } else {
            None
        };
        if !weight_gradients() {
            return Ok((dx, None, None));
        }
        if deferring() {
            push_deferred(DeferredDense {
                w: w.clone(),
                b: b.clone(),
                x: x.clone(),
                g,
            });
            return Ok((dx, None, None));
        }
        let (xs, xl) = x.storage_and_layout();
        let candle_core::Storage::Cpu(xs) = &*xs else {
            bail!("fused dense: backward pass off the CPU")
        };
        let xm = Mat::of(xs, xl, "the input")?;
        let gm = Mat::new(&g, rows, out, out, 1, "the gradient")?;
        // dW = gᵀ · x, db = Σ_rows g.
        let dw = matmul(&gm.t(), &xm, Split::Rows)?;
        let dw = Tensor::from_vec(dw, (out, inp), dev)?;
        let db = Tensor::from_vec(column_sums(&g, out), out, dev)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `act(y + lift(p))` for `y [rows, n]` and `p [r, n]` with `r` dividing `rows`: row `i` of
/// `p` is added to rows `i·f .. (i+1)·f` of `y`, `f = rows / r` (the layout of
/// `eval::lift`). One pass forward; backward the activation's derivative and, for `p`,
/// sums of `f` consecutive rows. The CPU `f32` path of [`DenseNet`]'s split first layer
/// (candle's broadcast add reduces the gradient of `p` along a strided middle axis, one
/// thread); else candle's ops.
///
/// [`DenseNet`]: super::dense::DenseNet
pub fn add_lifted(y: &Tensor, p: &Tensor, act: FusedAct) -> Result<Tensor> {
    let (rows, n) = y.dims2()?;
    let (r, pn) = p.dims2()?;
    if r == 0 || pn != n || rows % r != 0 {
        bail!("add_lifted: [{rows}, {n}] and [{r}, {pn}]");
    }
    let fusable = fused_cpu(y) && y.dtype() == DType::F32 && p.dtype() == DType::F32;
    if !fusable {
        let z = y
            .reshape((r, rows / r, n))?
            .broadcast_add(&p.unsqueeze(1)?)?
            .reshape((rows, n))?;
        return match act.activation() {
            Some(a) => activate(&z, a),
            None => Ok(z),
        };
    }
    y.contiguous()?
        .apply_op2(&p.contiguous()?, AddLifted { act })
}

struct AddLifted {
    act: FusedAct,
}

impl candle_core::CustomOp2 for AddLifted {
    fn name(&self) -> &'static str {
        "add-lifted"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = f32_operand(s1, l1, "add_lifted", "the rows")?;
        let p = f32_operand(s2, l2, "add_lifted", "the lifted rows")?;
        let (rows, n) = (l1.dims()[0], l1.dims()[1]);
        let f = rows / l2.dims()[0].max(1);
        let act = self.act;
        let mut out = vec![0f32; y.len()];
        if n > 0 && f > 0 {
            out.par_chunks_mut(n * f)
                .zip(y.par_chunks(n * f))
                .zip(p.par_chunks(n))
                .for_each(|((o, y), p)| {
                    for (o, y) in o.chunks_exact_mut(n).zip(y.chunks_exact(n)) {
                        match act {
                            FusedAct::Identity => o
                                .iter_mut()
                                .zip(y)
                                .zip(p)
                                .for_each(|((o, &y), &p)| *o = y + p),
                            FusedAct::Relu => o
                                .iter_mut()
                                .zip(y)
                                .zip(p)
                                .for_each(|((o, &y), &p)| *o = (y + p).max(0.0)),
                            FusedAct::Softplus if avx::available() => {
                                o.copy_from_slice(y);
                                avx::softplus_add(o, p);
                            }
                            _ => map3(o, y, p, p, |y, p, _| act.apply8(y + p)),
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, n))))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        p: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, n) = res.dims2()?;
        let r = p.dim(0)?;
        let f = rows / r.max(1);
        let act = self.act;
        let g = with_f32(grad, |gin| {
            if act == FusedAct::Identity {
                return Ok(gin.to_vec());
            }
            let (ys, yl) = res.storage_and_layout();
            let Some(out) = contiguous_f32_cpu(&ys, yl) else {
                bail!("add_lifted: its output is not a contiguous f32 CPU buffer");
            };
            let mut g = vec![0f32; gin.len()];
            let task = rows_per_task(n) * n.max(1);
            g.par_chunks_mut(task)
                .zip(gin.par_chunks(task))
                .zip(out.par_chunks(task))
                .for_each(|((d, gin), y)| {
                    if !(act == FusedAct::Softplus && avx::softplus_grad(d, gin, y)) {
                        map3(d, gin, y, y, |g, y, _| g * act.deriv8(y))
                    }
                });
            Ok(g)
        })?;
        // Each row of p: the sum of the f rows it was added to, in order.
        let mut dp = vec![0f32; r * n];
        if n > 0 && f > 0 {
            dp.par_chunks_mut(n)
                .zip(g.par_chunks(n * f))
                .for_each(|(d, block)| {
                    for row in block.chunks_exact(n) {
                        d.iter_mut().zip(row).for_each(|(d, &v)| *d += v);
                    }
                });
        }
        let dev = res.device();
        Ok((
            Some(Tensor::from_vec(g, (rows, n), dev)?),
            Some(Tensor::from_vec(dp, (r, n), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lower::cpu::max_diff;
    use candle_core::{Device, Var};

    fn randn(rng: &mut crate::rng::Rng, shape: &[usize]) -> Tensor {
        rng.normal(shape, &Device::Cpu).unwrap()
    }

    /// Forward values and the gradients of x, W and b agree with candle's composition,
    /// for shapes off the kernels' block sizes, batch 1, and a transposed (strided) input.
    #[test]
    fn fused_dense_matches_candle() {
        let mut rng = crate::rng::Rng::seed(7);
        let shapes = [
            (1, 1, 1),
            (1, 17, 5),
            (3, 33, 47),
            (128, 784, 512),
            (37, 100, 19),
            (64, 15, 130),
            // Big enough to be split among threads, with uneven blocks.
            (37, 300, 130),
        ];
        for &(r, inp, out) in &shapes {
            for act in [
                FusedAct::Identity,
                FusedAct::Relu,
                FusedAct::Tanh,
                FusedAct::Sigmoid,
                FusedAct::Softplus,
                FusedAct::Elu,
                FusedAct::LeakyRelu,
            ] {
                for strided in [false, true] {
                    let x = if strided {
                        randn(&mut rng, &[inp, r]).t().unwrap()
                    } else {
                        randn(&mut rng, &[r, inp])
                    };
                    let x = Var::from_tensor(&x).unwrap();
                    let w = Var::from_tensor(&randn(&mut rng, &[out, inp])).unwrap();
                    let b = Var::from_tensor(&randn(&mut rng, &[out])).unwrap();
                    // A weighted sum, so each output entry gets a different gradient.
                    let weights = randn(&mut rng, &[r, out]);
                    let run = |f: fn(&Tensor, &Tensor, &Tensor, FusedAct) -> Result<Tensor>| {
                        let y = f(x.as_tensor(), w.as_tensor(), b.as_tensor(), act).unwrap();
                        let loss = (&y * &weights).unwrap().sum_all().unwrap();
                        let g = loss.backward().unwrap();
                        let gs = [x.as_tensor(), w.as_tensor(), b.as_tensor()]
                            .map(|t| g.get(t).unwrap().clone());
                        (y, gs)
                    };
                    let (y1, g1) = run(dense);
                    let (y2, g2) = run(dense_plain);
                    let tol = 1e-4 * (inp.max(r) as f32).sqrt();
                    assert!(max_diff(&y1, &y2) < tol, "forward {r}x{inp}->{out} {act:?}");
                    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
                        let d = max_diff(a, b);
                        assert!(d < tol, "grad {i} {r}x{inp}->{out} {act:?}: {d}");
                    }
                }
            }
        }
    }

    /// No gradient is computed for an input that does not track one (the data), and the
    /// weight and bias gradients are still right.
    #[test]
    fn fused_dense_skips_the_data_gradient() {
        let mut rng = crate::rng::Rng::seed(3);
        let x = randn(&mut rng, &[5, 9]);
        let w = Var::from_tensor(&randn(&mut rng, &[4, 9])).unwrap();
        let b = Var::from_tensor(&randn(&mut rng, &[4])).unwrap();
        let y = dense(&x, w.as_tensor(), b.as_tensor(), FusedAct::Relu).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&x).is_none());
        let y2 = dense_plain(&x, w.as_tensor(), b.as_tensor(), FusedAct::Relu).unwrap();
        let g2 = y2.sum_all().unwrap().backward().unwrap();
        assert!(
            max_diff(
                g.get(w.as_tensor()).unwrap(),
                g2.get(w.as_tensor()).unwrap()
            ) < 1e-4
        );
        assert!(
            max_diff(
                g.get(b.as_tensor()).unwrap(),
                g2.get(b.as_tensor()).unwrap()
            ) < 1e-4
        );
    }

    /// Under `without_weight_gradients` the input's gradient is unchanged and no weight or
    /// bias gradient is computed; afterwards they are again.
    #[test]
    fn weight_gradients_can_be_skipped() {
        let mut rng = crate::rng::Rng::seed(4);
        let x = Var::from_tensor(&randn(&mut rng, &[6, 9])).unwrap();
        let w = Var::from_tensor(&randn(&mut rng, &[4, 9])).unwrap();
        let b = Var::from_tensor(&randn(&mut rng, &[4])).unwrap();
        let loss = || {
            dense(x.as_tensor(), w.as_tensor(), b.as_tensor(), FusedAct::Tanh)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let only = without_weight_gradients(|| loss().backward().unwrap());
        let all = loss().backward().unwrap();
        assert!(only.get(w.as_tensor()).is_none() && only.get(b.as_tensor()).is_none());
        assert!(all.get(w.as_tensor()).is_some() && all.get(b.as_tensor()).is_some());
        let gx = |g: &candle_core::backprop::GradStore| g.get(x.as_tensor()).unwrap().clone();
        assert_eq!(max_diff(&gx(&only), &gx(&all)), 0.0);
    }

    /// Deferred weight gradients, combined with coefficients, equal the gradient of the
    /// weighted sum of the losses in candle's composition (f64): three backward passes
    /// through two weights, one of them twice in a pass (a strided input), of different
    /// row counts; the inputs' gradients are those of a plain backward pass.
    #[test]
    fn deferred_weight_gradients_sum_as_the_weighted_losses() {
        let mut rng = crate::rng::Rng::seed(5);
        let w1 = Var::from_tensor(&randn(&mut rng, &[7, 9])).unwrap();
        let b1 = Var::from_tensor(&randn(&mut rng, &[7])).unwrap();
        let w2 = Var::from_tensor(&randn(&mut rng, &[3, 7])).unwrap();
        let b2 = Var::from_tensor(&randn(&mut rng, &[3])).unwrap();
        let inputs = [
            randn(&mut rng, &[5, 9]),
            randn(&mut rng, &[9, 4]),
            randn(&mut rng, &[1, 9]),
        ];
        let coefs = [0.7, -1.3, 2.0];
        let loss =
            |x: &Tensor, layer: &dyn Fn(&Tensor, &Tensor, &Tensor, FusedAct) -> Result<Tensor>| {
                let h = layer(x, w1.as_tensor(), b1.as_tensor(), FusedAct::Tanh).unwrap();
                let h2 = layer(&h, w2.as_tensor(), b2.as_tensor(), FusedAct::Softplus).unwrap();
                // w2 once more, on a strided view of the first layer's output.
                let again = layer(
                    &h.t().unwrap().t().unwrap(),
                    w2.as_tensor(),
                    b2.as_tensor(),
                    FusedAct::Relu,
                )
                .unwrap();
                (h2.sqr().unwrap().sum_all().unwrap() + again.sum_all().unwrap()).unwrap()
            };
        let x_of = |i: usize| {
            if i == 1 {
                inputs[1].t().unwrap()
            } else {
                inputs[i].clone()
            }
        };
        let mut passes = Vec::new();
        for i in 0..3 {
            let x = Var::from_tensor(&x_of(i)).unwrap();
            let (g, d) =
                deferring_weight_gradients(|| loss(x.as_tensor(), &dense).backward().unwrap());
            assert!(g.get(w1.as_tensor()).is_none() && g.get(b2.as_tensor()).is_none());
            let plain = loss(x.as_tensor(), &dense).backward().unwrap();
            assert_eq!(
                max_diff(
                    g.get(x.as_tensor()).unwrap(),
                    plain.get(x.as_tensor()).unwrap()
                ),
                0.0
            );
            passes.push(d);
        }
        // Outside the scope nothing is deferred.
        assert!(!deferring());
        let parts: Vec<(f64, &[DeferredDense])> = coefs
            .iter()
            .zip(&passes)
            .map(|(&c, d)| (c, d.as_slice()))
            .collect();
        let got = combine_deferred(&parts).unwrap();
        assert_eq!(got.len(), 2);
        // The truth: candle's own ops in f64 on Σ c_i L_i.
        let f64v =
            |v: &Var| Var::from_tensor(&v.as_tensor().to_dtype(DType::F64).unwrap()).unwrap();
        let (w1d, b1d, w2d, b2d) = (f64v(&w1), f64v(&b1), f64v(&w2), f64v(&b2));
        let mut total: Option<Tensor> = None;
        for (i, &c) in coefs.iter().enumerate() {
            let x = x_of(i).to_dtype(DType::F64).unwrap();
            let h = dense_plain(&x, w1d.as_tensor(), b1d.as_tensor(), FusedAct::Tanh).unwrap();
            let h2 = dense_plain(&h, w2d.as_tensor(), b2d.as_tensor(), FusedAct::Softplus).unwrap();
            let again = dense_plain(&h, w2d.as_tensor(), b2d.as_tensor(), FusedAct::Relu).unwrap();
            let l = ((h2.sqr().unwrap().sum_all().unwrap() + again.sum_all().unwrap()).unwrap()
                * c)
                .unwrap();
            total = Some(match total {
                Some(t) => (t + l).unwrap(),
                None => l,
            });
        }
        let want = total.unwrap().backward().unwrap();
        for (w, b, wd, bd) in [(&w1, &b1, &w1d, &b1d), (&w2, &b2, &w2d, &b2d)] {
            let d = got.iter().find(|d| d.w.id() == w.as_tensor().id()).unwrap();
            assert_eq!(d.b.id(), b.as_tensor().id());
            let f32of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let (tw, tb) = (
                want.get(wd.as_tensor()).unwrap(),
                want.get(bd.as_tensor()).unwrap(),
            );
            crate::lower::cpu::assert_close(&d.dw, &f32of(tw), 1e-5, "dW");
            crate::lower::cpu::assert_close(&d.db, &f32of(tb), 1e-5, "db");
        }
    }

    /// `add_lifted`'s fused op (f32) and its candle composition (f64, the path off the
    /// CPU) agree on values and on both gradients, for each activation.
    #[test]
    fn add_lifted_matches_its_composition() {
        let mut rng = crate::rng::Rng::seed(9);
        let y = randn(&mut rng, &[12, 5]);
        let p = randn(&mut rng, &[3, 5]);
        let m = randn(&mut rng, &[12, 5]);
        for act in [
            FusedAct::Identity,
            FusedAct::Relu,
            FusedAct::Softplus,
            FusedAct::Tanh,
        ] {
            let run = |dt: DType| {
                let (yv, pv) = (
                    Var::from_tensor(&y.to_dtype(dt).unwrap()).unwrap(),
                    Var::from_tensor(&p.to_dtype(dt).unwrap()).unwrap(),
                );
                let out = add_lifted(yv.as_tensor(), pv.as_tensor(), act).unwrap();
                let g = (&out * m.to_dtype(dt).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                [
                    out,
                    g.get(yv.as_tensor()).unwrap().clone(),
                    g.get(pv.as_tensor()).unwrap().clone(),
                ]
                .map(|t| t.to_dtype(DType::F32).unwrap())
            };
            let (a, b) = (run(DType::F32), run(DType::F64));
            for (x, z) in a.iter().zip(&b) {
                assert!(max_diff(x, z) < 1e-5, "{act:?}");
            }
        }
    }

    /// Off the fused path's conditions (f64) the plain composition runs.
    #[test]
    fn fused_dense_falls_back_for_f64() {
        let x = Tensor::new(&[[1f64, -2.0]], &Device::Cpu).unwrap();
        let w = Tensor::new(&[[1f64, 1.0], [2.0, 0.5]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.5f64, -3.0], &Device::Cpu).unwrap();
        let y = dense(&x, &w, &b, FusedAct::Relu).unwrap();
        assert_eq!(y.to_vec2::<f64>().unwrap(), vec![vec![0.0, 0.0]]);
        let y = dense(&x, &w, &b, FusedAct::Identity).unwrap();
        assert_eq!(y.to_vec2::<f64>().unwrap(), vec![vec![-0.5, -2.0]]);
    }
}
