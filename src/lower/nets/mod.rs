//! Networks as candle modules: each `net` of a spec becomes a [`Network`] built by
//! [`build`] from its `NetDef`, with the layers, sizes and checkpoint names of
//! [`crate::arch::layers`] (the single source of sizes: parameter counts agree with
//! `vic compile --emit plan`).
//!
//! # Calling convention
//!
//! [`Network::forward`] takes the inputs in signature order, each `[R, ...input shape]`
//! (the rows axis first; a `Cat(K)` input one-hot `[R, ...shape, K]`; a `Set[T]` input
//! `[R, N, ...T]`), and returns one tensor per head, in head order, `[R, ...head shape]`,
//! with the activation of the head's domain applied: `Positive` softplus(x) + 1e-4
//! ([`layers::POSITIVE_FLOOR`], so a scale is never 0), `Unit`/`Binary` sigmoid, `Simplex`
//! softmax over the last axis, others none. Dense architectures flatten their inputs and
//! concatenate them in declaration order; the last layer produces every head at once and
//! is split in head order.
//!
//! [`NetCtx::train`] switches dropout, batch-norm batch statistics and weight noise on;
//! every random draw (dropout masks, local-reparameterization noise) comes from
//! [`NetCtx::rng`], vic's seeded generator, never from candle's.
//!
//! # Architectures
//!
//! - `linear`, `mlp`, `made`: [`dense`]. An `mlp` hidden layer is dense → norm → act →
//!   dropout; the last layer is plain. `made` uses Germain et al.'s degrees (input 1..Z,
//!   context 0, hidden cycling over 1..Z−1, outputs 1..Z per head), so output i sees
//!   z\[0..i\] and the context; output 0 sees no hidden unit, so it is a constant (as in
//!   the paper and Pyro), and a hidden layer narrower than Z − 1 leaves the last inputs
//!   unused.
//! - `conv`, `deconv`: [`conv`] (sizes from `arch::layers`; `deconv` adds PyTorch's
//!   `output_padding` where needed so the image head's sides come out exactly).
//! - `gru`, `lstm`: [`recurrent`] (PyTorch's cell equations and layouts).
//! - `deepsets`: [`sets`] (every `phi` and `rho` layer activated, `out` plain).
//! - `attend_read`, `attend_write`: [`attend`] (DRAW's Gaussian filterbanks).
//!
//! # Copies
//!
//! A network may have several copies of its weights ([`NetCopies`], counted by
//! [`crate::arch::copies`] and printed by the plan): one per flow step when an `iaf`
//! flow names it, one per training member of the `meta` family when it is
//! `@per_member`, both when both apply. A copy's checkpoint prefix reads like the spec
//! ([`CopyKey::prefix`]): `ar.step2.layer0.weight` is layer 0 of the second flow step's
//! copy of `ar` (steps count from 1, in program order), `dec.member4.layer1.bias` layer
//! 1 of member 4's copy of `dec` (members are numbered as in the family, from 0, the
//! numbers `train = [...]` uses), `ar.member4.step2.…` both. A network with one copy
//! keeps its bare name (`encoder.layer0.weight`).
//!
//! # Parameters
//!
//! Keys are `<layer>.<param>` under the caller's prefix (`encoder.layer0.weight`):
//! dense and convolutional layers `weight`/`bias` (PyTorch layouts: dense `[out, in]`,
//! conv `[c_out, c_in, k, k]`, transposed conv `[c_in, c_out, k, k]`), norms `weight`
//! (gain) / `bias` (shift) and, for batch norm, the buffers `running_mean` /
//! `running_var` ([`layers::is_buffer`]), recurrent cells `weight_ih`, `weight_hh`,
//! `bias_ih`, `bias_hh`. Under `weights = bayes` every weight or bias `p` becomes `p_mu`
//! and `p_logvar`; under `vdrop` each weight `w` gains `w_log_alpha` (see
//! [`layers::Linear`]). A fresh parameter is initialized as PyTorch does (uniform in
//! ±1/√fan_in) but from vic's generator: [`build`] seeds it from the var builder's
//! prefix, [`build_with_rng`] takes the run's stream. Parameters already in the var store
//! (a loaded checkpoint) keep their values.

