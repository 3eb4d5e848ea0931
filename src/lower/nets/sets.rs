//! `deepsets` (Zaheer et al. 2017): a permutation-invariant summary of a context set.

use super::dense::{gather, widths, DenseStack, StackConfig};
use super::layers::{split_heads, sum_kl, Linear, LinearSpec};
use super::{NetCtx, Network};
use crate::ir::{Activation, Head, NetDef, Norm, Pool};
use crate::rng::Rng;
use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

/// `phi{i}` dense layers, each activated, applied to every member `[R, N, member]`; the
/// pool (mean, sum or max over the N members); the other inputs appended; `rho{i}`
/// dense layers, each activated; `out` dense to the heads.
pub struct DeepSets {
    member: usize,
    phi: DenseStack,
    pool: Pool,
    rest: Vec<(usize, usize)>,
    rho: DenseStack,
    out: Linear,
    heads: Vec<Head>,
}

impl DeepSets {
    pub fn new(
        net: &NetDef,
        phi: &[usize],
        rho: &[usize],
        pool: Pool,
        act: Activation,
        vb: VarBuilder,
        rng: &mut Rng,
    ) -> Result<DeepSets> {
        let member = match net.inputs.first() {
            Some(i) => i.ty.dense_width(),
            None => bail!("network `{}`: deepsets needs a set input", net.name),
        };
        let stack = |prefix: &'static str, inp: usize, ws: &[usize], rng: &mut Rng| {
            DenseStack::new(
                StackConfig {
                    prefix,
                    inp,
                    widths: ws,
                    act,
                    norm: Norm::None,
                    dropout: 0.0,
                    act_last: true,
                    weights: &net.weights,
                    masks: None,
                },
                &vb,
                rng,
            )
        };
        let phi_s = stack("phi", member, phi, rng)?;
        let pooled = phi.last().copied().unwrap_or(member);
        let rest = widths(net, 1);
        let rho_in = pooled + rest.iter().map(|x| x.1).sum::<usize>();
        let rho_s = stack("rho", rho_in, rho, rng)?;
        let out_in = rho.last().copied().unwrap_or(rho_in);
        let out_w = net.heads.iter().map(|h| h.ty.numel()).sum();
        let out = Linear::new(
            &LinearSpec::dense(out_in, out_w, true),
            &net.weights,
            None,
            &vb.pp("out"),
            rng,
        )?;
        Ok(DeepSets {
            member,
            phi: phi_s,
            pool,
            rest,
            rho: rho_s,
            out,
            heads: net.heads.clone(),
        })
    }
}

impl Network for DeepSets {
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>> {
        let set = match inputs.first() {
            Some(s) => s,
            None => bail!("deepsets network called without inputs"),
        };
        let (r, n) = match set.dims() {
            [r, n, ..] => (*r, *n),
            d => bail!("deepsets: the set input has shape {d:?}, expected [R, N, ...member]"),
        };
        if set.elem_count() != r * n * self.member {
            bail!(
                "deepsets: the set input has shape {:?}, members of {} values expected",
                set.dims(),
                self.member
            );
        }
        let members = set.reshape((r * n, self.member))?; // [R·N, member]
        let f = self.phi.forward(&members, ctx)?; // [R·N, F]
        let fw = f.dim(1)?;
        let f = f.reshape((r, n, fw))?; // [R, N, F]
        let mut x = match self.pool {
            Pool::Mean => f.mean(1)?,
            Pool::Sum => f.sum(1)?,
            Pool::Max => f.max(1)?,
        }; // [R, F]
        if !self.rest.is_empty() {
            x = Tensor::cat(&[x, gather(inputs, &self.rest)?], 1)?;
        }
        let x = self.rho.forward(&x, ctx)?;
        let out = self.out.forward_act(&x, None, ctx)?; // [R, Σ head numel]
        split_heads(&out, &self.heads)
    }

    fn weight_kl(&self) -> Result<Option<Tensor>> {
        sum_kl(
            self.phi
                .layers()
                .iter()
                .chain(self.rho.layers())
                .chain(std::iter::once(&self.out)),
        )
    }
}
