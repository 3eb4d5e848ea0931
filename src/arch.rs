//! Architecture facts per network: the layers each architecture is made of (the single
//! source for sizes: lowering builds the same layers in the same order), parameter
//! counts, FLOPs and activation memory of one forward call, and the cost rule E017.
//!
//! # Conventions (lowering follows them)
//!
//! Widths. The *dense input width* of a network is the sum of its inputs'
//! [`Type::dense_width`] (a `Cat(K)` value is one-hot, length K), concatenated in
//! declaration order. The *output width* is the sum of its heads' `numel`, in head order;
//! the last layer produces all heads at once and lowering splits it in head order.
//! An image type is `[C, H, W]`; a two-axis shape `[H, W]` is read as `[1, H, W]`.
//!
//! Layers, by architecture (names are the checkpoint names under the network's own name,
//! `encoder.layer0.weight`):
//! - `linear`: `layer0` dense in→out (bias per `bias`).
//! - `mlp`: `layer0..layerN` dense in→hidden\[0\]→…→out, each with bias; with
//!   `norm = layer|batch` a `norm{i}` after each hidden dense layer (2·width: gain, shift).
//! - `conv`: `conv{i}` Conv2d(c_in→channels\[i\], kernel k, stride s, padding (k-1)/2, bias),
//!   output side ⌊(H+2p−k)/s⌋+1; the result is flattened and the other inputs (dense)
//!   appended; then `layer{j}` dense through `hidden` and a last dense layer to the heads.
//! - `deconv`: `layer{j}` dense from the inputs through `hidden`, then a dense layer to
//!   channels\[0\]·(H/sⁿ)·(W/sⁿ) (n = len(channels), integer division), reshaped to
//!   `[channels[0], H/sⁿ, W/sⁿ]`; then `deconv{i}` ConvTranspose2d(kernel k, stride s,
//!   padding (k−s)/2, bias) channels\[i\]→channels\[i+1\], the last one → C of the image head;
//!   output side (h−1)·s − 2p + k. With `channels = []` the dense stack ends at C·H·W.
//! - `gru`: `cell`, PyTorch `GRUCell(I, H)` layout (`weight_ih [3H, I]`, `weight_hh [3H, H]`,
//!   `bias_ih [3H]`, `bias_hh [3H]`): 3·(I·H + H·H + 2H). H is the first input's numel, I the
//!   dense width of the other inputs.
//! - `lstm`: `cell`, PyTorch `LSTMCell(I, H)`: 4·(I·H + H·H + 2H). H from the first input;
//!   I the dense width of the inputs after `h` and `c`.
//! - `made`: `layer{i}` with the sizes of an mlp from Z + context width through `hidden`
//!   to (number of heads)·Z; the masks are fixed and have no parameters.
//! - `deepsets`: `phi{i}` dense from the set member's dense width through `phi` (applied
//!   to every member; the last phi width is the pooled feature), pool, then `rho{i}` dense
//!   from pooled + the other inputs' dense width through `rho`, then `out` dense to the heads.
//! - `attend_read`: `params` dense from the state (the inputs other than the image,
//!   concatenated) to the 5 attention parameters (gx, gy, log σ², log δ, log γ); the image
//!   is the first input with three axes (else the first input).
//! - `attend_write`: `params` dense state→5 and `patch` dense state→C·N·N.
//!
//! Copies. A network named by `iaf` flows has one copy per flow step, numbered over the
//! flows in program order (`ar.step0.layer0.weight`, `ar.step1…`); a `@per_member` network
//! one per member of the `meta` family (`dec.member3.layer0.weight`). [`param_count`] is one
//! copy; [`copies`] says how many.
//!
//! Weights. `point`: weights and biases as above. `bayes`: every weight and bias of the
//! dense, convolutional and recurrent layers gets a mean and a log-variance (twice the
//! count); `vdrop(kind = "B")`: one log α per weight entry (biases stay point estimates);
//! `vdrop(kind = "A")`: one log α per output unit of each weight matrix (its rows: `out` of
//! a dense layer, `c_out` of a convolution, the 3H + 3H rows of a GRU cell). Norm gains and
//! shifts are always point estimates. Bayes and vdrop layers run two matmuls each (local
//! reparameterization: mean and variance of the pre-activations), so their FLOPs double.
//!
//! Costs, per example and per forward call. Dense: 2·in·out. Conv: 2·k²·c_in·c_out·H_out·W_out;
//! transposed conv: 2·k²·c_in·c_out·H_in·W_in. Norm: 5·width. GRU: 2·3H·(I+H); LSTM:
//! 2·4H·(I+H) (the matmuls; gate nonlinearities are not counted). Attention read:
//! filterbanks 8·N·(H+W) plus 2·C·N·(H·W + N·W) for `F_y · x · F_xᵀ`, plus C·N·N for γ;
//! write: 8·N·(H+W) plus 2·C·N·(N·W + H·W) for `F_yᵀ · w · F_x`, plus C·H·W for 1/γ.
//! Activation memory is the f32 bytes of every layer's output kept for backward (one
//! tensor per layer; GRU and LSTM cells keep 7H: gates and states; attention keeps its
//! filterbanks and intermediate products). A deepsets call runs its `phi` layers once per
//! set member.

use crate::diag::{Code, Diagnostic};
use crate::ir::walk;
use crate::ir::{
    Arch, Domain, ExprKind, Guide, LoopDef, NetDef, NetId, Norm, Program, Site, SiteVar, Strategy,
    Type, VdropKind, Weights,
};
use crate::span::Span;
use serde::{Deserialize, Serialize};

/// Enumeration covers at most this many joint values (E017).
pub const MAX_ENUMERATION: u64 = 1024;
/// At most this many learned scalars in total (E017).
pub const MAX_PARAMS: u64 = 1_000_000_000;

/// One layer of a network, in the order lowering builds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// The checkpoint name under the network (`layer0`, `conv1`, `phi0`, `cell`, `params`).
    pub name: String,
    pub kind: LayerKind,
    /// Run once per member of the context set (the `phi` layers of `deepsets`).
    pub per_set_member: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LayerKind {
    Dense {
        inp: usize,
        out: usize,
        bias: bool,
    },
    /// Layer or batch norm over `width` features: a gain and a shift per feature.
    Norm {
        width: usize,
        kind: Norm,
    },
    Conv2d {
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        /// `[H, W]` in and out.
        in_hw: [usize; 2],
        out_hw: [usize; 2],
    },
    ConvTranspose2d {
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        in_hw: [usize; 2],
        out_hw: [usize; 2],
    },
    /// PyTorch `GRUCell(input, hidden)`.
    GruCell {
        input: usize,
        hidden: usize,
    },
    /// PyTorch `LSTMCell(input, hidden)`.
    LstmCell {
        input: usize,
        hidden: usize,
    },
    /// DRAW's Gaussian filterbanks over a `[channels, height, width]` image with an
    /// `grid x grid` patch; no parameters.
    Filterbank {
        channels: usize,
        height: usize,
        width: usize,
        grid: usize,
        write: bool,
    },
}

fn m(a: usize, b: usize) -> u64 {
    (a as u64).saturating_mul(b as u64)
}

fn prod(xs: &[usize]) -> u64 {
    xs.iter().fold(1u64, |acc, &x| acc.saturating_mul(x as u64))
}

impl LayerKind {
    /// Entries of the weight matrices / kernels.
    pub fn weights(&self) -> u64 {
        match *self {
            LayerKind::Dense { inp, out, .. } => m(inp, out),
            LayerKind::Norm { .. } | LayerKind::Filterbank { .. } => 0,
            LayerKind::Conv2d {
                c_in,
                c_out,
                kernel,
                ..
            }
            | LayerKind::ConvTranspose2d {
                c_in,
                c_out,
                kernel,
                ..
            } => prod(&[kernel, kernel, c_in, c_out]),
            LayerKind::GruCell { input, hidden } => {
                prod(&[3, hidden, input.saturating_add(hidden)])
            }
            LayerKind::LstmCell { input, hidden } => {
                prod(&[4, hidden, input.saturating_add(hidden)])
            }
        }
    }

