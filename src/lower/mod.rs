//! Lowering: the typed IR and its plan turned into candle computations, and the one
//! generic objective (ELBO / IWAE / exact marginal likelihood) that the trainer drives.
//!
//! Value conventions shared by every part of lowering:
//! - every runtime value is an f32 tensor whose first axis is the *rows* axis `R`
//!   (examples x samples x enumerated values): a `Real[D]` value is `[R, D]`, a scalar
//!   value is `[R]`;
//! - a `Cat(K)` value is one-hot (exactly, or relaxed by Gumbel-softmax) along a
//!   trailing axis of length `K`: `Cat(K)` is `[R, K]`, `Cat(K)[T]` is `[R, T, K]`;
//!   indexing `mu[c]` is a contraction of that axis with `mu`'s leading `K` axis;
//! - `Binary` values are 0.0 / 1.0, `Count` values whole numbers, as f32;
//! - a context set `Set[T]` of size N is `[R, N, ...T]`;
//! - distribution parameters are broadcast to `[R, ...event shape]` (Categorical:
//!   `[R, ...shape, K]`); log-densities sum every event axis and return `[R]`.

pub mod dist;
pub mod nets;
