//! Convolutional architectures: `conv` (an image and dense inputs to heads) and `deconv`
//! (dense inputs to one image head), with the layers of `arch::layers`.

use super::dense::{gather, widths, DenseStack, StackConfig};
use super::layers::{flat_input, head_activation, split_heads, sum_kl, Linear, LinearSpec, Op};
use super::{NetCtx, Network};
use crate::arch::{self, image_chw, LayerKind};
use crate::ir::{Activation, Head, NetDef, Norm};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

/// `conv`: the first input is an image `[C, H, W]` (`[H, W]` is one channel); each
/// `conv{i}` is a Conv2d (padding (k−1)/2, stride s) followed by the activation; the
/// result is flattened, the other inputs appended, and the dense stack `layer{j}` runs
/// through `hidden` (activated) to the heads.
pub struct ConvNet {
    chw: (usize, usize, usize),
    convs: Vec<Linear>,
    act: Activation,
    rest: Vec<(usize, usize)>,
    stack: DenseStack,
    heads: Vec<Head>,
}

impl ConvNet {
    pub fn new(
        net: &NetDef,
        hidden: &[usize],
        act: Activation,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<ConvNet> {
        let chw = match net.inputs.first() {
            Some(i) => image_chw(&i.ty),
            None => bail!("network `{}`: conv needs an image input", net.name),
        };
        let mut convs = Vec::new();
        let mut flat = chw.0 * chw.1 * chw.2;
        for l in arch::layers(net) {
            if let LayerKind::Conv2d {
                c_in,
                c_out,
                kernel,
                stride,
                padding,
                out_hw,
                ..
            } = l.kind
            {
                let spec = LinearSpec {
                    op: Op::Conv { stride, padding },
                    w_shape: vec![c_out, c_in, kernel, kernel],
                    bias: true,
                    bound: 1.0 / ((c_in * kernel * kernel).max(1) as f64).sqrt(),
                    weight_name: "weight",
                    bias_name: "bias",
                };
                convs.push(Linear::new(
                    &spec,
                    &net.weights,
                    None,
                    &vb.pp(&l.name),
                    rng,
                )?);
                flat = c_out * out_hw[0] * out_hw[1];
            }
        }
        if flat == 0 {
            bail!(
                "network `{}`: the convolutions shrink the {}x{} image to nothing",
                net.name,
                chw.1,
                chw.2
            );
        }
        let rest = widths(net, 1);
        let mut ws = hidden.to_vec();
        ws.push(net.heads.iter().map(|h| h.ty.numel()).sum());
        let stack = DenseStack::new(
            StackConfig {
                prefix: "layer",
                inp: flat + rest.iter().map(|x| x.1).sum::<usize>(),
                widths: &ws,
                act,
                norm: Norm::None,
                dropout: 0.0,
                act_last: false,
                weights: &net.weights,
                masks: None,
            },
            &vb,
            rng,
        )?;
        Ok(ConvNet {
            chw,
            convs,
            act,
            rest,
            stack,
            heads: net.heads.clone(),
        })
    }
}

impl Network for ConvNet {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let (c, h, w) = self.chw;
        let img = match inputs.first() {
            Some(x) => flat_input(x, c * h * w, 0)?,
            None => bail!("conv network called without inputs"),
        };
        let r = img.dim(0)?;
        let mut x = img.reshape((r, c, h, w))?; // [R, C, H, W]
        for conv in &self.convs {
            x = conv.forward_act(&x, Some(self.act), ctx)?; // [R, c_out, h_out, w_out]
        }
        let mut x = x.flatten_from(1)?; // [R, F]
        if !self.rest.is_empty() {
            x = Tensor::cat(&[x, gather(inputs, &self.rest)?], 1)?; // [R, F + rest]
        }
        let out = self.stack.forward(&x, ctx)?; // [R, Σ head numel]
        split_heads(&out, &self.heads)
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl(self.convs.iter().chain(self.stack.layers()))
    }
}

/// `deconv`: the dense stack `layer{j}` (activated) from the concatenated inputs through
/// `hidden` to `channels[0]·(H/sⁿ)·(W/sⁿ)`, reshaped to an image, then `deconv{i}`
/// ConvTranspose2d layers (padding (k−s)/2, stride s) with the activation between them
/// (not after the last: the head activation applies). With `channels = []` the dense
/// stack produces the `C·H·W` image directly.
///
/// Where `(h−1)·s − 2p + k` would miss the target side (odd sizes: 7 from 3 with k = 4,
/// s = 2 gives 6), a transposed convolution gets PyTorch's `output_padding` (< s) so the
/// sides run `H/sⁿ, H/sⁿ⁻¹, …, H` exactly; output padding has no parameters, so counts
/// are those of `arch`. A head the layers cannot reach is an error at build time.
pub struct DeconvNet {
    inputs: Vec<(usize, usize)>,
    stack: DenseStack,
    /// `[c0, h0, w0]` of the seed image, when there are transposed convolutions.
    seed: Option<(usize, usize, usize)>,
    deconvs: Vec<Linear>,
    /// `[h, w]` to crop each transposed convolution's output to, where the sides differ.
    crops: Vec<Option<[usize; 2]>>,
    act: Activation,
    head: Head,
}