    /// Bias entries.
    pub fn biases(&self) -> u64 {
        match *self {
            LayerKind::Dense { out, bias, .. } => {
                if bias {
                    out as u64
                } else {
                    0
                }
            }
            LayerKind::Norm { .. } | LayerKind::Filterbank { .. } => 0,
            LayerKind::Conv2d { c_out, .. } | LayerKind::ConvTranspose2d { c_out, .. } => {
                c_out as u64
            }
            LayerKind::GruCell { hidden, .. } => m(6, hidden),
            LayerKind::LstmCell { hidden, .. } => m(8, hidden),
        }
    }

    /// Output units (rows) of the weight matrices: where `vdrop(kind = "A")` keeps one log α.
    pub fn units(&self) -> u64 {
        match *self {
            LayerKind::Dense { out, .. } => out as u64,
            LayerKind::Norm { .. } | LayerKind::Filterbank { .. } => 0,
            LayerKind::Conv2d { c_out, .. } | LayerKind::ConvTranspose2d { c_out, .. } => {
                c_out as u64
            }
            LayerKind::GruCell { hidden, .. } => m(6, hidden),
            LayerKind::LstmCell { hidden, .. } => m(8, hidden),
        }
    }

    /// Parameters that stay point estimates whatever the `weights` setting (norms).
    pub fn fixed(&self) -> u64 {
        match *self {
            LayerKind::Norm { width, .. } => m(2, width),
            _ => 0,
        }
    }

    /// Learned scalars of this layer under a `weights` setting.
    pub fn param_count(&self, weights: &Weights) -> u64 {
        let base = self.weights().saturating_add(self.biases());
        let learned = match weights {
            Weights::Point => base,
            Weights::Bayes { .. } => base.saturating_mul(2),
            Weights::Vdrop {
                kind: VdropKind::B, ..
            } => base.saturating_add(self.weights()),
            Weights::Vdrop {
                kind: VdropKind::A, ..
            } => base.saturating_add(self.units()),
        };
        learned.saturating_add(self.fixed())
    }

    /// FLOPs of one application (point weights).
    pub fn flops(&self) -> u64 {
        match *self {
            LayerKind::Dense { inp, out, .. } => prod(&[2, inp, out]),
            LayerKind::Norm { width, .. } => m(5, width),
            LayerKind::Conv2d {
                c_in,
                c_out,
                kernel,
                out_hw,
                ..
            } => prod(&[2, kernel, kernel, c_in, c_out, out_hw[0], out_hw[1]]),
            LayerKind::ConvTranspose2d {
                c_in,
                c_out,
                kernel,
                in_hw,
                ..
            } => prod(&[2, kernel, kernel, c_in, c_out, in_hw[0], in_hw[1]]),
            LayerKind::GruCell { input, hidden } => {
                prod(&[2, 3, hidden, input.saturating_add(hidden)])
            }
            LayerKind::LstmCell { input, hidden } => {
                prod(&[2, 4, hidden, input.saturating_add(hidden)])
            }
            LayerKind::Filterbank {
                channels: c,
                height: h,
                width: w,
                grid: n,
                write,
            } => {
                let bank = prod(&[8, n, h.saturating_add(w)]);
                let products = if write {
                    prod(&[2, c, n])
                        .saturating_mul(m(n, w).saturating_add(m(h, w)))
                        .saturating_add(prod(&[c, h, w]))
                } else {
                    prod(&[2, c, n])
                        .saturating_mul(m(h, w).saturating_add(m(n, w)))
                        .saturating_add(prod(&[c, n, n]))
                };
                bank.saturating_add(products)
            }
        }
    }

    /// Scalars of output kept for backward.
    pub fn activations(&self) -> u64 {
        match *self {
            LayerKind::Dense { out, .. } => out as u64,
            LayerKind::Norm { width, .. } => width as u64,
            LayerKind::Conv2d { c_out, out_hw, .. }
            | LayerKind::ConvTranspose2d { c_out, out_hw, .. } => {
                prod(&[c_out, out_hw[0], out_hw[1]])
            }
            LayerKind::GruCell { hidden, .. } | LayerKind::LstmCell { hidden, .. } => m(7, hidden),
            LayerKind::Filterbank {
                channels: c,
                height: h,
                width: w,
                grid: n,
                write,
            } => {
                let bank = m(n, h.saturating_add(w));
                let rest = if write {
                    prod(&[c, h, n]).saturating_add(prod(&[c, h, w]))
                } else {
                    prod(&[c, n, w]).saturating_add(prod(&[c, n, n]))
                };
                bank.saturating_add(rest)
            }
        }
    }

    /// Whether the layer's FLOPs double under Bayesian / vdrop weights.
    fn has_weights(&self) -> bool {
        self.weights() > 0
    }
}