pub mod attend;
pub mod conv;
pub mod dense;
pub mod fused;
pub mod fused_attend;
pub mod fused_conv;
pub mod fused_gru;
pub mod fused_vdrop;
pub mod layers;
pub mod recurrent;
pub mod sets;

#[cfg(test)]
mod tests;

use crate::ir::{Arch, NetDef};
use crate::rng::Rng;
use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// What a network call needs besides its inputs.
pub struct NetCtx<'a> {
    /// Training mode: dropout and weight noise on, batch norm on batch statistics (and
    /// updating its running averages).
    pub train: bool,
    /// The source of all noise.
    pub rng: &'a mut Rng,
    /// Evaluation with `vdrop` weights pruned: a weight whose log α exceeds this is 0
    /// (Molchanov et al. 2017 prune at 3). `None`: every weight as learned.
    pub prune: Option<f64>,
}

/// A built network.
pub trait Network: Send + Sync {
    /// Inputs in signature order, each `[R, ...shape]`; one activated tensor per head,
    /// `[R, ...head shape]`.
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>>;
    /// [`Network::forward`] at `rows` rows, where an input may come with fewer rows (a
    /// divisor of `rows`: each of its rows stands for `rows / its rows` consecutive rows,
    /// as `eval::lift` repeats them). By default every input is lifted first; a network
    /// may instead compute what depends only on such an input at its own rows.
    fn forward_rows(
        &self,
        inputs: &[Tensor],
        rows: usize,
        ctx: &mut NetCtx,
    ) -> Result<Vec<Tensor>> {
        self.forward(&lift_all(inputs, rows)?, ctx)
    }
    /// The KL of the `bayes` / `vdrop` weight posteriors to their priors (a scalar
    /// tensor), `None` for point weights.
    fn weight_kl(&self) -> Result<Option<Tensor>>;
}

/// Every input lifted to `rows` rows (`eval::lift`).
pub fn lift_all(inputs: &[Tensor], rows: usize) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .map(|x| crate::lower::eval::lift(x, rows))
        .collect()
}

/// Builds a network; `vb` is already prefixed with the network's name. Fresh parameters
/// are initialized from a generator seeded by `vb`'s prefix, so each copy
/// (`dec.member3`) starts differently but the same spec always starts the same.
pub fn build(net: &NetDef, vb: VarBuilder) -> Result<Box<dyn Network>> {
    let mut rng = Rng::seed(fnv1a(vb.prefix().as_bytes()));
    build_with_rng(net, vb, &mut rng)
}

/// [`build`], with fresh parameters initialized from `rng`.
pub fn build_with_rng(net: &NetDef, vb: VarBuilder, rng: &mut Rng) -> Result<Box<dyn Network>> {
    match &net.arch {
        Arch::Linear { bias } => Ok(Box::new(dense::DenseNet::linear(net, *bias, vb, rng)?)),
        Arch::Mlp {
            hidden,
            act,
            dropout,
            norm,
        } => Ok(Box::new(dense::DenseNet::mlp(
            net, hidden, *act, *dropout, *norm, vb, rng,
        )?)),
        Arch::Made { hidden, act } => {
            Ok(Box::new(dense::DenseNet::made(net, hidden, *act, vb, rng)?))
        }
        Arch::Conv { hidden, act, .. } => {
            Ok(Box::new(conv::ConvNet::new(net, hidden, *act, vb, rng)?))
        }
        Arch::Deconv {
            channels,
            hidden,
            act,
            ..
        } => Ok(Box::new(conv::DeconvNet::new(
            net, channels, hidden, *act, vb, rng,
        )?)),
        Arch::Gru => Ok(Box::new(recurrent::Gru::new(net, vb, rng)?)),
        Arch::Lstm => Ok(Box::new(recurrent::Lstm::new(net, vb, rng)?)),
        Arch::DeepSets {
            phi,
            rho,
            pool,
            act,
        } => Ok(Box::new(sets::DeepSets::new(
            net, phi, rho, *pool, *act, vb, rng,
        )?)),
        Arch::AttendRead { grid } => Ok(Box::new(attend::AttendRead::new(net, *grid, vb, rng)?)),
        Arch::AttendWrite { grid } => Ok(Box::new(attend::AttendWrite::new(net, *grid, vb, rng)?)),
    }
}

