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
}

/// A built network.
pub trait Network: Send + Sync {
    /// Inputs in signature order, each `[R, ...shape]`; one activated tensor per head,
    /// `[R, ...head shape]`.
    fn forward(&self, inputs: &[Tensor], ctx: &mut NetCtx) -> Result<Vec<Tensor>>;
    /// The KL of the `bayes` / `vdrop` weight posteriors to their priors (a scalar
    /// tensor), `None` for point weights.
    fn weight_kl(&self) -> Result<Option<Tensor>>;
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

/// FNV-1a: a stable 64-bit hash (std's hasher is not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}