/// The layers of one network (one copy of its weights).
pub fn layers(net: &NetDef) -> Vec<Layer> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<Layer>, name: String, kind: LayerKind| {
        out.push(Layer {
            name,
            kind,
            per_set_member: false,
        })
    };
    let dense_in: usize = net
        .inputs
        .iter()
        .map(|i| i.ty.dense_width())
        .fold(0, usize::saturating_add);
    let dense_rest = |skip: usize| -> usize {
        net.inputs
            .iter()
            .skip(skip)
            .map(|i| i.ty.dense_width())
            .fold(0, usize::saturating_add)
    };
    let out_width: usize = net
        .heads
        .iter()
        .map(|h| h.ty.numel())
        .fold(0, usize::saturating_add);
    match &net.arch {
        Arch::Linear { bias } => push(
            &mut out,
            "layer0".into(),
            LayerKind::Dense {
                inp: dense_in,
                out: out_width,
                bias: *bias,
            },
        ),
        Arch::Mlp { hidden, norm, .. } => {
            dense_stack(&mut out, "layer", dense_in, hidden, out_width, *norm, 0);
        }
        Arch::Made { hidden, .. } => {
            let z = net.inputs.first().map(|i| i.ty.numel()).unwrap_or(0);
            let ctx = dense_rest(1);
            let outw = z.saturating_mul(net.heads.len());
            dense_stack(
                &mut out,
                "layer",
                z.saturating_add(ctx),
                hidden,
                outw,
                Norm::None,
                0,
            );
        }
        Arch::Conv {
            channels,
            kernel,
            stride,
            hidden,
            ..
        } => {
            let (c, h, w) = net
                .inputs
                .first()
                .map(|i| image_chw(&i.ty))
                .unwrap_or((0, 0, 0));
            let (k, s) = (*kernel, (*stride).max(1));
            let p = k.saturating_sub(1) / 2;
            let (mut c_in, mut hw) = (c, [h, w]);
            for (i, &c_out) in channels.iter().enumerate() {
                let side = |x: usize| {
                    let padded = x.saturating_add(2 * p);
                    if padded < k {
                        0
                    } else {
                        (padded - k) / s + 1
                    }
                };
                let out_hw = [side(hw[0]), side(hw[1])];
                push(
                    &mut out,
                    format!("conv{i}"),
                    LayerKind::Conv2d {
                        c_in,
                        c_out,
                        kernel: k,
                        stride: s,
                        padding: p,
                        in_hw: hw,
                        out_hw,
                    },
                );
                c_in = c_out;
                hw = out_hw;
            }
            let flat = c_in
                .saturating_mul(hw[0])
                .saturating_mul(hw[1])
                .saturating_add(dense_rest(1));
            dense_stack(&mut out, "layer", flat, hidden, out_width, Norm::None, 0);
        }
        Arch::Deconv {
            channels,
            kernel,
            stride,
            hidden,
            ..
        } => {
            let (c, h, w) = net
                .heads
                .first()
                .map(|hd| image_chw(&hd.ty))
                .unwrap_or((0, 0, 0));
            let (k, s) = (*kernel, (*stride).max(1));
            let p = k.saturating_sub(s) / 2;
            let n = channels.len();
            let scale = u32::try_from(n)
                .ok()
                .and_then(|n| s.checked_pow(n))
                .unwrap_or(usize::MAX);
            let (h0, w0) = (h / scale, w / scale);
            match channels.first() {
                None => {
                    let full = c.saturating_mul(h).saturating_mul(w);
                    dense_stack(&mut out, "layer", dense_in, hidden, full, Norm::None, 0)
                }
                Some(&c0) => {
                    let seed = c0.saturating_mul(h0).saturating_mul(w0);
                    dense_stack(&mut out, "layer", dense_in, hidden, seed, Norm::None, 0);
                    let mut hw = [h0, w0];
                    for i in 0..n {
                        let c_in = channels[i];
                        let c_out = channels.get(i + 1).copied().unwrap_or(c);
                        let side = |x: usize| {
                            x.saturating_sub(1)
                                .saturating_mul(s)
                                .saturating_add(k)
                                .saturating_sub(2 * p)
                        };
                        let out_hw = [side(hw[0]), side(hw[1])];
                        push(
                            &mut out,
                            format!("deconv{i}"),
                            LayerKind::ConvTranspose2d {
                                c_in,
                                c_out,
                                kernel: k,
                                stride: s,
                                padding: p,
                                in_hw: hw,
                                out_hw,
                            },
                        );
                        hw = out_hw;
                    }
                }
            }
        }
        Arch::Gru => {
            let hidden = net.inputs.first().map(|i| i.ty.numel()).unwrap_or(0);
            push(
                &mut out,
                "cell".into(),
                LayerKind::GruCell {
                    input: dense_rest(1),
                    hidden,
                },
            );
        }
        Arch::Lstm => {
            let hidden = net.inputs.first().map(|i| i.ty.numel()).unwrap_or(0);
            push(
                &mut out,
                "cell".into(),
                LayerKind::LstmCell {
                    input: dense_rest(2),
                    hidden,
                },
            );
        }
        Arch::DeepSets { phi, rho, .. } => {
            let member = net.inputs.first().map(|i| i.ty.dense_width()).unwrap_or(0);
            let mut width = member;
            for (i, &wd) in phi.iter().enumerate() {
                out.push(Layer {
                    name: format!("phi{i}"),
                    kind: LayerKind::Dense {
                        inp: width,
                        out: wd,
                        bias: true,
                    },
                    per_set_member: true,
                });
                width = wd;
            }
            width = width.saturating_add(dense_rest(1));
            for (i, &wd) in rho.iter().enumerate() {
                push(
                    &mut out,
                    format!("rho{i}"),
                    LayerKind::Dense {
                        inp: width,
                        out: wd,
                        bias: true,
                    },
                );
                width = wd;
            }
            push(
                &mut out,
                "out".into(),
                LayerKind::Dense {
                    inp: width,
                    out: out_width,
                    bias: true,
                },
            );
        }
        Arch::AttendRead { grid } => {
            let img = net
                .inputs
                .iter()
                .position(|i| i.ty.shape.len() == 3)
                .unwrap_or(0);
            let (c, h, w) = net
                .inputs
                .get(img)
                .map(|i| image_chw(&i.ty))
                .unwrap_or((0, 0, 0));
            let state: usize = net
                .inputs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != img)
                .map(|(_, i)| i.ty.dense_width())
                .fold(0, usize::saturating_add);
            push(
                &mut out,
                "params".into(),
                LayerKind::Dense {
                    inp: state,
                    out: 5,
                    bias: true,
                },
            );
            push(
                &mut out,
                "filterbank".into(),
                LayerKind::Filterbank {
                    channels: c,
                    height: h,
                    width: w,
                    grid: *grid,
                    write: false,
                },
            );
        }
        Arch::AttendWrite { grid } => {
            let (c, h, w) = net
                .heads
                .first()
                .map(|hd| image_chw(&hd.ty))
                .unwrap_or((0, 0, 0));
            let n = *grid;
            push(
                &mut out,
                "params".into(),
                LayerKind::Dense {
                    inp: dense_in,
                    out: 5,
                    bias: true,
                },
            );
            push(
                &mut out,
                "patch".into(),
                LayerKind::Dense {
                    inp: dense_in,
                    out: c.saturating_mul(n).saturating_mul(n),
                    bias: true,
                },
            );
            push(
                &mut out,
                "filterbank".into(),
                LayerKind::Filterbank {
                    channels: c,
                    height: h,
                    width: w,
                    grid: n,
                    write: true,
                },
            );
        }
    }
    out
}

/// Dense layers `inp → hidden[0] → … → out`, named `{prefix}{i}` from `first`, each with
/// bias, with a norm after every hidden layer when asked.
fn dense_stack(
    out: &mut Vec<Layer>,
    prefix: &str,
    inp: usize,
    hidden: &[usize],
    last: usize,
    norm: Norm,
    first: usize,
) {
    let mut width = inp;
    for (i, &h) in hidden.iter().chain(std::iter::once(&last)).enumerate() {
        out.push(Layer {
            name: format!("{prefix}{}", first + i),
            kind: LayerKind::Dense {
                inp: width,
                out: h,
                bias: true,
            },
            per_set_member: false,
        });
        if i < hidden.len() && norm != Norm::None {
            out.push(Layer {
                name: format!("norm{}", first + i),
                kind: LayerKind::Norm {
                    width: h,
                    kind: norm,
                },
                per_set_member: false,
            });
        }
        width = h;
    }
}

/// `[C, H, W]` of an image type; `[H, W]` is one channel; anything else a `[1, numel, 1]` column.
pub fn image_chw(ty: &Type) -> (usize, usize, usize) {
    match ty.shape.as_slice() {
        [c, h, w] => (*c, *h, *w),
        [h, w] => (1, *h, *w),
        _ => (1, ty.numel(), 1),
    }
}

/// Learned scalars of one network (one copy: `@per_member` and `iaf` steps are counted
/// by [`copies`]).
pub fn param_count(net: &NetDef) -> u64 {
    layers(net).iter().fold(0u64, |acc, l| {
        acc.saturating_add(l.kind.param_count(&net.weights))
    })
}

/// The cost of one forward call of a network on one example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCost {
    pub flops: u64,
    /// f32 bytes of activations kept for backward.
    pub bytes: u64,
}

/// FLOPs and activation memory of one call on one example; `set_size` is the size of
/// the context set a `deepsets` network is called on (1 otherwise).
pub fn call_cost(net: &NetDef, set_size: usize) -> CallCost {
    let stochastic = !matches!(net.weights, Weights::Point);
    let mut cost = CallCost::default();
    for l in layers(net) {
        let reps = if l.per_set_member {
            set_size.max(1) as u64
        } else {
            1
        };
        let mut flops = l.kind.flops();
        if stochastic && l.kind.has_weights() {
            flops = flops.saturating_mul(2);
        }
        cost.flops = cost.flops.saturating_add(flops.saturating_mul(reps));
        cost.bytes = cost
            .bytes
            .saturating_add(l.kind.activations().saturating_mul(reps).saturating_mul(4));
    }
    cost
}

/// How many copies of a network's weights exist (their checkpoint names: see
/// `lower::nets::CopyKey`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copies {
    /// Σ `steps` over the `iaf` flows that name the network (1 when none does): each flow
    /// step has its own copy, numbered in program order (model, then guide).
    pub iaf: u64,
    /// Whether a flow names the network (its copies are per step, even for one step, and
    /// none for `steps = 0`).
    #[serde(default)]
    pub flow: bool,
    /// `@per_member`: the number of training members of the `meta` family (one copy
    /// each); `None` when it is only known from the data (`classes()`), in which case one
    /// copy is counted.
    pub members: Option<u64>,
    pub per_member: bool,
}

