//! Dense architectures: `linear`, `mlp` and `made`, and the dense stack that `conv`,
//! `deconv` and `deepsets` reuse.

use super::layers::{
    activate, dense_cat, dropout, split_heads, sum_kl, Linear, LinearSpec, NormLayer,
};
use super::{NetCtx, Network};
use crate::ir::{Activation, Head, NetDef, Norm, Weights};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Dense layers `inp → widths[0] → … → widths[n-1]` named `{prefix}{i}` (bias on each), with
/// an optional norm `norm{i}` after each layer but the last, then the activation, then
/// dropout; the last layer is activated only when `act_last`.
pub struct DenseStack {
    layers: Vec<Linear>,
    norms: Vec<Option<NormLayer>>,
    act: Activation,
    dropout: f64,
    act_last: bool,
}

pub struct StackConfig<'a> {
    pub prefix: &'a str,
    pub inp: usize,
    pub widths: &'a [usize],
    pub act: Activation,
    pub norm: Norm,
    pub dropout: f64,
    pub act_last: bool,
    pub weights: &'a Weights,
    /// MADE masks, one per layer (`[out, in]`).
    pub masks: Option<Vec<Tensor>>,
}

impl DenseStack {
    pub fn new(cfg: StackConfig, vb: &VarBuilder, rng: &mut Rng) -> Result<DenseStack> {
        let mut layers = Vec::with_capacity(cfg.widths.len());
        let mut norms = Vec::with_capacity(cfg.widths.len());
        let mut masks = cfg.masks.map(|m| m.into_iter());
        let mut width = cfg.inp;
        for (i, &out) in cfg.widths.iter().enumerate() {
            let mask = masks.as_mut().and_then(|m| m.next());
            let spec = LinearSpec::dense(width, out, true);
            let vbl = vb.pp(format!("{}{i}", cfg.prefix));
            layers.push(Linear::new(&spec, cfg.weights, mask, &vbl, rng)?);
            let last = i + 1 == cfg.widths.len();
            norms.push(if !last && cfg.norm != Norm::None {
                Some(NormLayer::new(
                    cfg.norm,
                    out,
                    &vb.pp(format!("norm{i}")),
                    rng,
                )?)
            } else {
                None
            });
            width = out;
        }
        Ok(DenseStack {
            layers,
            norms,
            act: cfg.act,
            dropout: cfg.dropout,
            act_last: cfg.act_last,
        })
    }

    /// The rest of [`DenseStack::forward`] from the first layer's activated output `[R,
    /// widths[0]]` (no norm after the first layer).
    fn forward_from(&self, x: Tensor, ctx: &mut NetCtx) -> Result<Tensor> {
        let x = if self.layers.len() > 1 {
            dropout(&x, self.dropout, ctx)?
        } else {
            x
        };
        self.layers_from(x, 1, ctx)
    }

    /// `[R, inp]` to `[R, widths.last()]`.
    pub fn forward(&self, x: &Tensor, ctx: &mut NetCtx) -> Result<Tensor> {
        self.layers_from(x.clone(), 0, ctx)
    }

    /// Layers `from..` on `x`, the input of layer `from`.
    fn layers_from(&self, mut x: Tensor, from: usize, ctx: &mut NetCtx) -> Result<Tensor> {
        let n = self.layers.len();
        for (i, (layer, norm)) in self.layers.iter().zip(&self.norms).enumerate().skip(from) {
            let act = (i + 1 < n || self.act_last).then_some(self.act);
            match norm {
                Some(norm) => {
                    x = layer.forward(&x, ctx)?;
                    x = norm.forward(&x, ctx)?;
                    if let Some(act) = act {
                        x = activate(&x, act)?;
                    }
                }
                // Without a norm the activation fuses into the layer where it can.
                None => x = layer.forward_act(&x, act, ctx)?,
            }
            if i + 1 < n {
                x = dropout(&x, self.dropout, ctx)?;
            }
        }
        Ok(x)
    }

    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }
}

/// Dense widths of a network's inputs, `(index, width)`, for [`dense_cat`].
pub fn widths(net: &NetDef, skip: usize) -> Vec<(usize, usize)> {
    net.inputs
        .iter()
        .enumerate()
        .skip(skip)
        .map(|(i, inp)| (i, inp.ty.dense_width()))
        .collect()
}