/// Which copy of a network's weights: its training member (a `@per_member` network) and
/// its flow step (1-based), each `None` when the network has no copies of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CopyKey {
    pub member: Option<usize>,
    pub step: Option<usize>,
}

impl CopyKey {
    /// The checkpoint prefix of this copy of network `name`.
    pub fn prefix(&self, name: &str) -> String {
        let mut p = name.to_string();
        if let Some(m) = self.member {
            p.push_str(&format!(".member{m}"));
        }
        if let Some(s) = self.step {
            p.push_str(&format!(".step{s}"));
        }
        p
    }
}

/// Every copy of one network's weights, built.
pub struct NetCopies {
    pub copies: Vec<(CopyKey, Box<dyn Network>)>,
}

impl NetCopies {
    /// The copy `key`.
    pub fn get(&self, key: CopyKey) -> Option<&dyn Network> {
        self.copies
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| n.as_ref())
    }

    /// The KL of every copy's weight posterior, summed (`None` for point weights).
    pub fn weight_kl(&self) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (_, n) in &self.copies {
            if let Some(k) = n.weight_kl()? {
                total = Some(match total {
                    Some(t) => (t + k)?,
                    None => k,
                });
            }
        }
        Ok(total)
    }
}

/// The copies network `id` of `program` has: one per flow step (`steps` of the flows that
/// name it, in program order), times one per training member (`members`, when it is
/// `@per_member`); a single unnamed copy otherwise.
pub fn copy_keys(
    program: &crate::ir::Program,
    id: usize,
    members: Option<&[usize]>,
) -> Result<Vec<CopyKey>> {
    let counted = crate::arch::copies(program, id);
    let steps: Vec<Option<usize>> = if counted.flow {
        (1..=counted.iaf as usize).map(Some).collect()
    } else {
        vec![None]
    };
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let members: Vec<Option<usize>> = if counted.per_member {
        match members {
            Some(m) => m.iter().map(|&m| Some(m)).collect(),
            None => candle_core::bail!(
                "the members of `@per_member` network `{}` are known only from the data: list the training members (`train = [0, 1, 2]`) in `meta`",
                program.nets[id].name
            ),
        }
    } else {
        vec![None]
    };
    Ok(members
        .iter()
        .flat_map(|&member| steps.iter().map(move |&step| CopyKey { member, step }))
        .collect())
}

/// Build every copy of every network of `program`, in declaration order (copies in the
/// order of [`copy_keys`]), fresh parameters drawn from `rng`. `members` are the training
/// members of the `meta` family (`None`: none, or not known without data).
pub fn build_all(
    program: &crate::ir::Program,
    store: &super::params::ParamStore,
    members: Option<&[usize]>,
    rng: &mut Rng,
) -> Result<Vec<NetCopies>> {
    let mut out = Vec::with_capacity(program.nets.len());
    for (id, def) in program.nets.iter().enumerate() {
        let mut copies = Vec::new();
        for key in copy_keys(program, id, members)? {
            let vb = store.builder(&key.prefix(&def.name));
            copies.push((key, build_with_rng(def, vb, rng)?));
        }
        out.push(NetCopies { copies });
    }
    Ok(out)
}

/// FNV-1a: a stable 64-bit hash (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
