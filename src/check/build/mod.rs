//! Name resolution, typing and IR construction (E001 for a missing `model`, E002-E006,
//! E010, and E011 for a strategy written on a model site).
//!
//! Declarations are collected first (one namespace for const, data, latent, param, net
//! and set; items are visible everywhere), then `model` and `guide` are built statement by
//! statement, tracking which locals, latents and `partial` data are defined so far.
//! Every failure becomes a [`BuildError`]; typing goes on with `ExprKind::Invalid` /
//! `Domain::Unknown` so one mistake is reported once.
//!
//! Decisions where LANGUAGE.md is silent:
//! - `Bernoulli` and `Categorical` take `probs` / `logits` by keyword only (a positional
//!   argument would be ambiguous); networks and built-ins take positional arguments only.
//! - `Categorical` arguments have exactly the variable's shape plus `[K]` (no scalar
//!   broadcast); other distribution arguments are scalars or exactly the variable's shape.
//! - Binary data may be observed under `Poisson` (a Binary value is a count); Binary or
//!   Unit data under `ContinuousBernoulli`.
//! - A network head cannot be `Cat` or `Count` (no output activation produces them), and a
//!   param cannot be `Binary`, `Count` or `Cat` (E005). A Simplex param starts at `1/K`.
//! - A plain `let` inside a loop is visible only in that loop; sequence locals
//!   (`let h[0]`, `let h[t]`) outlive it. Loop bounds are const ints with `0 <= a <= b`.
//! - A `[T, ...]` latent may be sampled whole or step by step; reading it whole needs
//!   every step. `h[t+k]` (k > 0) is never defined inside the loop that defines `h[t]`.
//! - `attend_read` may read a context set (`Set[[C, H, W]]`) as its image.
//! - `@reparameterized` may be written explicitly; it is the default for continuous sites.
//! - `zeros` / `ones` take dimensions (`zeros(1, 28, 28)`) or one list of them.

pub(crate) mod dists;
mod errors;
pub(crate) mod exprs;
pub(crate) mod nets;
mod stmts;
#[cfg(test)]
mod tests;
mod types;

pub use errors::BuildError;

use super::consts::{self, Consts, EvalError};
use crate::ir::{self, Program};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::HashMap;

/// What a declared name refers to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Decl {
    Const,
    Data(ir::DataId),
    Latent(ir::LatentId),
    Param(ir::ParamId),
    Net(ir::NetId),
    Set(ir::SetId),
}

impl Decl {
    fn kind(self) -> &'static str {
        match self {
            Decl::Const => "const",
            Decl::Data(_) => "data variable",
            Decl::Latent(_) => "latent",
            Decl::Param(_) => "param",
            Decl::Net(_) => "network",
            Decl::Set(_) => "set",
        }
    }
}

struct Builder<'a> {
    consts: &'a Consts,
    errors: Vec<BuildError>,
    names: HashMap<String, (Decl, Span)>,
    prog: Program,
}

/// Build the IR. Always returns a program (with `ExprKind::Invalid` where typing
/// failed) so later rules can run; `train`/`meta` are filled in by `config`.
impl Builder<'_> {
    /// A shape as the spec writes it: each dimension by the name of the one const with
    /// that value (`[Z]`), by its number otherwise (`[16]`; also when several consts
    /// share the value).
    pub(super) fn shape_named(&self, shape: &[usize]) -> String {
        let dims: Vec<String> = shape
            .iter()
            .map(|&d| {
                let names: Vec<&String> = self
                    .consts
                    .values
                    .iter()
                    .filter(|(_, v)| **v == d)
                    .map(|(k, _)| k)
                    .collect();
                match names.as_slice() {
                    [one] => one.to_string(),
                    _ => d.to_string(),
                }
            })
            .collect();
        format!("[{}]", dims.join(", "))
    }
}

