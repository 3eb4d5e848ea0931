//! The optimizers of `train { optimizer, clip }`: Adam, Adamax and SGD with momentum with
//! PyTorch's update rules, clipping by global norm, the non-finite gradient check, and the
//! optimizer state that `--resume` saves and restores.
//!
//! Semantics, chosen to match `torch.optim` (single-tensor implementations) so that a run
//! can be compared with a PyTorch one:
//! - Adam: `g += wd·p` (L2, not decoupled); `m ← lerp(m, g, 1-β1)`;
//!   `v ← v·β2 + (1-β2)·g·g`; `p ← p - (lr/(1-β1ᵗ))·m / (√v/√(1-β2ᵗ) + ε)`.
//! - Adamax: `m ← lerp(m, g, 1-β1)`; `u ← max(u·β2, |g|+ε)`; `p ← p - (lr/(1-β1ᵗ))·m/u`.
//! - SGD: `b ← b·μ + g` (the first step `b = g`); `p ← p - lr·b` (`μ = 0`: no buffer).
//! - `t` counts the steps *this parameter* was updated, as torch's per-parameter
//!   `state["step"]`.
//! - A parameter with **no gradient in the store is skipped**: left as it is, moments and
//!   step count included, exactly as torch skips a parameter whose `.grad` is `None`. (A
//!   zero gradient is not the same thing: Adam still moves a parameter whose gradient is
//!   zero while its first moment is not.)
//! - `clip = c`: the gradients of the parameters being updated (the `only` group, those
//!   with a gradient) are scaled by `min(1, c / (‖g‖₂ + 1e-6))`, `‖g‖₂` over all of them
//!   together, as `torch.nn.utils.clip_grad_norm_`.
//! - Before anything is touched, every gradient of the group is checked: a NaN or an
//!   infinity anywhere fails the step with [`OptimError::NonFiniteGradient`] naming the
//!   parameters, and nothing (parameters, moments, step counts) changes.
//!
//! Two implementations of the same arithmetic, operation for operation (each operation
//! rounded to f32 in the same order, so they agree bit for bit on the CPU):
//! - the fast path, for f32 contiguous parameters on the CPU: one fused pass per
//!   parameter that reads the gradient and updates parameter and moments in place (a
//!   candle `InplaceOp2`), with the moments kept as plain `Vec<f32>`, split across rayon's
//!   pool for large parameters;
//! - the generic path, candle tensor ops, for every other device and dtype (CUDA).

use crate::ir;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Shape, Storage, Tensor, Var};
use rayon::prelude::*;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;

/// Elements per rayon task in the fused update and the norm (64 KiB of f32 per array).
const CHUNK: usize = 16 * 1024;

/// torch's `clip_grad_norm_` adds this to the norm before dividing.
const CLIP_EPS: f64 = 1e-6;

/// What can go wrong in a step or when restoring state.
#[derive(Debug)]
pub enum OptimError {
    /// Gradients with a NaN or an infinity, by parameter name; nothing was updated.
    NonFiniteGradient { params: Vec<String> },
    /// `only` named a parameter index past the end of the list.
    NoSuchParam { index: usize, count: usize },
    /// A gradient whose shape or dtype is not its parameter's.
    GradMismatch {
        param: String,
        expected: (Shape, DType),
        found: (Shape, DType),
    },
    /// `load_state` got tensors that do not fit this optimizer; nothing was loaded.
    StateMismatch(Vec<StateProblem>),
    /// A failure inside candle.
    Candle(candle_core::Error),
}

/// One reason why saved optimizer state does not fit.
#[derive(Clone, Debug, PartialEq)]
pub enum StateProblem {
    /// A tensor this optimizer needs is absent (saved by another optimizer or model?).
    Missing(String),
    /// A tensor this optimizer does not have.
    Unexpected(String),
    Shape {
        key: String,
        expected: Shape,
        found: Shape,
    },
    DType {
        key: String,
        expected: DType,
        found: DType,
    },
    /// A step count that is not a whole number ≥ 0.
    BadStep { key: String, value: f64 },
}