impl Copies {
    pub fn total(&self) -> u64 {
        let members = if self.per_member {
            self.members.unwrap_or(1)
        } else {
            1
        };
        // A network only flows name has one copy per step (none for `steps = 0`).
        let steps = if self.flow { self.iaf } else { 1 };
        steps.saturating_mul(members)
    }
}

/// Copies of network `id`'s weights in `program`.
pub fn copies(program: &Program, id: NetId) -> Copies {
    let (mut iaf, mut flow) = (0u64, false);
    visit_sites(program, |site, _| {
        for (net, steps, _) in walk::flow_nets(site) {
            if net == id {
                iaf = iaf.saturating_add(steps as u64);
                flow = true;
            }
        }
    });
    let per_member = program.nets.get(id).is_some_and(|n| n.per_member);
    Copies {
        iaf: if flow { iaf } else { 1 },
        flow,
        members: training_members(program).map(|m| m.len() as u64),
        per_member,
    }
}

/// The indices of the `meta` family's training members, when they are known without data
/// (the family's size is, or `train` lists them).
pub fn training_members(program: &Program) -> Option<Vec<usize>> {
    let meta = program.meta.as_ref()?;
    match (&meta.train, meta.family.size()) {
        // A list names its members whatever the family's size (`classes()`: the data's).
        (crate::ir::Members::List(v), _) => Some(v.clone()),
        (m, Some(n)) => Some(m.resolve(n)),
        (_, None) => None,
    }
}

/// Every learned scalar of the program: networks with their copies, plus `param`s.
pub fn total_params(program: &Program) -> u64 {
    let nets = (0..program.nets.len()).fold(0u64, |acc, id| {
        acc.saturating_add(
            param_count(&program.nets[id]).saturating_mul(copies(program, id).total()),
        )
    });
    program
        .params
        .iter()
        .fold(nets, |acc, p| acc.saturating_add(p.ty.numel() as u64))
}

// ---------------------------------------------------------------------------------
// Walking statements

/// The number of steps of a loop.
pub fn loop_len(l: &LoopDef) -> u64 {
    if l.to >= l.from {
        (l.to - l.from + 1) as u64
    } else {
        0
    }
}

/// Visit every sample site of `model` and then of an amortized guide, with its scope.
pub fn visit_sites<'ir>(program: &'ir Program, mut f: impl FnMut(&'ir Site, &walk::Scope<'ir>)) {
    walk::for_each_site(&program.model, &mut f);
    if let Guide::Amortized(body) = &program.guide {
        walk::for_each_site(body, &mut f);
    }
}

// ---------------------------------------------------------------------------------
// Enumeration sizes

/// A count that may be astronomically large: exact while it fits in a `u64`, and its
/// base-10 logarithm always.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cardinality {
    pub exact: Option<u64>,
    pub log10: f64,
}

impl Cardinality {
    pub const ONE: Cardinality = Cardinality {
        exact: Some(1),
        log10: 0.0,
    };

    pub fn of(n: u64) -> Cardinality {
        Cardinality {
            exact: Some(n),
            // log10(0) would be -inf, which JSON cannot hold; an empty support is harmless.
            log10: if n == 0 {
                0.0
            } else {
                round9((n as f64).log10())
            },
        }
    }

    pub fn times(self, other: Cardinality) -> Cardinality {
        Cardinality {
            exact: self
                .exact
                .zip(other.exact)
                .and_then(|(a, b)| a.checked_mul(b)),
            log10: round9(self.log10 + other.log10),
        }
    }

    /// `self ^ n`.
    pub fn pow(self, n: u64) -> Cardinality {
        let exact = self.exact.and_then(|b| {
            let e = u32::try_from(n).ok()?;
            b.checked_pow(e)
        });
        Cardinality {
            exact,
            log10: round9(self.log10 * n as f64),
        }
    }

    pub fn exceeds(self, limit: u64) -> bool {
        match self.exact {
            Some(n) => n > limit,
            None => true,
        }
    }

    /// The exact number, or `about 1.2e236`.
    pub fn describe(self) -> String {
        match self.exact {
            Some(n) => n.to_string(),
            None => {
                let e = self.log10.floor();
                let mant = 10f64.powf(self.log10 - e);
                format!("about {mant:.1}e{e}")
            }
        }
    }
}

/// Logarithms are kept to 9 decimals, so that plans print and read back (RON) exactly.
fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// The number of values a discrete value of type `ty` can take: `K^n` for `Cat(K)` of
/// numel n, `2^n` for `Binary`; `None` for continuous or unbounded (`Count`) domains.
pub fn support_size(ty: &Type) -> Option<Cardinality> {
    let n = ty.numel() as u64;
    let base = match ty.domain {
        Domain::Cat(k) => k as u64,
        Domain::Binary => 2,
        _ => return None,
    };
    Some(Cardinality::of(base).pow(n))
}

/// The support size a guide site enumerates per draw (one step of a stepped site).
pub fn site_support(site: &Site) -> Option<Cardinality> {
    support_size(&site.ty).or_else(|| support_size(&site.dist.support))
}

// ---------------------------------------------------------------------------------
// E017

/// E017: enumeration over more than 1024 joint values, more than 1e9 parameters.
pub fn check_costs(program: &Program) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    check_enumeration(program, &mut diags);
    check_params(program, &mut diags);
    diags
}

fn check_enumeration(program: &Program, diags: &mut Vec<Diagnostic>) {
    // (span, contribution) of every enumerated site, in program order.
    let mut parts: Vec<(Span, String, Cardinality)> = Vec::new();
    match &program.guide {
        Guide::Amortized(body) => walk::for_each_site(body, |site, scope| {
            if site.strategy != Some(Strategy::Enumerate) {
                return;
            }
            if let Some(card) = site_support(site) {
                let steps = scope.iterations();
                parts.push((site.span, site_name(program, site), card.pow(steps)));
            }
        }),
        Guide::Exact { posterior, .. } => {
            use crate::ir::ExactPosterior::*;
            if matches!(posterior, Enumerate | EnumerateLinearGaussian) {
                for (id, lat) in program.latents.iter().enumerate() {
                    if let Some(card) = support_size(&lat.ty) {
                        let span = model_site_span(program, id).unwrap_or(lat.span);
                        parts.push((span, lat.name.clone(), card));
                    }
                }
            }
        }
        Guide::None => {}
    }
    let mut joint = Cardinality::ONE;
    let mut culprit: Option<usize> = None;
    for (i, (_, _, c)) in parts.iter().enumerate() {
        joint = joint.times(*c);
        if culprit.is_none() && joint.exceeds(MAX_ENUMERATION) {
            culprit = Some(i);
        }
    }
    let Some(i) = culprit else { return };
    let (span, name, own) = &parts[i];
    let exact = matches!(program.guide, Guide::Exact { .. });
    let msg = format!(
        "enumerating `{name}`{} covers {} joint values, more than the limit of {MAX_ENUMERATION}",
        if parts.len() > 1 {
            " together with the other enumerated sites"
        } else {
            ""
        },
        joint.describe()
    );
    let hint = if exact {
        "write an amortized `guide` whose discrete sites use `@relax(temperature = 0.5)` or `@reinforce`, or use fewer or smaller discrete latents"
    } else {
        "use `@relax(temperature = 0.5)` or `@reinforce` on this site instead of enumerating it"
    };
    let mut d = Diagnostic::new(Code::E017, *span, msg)
        .with_label(format!("{} values here", own.describe()))
        .with_hint(hint);
    for (j, (s, _, c)) in parts.iter().enumerate() {
        if j != i {
            d = d.with_secondary(*s, format!("also enumerated: {} values", c.describe()));
        }
    }
    diags.push(d);
}

