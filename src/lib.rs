//! vic: a compiler for declarative variational-inference model specs (`.vi` files).
//!
//! The pipeline is a chain of pure phases, run in order by [`driver`]:
//! source text ─parse→ AST ─check→ IR ─plan→ inference plan (─lower→ candle ─train→ run dir).
//! Only `io` (and the binary) touch files, the clock or the environment.

pub mod arch;
pub mod check;
pub mod cluster;
pub mod data;
pub mod diag;
pub mod dot;
pub mod driver;
pub mod explain;
pub mod fmt;
pub mod ide;
pub mod image;
pub mod io;
pub mod ir;
pub mod lower;
pub mod plan;
pub mod plot;
pub mod probe;
pub mod render;
pub mod rng;
pub mod span;
pub mod syntax;
pub mod train;

/// The LANGUAGE.md example sources, one copy shared by unit and integration tests.
#[cfg(test)]
#[path = "../tests/sources/mod.rs"]
pub(crate) mod sources;