pub fn build(file: &ast::File, consts: &Consts) -> (Program, Vec<BuildError>) {
    let mut b = Builder {
        consts,
        errors: Vec::new(),
        names: HashMap::new(),
        prog: Program {
            consts: consts.defs.clone(),
            data: Vec::new(),
            latents: Vec::new(),
            params: Vec::new(),
            nets: Vec::new(),
            sets: Vec::new(),
            model: ir::Body {
                stmts: Vec::new(),
                locals: Vec::new(),
                loops: Vec::new(),
                span: Span::Artificial,
            },
            guide: ir::Guide::None,
            train: ir::TrainConfig::default(),
            meta: None,
        },
    };
    let mut model: Option<&ast::Block> = None;
    let mut model_span = Span::Artificial;
    let mut guide: Option<(&ast::GuideBody, Span)> = None;
    let mut train: Option<Span> = None;
    let mut meta: Option<Span> = None;
    let mut nets: Vec<&ast::NetDecl> = Vec::new();

    // Pass 1: every declaration, so that names are visible everywhere.
    for item in &file.items {
        match &item.kind {
            ast::ItemKind::Const { name, .. } => {
                b.declare(name, Decl::Const);
            }
            ast::ItemKind::Data { name, ty, role } => {
                let t = b.value_type(ty);
                let id = b.prog.data.len();
                if b.declare(name, Decl::Data(id)) {
                    b.prog.data.push(ir::DataDef {
                        name: name.name.clone(),
                        ty: t,
                        role: match role {
                            ast::DataRole::Observed => ir::DataRole::Observed,
                            ast::DataRole::Given => ir::DataRole::Given,
                            ast::DataRole::Partial => ir::DataRole::Partial,
                        },
                        span: item.span,
                    });
                }
            }
            ast::ItemKind::Latent { name, ty, global } => {
                let t = b.value_type(ty);
                let id = b.prog.latents.len();
                if b.declare(name, Decl::Latent(id)) {
                    b.prog.latents.push(ir::LatentDef {
                        name: name.name.clone(),
                        ty: t,
                        global: global.is_some(),
                        span: item.span,
                    });
                }
            }
            ast::ItemKind::Param { name, ty, init } => {
                let t = b.value_type(ty);
                let init = b.param_init(name, &t, ty.span, init.as_ref());
                let id = b.prog.params.len();
                if b.declare(name, Decl::Param(id)) {
                    b.prog.params.push(ir::ParamDef {
                        name: name.name.clone(),
                        ty: t,
                        init,
                        span: item.span,
                    });
                }
            }
            ast::ItemKind::Set { name, ty, size } => {
                let t = b.value_type(ty);
                let size = b.positive(size).unwrap_or(1);
                let id = b.prog.sets.len();
                if b.declare(name, Decl::Set(id)) {
                    b.prog.sets.push(ir::SetDef {
                        name: name.name.clone(),
                        ty: t,
                        size,
                        span: item.span,
                    });
                }
            }
            ast::ItemKind::Net(decl) => {
                let id = nets.len();
                if b.declare(&decl.name, Decl::Net(id)) {
                    nets.push(decl);
                }
            }
            ast::ItemKind::Model(block) => match model {
                None => {
                    model = Some(block);
                    model_span = item.span;
                }
                Some(_) => b.errors.push(BuildError::DuplicateBlock {
                    block: "model",
                    span: item.span,
                    first: model_span,
                }),
            },
            ast::ItemKind::Guide(body) => match guide {
                None => guide = Some((body, item.span)),
                Some((_, first)) => b.errors.push(BuildError::DuplicateBlock {
                    block: "guide",
                    span: item.span,
                    first,
                }),
            },
            ast::ItemKind::Train(_) => match train {
                None => train = Some(item.span),
                Some(first) => b.errors.push(BuildError::DuplicateBlock {
                    block: "train",
                    span: item.span,
                    first,
                }),
            },
            ast::ItemKind::Meta(_) => match meta {
                None => meta = Some(item.span),
                Some(first) => b.errors.push(BuildError::DuplicateBlock {
                    block: "meta",
                    span: item.span,
                    first,
                }),
            },
        }
    }

    // Pass 2: network signatures and architectures (they refer only to consts).
    for decl in nets {
        let net = b.net(decl);
        b.prog.nets.push(net);
    }

    // Pass 3: the blocks.
    match model {
        Some(block) => b.prog.model = b.body(block, false),
        None => {
            let end = file
                .items
                .iter()
                .filter_map(|i| i.span.range())
                .map(|r| r.end)
                .max()
                .unwrap_or(0);
            b.errors.push(BuildError::MissingModel {
                span: Span::new(end, end),
            });
        }
    }
    if let Some((body, span)) = guide {
        b.prog.guide = match body {
            ast::GuideBody::Exact(exact) => ir::Guide::Exact {
                posterior: ir::ExactPosterior::LinearGaussian,
                span: span.to(*exact),
            },
            ast::GuideBody::Block(block) => {
                let before = b.errors.len();
                let body = b.body(block, true);
                // A `partial` variable read before its guide site, when the guide has no
                // site for it at all, is the missing site (E008), not an ordering mistake.
                let mut sampled = Vec::new();
                crate::ir::walk::for_each_site(&body, |s, _| sampled.push(s.var));
                for e in &mut b.errors[before..] {
                    if let BuildError::UseBeforeDef {
                        name,
                        what: "partial data",
                        span: use_span,
                        ..
                    } = e
                    {
                        let id = b.prog.data.iter().position(|d| d.name == *name);
                        if id.is_some_and(|d| !sampled.contains(&ir::SiteVar::Data(d))) {
                            *e = BuildError::PartialReadNotSampled {
                                name: name.clone(),
                                span: *use_span,
                                guide: block.span,
                            };
                        }
                    }
                }
                ir::Guide::Amortized(body)
            }
        };
    }
    (b.prog, b.errors)
}