fn check_params(program: &Program, diags: &mut Vec<Diagnostic>) {
    let total = total_params(program);
    if total <= MAX_PARAMS {
        return;
    }
    // Point at the largest contributor.
    let mut best: Option<(u64, Span, String)> = None;
    for (id, net) in program.nets.iter().enumerate() {
        let n = param_count(net).saturating_mul(copies(program, id).total());
        if best.as_ref().is_none_or(|b| n > b.0) {
            best = Some((n, net.span, format!("network `{}`", net.name)));
        }
    }
    for p in &program.params {
        let n = p.ty.numel() as u64;
        if best.as_ref().is_none_or(|b| n > b.0) {
            best = Some((n, p.span, format!("param `{}`", p.name)));
        }
    }
    let (n, span, what) = best.unwrap_or((total, Span::Artificial, "the spec".into()));
    let unknown_members = program.nets.iter().any(|n| {
        n.per_member
            && program
                .meta
                .as_ref()
                .is_none_or(|mc| mc.family.size().is_none())
    });
    let mut msg = format!(
        "the spec has an estimated {total} learned parameters, more than the limit of {MAX_PARAMS}; {what} alone has {n}"
    );
    if unknown_members {
        msg.push_str(
            " (`@per_member` networks counted once: the member count is known only from the data)",
        );
    }
    diags.push(
        Diagnostic::new(Code::E017, span, msg)
            .with_label(format!("{n} parameters"))
            .with_hint("use a smaller `hidden` (or fewer channels, flow steps or members)"),
    );
}

/// The name a site samples or observes.
pub fn site_name(program: &Program, site: &Site) -> String {
    match site.var {
        SiteVar::Latent(id) => program
            .latents
            .get(id)
            .map(|l| l.name.clone())
            .unwrap_or_default(),
        SiteVar::Data(id) => program
            .data
            .get(id)
            .map(|d| d.name.clone())
            .unwrap_or_default(),
    }
}

fn model_site_span(program: &Program, latent: usize) -> Option<Span> {
    let mut span = None;
    walk::for_each_site(&program.model, |site, _| {
        if span.is_none() && site.var == SiteVar::Latent(latent) {
            span = Some(site.span);
        }
    });
    span
}

/// The size of the context set an argument expression refers to (1 when it is not a set).
pub fn set_size_of(program: &Program, arg: &crate::ir::Expr) -> usize {
    match &arg.kind {
        ExprKind::Ref(crate::ir::Ref::Set(s)) => program.sets.get(*s).map(|s| s.size).unwrap_or(1),
        _ => 1,
    }
}

/// Test-only builders for IR programs, shared by the tests of `arch`, `plan` and `dot`.
#[cfg(test)]
pub(crate) mod testkit {
    #![allow(dead_code)]
    use crate::ir::*;
    use crate::span::Span;

    pub fn ty(domain: Domain, shape: &[usize]) -> Type {
        Type::new(domain, shape.to_vec())
    }
    pub fn real(shape: &[usize]) -> Type {
        ty(Domain::Real, shape)
    }
    pub fn pos(shape: &[usize]) -> Type {
        ty(Domain::Positive, shape)
    }
    pub fn binary(shape: &[usize]) -> Type {
        ty(Domain::Binary, shape)
    }
    pub fn cat(k: usize, shape: &[usize]) -> Type {
        ty(Domain::Cat(k), shape)
    }

    pub fn mlp(hidden: &[usize]) -> Arch {
        Arch::Mlp {
            hidden: hidden.to_vec(),
            act: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None,
        }
    }

    pub fn num(x: f64) -> Expr {
        Expr {
            kind: ExprKind::Number(x),
            ty: real(&[]),
            span: Span::Artificial,
        }
    }
    pub fn reference(r: Ref, t: Type) -> Expr {
        Expr {
            kind: ExprKind::Ref(r),
            ty: t,
            span: Span::Artificial,
        }
    }
    pub fn call(net: NetId, args: Vec<Expr>, head: Option<usize>, t: Type) -> Expr {
        Expr {
            kind: ExprKind::NetCall { net, args, head },
            ty: t,
            span: Span::Artificial,
        }
    }
    pub fn dist(kind: DistKind, args: Vec<(DistParam, Expr)>, support: Type) -> Dist {
        Dist {
            kind,
            args,
            component: None,
            support,
            span: Span::Artificial,
        }
    }
    pub fn normal(loc: Expr, scale: Expr, t: Type) -> Dist {
        dist(
            DistKind::Normal,
            vec![(DistParam::Loc, loc), (DistParam::Scale, scale)],
            t,
        )
    }
    pub fn sample(var: SiteVar, t: Type, d: Dist, strategy: Option<Strategy>, at: u32) -> Stmt {
        Stmt::Sample(Site {
            var,
            step: None,
            ty: t,
            dist: d,
            flows: Vec::new(),
            strategy,
            span: Span::Src(at, at + 1),
        })
    }
    pub fn let1(local: LocalId, value: Expr) -> Stmt {
        Stmt::Let {
            targets: vec![LetTarget {
                local,
                step: None,
                head: None,
                span: Span::Artificial,
            }],
            value,
            span: Span::Artificial,
        }
    }
    pub fn let_heads(locals: &[LocalId], value: Expr) -> Stmt {
        Stmt::Let {
            targets: locals
                .iter()
                .enumerate()
                .map(|(i, &local)| LetTarget {
                    local,
                    step: None,
                    head: Some(i),
                    span: Span::Artificial,
                })
                .collect(),
            value,
            span: Span::Artificial,
        }
    }
    pub fn local(name: &str, t: Type) -> Local {
        Local {
            name: name.into(),
            ty: t,
            steps: None,
            span: Span::Artificial,
        }
    }
    pub fn body(stmts: Vec<Stmt>, locals: Vec<Local>) -> Body {
        Body {
            stmts,
            locals,
            loops: Vec::new(),
            span: Span::Artificial,
        }
    }

    /// A program under construction.
    pub struct P(pub Program);

    impl P {
        pub fn new() -> P {
            P(Program {
                consts: Vec::new(),
                data: Vec::new(),
                latents: Vec::new(),
                params: Vec::new(),
                nets: Vec::new(),
                sets: Vec::new(),
                model: body(Vec::new(), Vec::new()),
                guide: Guide::None,
                train: TrainConfig::default(),
                meta: None,
            })
        }
        pub fn data(&mut self, name: &str, t: Type, role: DataRole) -> DataId {
            self.0.data.push(DataDef {
                name: name.into(),
                ty: t,
                role,
                span: Span::Artificial,
            });
            self.0.data.len() - 1
        }
        pub fn latent(&mut self, name: &str, t: Type, global: bool) -> LatentId {
            self.0.latents.push(LatentDef {
                name: name.into(),
                ty: t,
                global,
                span: Span::Artificial,
            });
            self.0.latents.len() - 1
        }
        pub fn param(&mut self, name: &str, t: Type) -> ParamId {
            self.0.params.push(ParamDef {
                name: name.into(),
                ty: t,
                init: Init::Zeros,
                span: Span::Artificial,
            });
            self.0.params.len() - 1
        }
        pub fn set(&mut self, name: &str, t: Type, size: usize) -> SetId {
            self.0.sets.push(SetDef {
                name: name.into(),
                ty: t,
                size,
                span: Span::Artificial,
            });
            self.0.sets.len() - 1
        }
        pub fn net(
            &mut self,
            name: &str,
            inputs: &[(&str, Type)],
            heads: &[(&str, Type)],
            arch: Arch,
        ) -> NetId {
            self.0.nets.push(net(name, inputs, heads, arch));
            self.0.nets.len() - 1
        }
    }