impl fmt::Display for StateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateProblem::Missing(k) => write!(f, "`{k}` is missing"),
            StateProblem::Unexpected(k) => write!(f, "`{k}` is not part of this optimizer"),
            StateProblem::Shape {
                key,
                expected,
                found,
            } => write!(f, "`{key}` has shape {found:?}, expected {expected:?}"),
            StateProblem::DType {
                key,
                expected,
                found,
            } => write!(f, "`{key}` has dtype {found:?}, expected {expected:?}"),
            StateProblem::BadStep { key, value } => {
                write!(f, "`{key}` is {value}, not a step count")
            }
        }
    }
}

impl fmt::Display for OptimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptimError::NonFiniteGradient { params } => write!(
                f,
                "non-finite gradient (NaN or infinity) for {}; no parameter was updated",
                params
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            OptimError::NoSuchParam { index, count } => write!(
                f,
                "parameter index {index} is out of range (the optimizer has {count})"
            ),
            OptimError::GradMismatch {
                param,
                expected,
                found,
            } => write!(
                f,
                "the gradient of `{param}` is {:?} {:?}, the parameter {:?} {:?}",
                found.1, found.0, expected.1, expected.0
            ),
            OptimError::StateMismatch(problems) => {
                write!(f, "the saved optimizer state does not fit: ")?;
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
            OptimError::Candle(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OptimError {}

impl From<candle_core::Error> for OptimError {
    fn from(e: candle_core::Error) -> Self {
        OptimError::Candle(e)
    }
}

pub type Result<T> = std::result::Result<T, OptimError>;

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients of the updated parameters, before clipping.
    pub grad_norm: f64,
    /// The factor the gradients were multiplied by (1 without clipping or below `clip`).
    pub clip_scale: f32,
    /// Parameters updated.
    pub updated: usize,
    /// Parameters of the group skipped because the store has no gradient for them.
    pub without_grad: usize,
}

/// Moments of one parameter: host vectors on the fast path, tensors on the generic one.
/// Slot 0 is `exp_avg` / `momentum_buffer`, slot 1 `exp_avg_sq` / `exp_inf`; unused
/// slots are empty.
enum Moments {
    Host([Vec<f32>; 2]),
    Device([Option<Tensor>; 2]),
}

struct Slot {
    name: String,
    var: Var,
    /// Updates applied so far (torch's `state["step"]`).
    step: u64,
    moments: Moments,
}

/// An optimizer over a fixed list of named parameters.
pub struct Optimizer {
    config: ir::Optimizer,
    clip: Option<f64>,
    slots: Vec<Slot>,
    /// The learning rate's factor for the next steps (`train.decay`), 1 by default.
    lr_factor: f64,
}

/// One step's constants for one parameter, rounded to f32 where PyTorch rounds them.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Adam {
        /// The clipping factor (1 when not clipping: multiplying by 1 is exact).
        scale: f32,
        /// L2 weight decay, `None` when 0 (torch then skips the add).
        wd: Option<f32>,
        lerp: Lerp,
        b2: f32,
        /// `1 - β2`.
        c2: f32,
        /// `√(1-β2ᵗ)`.
        bc2_sqrt: f32,
        eps: f32,
        /// `-lr / (1-β1ᵗ)`.
        neg_step: f32,
    },
    Adamax {
        scale: f32,
        lerp: Lerp,
        b2: f32,
        eps: f32,
        /// `-lr / (1-β1ᵗ)`.
        neg_step: f32,
    },
    Sgd {
        scale: f32,
        momentum: Option<f32>,
        neg_lr: f32,
    },
}

/// torch's `lerp(m, g, w)` written as `base + coeff·(g - m)`: `m + w·(g-m)` for `w < 0.5`,
/// `g - (1-w)·(g-m)` otherwise (the negation is exact, so the two forms agree).
#[derive(Clone, Copy, Debug)]
struct Lerp {
    from_g: bool,
    coeff: f32,
}

impl Lerp {
    fn new(beta1: f64) -> Lerp {
        let w = (1.0 - beta1) as f32;
        if w.abs() < 0.5 {
            Lerp {
                from_g: false,
                coeff: w,
            }
        } else {
            Lerp {
                from_g: true,
                coeff: -(1.0 - w),
            }
        }
    }

    #[inline(always)]
    fn apply(self, m: f32, g: f32) -> f32 {
        let base = if self.from_g { g } else { m };
        base + self.coeff * (g - m)
    }
}