impl DeconvNet {
    pub fn new(
        net: &NetDef,
        channels: &[usize],
        hidden: &[usize],
        act: Activation,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<DeconvNet> {
        let head = match net.heads.as_slice() {
            [h] => h.clone(),
            _ => bail!("network `{}`: deconv has exactly one image head", net.name),
        };
        let (c, h, w) = image_chw(&head.ty);
        let layers = arch::layers(net);
        let mut deconvs = Vec::new();
        let mut seed = None;
        let n = channels.len();
        let mut cur = [0usize; 2];
        let mut crops = Vec::new();
        for (i, l) in layers
            .iter()
            .filter(|l| matches!(l.kind, LayerKind::ConvTranspose2d { .. }))
            .enumerate()
        {
            if let LayerKind::ConvTranspose2d {
                c_in,
                c_out,
                kernel,
                stride,
                padding,
                in_hw,
                ..
            } = l.kind
            {
                if i == 0 {
                    cur = in_hw;
                    seed = Some((c_in, in_hw[0], in_hw[1]));
                }
                // The side this layer should reach: H / s^(n-1-i).
                let div = stride.pow((n - 1 - i) as u32);
                let target = [h / div, w / div];
                let mut op = [0usize; 2];
                for a in 0..2 {
                    let base = (cur[a] * stride + kernel).saturating_sub(stride + 2 * padding);
                    op[a] = target[a].saturating_sub(base);
                    cur[a] = base;
                }
                // candle's conv_transpose2d takes one output padding for both sides:
                // take the larger and crop the other side (output padding only extends
                // the range of output positions computed, so the crop equals PyTorch's
                // per-side output_padding).
                let pad = op[0].max(op[1]);
                let pad = if pad < stride { pad } else { 0 };
                let full = [cur[0] + pad, cur[1] + pad];
                cur = [cur[0] + op[0].min(pad), cur[1] + op[1].min(pad)];
                crops.push(if cur != full { Some(cur) } else { None });
                let spec = LinearSpec {
                    op: Op::ConvT {
                        stride,
                        padding,
                        output_padding: pad,
                    },
                    w_shape: vec![c_in, c_out, kernel, kernel],
                    bias: true,
                    bound: 1.0 / ((c_out * kernel * kernel).max(1) as f64).sqrt(),
                    weight_name: "weight",
                    bias_name: "bias",
                };
                deconvs.push(Linear::new(
                    &spec,
                    &net.weights,
                    None,
                    &vb.pp(&l.name),
                    rng,
                )?);
            }
        }
        if n > 0 && cur != [h, w] {
            bail!(
                "network `{}`: the transposed convolutions make a {}x{} image, the head `{}` is {}x{}",
                net.name,
                cur[0],
                cur[1],
                head.name,
                h,
                w
            );
        }
        let inputs = widths(net, 0);
        let last = match seed {
            Some((c0, h0, w0)) => c0 * h0 * w0,
            None => c * h * w,
        };
        let mut ws = hidden.to_vec();
        ws.push(last);
        let stack = DenseStack::new(
            StackConfig {
                prefix: "layer",
                inp: inputs.iter().map(|x| x.1).sum(),
                widths: &ws,
                act,
                norm: Norm::None,
                dropout: 0.0,
                act_last: seed.is_some(),
                weights: &net.weights,
                masks: None,
            },
            &vb,
            rng,
        )?;
        Ok(DeconvNet {
            inputs,
            stack,
            seed,
            deconvs,
            crops,
            act,
            head,
        })
    }
}

impl Network for DeconvNet {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let x = gather(inputs, &self.inputs)?; // [R, Σ input widths]
        let x = self.stack.forward(&x, ctx)?; // [R, c0·h0·w0] or [R, C·H·W]
        let r = x.dim(0)?;
        let Some((c0, h0, w0)) = self.seed else {
            return split_heads(&x, std::slice::from_ref(&self.head));
        };
        let mut x = x.reshape((r, c0, h0, w0))?; // [R, c0, h0, w0]
        let n = self.deconvs.len();
        for (i, (d, crop)) in self.deconvs.iter().zip(&self.crops).enumerate() {
            // Activated (but the last), then cropped: the two commute.
            let act = (i + 1 < n).then_some(self.act);
            x = d.forward_act(&x, act, ctx)?; // [R, c_out, h·s, w·s]
            if let Some([h, w]) = *crop {
                x = x.narrow(2, 0, h)?.narrow(3, 0, w)?;
            }
        }
        let mut shape = vec![r];
        shape.extend_from_slice(&self.head.ty.shape);
        let x = x.reshape(shape)?; // [R, ...head shape]
        Ok(vec![head_activation(&x, self.head.activation)?])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl(self.stack.layers().iter().chain(&self.deconvs))
    }
}