/// Gathers the given inputs into `[R, Σ width]`.
pub fn gather(inputs: &[Tensor], widths: &[(usize, usize)]) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(widths.len());
    for &(i, w) in widths {
        match inputs.get(i) {
            Some(x) => parts.push((x, w, i)),
            None => candle_core::bail!(
                "network called with {} inputs; its signature has more",
                inputs.len()
            ),
        }
    }
    dense_cat(&parts)
}

/// `linear`, `mlp` and `made`: dense inputs concatenated, a dense stack, heads.
pub struct DenseNet {
    inputs: Vec<(usize, usize)>,
    stack: DenseStack,
    heads: Vec<Head>,
}

impl DenseNet {
    pub fn linear(net: &NetDef, bias: bool, vb: VarBuilder, rng: &mut Rng) -> Result<DenseNet> {
        let inputs = widths(net, 0);
        let inp = inputs.iter().map(|x| x.1).sum();
        let out = net.heads.iter().map(|h| h.ty.numel()).sum();
        let layer = Linear::new(
            &LinearSpec::dense(inp, out, bias),
            &net.weights,
            None,
            &vb.pp("layer0"),
            rng,
        )?;
        Ok(DenseNet {
            inputs,
            stack: DenseStack {
                layers: vec![layer],
                norms: vec![None],
                act: Activation::Relu,
                dropout: 0.0,
                act_last: false,
            },
            heads: net.heads.clone(),
        })
    }