impl Optimizer {
    /// An optimizer for `params` (names as in the spec and the checkpoint) configured by the
    /// spec's `optimizer` and `clip`. Parameters that are f32, contiguous and on the CPU take
    /// the fused path; the others the generic one.
    pub fn new(
        config: &ir::Optimizer,
        clip: Option<f64>,
        params: Vec<(String, Var)>,
    ) -> Result<Optimizer> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            let moments = if fast_eligible(&var) {
                let n = var.elem_count();
                let (a, b) = moment_slots(config);
                Moments::Host([
                    if a { vec![0.0; n] } else { Vec::new() },
                    if b { vec![0.0; n] } else { Vec::new() },
                ])
            } else {
                Moments::Device(zero_moments(config, &var)?)
            };
            slots.push(Slot {
                name,
                var,
                step: 0,
                moments,
            });
        }
        Ok(Optimizer {
            config: config.clone(),
            clip,
            slots,
            lr_factor: 1.0,
        })
    }

    /// Scale the configured learning rate by `factor` from the next step on (the
    /// `train.decay` schedule).
    pub fn set_lr_factor(&mut self, factor: f64) {
        self.lr_factor = factor;
    }

    /// Moves every parameter to the generic (tensor-op) path: for tests and comparisons.
    pub fn with_generic_path(mut self) -> Result<Optimizer> {
        for slot in &mut self.slots {
            if let Moments::Host(host) = &slot.moments {
                let mut dev: [Option<Tensor>; 2] = [None, None];
                for (k, h) in host.iter().enumerate() {
                    if !h.is_empty() {
                        dev[k] = Some(Tensor::from_slice(h, slot.var.shape(), &Device::Cpu)?);
                    }
                }
                slot.moments = Moments::Device(dev);
            }
        }
        Ok(self)
    }

    /// The parameter names, in index order (the indices `step`'s `only` refers to).
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// How many times parameter `index` has been updated.
    pub fn param_steps(&self, index: usize) -> Option<u64> {
        self.slots.get(index).map(|s| s.step)
    }

    /// One optimizer step over the parameters `only` lists (all when `None`), with the
    /// gradients in `grads`. A parameter without a gradient is skipped (see the module
    /// docs). On the errors of the checks (`NonFiniteGradient`, `GradMismatch`,
    /// `NoSuchParam`) nothing has changed; only a failure inside candle while updating can
    /// leave a step half done.
    pub fn step(&mut self, grads: &GradStore, only: Option<&[usize]>) -> Result<StepStats> {
        let count = self.slots.len();
        let mut chosen = vec![only.is_none(); count];
        for &index in only.unwrap_or(&[]) {
            match chosen.get_mut(index) {
                Some(c) => *c = true,
                None => return Err(OptimError::NoSuchParam { index, count }),
            }
        }

        // Pass 1: gather the gradients, check them and measure the norm. Nothing changes.
        let mut work: Vec<(usize, Tensor)> = Vec::new();
        let mut without_grad = 0;
        let mut sumsq = 0.0f64;
        let mut non_finite = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            if !chosen[i] {
                continue;
            }
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                without_grad += 1;
                continue;
            };
            if g.shape() != slot.var.shape() || g.dtype() != slot.var.dtype() {
                return Err(OptimError::GradMismatch {
                    param: slot.name.clone(),
                    expected: (slot.var.shape().clone(), slot.var.dtype()),
                    found: (g.shape().clone(), g.dtype()),
                });
            }
            let g = if matches!(slot.moments, Moments::Host(_)) && !g.is_contiguous() {
                g.contiguous()?
            } else {
                g.clone()
            };
            let s = sum_of_squares(&g)?;
            if s.is_finite() {
                sumsq += s;
            } else {
                non_finite.push(slot.name.clone());
            }
            work.push((i, g));
        }
        if !non_finite.is_empty() {
            return Err(OptimError::NonFiniteGradient { params: non_finite });
        }
        let grad_norm = sumsq.sqrt();
        let clip_scale = match self.clip {
            Some(c) => (c / (grad_norm + CLIP_EPS)).min(1.0) as f32,
            None => 1.0,
        };

        // Pass 2: update.
        for (i, g) in &work {
            let slot = &mut self.slots[*i];
            let kernel = kernel(&self.config, slot.step + 1, clip_scale, self.lr_factor);
            match &mut slot.moments {
                Moments::Host([a, b]) => {
                    let op = FusedStep {
                        kernel,
                        moments: Cell::new(Some((a.as_mut_slice(), b.as_mut_slice()))),
                    };
                    slot.var.as_tensor().inplace_op2(g, &op)?;
                }
                Moments::Device(moments) => generic_step(kernel, &slot.var, g, moments)?,
            }
            slot.step += 1;
        }
        Ok(StepStats {
            grad_norm,
            clip_scale,
            updated: work.len(),
            without_grad,
        })
    }

    /// The optimizer state for `--resume`: per parameter `NAME.step` (i64, shape `[1]`) and
    /// its moments, named as torch names them: Adam `NAME.exp_avg`, `NAME.exp_avg_sq`;
    /// Adamax `NAME.exp_avg`, `NAME.exp_inf`; SGD with momentum `NAME.momentum_buffer`.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let names = moment_names(&self.config);
        let mut out = Vec::new();
        for slot in &self.slots {
            out.push((
                format!("{}.step", slot.name),
                Tensor::new(&[slot.step as i64], &Device::Cpu)?,
            ));
            for (k, name) in names.iter().enumerate() {
                let Some(name) = name else { continue };
                let t = match &slot.moments {
                    Moments::Host(h) => Tensor::from_slice(&h[k], slot.var.shape(), &Device::Cpu)?,
                    Moments::Device(d) => match &d[k] {
                        Some(t) => t.clone(),
                        None => continue,
                    },
                };
                out.push((format!("{}.{name}", slot.name), t));
            }
        }
        Ok(out)
    }

    /// Restores what [`Optimizer::state_tensors`] saved. The keys must be exactly this
    /// optimizer's (same parameters, same kind of optimizer), with the same shapes and
    /// dtypes; otherwise every problem is reported and nothing is loaded.
    pub fn load_state(
        &mut self,
        tensors: impl IntoIterator<Item = (String, Tensor)>,
    ) -> Result<()> {
        let mut given: HashMap<String, Tensor> = tensors.into_iter().collect();
        let names = moment_names(&self.config);
        let mut problems = Vec::new();
        let mut steps = Vec::with_capacity(self.slots.len());
        let mut moments: Vec<[Option<Tensor>; 2]> = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let key = format!("{}.step", slot.name);
            match given.remove(&key) {
                None => problems.push(StateProblem::Missing(key)),
                Some(t) => {
                    let value = if t.elem_count() == 1 {
                        t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0]
                    } else {
                        f64::NAN
                    };
                    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 {
                        steps.push(value as u64);
                    } else {
                        problems.push(StateProblem::BadStep { key, value });
                    }
                }
            }
            let mut m: [Option<Tensor>; 2] = [None, None];
            for (k, name) in names.iter().enumerate() {
                let Some(name) = name else { continue };
                let key = format!("{}.{name}", slot.name);
                match given.remove(&key) {
                    None => problems.push(StateProblem::Missing(key)),
                    Some(t) if t.shape() != slot.var.shape() => {
                        problems.push(StateProblem::Shape {
                            key,
                            expected: slot.var.shape().clone(),
                            found: t.shape().clone(),
                        })
                    }
                    Some(t) if t.dtype() != slot.var.dtype() => {
                        problems.push(StateProblem::DType {
                            key,
                            expected: slot.var.dtype(),
                            found: t.dtype(),
                        })
                    }
                    Some(t) => m[k] = Some(t),
                }
            }
            moments.push(m);
        }
        let mut unexpected: Vec<String> = given.into_keys().collect();
        unexpected.sort();
        problems.extend(unexpected.into_iter().map(StateProblem::Unexpected));
        if !problems.is_empty() {
            return Err(OptimError::StateMismatch(problems));
        }

        // Convert everything before assigning anything.
        let mut converted = Vec::with_capacity(self.slots.len());
        for (slot, m) in self.slots.iter().zip(moments) {
            converted.push(match &slot.moments {
                Moments::Host(_) => {
                    let mut h: [Vec<f32>; 2] = [Vec::new(), Vec::new()];
                    for (k, t) in m.iter().enumerate() {
                        if let Some(t) = t {
                            h[k] = t.flatten_all()?.to_vec1::<f32>()?;
                        }
                    }
                    Moments::Host(h)
                }
                Moments::Device(_) => {
                    let mut d: [Option<Tensor>; 2] = [None, None];
                    for (k, t) in m.into_iter().enumerate() {
                        if let Some(t) = t {
                            d[k] = Some(t.to_device(slot.var.device())?.contiguous()?);
                        }
                    }
                    Moments::Device(d)
                }
            });
        }
        for ((slot, step), m) in self.slots.iter_mut().zip(steps).zip(converted) {
            slot.step = step;
            slot.moments = m;
        }
        Ok(())
    }
}