    /// A network definition with point weights; a head `Positive` gets softplus.
    pub fn net(name: &str, inputs: &[(&str, Type)], heads: &[(&str, Type)], arch: Arch) -> NetDef {
        NetDef {
            name: name.into(),
            inputs: inputs
                .iter()
                .map(|(n, t)| NetInput {
                    name: (*n).into(),
                    ty: t.clone(),
                    set: false,
                    span: Span::Artificial,
                })
                .collect(),
            heads: heads
                .iter()
                .map(|(n, t)| Head {
                    name: (*n).into(),
                    ty: t.clone(),
                    activation: match t.domain {
                        Domain::Positive => HeadActivation::Softplus,
                        _ => HeadActivation::None,
                    },
                    span: Span::Artificial,
                })
                .collect(),
            single_output: heads.len() == 1,
            arch,
            weights: Weights::Point,
            per_member: false,
            span: Span::Src(900, 901),
        }
    }

    /// The VAE of LANGUAGE.md section 1 (D = 784, Z = 32, H = 512).
    pub fn vae() -> Program {
        let mut p = P::new();
        let x = p.data("x", binary(&[784]), DataRole::Observed);
        let z = p.latent("z", real(&[32]), false);
        let enc = p.net(
            "encoder",
            &[("x", binary(&[784]))],
            &[("loc", real(&[32])), ("scale", pos(&[32]))],
            mlp(&[512, 512]),
        );
        let dec = p.net(
            "decoder",
            &[("z", real(&[32]))],
            &[("decoder", real(&[784]))],
            mlp(&[512, 512]),
        );
        p.0.model = body(
            vec![
                sample(
                    SiteVar::Latent(z),
                    real(&[32]),
                    normal(num(0.0), num(1.0), real(&[32])),
                    None,
                    10,
                ),
                sample(
                    SiteVar::Data(x),
                    binary(&[784]),
                    dist(
                        DistKind::Bernoulli,
                        vec![(
                            DistParam::Logits,
                            call(
                                dec,
                                vec![reference(Ref::Latent(z), real(&[32]))],
                                Some(0),
                                real(&[784]),
                            ),
                        )],
                        binary(&[784]),
                    ),
                    None,
                    20,
                ),
            ],
            Vec::new(),
        );
        p.0.guide = Guide::Amortized(body(
            vec![
                let_heads(
                    &[0, 1],
                    call(
                        enc,
                        vec![reference(Ref::Data(x), binary(&[784]))],
                        None,
                        real(&[64]),
                    ),
                ),
                sample(
                    SiteVar::Latent(z),
                    real(&[32]),
                    normal(
                        reference(Ref::Local(0), real(&[32])),
                        reference(Ref::Local(1), pos(&[32])),
                        real(&[32]),
                    ),
                    Some(Strategy::Reparameterized),
                    30,
                ),
            ],
            vec![local("loc", real(&[32])), local("scale", pos(&[32]))],
        ));
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::ir::*;

    fn count(inputs: &[(&str, Type)], heads: &[(&str, Type)], arch: Arch) -> u64 {
        param_count(&net("n", inputs, heads, arch))
    }

    #[test]
    fn mlp_vae_encoder_by_hand() {
        let n = count(
            &[("x", binary(&[784]))],
            &[("loc", real(&[32])), ("scale", pos(&[32]))],
            mlp(&[512, 512]),
        );
        assert_eq!(n, 784 * 512 + 512 + 512 * 512 + 512 + 512 * 64 + 64);
    }

    #[test]
    fn cat_inputs_are_one_hot() {
        // M2's encoder: x (784) and y one-hot (10).
        let n = count(
            &[("x", binary(&[784])), ("y", cat(10, &[]))],
            &[("o", real(&[5]))],
            Arch::Linear { bias: true },
        );
        assert_eq!(n, 794 * 5 + 5);
    }

    #[test]
    fn linear_bias_and_norm() {
        let a = [("x", real(&[10]))];
        let h = [("y", real(&[5]))];
        assert_eq!(count(&a, &h, Arch::Linear { bias: false }), 50);
        assert_eq!(count(&a, &h, Arch::Linear { bias: true }), 55);
        let normed = Arch::Mlp {
            hidden: vec![100],
            act: Activation::Tanh,
            dropout: 0.5,
            norm: Norm::Layer,
        };
        let h2 = [("y", real(&[2]))];
        assert_eq!(
            count(&a, &h2, normed),
            (10 * 100 + 100) + 2 * 100 + (100 * 2 + 2)
        );
    }

    #[test]
    fn conv_shapes_and_counts() {
        let n = net(
            "enc",
            &[("img", binary(&[1, 28, 28])), ("y", cat(10, &[]))],
            &[("loc", real(&[16])), ("scale", pos(&[16]))],
            Arch::Conv {
                channels: vec![32, 64],
                kernel: 3,
                stride: 2,
                act: Activation::Relu,
                hidden: vec![256],
            },
        );
        let ls = layers(&n);
        // floor((28 + 2 - 3) / 2) + 1 = 14, then floor((14 + 2 - 3) / 2) + 1 = 7.
        match &ls[0].kind {
            LayerKind::Conv2d {
                padding, out_hw, ..
            } => {
                assert_eq!(*padding, 1);
                assert_eq!(*out_hw, [14, 14]);
            }
            k => panic!("{k:?}"),
        }
        match &ls[1].kind {
            LayerKind::Conv2d { out_hw, .. } => assert_eq!(*out_hw, [7, 7]),
            k => panic!("{k:?}"),
        }
        // Flattened 64 * 7 * 7 = 3136, plus the one-hot label.
        assert_eq!(
            ls[2].kind,
            LayerKind::Dense {
                inp: 3146,
                out: 256,
                bias: true
            }
        );
        assert_eq!(
            param_count(&n),
            (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3146 * 256 + 256) + (256 * 32 + 32)
        );
        // 2 k² c_in c_out H_out W_out for the first convolution.
        assert_eq!(ls[0].kind.flops(), 2 * 9 * 32 * 14 * 14);
    }

    #[test]
    fn deconv_shapes_and_counts() {
        let n = net(
            "dec",
            &[("z", real(&[16]))],
            &[("img", real(&[1, 28, 28]))],
            Arch::Deconv {
                channels: vec![64, 32],
                kernel: 4,
                stride: 2,
                act: Activation::Relu,
                hidden: vec![],
            },
        );
        let ls = layers(&n);
        // 28 / 2² = 7: a dense layer to 64 * 7 * 7, then 7 → 14 → 28.
        assert_eq!(
            ls[0].kind,
            LayerKind::Dense {
                inp: 16,
                out: 3136,
                bias: true
            }
        );
        match (&ls[1].kind, &ls[2].kind) {
            (
                LayerKind::ConvTranspose2d {
                    c_in: 64,
                    c_out: 32,
                    padding: 1,
                    out_hw: a,
                    ..
                },
                LayerKind::ConvTranspose2d {
                    c_in: 32,
                    c_out: 1,
                    out_hw: b,
                    ..
                },
            ) => {
                assert_eq!(*a, [14, 14]);
                assert_eq!(*b, [28, 28]);
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(
            param_count(&n),
            (16 * 3136 + 3136) + (16 * 64 * 32 + 32) + (16 * 32 + 1)
        );
    }

    #[test]
    fn gru_and_lstm_match_pytorch() {
        let (i, h) = (20u64, 64u64);
        let gru = count(
            &[("h", real(&[64])), ("x", real(&[12])), ("z", real(&[8]))],
            &[("h", real(&[64]))],
            Arch::Gru,
        );
        // torch.nn.GRUCell(I, H): weight_ih 3H×I, weight_hh 3H×H, two 3H biases.
        assert_eq!(gru, 3 * h * (i + h) + 6 * h);
        assert_eq!(gru, 16512);
        let lstm = count(
            &[("h", real(&[64])), ("c", real(&[64])), ("x", real(&[20]))],
            &[("h", real(&[64])), ("c", real(&[64]))],
            Arch::Lstm,
        );
        assert_eq!(lstm, 4 * h * (i + h) + 8 * h);
    }

    #[test]
    fn made_counts_like_an_mlp() {
        let n = count(
            &[("z", real(&[8])), ("h", real(&[4]))],
            &[("m", real(&[8])), ("s", real(&[8]))],
            Arch::Made {
                hidden: vec![320, 320],
                act: Activation::Elu,
            },
        );
        assert_eq!(n, (12 * 320 + 320) + (320 * 320 + 320) + (320 * 16 + 16));
    }

    #[test]
    fn deepsets_counts_and_set_cost() {
        let mut n = net(
            "summary",
            &[("S", binary(&[784]))],
            &[("s", real(&[64]))],
            Arch::DeepSets {
                phi: vec![128, 128],
                rho: vec![],
                pool: Pool::Mean,
                act: Activation::LeakyRelu,
            },
        );
        n.inputs[0].set = true;
        assert_eq!(
            param_count(&n),
            (784 * 128 + 128) + (128 * 128 + 128) + (128 * 64 + 64)
        );
        let c = call_cost(&n, 10);
        assert_eq!(c.flops, 2 * (784 * 128 + 128 * 128) * 10 + 2 * 128 * 64);
        assert_eq!(c.bytes, 4 * ((128 + 128) * 10 + 64));
    }

    #[test]
    fn attention_counts_and_flops() {
        let read = net(
            "read",
            &[("img", real(&[2, 28, 28])), ("h", real(&[256]))],
            &[("r", real(&[50]))],
            Arch::AttendRead { grid: 5 },
        );
        assert_eq!(param_count(&read), 256 * 5 + 5);
        let (c, n, h, w) = (2u64, 5u64, 28u64, 28u64);
        let expect = 2 * 256 * 5 + 8 * n * (h + w) + 2 * c * n * (h * w + n * w) + c * n * n;
        assert_eq!(call_cost(&read, 1).flops, expect);
        let write = net(
            "write",
            &[("h", real(&[256]))],
            &[("img", real(&[1, 28, 28]))],
            Arch::AttendWrite { grid: 5 },
        );
        assert_eq!(param_count(&write), (256 * 5 + 5) + (256 * 25 + 25));
    }

    #[test]
    fn weight_posteriors() {
        let mut n = net(
            "clf",
            &[("x", real(&[10]))],
            &[("y", real(&[5]))],
            Arch::Linear { bias: true },
        );
        n.weights = Weights::Bayes { prior_scale: 1.0 };
        assert_eq!(param_count(&n), 2 * 55);
        n.weights = Weights::Vdrop {
            kind: VdropKind::B,
            kl: crate::ir::VdropKl::Molchanov,
        };
        assert_eq!(param_count(&n), 55 + 50);
        n.weights = Weights::Vdrop {
            kind: VdropKind::A,
            kl: crate::ir::VdropKl::Molchanov,
        };
        assert_eq!(param_count(&n), 55 + 5);
        assert_eq!(call_cost(&n, 1).flops, 2 * (2 * 10 * 5));
    }

    fn enumerated_guide(t: Type, loop_steps: Option<usize>) -> Program {
        let mut p = P::new();
        let y = p.latent("y", t.clone(), false);
        let k = match t.domain {
            Domain::Cat(k) => k,
            _ => 2,
        };
        let d = dist(
            DistKind::Categorical,
            vec![(DistParam::Logits, num(0.0))],
            t.clone(),
        );
        let _ = k;
        let site = sample(SiteVar::Latent(y), t, d, Some(Strategy::Enumerate), 40);
        let mut b = body(vec![], vec![]);
        match loop_steps {
            None => b.stmts.push(site),
            Some(n) => {
                b.loops.push(LoopDef {
                    var: "t".into(),
                    from: 1,
                    to: n,
                    span: Span::Artificial,
                });
                b.stmts.push(Stmt::Loop {
                    loop_id: 0,
                    body: vec![site],
                    span: Span::Artificial,
                });
            }
        }
        p.0.guide = Guide::Amortized(b);
        p.0
    }

    #[test]
    fn e017_enumeration() {
        let d = check_costs(&enumerated_guide(cat(10, &[4]), None));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].code, Code::E017);
        assert_eq!(d[0].span, Span::Src(40, 41));
        assert!(d[0].message.contains("10000"), "{}", d[0].message);
        assert!(d[0].hint.as_deref().unwrap_or("").contains("@relax"));
        assert!(check_costs(&enumerated_guide(cat(10, &[]), None)).is_empty());
        // 4 values per step: 4^5 = 1024 is the limit, 4^6 is past it.
        assert!(check_costs(&enumerated_guide(cat(4, &[]), Some(5))).is_empty());
        assert_eq!(
            check_costs(&enumerated_guide(cat(4, &[]), Some(6))).len(),
            1
        );
    }

    #[test]
    fn e017_huge_enumeration_does_not_overflow() {
        let d = check_costs(&enumerated_guide(binary(&[784]), None));
        assert_eq!(d.len(), 1);
        // 2^784 ≈ 1.0e236.
        assert!(d[0].message.contains("e236"), "{}", d[0].message);
        let d = check_costs(&enumerated_guide(cat(1000, &[1000]), Some(1000)));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn e017_guide_exact() {
        let mut p = P::new();
        p.latent("c", cat(3, &[7]), false);
        p.latent("z", real(&[2]), false);
        p.0.guide = Guide::Exact {
            posterior: ExactPosterior::EnumerateLinearGaussian,
            span: Span::Artificial,
        };
        let d = check_costs(&p.0);
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("2187"), "{}", d[0].message);
        p.0.latents[0].ty = cat(3, &[6]);
        assert!(check_costs(&p.0).is_empty());
        p.0.guide = Guide::Exact {
            posterior: ExactPosterior::LinearGaussian,
            span: Span::Artificial,
        };
        p.0.latents[0].ty = cat(3, &[70]);
        assert!(check_costs(&p.0).is_empty());
    }

    #[test]
    fn e017_parameters() {
        let mut p = P::new();
        p.net(
            "huge",
            &[("x", real(&[10]))],
            &[("y", real(&[10]))],
            mlp(&[100_000, 100_000]),
        );
        let d = check_costs(&p.0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].span, Span::Src(900, 901));
        assert!(d[0].hint.as_deref().unwrap_or("").contains("hidden"));
        let expect = total_params(&p.0);
        assert_eq!(
            expect,
            10 * 100_000 + 100_000 + 100_000 * 100_000 + 100_000 + 100_000 * 10 + 10
        );
        assert!(d[0].message.contains(&expect.to_string()));

        // 60M parameters fit; 18 per-member copies (one per training member) do not.
        let mut p = P::new();
        let id = p.net(
            "dec",
            &[("z", real(&[6]))],
            &[("x", real(&[10_000_000]))],
            Arch::Linear { bias: false },
        );
        assert!(check_costs(&p.0).is_empty());
        p.0.nets[id].per_member = true;
        p.0.meta = Some(MetaConfig {
            family: Family::Rotate((0..18).map(|i| i as f64 * 20.0).collect()),
            train: Members::All,
            test: Members::Odd,
            span: Span::Artificial,
        });
        assert_eq!(copies(&p.0, id).total(), 18);
        assert_eq!(check_costs(&p.0).len(), 1);
        // classes(): the member count is unknown, counted once.
        if let Some(m) = p.0.meta.as_mut() {
            m.family = Family::Classes;
        }
        assert!(check_costs(&p.0).is_empty());
    }

