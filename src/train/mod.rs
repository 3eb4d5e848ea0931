//! Training: one generic loop over any lowered model, its optimizers, checkpoints and
//! metrics.

pub mod fpu;
pub mod optim;