/// Which moment slots a configuration uses.
fn moment_slots(config: &ir::Optimizer) -> (bool, bool) {
    let [a, b] = moment_names(config);
    (a.is_some(), b.is_some())
}

/// torch's names for the moments of each slot.
fn moment_names(config: &ir::Optimizer) -> [Option<&'static str>; 2] {
    match config {
        ir::Optimizer::Adam { .. } => [Some("exp_avg"), Some("exp_avg_sq")],
        ir::Optimizer::Adamax { .. } => [Some("exp_avg"), Some("exp_inf")],
        ir::Optimizer::Sgd { momentum, .. } if *momentum != 0.0 => [Some("momentum_buffer"), None],
        ir::Optimizer::Sgd { .. } => [None, None],
    }
}

fn zero_moments(config: &ir::Optimizer, var: &Var) -> Result<[Option<Tensor>; 2]> {
    let (a, b) = moment_slots(config);
    let zero = || Tensor::zeros(var.shape(), var.dtype(), var.device());
    Ok([
        if a { Some(zero()?) } else { None },
        if b { Some(zero()?) } else { None },
    ])
}

fn fast_eligible(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32 && var.is_contiguous()
}

/// The constants of update number `step` (1-based), computed as torch computes them:
/// Python floats (f64), then rounded to f32 by the kernels.
fn kernel(config: &ir::Optimizer, step: u64, scale: f32, lr_factor: f64) -> Kernel {
    let t = step as f64;
    match *config {
        ir::Optimizer::Adam {
            lr,
            betas: [b1, b2],
            eps,
            weight_decay,
        } => Kernel::Adam {
            scale,
            wd: (weight_decay != 0.0).then_some(weight_decay as f32),
            lerp: Lerp::new(b1),
            b2: b2 as f32,
            c2: (1.0 - b2) as f32,
            bc2_sqrt: (1.0 - b2.powf(t)).sqrt() as f32,
            eps: eps as f32,
            neg_step: (-(lr * lr_factor / (1.0 - b1.powf(t)))) as f32,
        },
        ir::Optimizer::Adamax {
            lr,
            betas: [b1, b2],
            eps,
        } => Kernel::Adamax {
            scale,
            lerp: Lerp::new(b1),
            b2: b2 as f32,
            eps: eps as f32,
            neg_step: (-(lr * lr_factor / (1.0 - b1.powf(t)))) as f32,
        },
        ir::Optimizer::Sgd { lr, momentum } => Kernel::Sgd {
            scale,
            momentum: (momentum != 0.0).then_some(momentum as f32),
            neg_lr: (-lr * lr_factor) as f32,
        },
    }
}