    #[test]
    fn iaf_steps_copy_the_network() {
        let mut p = vae();
        let ar = p.nets.len();
        p.nets.push(net(
            "ar",
            &[("z", real(&[32])), ("h", real(&[8]))],
            &[("m", real(&[32])), ("s", real(&[32]))],
            Arch::Made {
                hidden: vec![64],
                act: Activation::Elu,
            },
        ));
        if let Guide::Amortized(b) = &mut p.guide {
            if let Stmt::Sample(site) = &mut b.stmts[1] {
                site.flows.push(Flow {
                    kind: FlowKind::Iaf { net: ar, steps: 3 },
                    context: vec![num(0.0)],
                    span: Span::Artificial,
                });
            }
        }
        assert_eq!(copies(&p, ar).total(), 3);
        assert_eq!(copies(&p, 0).total(), 1);
        let one = param_count(&p.nets[ar]);
        assert_eq!(
            total_params(&p),
            param_count(&p.nets[0]) + param_count(&p.nets[1]) + 3 * one
        );
    }
}

/// End-to-end helpers: a program from `.vi` source through the parser and the IR builder.
#[cfg(test)]
pub(crate) mod e2e {
    use crate::diag::Diagnostic;
    use crate::ir::Program;

    /// Parse, resolve consts and build the IR; `Err` with the diagnostics on any error.
    pub fn program(src: &str) -> Result<Program, Vec<Diagnostic>> {
        let file = crate::syntax::parse(src).map_err(|e| vec![Diagnostic::from(e)])?;
        let (consts, ce) = crate::check::consts::resolve(&file, &[]);
        let (p, be) = crate::check::build::build(&file, &consts);
        let mut d: Vec<Diagnostic> = ce.into_iter().map(Diagnostic::from).collect();
        d.extend(be.into_iter().map(Diagnostic::from));
        if d.iter().any(|d| d.is_error()) {
            Err(d)
        } else {
            Ok(p)
        }
    }