impl Builder<'_> {
    /// Register a declaration; `false` (and E003) when the name is taken.
    fn declare(&mut self, name: &ast::Ident, decl: Decl) -> bool {
        if let Some((_, first)) = self.names.get(&name.name) {
            self.errors.push(BuildError::Duplicate {
                what: "name",
                name: name.name.clone(),
                span: name.span,
                first: *first,
            });
            return false;
        }
        self.names.insert(name.name.clone(), (decl, name.span));
        true
    }

    /// Every declared name, for did-you-mean hints.
    fn declared_names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn const_error(&mut self, e: EvalError) {
        if let Some(e) = e.into_error() {
            self.errors.push(BuildError::Const(e));
        }
    }

    /// A positive integer expression (dimension, size, count), reporting failures.
    fn positive(&mut self, e: &ast::Expr) -> Option<usize> {
        match consts::eval_positive(e, self.consts) {
            Ok(v) => Some(v),
            Err(err) => {
                self.const_error(err);
                None
            }
        }
    }

    /// An integer expression (may be zero or negative), reporting failures.
    fn int(&mut self, e: &ast::Expr) -> Option<i64> {
        match consts::eval_int(e, self.consts) {
            Ok(v) => Some(v),
            Err(err) => {
                self.const_error(err);
                None
            }
        }
    }
}

/// The value of a literal number (possibly negated), if `e` is one.
fn literal(e: &ast::Expr) -> Option<f64> {
    match &e.kind {
        ast::ExprKind::Number { value, .. } => Some(*value),
        ast::ExprKind::Neg(inner) => literal(inner).map(|v| -v),
        _ => None,
    }
}

/// `true` / `false` written as names.
fn boolean(e: &ast::Expr) -> Option<bool> {
    match &e.kind {
        ast::ExprKind::Name(id) if id.name == "true" => Some(true),
        ast::ExprKind::Name(id) if id.name == "false" => Some(false),
        _ => None,
    }
}

/// A bare name (`relu`, `mean`), if `e` is one.
fn bare_name(e: &ast::Expr) -> Option<&ast::Ident> {
    match &e.kind {
        ast::ExprKind::Name(id) => Some(id),
        _ => None,
    }
}

fn shape_text(shape: &[usize]) -> String {
    if shape.is_empty() {
        "a scalar".to_string()
    } else {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}