// ---------------------------------------------------------------------------------
// Gradient norm

/// Σ g² in f64 (so that a large finite f32 gradient cannot overflow); NaN or infinite
/// when some element is.
fn sum_of_squares(g: &Tensor) -> Result<f64> {
    if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
        let (storage, layout) = g.storage_and_layout();
        if let Storage::Cpu(CpuStorage::F32(data)) = &*storage {
            let start = layout.start_offset();
            let xs = &data[start..start + g.elem_count()];
            return Ok(if xs.len() >= 2 * CHUNK {
                // Partial sums in chunk order, added in order: the same norm every run.
                let parts: Vec<f64> = xs.par_chunks(CHUNK).map(sumsq_f32).collect();
                parts.iter().sum()
            } else {
                sumsq_f32(xs)
            });
        }
    }
    Ok(g.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?)
}

fn sumsq_f32(xs: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { sumsq_f32_avx(xs) };
    }
    sumsq_f32_body(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn sumsq_f32_avx(xs: &[f32]) -> f64 {
    sumsq_f32_body(xs)
}

#[inline(always)]
fn sumsq_f32_body(xs: &[f32]) -> f64 {
    // Eight independent accumulators let the loop vectorize.
    let mut acc = [0.0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            let x = c[k] as f64;
            acc[k] += x * x;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    acc.iter().sum::<f64>() + tail
}

// ---------------------------------------------------------------------------------
// Fast path: one fused pass per parameter on the CPU

/// The in-place update of one f32 parameter (the destination) from its gradient (the
/// source), with the parameter's moments lent for the call.
struct FusedStep<'a> {
    kernel: Kernel,
    moments: Cell<Option<(&'a mut [f32], &'a mut [f32])>>,
}

impl InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "vic-fused-optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let n = l1.shape().elem_count();
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("{}: parameter and gradient must be f32", self.name())
        };
        if !l1.is_contiguous() || !l2.is_contiguous() || l2.shape().elem_count() != n {
            candle_core::bail!("{}: contiguous operands of one shape expected", self.name())
        }
        let Some((m, v)) = self.moments.take() else {
            candle_core::bail!("{}: applied twice", self.name())
        };
        let p = &mut p[l1.start_offset()..l1.start_offset() + n];
        let g = &g[l2.start_offset()..l2.start_offset() + n];
        fused_update(self.kernel, p, g, m, v);
        Ok(())
    }
}