    /// The VAE of LANGUAGE.md section 1.
    pub const VAE: &str = r#"
const D = 784
const Z = 32
const H = 512
data   x : Binary[D]
latent z : Real[Z]
net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H], act = relu)
net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H], act = relu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = decoder(z))
}
guide {
  let (loc, scale) = encoder(x)
  z ~ Normal(loc, scale)
}
"#;

    /// The variational RNN of the appendix, small.
    pub const VRNN: &str = r#"
const T = 4
const W = 8
const Z = 2
const H = 16
data x : Binary[T, W]
latent z : Real[T, Z]
net cell(h: Real[H], x: Binary[W], z: Real[Z]) -> Real[H] = gru()
net prior(h: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net post(h: Real[H], x: Binary[W]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net emit(h: Real[H], z: Real[Z]) -> Real[W] = mlp(hidden = [H])
model {
  let h[0] = zeros(H)
  for t in 1:T {
    let (pm, ps) = prior(h[t-1])
    z[t] ~ Normal(pm, ps)
    x[t] ~ Bernoulli(logits = emit(h[t-1], z[t]))
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
guide {
  let h[0] = zeros(H)
  for t in 1:T {
    let (qm, qs) = post(h[t-1], x[t])
    z[t] ~ Normal(qm, qs)
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
"#;

    /// Semi-supervised M2 of the appendix.
    pub const M2: &str = r#"
const D = 784
const K = 10
const Z = 16
const H = 128
data x : Binary[D]
data y : Cat(K) partial
latent z : Real[Z]
net classify(x: Binary[D]) -> Real[K] = mlp(hidden = [H], act = softplus)
net encode(x: Binary[D], y: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decode(z: Real[Z], y: Cat(K)) -> Real[D] = mlp(hidden = [H])
model { y ~ Categorical(logits = zeros(K)); z ~ Normal(0, 1); x ~ Bernoulli(logits = decode(z, y)) }
guide { y ~ Categorical(logits = classify(x)); let (m, s) = encode(x, y); z ~ Normal(m, s) }
"#;

    /// DRAW of the appendix, small.
    pub const DRAW: &str = r#"
const T = 3
const Z = 4
const H = 32
const N = 5
data x : Binary[1, 28, 28]
latent z : Real[T, Z]
net dec_cell(h: Real[H], z: Real[Z]) -> Real[H] = gru()
net enc_cell(e: Real[H], r: Real[2*N*N], h: Real[H]) -> Real[H] = gru()
net read(img: Real[2, 28, 28], h: Real[H]) -> Real[2*N*N] = attend_read(grid = N)
net write(h: Real[H]) -> Real[1, 28, 28] = attend_write(grid = N)
net q(e: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = linear()
model {
  let h[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T { z[t] ~ Normal(0, 1); let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t]) }
  x ~ Bernoulli(logits = c[T])
}
guide {
  let h[0] = zeros(H); let e[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T {
    let e[t] = enc_cell(e[t-1], read(concat(x, x - sigmoid(c[t-1])), h[t-1]), h[t-1])
    let (m, s) = q(e[t])
    z[t] ~ Normal(m, s)
    let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t])
  }
}
"#;
}

#[cfg(test)]
mod e2e_tests {
    use super::e2e::program;
    use super::*;

    fn ok(src: &str) -> Program {
        match program(src) {
            Ok(p) => p,
            Err(d) => panic!("{d:#?}"),
        }
    }

    #[test]
    fn conv_and_deconv_from_source() {
        let p = ok(r#"
data x : Binary[1, 28, 28]
data y : Cat(10) given
latent z : Real[16]
net enc(x: Binary[1, 28, 28], y: Cat(10)) -> (loc: Real[16], scale: Positive[16]) = conv(channels = [32, 64], hidden = [256])
net dec(z: Real[16]) -> Real[1, 28, 28] = deconv(channels = [64, 32])
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s) = enc(x, y); z ~ Normal(m, s) }
"#);
        assert_eq!(
            param_count(&p.nets[0]),
            (9 * 32 + 32) + (9 * 32 * 64 + 64) + (3146 * 256 + 256) + (256 * 32 + 32)
        );
        assert_eq!(
            param_count(&p.nets[1]),
            (16 * 3136 + 3136) + (16 * 64 * 32 + 32) + (16 * 32 + 1)
        );
        assert!(check_costs(&p).is_empty());
    }

    #[test]
    fn deepsets_and_per_member_from_source() {
        let p = ok(r#"
const D = 20
const H = 16
const Z = 4
data x : Binary[D]
latent z : Real[Z]
set S : Binary[D] size 10
net summary(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H, H], act = leaky_relu)
net enc(x: Binary[D], s: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H])
@per_member net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H])
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s) = enc(x, summary(S)); z ~ Normal(m, s) }
"#);
        assert_eq!(
            param_count(&p.nets[0]),
            (20 * 16 + 16) + (16 * 16 + 16) + (16 * 16 + 16)
        );
        let pl = crate::plan::plan(&p);
        // phi runs on each of the 10 members of S.
        assert_eq!(pl.nets[0].flops, 2 * (20 * 16 + 16 * 16) * 10 + 2 * 16 * 16);
        assert!(pl.nets[2].copies.per_member);
    }

    #[test]
    fn e017_from_source() {
        let src = |shape: &str, logits: &str| {
            format!(
                r#"
data x : Binary[8]
latent c : Cat(10){shape}
net q(x: Binary[8]) -> Real[{logits}] = linear()
net p(c: Cat(10){shape}) -> Real[8] = linear()
model {{ c ~ Categorical(logits = zeros({logits})); x ~ Bernoulli(logits = p(c)) }}
guide {{ c ~ Categorical(logits = q(x)) }}
"#
            )
        };
        let many = src("[4]", "4, 10");
        let p = match program(&many) {
            Ok(p) => p,
            Err(d) => panic!("{d:#?}"),
        };
        let d = check_costs(&p);
        assert_eq!(d.len(), 1, "{d:#?}");
        let text = d[0].span.range().map(|r| &many[r]).unwrap_or("");
        assert!(text.starts_with("c ~ Categorical"), "{text}");
        assert!(check_costs(&ok(&src("", "10"))).is_empty());
    }
}
