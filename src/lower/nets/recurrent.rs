//! Recurrent cells: `gru` and `lstm`, with PyTorch's `GRUCell` / `LSTMCell` equations and
//! weight layout (`cell.weight_ih [G·H, I]`, `cell.weight_hh [G·H, H]`, `cell.bias_ih`,
//! `cell.bias_hh`, gates in PyTorch's order: r, z, n for the GRU; i, f, g, o for the LSTM).

use super::dense::{gather, widths};
use super::layers::{flat_input, sum_kl, Linear, LinearSpec, Op};
use super::{NetCtx, Network};
use crate::ir::{Head, NetDef};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};
use candle_nn::ops::sigmoid;
use candle_nn::VarBuilder;

/// The two matrices of a cell with `gates` gate blocks.
struct Cell {
    ih: Linear,
    hh: Linear,
    hidden: usize,
    /// `(input index, width)` of the inputs concatenated into `x`.
    xs: Vec<(usize, usize)>,
    input: usize,
}

impl Cell {
    fn new(
        net: &NetDef,
        gates: usize,
        skip: usize,
        vb: &VarBuilder,
        rng: &mut Rng,
    ) -> Result<Cell> {
        let hidden = net.inputs.first().map(|i| i.ty.numel()).unwrap_or(0);
        let xs: Vec<(usize, usize)> = widths(net, skip)
            .into_iter()
            .filter(|&(_, w)| w > 0)
            .collect();
        let input: usize = xs.iter().map(|x| x.1).sum();
        let bound = 1.0 / (hidden.max(1) as f64).sqrt();
        let spec = |inp: usize, w: &'static str, b: &'static str| LinearSpec {
            op: Op::Matmul,
            w_shape: vec![gates * hidden, inp],
            bias: true,
            bound,
            weight_name: w,
            bias_name: b,
        };
        let vb = vb.pp("cell");
        let ih = Linear::new(
            &spec(input, "weight_ih", "bias_ih"),
            &net.weights,
            None,
            &vb,
            rng,
        )?;
        let hh = Linear::new(
            &spec(hidden, "weight_hh", "bias_hh"),
            &net.weights,
            None,
            &vb,
            rng,
        )?;
        Ok(Cell {
            ih,
            hh,
            hidden,
            xs,
            input,
        })
    }

    /// `(x W_ihᵀ + b_ih, h W_hhᵀ + b_hh)`, both `[R, G·H]`.
    fn gates(&self, inputs: &[Tensor], h: &Tensor, ctx: &mut NetCtx) -> Result<(Tensor, Tensor)> {
        let x = if self.input > 0 {
            gather(inputs, &self.xs)? // [R, I]
        } else {
            Tensor::zeros((h.dim(0)?, 0), h.dtype(), h.device())?
        };
        // One fused op each (the bias gradient summed inside it, not by a broadcast's
        // backward, which was 15% of a VRNN step).
        Ok((
            self.ih.forward_act(&x, None, ctx)?,
            self.hh.forward_act(h, None, ctx)?,
        ))
    }

    fn state(&self, inputs: &[Tensor], i: usize) -> Result<Tensor> {
        match inputs.get(i) {
            Some(x) => flat_input(x, self.hidden, i), // [R, H]
            None => bail!("recurrent cell called with {} inputs", inputs.len()),
        }
    }

    fn kl(&self) -> Result<Option<Tensor>> {
        sum_kl([&self.ih, &self.hh])
    }
}

fn shaped(x: &Tensor, head: Option<&Head>) -> Result<Tensor> {
    match head {
        Some(h) => {
            let mut shape = vec![x.dim(0)?];
            shape.extend_from_slice(&h.ty.shape);
            x.reshape(shape)
        }
        None => Ok(x.clone()),
    }
}

/// `gru()`: the state is the first input; the other inputs, concatenated, are `x`.
pub struct Gru {
    cell: Cell,
    heads: Vec<Head>,
}

impl Gru {
    pub fn new(net: &NetDef, vb: VarBuilder, rng: &mut Rng) -> Result<Gru> {
        Ok(Gru {
            cell: Cell::new(net, 3, 1, &vb, rng)?,
            heads: net.heads.clone(),
        })
    }
}

impl Network for Gru {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let h = self.cell.state(inputs, 0)?; // [R, H]
        let (gi, gh) = self.cell.gates(inputs, &h, ctx)?; // [R, 3H] each
                                                          // r, z, n and h' = (1 − z) n + z h in one op (`fused_gru`).
        let next = super::fused_gru::gru_step(&gi, &gh, &h)?; // [R, H]
        Ok(vec![shaped(&next, self.heads.first())?])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        self.cell.kl()
    }
}

/// `lstm()`: inputs `h`, `c`, then `x`; heads `(h, c)` (matched by name when the heads
/// are named `h` and `c`, else in order).
pub struct Lstm {
    cell: Cell,
    heads: Vec<Head>,
    /// Whether the first head is `c` (named heads in the order `(c, h)`).
    c_first: bool,
}

impl Lstm {
    pub fn new(net: &NetDef, vb: VarBuilder, rng: &mut Rng) -> Result<Lstm> {
        let names: Vec<&str> = net.heads.iter().map(|h| h.name.as_str()).collect();
        Ok(Lstm {
            cell: Cell::new(net, 4, 2, &vb, rng)?,
            heads: net.heads.clone(),
            c_first: names == ["c", "h"],
        })
    }
}

impl Network for Lstm {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let hsz = self.cell.hidden;
        let h = self.cell.state(inputs, 0)?; // [R, H]
        let c = self.cell.state(inputs, 1)?; // [R, H]
        let (gi, gh) = self.cell.gates(inputs, &h, ctx)?;
        let g = (gi + gh)?; // [R, 4H]: i, f, g, o
        let i = sigmoid(&g.narrow(1, 0, hsz)?)?;
        let f = sigmoid(&g.narrow(1, hsz, hsz)?)?;
        let cand = g.narrow(1, 2 * hsz, hsz)?.tanh()?;
        let o = sigmoid(&g.narrow(1, 3 * hsz, hsz)?)?;
        let c2 = (f.mul(&c)? + i.mul(&cand)?)?;
        let h2 = o.mul(&c2.tanh()?)?;
        let (first, second) = if self.c_first { (c2, h2) } else { (h2, c2) };
        Ok(vec![
            shaped(&first, self.heads.first())?,
            shaped(&second, self.heads.get(1))?,
        ])
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        self.cell.kl()
    }
}