/// Runs the update over `p` (and `m`, `v` where the rule has them), in parallel chunks
/// when large. Element `i` depends on element `i` only, so chunking changes nothing.
fn fused_update(kernel: Kernel, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len();
    let parallel = n >= 2 * CHUNK;
    // A moment the rule does not use is an empty slice, never touched.
    match kernel {
        Kernel::Adam { .. } | Kernel::Adamax { .. } => {
            if parallel {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .zip(v.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| update_two(kernel, p, g, m, v));
            } else {
                update_two(kernel, p, g, m, v);
            }
        }
        Kernel::Sgd {
            momentum: Some(_), ..
        } => {
            if parallel {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK))
                    .for_each(|((p, g), m)| update_sgd(kernel, p, g, m));
            } else {
                update_sgd(kernel, p, g, m);
            }
        }
        Kernel::Sgd { momentum: None, .. } => {
            if parallel {
                p.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(p, g)| update_sgd(kernel, p, g, &mut []));
            } else {
                update_sgd(kernel, p, g, &mut []);
            }
        }
    }
}

/// Adam and Adamax over one chunk. Every operation is a separate f32 rounding, in the
/// order of the generic path (and of torch's kernels, bar its fused multiply-adds).
///
/// On x86_64 with AVX the same code is compiled for 8-wide vectors: AVX has no fused
/// multiply-add and the compiler does not contract `a * b + c` without being told, so the
/// results are the same bits as the baseline build's and the generic path's.
fn update_two(kernel: Kernel, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { update_two_avx(kernel, p, g, m, v) };
    }
    update_two_body(kernel, p, g, m, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn update_two_avx(kernel: Kernel, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    update_two_body(kernel, p, g, m, v)
}

#[inline(always)]
fn update_two_body(kernel: Kernel, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    match kernel {
        Kernel::Adam {
            scale,
            wd,
            lerp,
            b2,
            c2,
            bc2_sqrt,
            eps,
            neg_step,
        } => {
            let wd_on = wd.is_some();
            let wd = wd.unwrap_or(0.0);
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let mut g = g * scale;
                if wd_on {
                    g += wd * *p;
                }
                let m1 = lerp.apply(*m, g);
                let v1 = *v * b2 + (c2 * g) * g;
                let denom = v1.sqrt() / bc2_sqrt + eps;
                *p += (neg_step * m1) / denom;
                *m = m1;
                *v = v1;
            }
        }
        Kernel::Adamax {
            scale,
            lerp,
            b2,
            eps,
            neg_step,
        } => {
            for (((p, &g), m), u) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g * scale;
                let m1 = lerp.apply(*m, g);
                let u1 = (*u * b2).max(g.abs() + eps);
                *p += (neg_step * m1) / u1;
                *m = m1;
                *u = u1;
            }
        }
        Kernel::Sgd { .. } => {}
    }
}