    pub fn mlp(
        net: &NetDef,
        hidden: &[usize],
        act: Activation,
        dropout: f64,
        norm: Norm,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<DenseNet> {
        let inputs = widths(net, 0);
        let inp = inputs.iter().map(|x| x.1).sum();
        let out: usize = net.heads.iter().map(|h| h.ty.numel()).sum();
        let mut ws = hidden.to_vec();
        ws.push(out);
        let stack = DenseStack::new(
            StackConfig {
                prefix: "layer",
                inp,
                widths: &ws,
                act,
                norm,
                dropout,
                act_last: false,
                weights: &net.weights,
                masks: None,
            },
            &vb,
            rng,
        )?;
        Ok(DenseNet {
            inputs,
            stack,
            heads: net.heads.clone(),
        })
    }

    /// MADE (Germain et al. 2015), autoregressive in the first input `z` (Z values):
    /// input degrees 1..=Z for `z` and 0 for the context (connected to everything), hidden
    /// degrees cycling over 1..=Z−1 (all 0 when Z = 1), a hidden unit of degree d sees the
    /// units below it of degree ≤ d, and each head's block of Z outputs has degrees 1..=Z,
    /// output i seeing units of degree < i: output i depends on z\[0..i\] and the context only.
    pub fn made(
        net: &NetDef,
        hidden: &[usize],
        act: Activation,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<DenseNet> {
        let inputs = widths(net, 0);
        let z = net.inputs.first().map(|i| i.ty.numel()).unwrap_or(0);
        let ctx: usize = inputs.iter().skip(1).map(|x| x.1).sum();
        let out = z * net.heads.len();
        let mut ws = hidden.to_vec();
        ws.push(out);
        let masks = made_masks(z, ctx, hidden, net.heads.len())
            .into_iter()
            .map(|(m, rows, cols)| Tensor::from_vec(m, (rows, cols), vb.device()))
            .collect::<Result<Vec<_>>>()?;
        let stack = DenseStack::new(
            StackConfig {
                prefix: "layer",
                inp: z + ctx,
                widths: &ws,
                act,
                norm: Norm::None,
                dropout: 0.0,
                act_last: false,
                weights: &net.weights,
                masks: Some(masks),
            },
            &vb,
            rng,
        )?;
        // Every head is Real[Z]: one block of Z outputs each, in head order.
        Ok(DenseNet {
            inputs,
            stack,
            heads: net.heads.clone(),
        })
    }
}

/// MADE's masks, one `[out, in]` 0/1 matrix per layer (row-major, with its dims).
pub fn made_masks(
    z: usize,
    ctx: usize,
    hidden: &[usize],
    blocks: usize,
) -> Vec<(Vec<f32>, usize, usize)> {
    let mut prev: Vec<usize> = (1..=z).chain(std::iter::repeat_n(0, ctx)).collect();
    let mut masks = Vec::with_capacity(hidden.len() + 1);
    for &h in hidden {
        let deg: Vec<usize> = (0..h)
            .map(|k| if z > 1 { k % (z - 1) + 1 } else { 0 })
            .collect();
        let m = deg
            .iter()
            .flat_map(|&d| prev.iter().map(move |&p| if d >= p { 1.0 } else { 0.0 }))
            .collect();
        masks.push((m, h, prev.len()));
        prev = deg;
    }
    let out: Vec<usize> = (0..blocks).flat_map(|_| 1..=z).collect();
    let m = out
        .iter()
        .flat_map(|&d| prev.iter().map(move |&p| if d > p { 1.0 } else { 0.0 }))
        .collect();
    masks.push((m, out.len(), prev.len()));
    masks
}

impl Network for DenseNet {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let x = gather(inputs, &self.inputs)?; // [R, Σ input widths]
        let out = self.stack.forward(&x, ctx)?; // [R, Σ head numel]
        split_heads(&out, &self.heads)
    }

    /// The first layer's product split by input: `x W_xᵀ` of an input with fewer rows (an
    /// example's data, under an enumerated latent's K rows per example) is computed at its
    /// own rows and added to each of the rows it stands for, so the enumeration repeats
    /// only the product of the inputs that vary along it. Point weights without a norm;
    /// otherwise (or when every input has all the rows) the inputs are lifted.
    fn forward_rows(
        &self,
        inputs: &[Tensor],
        rows: usize,
        ctx: &mut NetCtx,
    ) -> Result<Vec<Tensor>> {
        let fewer = |i: usize| {
            inputs
                .get(i)
                .is_some_and(|x| x.dim(0).is_ok_and(|r| r < rows))
        };
        let split = self.inputs.iter().any(|&(i, _)| fewer(i))
            && self.inputs.iter().any(|&(i, _)| !fewer(i));
        let first = self.stack.layers.first().and_then(Linear::point_dense);
        let (Some((w, b)), true, Some(None)) = (first, split, self.stack.norms.first()) else {
            return self.forward(&super::lift_all(inputs, rows)?, ctx);
        };
        // The full-row inputs through their columns of W with the bias, at all rows; then
        // each other input's product added to the rows it stands for.
        let mut offset = 0;
        let (mut full, mut part) = (Vec::new(), Vec::new());
        for &(i, width) in &self.inputs {
            let cols = w.narrow(1, offset, width)?;
            offset += width;
            let Some(x) = inputs.get(i) else {
                candle_core::bail!(
                    "network called with {} inputs; its signature has more",
                    inputs.len()
                );
            };
            let x = super::layers::flat_input(x, width, i)?;
            if fewer(i) {
                part.push((x, cols));
            } else {
                full.push((x, cols));
            }
        }
        // (candle's `cat` of one tensor is that tensor.)
        let (xs, ws): (Vec<Tensor>, Vec<Tensor>) = full.into_iter().unzip();
        let (x_full, w_full) = (Tensor::cat(&xs, 1)?, Tensor::cat(&ws, 1)?);
        use super::fused::{add_lifted, dense, FusedAct};
        let mut y = dense(&x_full, &w_full, b, FusedAct::Identity)?;
        // The first layer's activation with the last addition.
        let n = self.stack.layers.len();
        let act = (n > 1 || self.stack.act_last).then_some(self.stack.act);
        let fused = FusedAct::of(act);
        let parts = part.len();
        for (j, (x, cols)) in part.into_iter().enumerate() {
            let zero = Tensor::zeros(cols.dim(0)?, cols.dtype(), cols.device())?;
            let p = dense(&x, &cols, &zero, FusedAct::Identity)?; // [its rows, out]
            let a = match fused {
                Some(f) if j + 1 == parts => f,
                _ => FusedAct::Identity,
            };
            y = add_lifted(&y, &p, a)?;
        }
        let y = match (fused, act) {
            (None, Some(act)) => activate(&y, act)?,
            _ => y,
        };
        let out = self.stack.forward_from(y, ctx)?; // [R, Σ head numel]
        split_heads(&out, &self.heads)
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl(self.stack.layers())
    }
}