fn update_sgd(kernel: Kernel, p: &mut [f32], g: &[f32], b: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above).
        return unsafe { update_sgd_avx(kernel, p, g, b) };
    }
    update_sgd_body(kernel, p, g, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn update_sgd_avx(kernel: Kernel, p: &mut [f32], g: &[f32], b: &mut [f32]) {
    update_sgd_body(kernel, p, g, b)
}

#[inline(always)]
fn update_sgd_body(kernel: Kernel, p: &mut [f32], g: &[f32], b: &mut [f32]) {
    let Kernel::Sgd {
        scale,
        momentum,
        neg_lr,
    } = kernel
    else {
        return;
    };
    match momentum {
        Some(mu) => {
            for ((p, &g), b) in p.iter_mut().zip(g).zip(b.iter_mut()) {
                let g = g * scale;
                let b1 = *b * mu + g;
                *p += neg_lr * b1;
                *b = b1;
            }
        }
        None => {
            for (p, &g) in p.iter_mut().zip(g) {
                let g = g * scale;
                *p += neg_lr * g;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Generic path: the same arithmetic as tensor ops

/// `x · c` as a tensor op (`affine(c, 0)`: `x·c + 0`, equal to `x·c` up to the sign of 0).
fn scaled(x: &Tensor, c: f32) -> Result<Tensor> {
    Ok(x.affine(c as f64, 0.0)?)
}

fn generic_step(
    kernel: Kernel,
    var: &Var,
    g: &Tensor,
    moments: &mut [Option<Tensor>; 2],
) -> Result<()> {
    let p = var.as_tensor().detach();
    let scale_of = |g: &Tensor, scale: f32| -> Result<Tensor> {
        if scale == 1.0 {
            Ok(g.clone())
        } else {
            scaled(g, scale)
        }
    };
    let lerp_of = |lerp: Lerp, m: &Tensor, g: &Tensor| -> Result<Tensor> {
        let base = if lerp.from_g { g } else { m };
        Ok((base + scaled(&(g - m)?, lerp.coeff)?)?)
    };
    let [a, b] = moments;
    let missing = || OptimError::Candle(candle_core::Error::Msg("optimizer moment missing".into()));
    match kernel {
        Kernel::Adam {
            scale,
            wd,
            lerp,
            b2,
            c2,
            bc2_sqrt,
            eps,
            neg_step,
        } => {
            let (m, v) = (
                a.as_ref().ok_or_else(missing)?,
                b.as_ref().ok_or_else(missing)?,
            );
            let mut g = scale_of(g, scale)?;
            if let Some(wd) = wd {
                g = (g + scaled(&p, wd)?)?;
            }
            let m1 = lerp_of(lerp, m, &g)?;
            let v1 = (scaled(v, b2)? + (scaled(&g, c2)? * &g)?)?;
            let bc2 = Tensor::new(bc2_sqrt, p.device())?.to_dtype(p.dtype())?;
            let denom = v1.sqrt()?.broadcast_div(&bc2)?.affine(1.0, eps as f64)?;
            let p1 = (&p + (scaled(&m1, neg_step)? / denom)?)?;
            var.set(&p1)?;
            *a = Some(m1);
            *b = Some(v1);
        }
        Kernel::Adamax {
            scale,
            lerp,
            b2,
            eps,
            neg_step,
        } => {
            let (m, u) = (
                a.as_ref().ok_or_else(missing)?,
                b.as_ref().ok_or_else(missing)?,
            );
            let g = scale_of(g, scale)?;
            let m1 = lerp_of(lerp, m, &g)?;
            let u1 = scaled(u, b2)?.maximum(&g.abs()?.affine(1.0, eps as f64)?)?;
            let p1 = (&p + (scaled(&m1, neg_step)? / &u1)?)?;
            var.set(&p1)?;
            *a = Some(m1);
            *b = Some(u1);
        }
        Kernel::Sgd {
            scale,
            momentum,
            neg_lr,
        } => {
            let g = scale_of(g, scale)?;
            let d = match momentum {
                Some(mu) => {
                    let buf = a.as_ref().ok_or_else(missing)?;
                    let b1 = (scaled(buf, mu)? + &g)?;
                    *a = Some(b1.clone());
                    b1
                }
                None => g,
            };
            var.set(&(&p + scaled(&d, neg_lr)?)?)?;
        }
    }
    Ok(())
}
