//! The `train` and `meta` blocks: keys, value kinds and ranges, defaults (E012, E013).
//!
//! Only the first `train` and the first `meta` item are read; a second one is reported
//! (E003) by `build`. Every key is checked and every error collected; a key whose value
//! fails keeps its default, so one mistake is reported once.
//!
//! Decisions where LANGUAGE.md is silent:
//! - functions take their arguments by keyword or positionally in the order documented
//!   (`iwae(samples = 5)` or `iwae(5)`), like distributions;
//! - `anneal`, `clip` and `labels` also accept `none` / `none` / `all` (their defaults);
//! - `eval` accepts `elbo(samples = K)` as well as `iwae(samples = K)`;
//! - `device` accepts `cpu`, `cuda`, `cuda:N` written bare or as a string (`"cuda:1"`);
//! - in `meta`, `train` defaults to `all` and `test` to no member (`Members::List([])`);
//!   `test = none` says the same explicitly. A range `a:b` without a step steps by 1.
//!   A `meta` block whose `family` fails yields no `MetaConfig` (the rules look at the
//!   AST to know that a `meta` block was written).

use super::consts::{ConstError, Consts, EvalError};
use crate::diag::{Code, Diagnostic};
use crate::ir::{
    Anneal, Binarize, Dataset, Decay, Device, Family, KlMode, Members, MetaConfig, Objective,
    Optimizer, Schedule, TrainConfig,
};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::HashMap;

/// Which block a setting belongs to: `train` errors are E012, `meta` errors E013.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigBlock {
    Train,
    Meta,
}

impl ConfigBlock {
    fn code(self) -> Code {
        match self {
            ConfigBlock::Train => Code::E012,
            ConfigBlock::Meta => Code::E013,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ConfigBlock::Train => "train",
            ConfigBlock::Meta => "meta",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ConfigError {
    /// A key the block does not know; `suggestion` is the nearest known key.
    UnknownKey {
        block: ConfigBlock,
        key: String,
        suggestion: Option<String>,
        span: Span,
    },
    /// A key given twice in one block.
    DuplicateKey {
        block: ConfigBlock,
        key: String,
        span: Span,
        first: Span,
    },
    /// A value of the wrong kind (a string where a number is needed, a call where a
    /// name is needed, a fraction where an integer is needed, ...).
    WrongKind {
        block: ConfigBlock,
        key: String,
        found: String,
        expected: String,
        span: Span,
    },
    /// A number outside the range the key allows.
    OutOfRange {
        block: ConfigBlock,
        key: String,
        found: String,
        expected: String,
        span: Span,
    },
    /// A name or function the key does not accept (`optimizer = adagrad(...)`).
    UnknownChoice {
        block: ConfigBlock,
        key: String,
        found: String,
        expected: String,
        suggestion: Option<String>,
        span: Span,
    },
    /// A keyword argument the function does not take.
    UnknownArgument {
        block: ConfigBlock,
        key: String,
        function: String,
        argument: String,
        expected: String,
        span: Span,
    },
    /// A required argument not given.
    MissingArgument {
        block: ConfigBlock,
        key: String,
        function: String,
        argument: String,
        span: Span,
    },
    /// An argument given twice (by keyword, or positionally and by keyword).
    DuplicateArgument {
        block: ConfigBlock,
        key: String,
        function: String,
        argument: String,
        span: Span,
        first: Span,
    },
    /// More positional arguments than the function takes.
    TooManyArguments {
        block: ConfigBlock,
        key: String,
        function: String,
        max: usize,
        span: Span,
    },
    /// A `dataset` string that is neither a built-in name nor a path with a known extension.
    UnknownDataset {
        value: String,
        suggestion: Option<String>,
        span: Span,
    },
    /// A `meta` block without `family`.
    MissingFamily { span: Span },
    /// A `meta` range with no member (`10:0:5`) or a zero step.
    EmptyRange { found: String, span: Span },
    /// A `meta` range with an unreasonable number of members.
    TooManyMembers {
        found: String,
        count: usize,
        span: Span,
    },
    /// A member index at or beyond the family's size.
    MemberOutOfRange {
        key: String,
        index: usize,
        size: usize,
        span: Span,
    },
    /// An integer setting naming something that is not a const (E002, worded by `consts`).
    UnknownConst(ConstError),
    /// `train` and `test` members that overlap.
    OverlappingMembers {
        shared: String,
        train: Span,
        test: Span,
    },
}

/// The largest family a range may produce.
const MAX_MEMBERS: usize = 100_000;

fn quote_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keys of other tools, too far from ours for an edit-distance suggestion.
const KEY_ALIASES: &[(&str, &str)] = &[
    ("batch_size", "batch"),
    ("minibatch", "batch"),
    ("n_epochs", "epochs"),
    ("num_epochs", "epochs"),
    ("max_epochs", "epochs"),
    ("optim", "optimizer"),
    ("grad_clip", "clip"),
    ("clip_norm", "clip"),
    ("max_grad_norm", "clip"),
    ("random_seed", "seed"),
    ("data", "dataset"),
    ("loss", "objective"),
    ("kl_weight", "beta"),
];

impl From<ConfigError> for Diagnostic {
    fn from(e: ConfigError) -> Diagnostic {
        match e {
            ConfigError::UnknownKey {
                block,
                key,
                suggestion,
                span,
            } => {
                let known = match block {
                    ConfigBlock::Train => quote_list(TRAIN_KEYS),
                    ConfigBlock::Meta => quote_list(META_KEYS),
                };
                let hint = match (block, key.as_str(), suggestion) {
                    (ConfigBlock::Train, "lr" | "learning_rate", _) => {
                        "the learning rate belongs to the optimizer: `optimizer = adam(lr = 1e-3)`"
                            .to_string()
                    }
                    (_, _, Some(s)) => format!("did you mean `{s}`?"),
                    (_, k, None) => match KEY_ALIASES.iter().find(|(a, _)| *a == k) {
                        Some((_, s)) => format!("did you mean `{s}`?"),
                        None => format!("`{}` takes the keys {known}", block.name()),
                    },
                };
                Diagnostic::new(
                    block.code(),
                    span,
                    format!("`{key}` is not a `{}` setting", block.name()),
                )
                .with_label("unknown key")
                .with_hint(hint)
            }
            ConfigError::DuplicateKey {
                block,
                key,
                span,
                first,
            } => Diagnostic::new(
                Code::E003,
                span,
                format!("`{key}` is set twice in `{}`", block.name()),
            )
            .with_label("set again here")
            .with_secondary(first, "first set here")
            .with_hint(format!("keep one `{key} = ...` entry")),
            ConfigError::WrongKind {
                block,
                key,
                found,
                expected,
                span,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{key}` cannot be `{found}`"),
            )
            .with_label(format!("expected {expected}"))
            .with_hint(format!("write `{key} = ` followed by {expected}")),
            ConfigError::OutOfRange {
                block,
                key,
                found,
                expected,
                span,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{key}` is `{found}`, which is out of range"),
            )
            .with_label("out of range")
            .with_hint(format!("`{key}` must be {expected}")),
            ConfigError::UnknownChoice {
                block,
                key,
                found,
                expected,
                suggestion,
                span,
            } => {
                let hint = match suggestion {
                    Some(s) => format!("did you mean `{s}`? `{key}` takes {expected}"),
                    None => format!("`{key}` takes {expected}"),
                };
                Diagnostic::new(
                    block.code(),
                    span,
                    format!("`{found}` is not a value `{key}` accepts"),
                )
                .with_label("unknown value")
                .with_hint(hint)
            }
            ConfigError::UnknownArgument {
                block,
                key,
                function,
                argument,
                expected,
                span,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{function}` in `{key}` has no argument `{argument}`"),
            )
            .with_label("unknown argument")
            .with_hint(format!("`{function}` takes {expected}")),
            ConfigError::MissingArgument {
                block,
                key,
                function,
                argument,
                span,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{function}` in `{key}` needs the argument `{argument}`"),
            )
            .with_label(format!("`{argument}` missing"))
            .with_hint(format!("write `{function}({argument} = ...)`")),
            ConfigError::DuplicateArgument {
                block,
                key,
                function,
                argument,
                span,
                first,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{function}` in `{key}` is given `{argument}` twice"),
            )
            .with_label("given again here")
            .with_secondary(first, "first given here")
            .with_hint(format!("give `{argument}` once")),
            ConfigError::TooManyArguments {
                block,
                key,
                function,
                max,
                span,
            } => Diagnostic::new(
                block.code(),
                span,
                format!("`{function}` in `{key}` takes at most {max} argument(s)"),
            )
            .with_label("extra argument")
            .with_hint("remove the extra arguments, or name them with `name = value`"),
            ConfigError::UnknownDataset {
                value,
                suggestion,
                span,
            } => {
                let hint = match suggestion {
                    Some(s) => format!("did you mean `\"{s}\"`?"),
                    None => "use a built-in name (\"digits\", \"fashion-mnist\", \"mnist\") or a path ending in .npz, .npy, .csv, .idx, .idx.gz or .safetensors".to_string(),
                };
                Diagnostic::new(
                    Code::E012,
                    span,
                    format!("`dataset` \"{value}\" is neither a built-in dataset nor a supported file"),
                )
                .with_label("unknown dataset")
                .with_hint(hint)
            }
            ConfigError::MissingFamily { span } => {
                Diagnostic::new(Code::E013, span, "the `meta` block has no `family`")
                    .with_label("no `family` here")
                    .with_hint("add e.g. `family = rotate(-180:160:20)` or `family = classes()`")
            }
            ConfigError::EmptyRange { found, span } => Diagnostic::new(
                Code::E013,
                span,
                format!("the range `{found}` has no member"),
            )
            .with_label("empty range")
            .with_hint("write `a:b:step` with a nonzero step that goes from `a` towards `b`, e.g. `-180:160:20`"),
            ConfigError::TooManyMembers { found, count, span } => Diagnostic::new(
                Code::E013,
                span,
                format!("the range `{found}` has {count} members, more than {MAX_MEMBERS}"),
            )
            .with_label("too many members")
            .with_hint("use a larger step"),
            ConfigError::MemberOutOfRange {
                key,
                index,
                size,
                span,
            } => Diagnostic::new(
                Code::E013,
                span,
                format!("member {index} in `{key}` does not exist: the family has {size} members"),
            )
            .with_label("no such member")
            .with_hint(format!(
                "member indices run from 0 to {}",
                size.saturating_sub(1)
            )),
            ConfigError::UnknownConst(e) => Diagnostic::from(e),
            ConfigError::OverlappingMembers {
                shared,
                train,
                test,
            } => {
                let d = Diagnostic::new(
                    Code::E013,
                    test,
                    format!("`train` and `test` share {shared}"),
                )
                .with_label("overlaps the training members")
                .with_hint("held-out members must be disjoint from the training ones, e.g. `train = even` and `test = odd`");
                if train.is_artificial() {
                    // `train` omitted: all members train.
                    d.with_label("overlaps the training members (`train` defaults to `all`)")
                } else {
                    d.with_secondary(train, "training members chosen here")
                }
            }
        }
    }
}

pub(crate) const TRAIN_KEYS: &[&str] = &[
    "dataset",
    "binarize",
    "objective",
    "kl",
    "beta",
    "anneal",
    "decay",
    "free_bits",
    "optimizer",
    "clip",
    "schedule",
    "batch",
    "epochs",
    "seed",
    "labels",
    "supervised_weight",
    "eval",
    "device",
    "split",
];

pub(crate) const META_KEYS: &[&str] = &["family", "train", "test"];

const BUILTIN_DATASETS: &[&str] = &["digits", "fashion-mnist", "mnist"];

const DATASET_EXTENSIONS: &[&str] = &[".npz", ".npy", ".csv", ".idx", ".idx.gz", ".safetensors"];

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The nearest candidate within a small edit distance.
fn suggest(word: &str, candidates: &[&str]) -> Option<String> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// The expression as the user would write it (for messages).
fn show(e: &ast::Expr) -> String {
    match &e.kind {
        ast::ExprKind::Number { text, .. } => text.clone(),
        ast::ExprKind::Str(s) => format!("\"{s}\""),
        ast::ExprKind::Name(id) => id.name.clone(),
        ast::ExprKind::Call(c) => show_call(c),
        ast::ExprKind::Field { base, field } => format!("{}.{}", show(base), field.name),
        ast::ExprKind::Index { base, indices } => {
            let ix: Vec<String> = indices.iter().map(show).collect();
            format!("{}[{}]", show(base), ix.join(", "))
        }
        ast::ExprKind::Neg(x) => format!("-{}", show(x)),
        ast::ExprKind::Binary { op, lhs, rhs } => {
            format!("{} {} {}", show(lhs), op.symbol(), show(rhs))
        }
        ast::ExprKind::List(xs) => {
            let xs: Vec<String> = xs.iter().map(show).collect();
            format!("[{}]", xs.join(", "))
        }
        ast::ExprKind::Range { from, to, step } => match step {
            Some(s) => format!("{}:{}:{}", show(from), show(to), show(s)),
            None => format!("{}:{}", show(from), show(to)),
        },
    }
}

fn show_call(c: &ast::Call) -> String {
    let args: Vec<String> = c
        .args
        .iter()
        .map(|a| match &a.name {
            Some(n) => format!("{} = {}", n.name, show(&a.value)),
            None => show(&a.value),
        })
        .collect();
    format!("{}({})", c.callee.name, args.join(", "))
}

/// Reads the values of one block, collecting errors.
struct Reader<'a> {
    block: ConfigBlock,
    consts: &'a Consts,
    errors: Vec<ConfigError>,
}

/// One parameter of a setting's function: its name and whether it must be given.
struct ParamSpec {
    name: &'static str,
    required: bool,
}

const fn opt(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: false,
    }
}

const fn req(name: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        required: true,
    }
}

impl<'a> Reader<'a> {
    fn new(block: ConfigBlock, consts: &'a Consts) -> Reader<'a> {
        Reader {
            block,
            consts,
            errors: Vec::new(),
        }
    }

    fn wrong_kind(&mut self, key: &str, e: &ast::Expr, expected: &str) {
        self.errors.push(ConfigError::WrongKind {
            block: self.block,
            key: key.to_string(),
            found: show(e),
            expected: expected.to_string(),
            span: e.span,
        });
    }

    fn out_of_range(&mut self, key: &str, e: &ast::Expr, expected: &str) {
        self.errors.push(ConfigError::OutOfRange {
            block: self.block,
            key: key.to_string(),
            found: show(e),
            expected: expected.to_string(),
            span: e.span,
        });
    }

    /// The value of a numeric expression: literals, consts, `+ - * /`, unary minus.
    /// `None` when it is not numeric (nothing reported: the caller says what it wanted).
    fn eval_num(&self, e: &ast::Expr) -> Option<f64> {
        match &e.kind {
            ast::ExprKind::Number { value, .. } => Some(*value),
            ast::ExprKind::Name(id) => self.consts.values.get(&id.name).map(|v| *v as f64),
            ast::ExprKind::Neg(x) => self.eval_num(x).map(|v| -v),
            ast::ExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.eval_num(lhs)?, self.eval_num(rhs)?);
                let v = match op {
                    ast::BinOp::Add => a + b,
                    ast::BinOp::Sub => a - b,
                    ast::BinOp::Mul => a * b,
                    ast::BinOp::Div => a / b,
                };
                v.is_finite().then_some(v)
            }
            _ => None,
        }
    }

    /// Whether `e` reads a const that failed (already reported by `consts`).
    fn uses_failed_const(&self, e: &ast::Expr) -> bool {
        match &e.kind {
            ast::ExprKind::Name(id) => self.consts.failed.contains(&id.name),
            ast::ExprKind::Neg(x) => self.uses_failed_const(x),
            ast::ExprKind::Binary { lhs, rhs, .. } => {
                self.uses_failed_const(lhs) || self.uses_failed_const(rhs)
            }
            _ => false,
        }
    }

    /// A number, reporting a wrong kind (but not a const that already failed).
    fn number(&mut self, key: &str, e: &ast::Expr, expected: &str) -> Option<f64> {
        let v = self.eval_num(e);
        if v.is_none() && !self.uses_failed_const(e) {
            self.wrong_kind(key, e, expected);
        }
        v
    }

    /// A number satisfying `ok`, reporting a wrong kind or an out-of-range value.
    fn number_in(
        &mut self,
        key: &str,
        e: &ast::Expr,
        expected: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let v = self.number(key, e, expected)?;
        if ok(v) {
            Some(v)
        } else {
            self.out_of_range(key, e, expected);
            None
        }
    }

    /// An integer `>= min`.
    fn integer(&mut self, key: &str, e: &ast::Expr, min: i64) -> Option<usize> {
        let expected = format!("an integer >= {min}");
        match super::consts::eval_int(e, self.consts) {
            Ok(v) if v < min => {
                self.out_of_range(key, e, &expected);
                return None;
            }
            Ok(v) => return usize::try_from(v).ok(),
            Err(EvalError::AlreadyReported) => return None,
            Err(EvalError::Error(err @ ConstError::UnknownName { .. })) => {
                self.errors.push(ConfigError::UnknownConst(err));
                return None;
            }
            // Not an integer expression: say so in terms of the setting.
            Err(EvalError::Error(_)) => {}
        }
        let v = self.number(key, e, &expected)?;
        if v.fract() != 0.0 || v.abs() > 9.0e15 {
            self.wrong_kind(key, e, &expected);
            return None;
        }
        if (v as i64) < min {
            self.out_of_range(key, e, &expected);
            return None;
        }
        usize::try_from(v as i64).ok()
    }

    /// A bare name (`dynamic`) or a call (`threshold(0.5)`) among `choices`.
    /// Returns the name and the call when one was written.
    fn choice<'e>(
        &mut self,
        key: &str,
        e: &'e ast::Expr,
        choices: &[&str],
        expected: &str,
    ) -> Option<(&'e str, Option<&'e ast::Call>)> {
        let (name, call, span) = match &e.kind {
            ast::ExprKind::Name(id) => (id.name.as_str(), None, id.span),
            ast::ExprKind::Call(c) => (c.callee.name.as_str(), Some(c), c.callee.span),
            _ => {
                self.wrong_kind(key, e, expected);
                return None;
            }
        };
        if choices.contains(&name) {
            Some((name, call))
        } else {
            self.errors.push(ConfigError::UnknownChoice {
                block: self.block,
                key: key.to_string(),
                found: name.to_string(),
                expected: expected.to_string(),
                suggestion: suggest(name, choices),
                span,
            });
            None
        }
    }

    /// Match a call's arguments (keyword, or positional in order) against `params`.
    /// `None` after reporting when anything is wrong.
    fn args<'e>(
        &mut self,
        key: &str,
        call: &'e ast::Call,
        params: &[ParamSpec],
    ) -> Option<Vec<Option<&'e ast::Expr>>> {
        let mut slots: Vec<Option<(&'e ast::Expr, Span)>> = vec![None; params.len()];
        let mut ok = true;
        let mut positional = 0;
        let function = call.callee.name.clone();
        let expected = if params.is_empty() {
            "no arguments".to_string()
        } else {
            let names: Vec<&str> = params.iter().map(|p| p.name).collect();
            format!("the arguments {}", quote_list(&names))
        };
        for arg in &call.args {
            let index = match &arg.name {
                Some(n) => match params.iter().position(|p| p.name == n.name) {
                    Some(i) => i,
                    None => {
                        self.errors.push(ConfigError::UnknownArgument {
                            block: self.block,
                            key: key.to_string(),
                            function: function.clone(),
                            argument: n.name.clone(),
                            expected: expected.clone(),
                            span: n.span,
                        });
                        ok = false;
                        continue;
                    }
                },
                None => {
                    let i = positional;
                    positional += 1;
                    if i >= params.len() {
                        self.errors.push(ConfigError::TooManyArguments {
                            block: self.block,
                            key: key.to_string(),
                            function: function.clone(),
                            max: params.len(),
                            span: arg.span,
                        });
                        ok = false;
                        continue;
                    }
                    i
                }
            };
            match slots[index] {
                Some((_, first)) => {
                    self.errors.push(ConfigError::DuplicateArgument {
                        block: self.block,
                        key: key.to_string(),
                        function: function.clone(),
                        argument: params[index].name.to_string(),
                        span: arg.span,
                        first,
                    });
                    ok = false;
                }
                None => slots[index] = Some((&arg.value, arg.span)),
            }
        }
        for (slot, p) in slots.iter().zip(params) {
            if slot.is_none() && p.required {
                self.errors.push(ConfigError::MissingArgument {
                    block: self.block,
                    key: key.to_string(),
                    function: function.clone(),
                    argument: p.name.to_string(),
                    span: call.span,
                });
                ok = false;
            }
        }
        ok.then(|| slots.into_iter().map(|s| s.map(|(e, _)| e)).collect())
    }

    /// A bare choice without arguments (`kl = auto`); a call form is a wrong kind.
    fn bare<'e>(
        &mut self,
        key: &str,
        e: &'e ast::Expr,
        choices: &[&str],
        expected: &str,
    ) -> Option<&'e str> {
        let (name, call) = self.choice(key, e, choices, expected)?;
        if call.is_some() {
            self.wrong_kind(key, e, expected);
            return None;
        }
        Some(name)
    }

    /// `elbo(samples = K)` / `iwae(samples = K)`.
    fn objective(&mut self, key: &str, e: &ast::Expr) -> Option<Objective> {
        let expected = "`elbo(samples = K)` or `iwae(samples = K)`";
        let (name, call) = self.choice(key, e, &["elbo", "iwae"], expected)?;
        let samples = match call {
            None if name == "elbo" => 1,
            None => {
                self.wrong_kind(key, e, expected);
                return None;
            }
            Some(call) => {
                let spec = if name == "elbo" {
                    [opt("samples")]
                } else {
                    [req("samples")]
                };
                let args = self.args(key, call, &spec)?;
                match args[0] {
                    Some(v) => self.integer(key, v, 1)?,
                    None => 1,
                }
            }
        };
        Some(match name {
            "elbo" => Objective::Elbo { samples },
            _ => Objective::Iwae { samples },
        })
    }

    fn float_arg(
        &mut self,
        key: &str,
        arg: Option<&ast::Expr>,
        default: f64,
        expected: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        match arg {
            None => Some(default),
            Some(v) => self.number_in(key, v, expected, ok),
        }
    }

    fn betas(&mut self, key: &str, arg: Option<&ast::Expr>) -> Option<[f64; 2]> {
        let expected = "a list of two numbers in [0, 1), e.g. `[0.9, 0.999]`";
        let Some(e) = arg else {
            return Some([0.9, 0.999]);
        };
        let ast::ExprKind::List(xs) = &e.kind else {
            self.wrong_kind(key, e, expected);
            return None;
        };
        if xs.len() != 2 {
            self.wrong_kind(key, e, expected);
            return None;
        }
        let b1 = self.number_in(key, &xs[0], expected, |v| (0.0..1.0).contains(&v));
        let b2 = self.number_in(key, &xs[1], expected, |v| (0.0..1.0).contains(&v));
        Some([b1?, b2?])
    }

    fn optimizer(&mut self, key: &str, e: &ast::Expr) -> Option<Optimizer> {
        let expected = "`adam(lr = 1e-3)`, `adamax(lr = 2e-3)` or `sgd(lr = 0.01, momentum = 0)`";
        let (name, call) = self.choice(key, e, &["adam", "adamax", "sgd"], expected)?;
        let empty;
        let call = match call {
            Some(c) => c,
            None if name == "sgd" => {
                self.wrong_kind(key, e, "`sgd(lr = 0.01)`: `sgd` needs a learning rate");
                return None;
            }
            None => {
                empty = ast::Call {
                    callee: ast::Ident {
                        name: name.to_string(),
                        span: e.span,
                    },
                    args: Vec::new(),
                    span: e.span,
                };
                &empty
            }
        };
        let pos = "a number > 0";
        let nonneg = "a number >= 0";
        match name {
            "adam" => {
                let a = self.args(
                    key,
                    call,
                    &[opt("lr"), opt("betas"), opt("eps"), opt("weight_decay")],
                )?;
                let lr = self.float_arg("lr", a[0], 1e-3, pos, |v| v > 0.0);
                let betas = self.betas("betas", a[1]);
                let eps = self.float_arg("eps", a[2], 1e-8, pos, |v| v > 0.0);
                let weight_decay = self.float_arg("weight_decay", a[3], 0.0, nonneg, |v| v >= 0.0);
                Some(Optimizer::Adam {
                    lr: lr?,
                    betas: betas?,
                    eps: eps?,
                    weight_decay: weight_decay?,
                })
            }
            "adamax" => {
                let a = self.args(key, call, &[opt("lr"), opt("betas"), opt("eps")])?;
                let lr = self.float_arg("lr", a[0], 2e-3, pos, |v| v > 0.0);
                let betas = self.betas("betas", a[1]);
                let eps = self.float_arg("eps", a[2], 1e-8, pos, |v| v > 0.0);
                Some(Optimizer::Adamax {
                    lr: lr?,
                    betas: betas?,
                    eps: eps?,
                })
            }
            _ => {
                let a = self.args(key, call, &[req("lr"), opt("momentum")])?;
                let lr = self.float_arg("lr", a[0], 1e-2, pos, |v| v > 0.0);
                let momentum = self.float_arg("momentum", a[1], 0.0, "a number in [0, 1)", |v| {
                    (0.0..1.0).contains(&v)
                });
                Some(Optimizer::Sgd {
                    lr: lr?,
                    momentum: momentum?,
                })
            }
        }
    }

    fn dataset(&mut self, key: &str, e: &ast::Expr) -> Option<Dataset> {
        let ast::ExprKind::Str(s) = &e.kind else {
            self.wrong_kind(
                key,
                e,
                "a string: a built-in name such as \"fashion-mnist\" or a file path",
            );
            return None;
        };
        if BUILTIN_DATASETS.contains(&s.as_str()) {
            return Some(Dataset::Builtin(s.clone()));
        }
        let lower = s.to_ascii_lowercase();
        if DATASET_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) && lower.len() > 4 {
            return Some(Dataset::Path(s.clone()));
        }
        self.errors.push(ConfigError::UnknownDataset {
            value: s.clone(),
            suggestion: suggest(s, BUILTIN_DATASETS),
            span: e.span,
        });
        None
    }

    fn device(&mut self, key: &str, e: &ast::Expr) -> Option<Device> {
        let expected = "`cpu`, `cuda` or `cuda:N`";
        let bad = |r: &mut Self| {
            r.errors.push(ConfigError::UnknownChoice {
                block: r.block,
                key: key.to_string(),
                found: show(e),
                expected: expected.to_string(),
                suggestion: None,
                span: e.span,
            });
            None
        };
        match &e.kind {
            ast::ExprKind::Name(id) => match id.name.as_str() {
                "cpu" => Some(Device::Cpu),
                "cuda" => Some(Device::Cuda(0)),
                _ => bad(self),
            },
            ast::ExprKind::Str(s) => match parse_device(s) {
                Some(d) => Some(d),
                None => bad(self),
            },
            ast::ExprKind::Range {
                from,
                to,
                step: None,
            } => match &from.kind {
                ast::ExprKind::Name(id) if id.name == "cuda" => {
                    Some(Device::Cuda(self.integer(key, to, 0)?))
                }
                _ => bad(self),
            },
            _ => bad(self),
        }
    }
}

fn parse_device(s: &str) -> Option<Device> {
    match s {
        "cpu" => Some(Device::Cpu),
        "cuda" => Some(Device::Cuda(0)),
        _ => {
            let n = s.strip_prefix("cuda:")?;
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            n.parse().ok().map(Device::Cuda)
        }
    }
}

/// The entries of a block, first occurrence of each key only; repeats are reported.
fn unique_entries<'e>(
    entries: &'e [ast::Entry],
    block: ConfigBlock,
    known: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Vec<&'e ast::Entry> {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    let mut out = Vec::new();
    for entry in entries {
        let key = entry.key.name.as_str();
        if !known.contains(&key) {
            errors.push(ConfigError::UnknownKey {
                block,
                key: key.to_string(),
                suggestion: suggest(key, known),
                span: entry.key.span,
            });
            continue;
        }
        if let Some(first) = seen.get(key) {
            errors.push(ConfigError::DuplicateKey {
                block,
                key: key.to_string(),
                span: entry.key.span,
                first: *first,
            });
            continue;
        }
        seen.insert(key, entry.key.span);
        out.push(entry);
    }
    out
}

fn resolve_train(
    entries: &[ast::Entry],
    consts: &Consts,
    errors: &mut Vec<ConfigError>,
) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    let mut r = Reader::new(ConfigBlock::Train, consts);
    let entries = unique_entries(entries, ConfigBlock::Train, TRAIN_KEYS, &mut r.errors);
    for entry in entries {
        let key = entry.key.name.as_str();
        let v = &entry.value;
        match key {
            "dataset" => {
                if let Some(d) = r.dataset(key, v) {
                    cfg.dataset = d;
                }
            }
            "binarize" => {
                let expected = "`dynamic`, `threshold(0.5)` or `none`";
                if let Some((name, call)) =
                    r.choice(key, v, &["dynamic", "threshold", "none"], expected)
                {
                    match (name, call) {
                        ("dynamic", None) => cfg.binarize = Binarize::Dynamic,
                        ("none", None) => cfg.binarize = Binarize::None,
                        ("threshold", Some(call)) => {
                            if let Some(a) = r.args(key, call, &[opt("level")]) {
                                if let Some(t) =
                                    r.float_arg(key, a[0], 0.5, "a number in (0, 1)", |t| {
                                        t > 0.0 && t < 1.0
                                    })
                                {
                                    cfg.binarize = Binarize::Threshold(t);
                                }
                            }
                        }
                        ("threshold", None) => cfg.binarize = Binarize::Threshold(0.5),
                        _ => r.wrong_kind(key, v, expected),
                    }
                }
            }
            "objective" => {
                if let Some(o) = r.objective(key, v) {
                    cfg.objective = o;
                }
            }
            "eval" => {
                if let Some(o) = r.objective(key, v) {
                    cfg.eval = o;
                }
            }
            "kl" => {
                let expected = "`auto`, `analytic` or `mc`";
                match r.bare(key, v, &["auto", "analytic", "mc"], expected) {
                    Some("auto") => cfg.kl = KlMode::Auto,
                    Some("analytic") => cfg.kl = KlMode::Analytic,
                    Some(_) => cfg.kl = KlMode::Mc,
                    None => {}
                }
            }
            "beta" => {
                if let Some(b) = r.number_in(key, v, "a number >= 0", |b| b >= 0.0) {
                    cfg.beta = b;
                }
            }
            "free_bits" => {
                if let Some(b) = r.number_in(key, v, "a number >= 0", |b| b >= 0.0) {
                    cfg.free_bits = b;
                }
            }
            "supervised_weight" => {
                if let Some(b) = r.number_in(key, v, "a number >= 0", |b| b >= 0.0) {
                    cfg.supervised_weight = b;
                }
            }
            "split" => {
                if let Some(s) = r.number_in(key, v, "a number strictly between 0 and 1", |s| {
                    s > 0.0 && s < 1.0
                }) {
                    cfg.split = s;
                }
            }
            "clip" => {
                if matches!(&v.kind, ast::ExprKind::Name(id) if id.name == "none") {
                    cfg.clip = None;
                } else if let Some(c) = r.number_in(key, v, "a number > 0 (or `none`)", |c| c > 0.0)
                {
                    cfg.clip = Some(c);
                }
            }
            "anneal" => {
                let expected = "`linear(epochs = E)` or `none`";
                if let Some((name, call)) = r.choice(key, v, &["linear", "none"], expected) {
                    match (name, call) {
                        ("none", None) => cfg.anneal = None,
                        ("linear", Some(call)) => {
                            if let Some(a) = r.args(key, call, &[req("epochs")]) {
                                if let Some(epochs) = a[0].and_then(|e| r.integer(key, e, 1)) {
                                    cfg.anneal = Some(Anneal { epochs });
                                }
                            }
                        }
                        _ => r.wrong_kind(key, v, expected),
                    }
                }
            }
            "decay" => {
                let expected = "`linear(from = F)`, `exponential(rate = R)` or `none`";
                let names = &["linear", "exponential", "none"];
                if let Some((name, call)) = r.choice(key, v, names, expected) {
                    match (name, call) {
                        ("none", None) => cfg.decay = Decay::None,
                        ("linear", Some(call)) => {
                            if let Some(a) = r.args(key, call, &[req("from")]) {
                                let from = a[0].and_then(|e| {
                                    r.number_in(key, e, "a fraction in [0, 1)", |f| {
                                        (0.0..1.0).contains(&f)
                                    })
                                });
                                if let Some(from) = from {
                                    cfg.decay = Decay::Linear { from };
                                }
                            }
                        }
                        ("exponential", Some(call)) => {
                            if let Some(a) = r.args(key, call, &[req("rate")]) {
                                let rate = a[0].and_then(|e| {
                                    r.number_in(key, e, "a number in (0, 1]", |f| {
                                        f > 0.0 && f <= 1.0
                                    })
                                });
                                if let Some(rate) = rate {
                                    cfg.decay = Decay::Exponential { rate };
                                }
                            }
                        }
                        _ => r.wrong_kind(key, v, expected),
                    }
                }
            }
            "optimizer" => {
                if let Some(o) = r.optimizer(key, v) {
                    cfg.optimizer = o;
                }
            }
            "schedule" => {
                let expected = "`joint` or `alternate(e_steps = N, m_steps = M)`";
                if let Some((name, call)) = r.choice(key, v, &["joint", "alternate"], expected) {
                    match (name, call) {
                        ("joint", None) => cfg.schedule = Schedule::Joint,
                        ("alternate", Some(call)) => {
                            if let Some(a) = r.args(key, call, &[req("e_steps"), req("m_steps")]) {
                                let e = a[0].and_then(|e| r.integer(key, e, 1));
                                let m = a[1].and_then(|e| r.integer(key, e, 1));
                                if let (Some(e_steps), Some(m_steps)) = (e, m) {
                                    cfg.schedule = Schedule::Alternate { e_steps, m_steps };
                                }
                            }
                        }
                        _ => r.wrong_kind(key, v, expected),
                    }
                }
            }
            "batch" => {
                if let Some(n) = r.integer(key, v, 1) {
                    cfg.batch = n;
                }
            }
            "epochs" => {
                if let Some(n) = r.integer(key, v, 1) {
                    cfg.epochs = n;
                }
            }
            "seed" => {
                if let Some(n) = r.integer(key, v, 0) {
                    cfg.seed = n as u64;
                }
            }
            "labels" => {
                if matches!(&v.kind, ast::ExprKind::Name(id) if id.name == "all") {
                    cfg.labels = None;
                } else if let Some(n) = r.integer(key, v, 0) {
                    cfg.labels = Some(n);
                }
            }
            "device" => {
                if let Some(d) = r.device(key, v) {
                    cfg.device = d;
                }
            }
            _ => {}
        }
    }
    errors.append(&mut r.errors);
    cfg
}

impl Reader<'_> {
    /// The values of a family argument: a range `a:b:step` (inclusive of `b` when
    /// reached) or a list `[a, b, c]`.
    fn family_values(&mut self, key: &str, e: &ast::Expr) -> Option<Vec<f64>> {
        let expected = "a range `a:b:step` or a list `[a, b, c]`";
        match &e.kind {
            ast::ExprKind::List(xs) => {
                if xs.is_empty() {
                    self.errors.push(ConfigError::EmptyRange {
                        found: show(e),
                        span: e.span,
                    });
                    return None;
                }
                let vals: Vec<Option<f64>> =
                    xs.iter().map(|x| self.number(key, x, "a number")).collect();
                vals.into_iter().collect()
            }
            ast::ExprKind::Range { from, to, step } => {
                let a = self.number(key, from, "a number");
                let b = self.number(key, to, "a number");
                let s = match step {
                    Some(s) => self.number(key, s, "a number"),
                    None => Some(1.0),
                };
                let (a, b, s) = (a?, b?, s?);
                let count = if s == 0.0 || (b - a) * s < 0.0 {
                    0.0
                } else {
                    // Tolerate rounding so that `b` counts when a step lands on it.
                    let ratio = (b - a) / s;
                    (ratio + 1e-9 * ratio.abs().max(1.0)).floor() + 1.0
                };
                if count < 1.0 {
                    self.errors.push(ConfigError::EmptyRange {
                        found: show(e),
                        span: e.span,
                    });
                    return None;
                }
                if count > MAX_MEMBERS as f64 {
                    self.errors.push(ConfigError::TooManyMembers {
                        found: show(e),
                        count: if count.is_finite() {
                            count as usize
                        } else {
                            usize::MAX
                        },
                        span: e.span,
                    });
                    return None;
                }
                Some((0..count as usize).map(|i| a + s * i as f64).collect())
            }
            _ => {
                self.wrong_kind(key, e, expected);
                None
            }
        }
    }

    fn family(&mut self, key: &str, e: &ast::Expr) -> Option<Family> {
        let expected = "`rotate(DEGREES)`, `scale(FACTORS)`, `shear(DEGREES)`, `classes()` or `datasets(\"a\", \"b\", ...)`";
        let choices = ["rotate", "scale", "shear", "classes", "datasets"];
        let (name, call) = self.choice(key, e, &choices, expected)?;
        let Some(call) = call else {
            self.wrong_kind(key, e, expected);
            return None;
        };
        match name {
            "rotate" | "scale" | "shear" => {
                let spec = match name {
                    "scale" => [req("factors")],
                    _ => [req("degrees")],
                };
                let a = self.args(key, call, &spec)?;
                let vals = self.family_values(key, a[0]?)?;
                if let Some(x) = call.args.first() {
                    if name == "scale" && vals.iter().any(|v| *v <= 0.0) {
                        self.out_of_range(key, &x.value, "scale factors > 0");
                        return None;
                    }
                    // tan(±90°) is infinite: a row would move without bound.
                    if name == "shear" && vals.iter().any(|v| v.abs() >= 90.0) {
                        self.out_of_range(
                            key,
                            &x.value,
                            "shear angles strictly between -90 and 90 degrees",
                        );
                        return None;
                    }
                }
                Some(match name {
                    "rotate" => Family::Rotate(vals),
                    "scale" => Family::Scale(vals),
                    _ => Family::Shear(vals),
                })
            }
            "classes" => {
                self.args(key, call, &[])?;
                Some(Family::Classes)
            }
            _ => {
                let mut names = Vec::new();
                let mut ok = true;
                for arg in &call.args {
                    match (&arg.name, &arg.value.kind) {
                        (None, ast::ExprKind::Str(s)) => names.push(s.clone()),
                        _ => {
                            self.wrong_kind(key, &arg.value, "a dataset name or path as a string");
                            ok = false;
                        }
                    }
                }
                if ok && names.is_empty() {
                    self.wrong_kind(
                        key,
                        e,
                        "`datasets(\"a\", \"b\", ...)` with at least one dataset",
                    );
                    return None;
                }
                ok.then_some(Family::Datasets(names))
            }
        }
    }

    /// `all`, `even`, `odd`, `none` (no member) or a list of member indices.
    fn members(&mut self, key: &str, e: &ast::Expr, size: Option<usize>) -> Option<Members> {
        let expected = "`all`, `even`, `odd` or a list of member indices such as `[0, 2, 5]`";
        match &e.kind {
            ast::ExprKind::Name(_) => {
                match self.bare(key, e, &["all", "even", "odd", "none"], expected)? {
                    "all" => Some(Members::All),
                    "even" => Some(Members::Even),
                    "odd" => Some(Members::Odd),
                    _ => Some(Members::List(Vec::new())),
                }
            }
            ast::ExprKind::List(xs) => {
                let mut out = Vec::new();
                let mut ok = true;
                for x in xs {
                    match self.integer(key, x, 0) {
                        Some(i) => {
                            if let Some(n) = size {
                                if i >= n {
                                    self.errors.push(ConfigError::MemberOutOfRange {
                                        key: key.to_string(),
                                        index: i,
                                        size: n,
                                        span: x.span,
                                    });
                                    ok = false;
                                }
                            }
                            out.push(i);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Members::List(out))
            }
            _ => {
                self.wrong_kind(key, e, expected);
                None
            }
        }
    }
}

/// The members `train` and `test` share, described for a message; `None` when disjoint.
fn overlap(train: &Members, test: &Members, size: Option<usize>) -> Option<String> {
    let list = |v: Vec<usize>| -> Option<String> {
        if v.is_empty() {
            return None;
        }
        let shown: Vec<String> = v.iter().take(10).map(|i| i.to_string()).collect();
        let more = if v.len() > 10 { ", ..." } else { "" };
        let noun = if v.len() == 1 { "member" } else { "members" };
        Some(format!("{noun} {}{more}", shown.join(", ")))
    };
    if let Some(n) = size {
        let a = train.resolve(n);
        let b = test.resolve(n);
        return list(a.into_iter().filter(|i| b.contains(i)).collect());
    }
    // The family's size is known only with the data: reason about the patterns.
    use Members::*;
    let parity = |m: &Members, i: usize| match m {
        All => true,
        Even => i.is_multiple_of(2),
        Odd => i % 2 == 1,
        List(v) => v.contains(&i),
    };
    match (train, test) {
        (List(a), _) => list(a.iter().copied().filter(|&i| parity(test, i)).collect()),
        (_, List(b)) => list(b.iter().copied().filter(|&i| parity(train, i)).collect()),
        (All, All) => Some("every member".into()),
        (All, Even) | (Even, All) | (Even, Even) => Some("every even member".into()),
        (All, Odd) | (Odd, All) | (Odd, Odd) => Some("every odd member".into()),
        (Even, Odd) | (Odd, Even) => None,
    }
}

fn resolve_meta(
    entries: &[ast::Entry],
    span: Span,
    consts: &Consts,
    errors: &mut Vec<ConfigError>,
) -> Option<MetaConfig> {
    let mut r = Reader::new(ConfigBlock::Meta, consts);
    let entries = unique_entries(entries, ConfigBlock::Meta, META_KEYS, &mut r.errors);
    let find = |k: &str| entries.iter().find(|e| e.key.name == k).copied();
    let family_entry = find("family");
    let family = match family_entry {
        Some(e) => r.family("family", &e.value),
        None => {
            r.errors.push(ConfigError::MissingFamily { span });
            None
        }
    };
    let size = family.as_ref().and_then(|f| f.size());
    let train = match find("train") {
        Some(e) => r
            .members("train", &e.value, size)
            .map(|m| (m, e.value.span)),
        None => Some((Members::All, Span::Artificial)),
    };
    let test = match find("test") {
        Some(e) => r.members("test", &e.value, size).map(|m| (m, e.value.span)),
        None => Some((Members::List(Vec::new()), Span::Artificial)),
    };
    let result = match (family, train, test) {
        (Some(family), Some((train, train_span)), Some((test, test_span))) => {
            if let Some(shared) = overlap(&train, &test, size) {
                r.errors.push(ConfigError::OverlappingMembers {
                    shared,
                    train: train_span,
                    test: test_span,
                });
            }
            Some(MetaConfig {
                family,
                train,
                test,
                span,
            })
        }
        _ => None,
    };
    errors.append(&mut r.errors);
    result
}

/// Resolve the first `train` and `meta` blocks (defaults for everything not written).
pub fn resolve(
    file: &ast::File,
    consts: &Consts,
) -> (TrainConfig, Option<MetaConfig>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let train = file.items.iter().find_map(|item| match &item.kind {
        ast::ItemKind::Train(entries) => Some(entries),
        _ => None,
    });
    let train = match train {
        Some(entries) => resolve_train(entries, consts, &mut errors),
        None => TrainConfig::default(),
    };
    let meta = file.items.iter().find_map(|item| match &item.kind {
        ast::ItemKind::Meta(entries) => Some((entries, item.span)),
        _ => None,
    });
    let meta = meta.and_then(|(entries, span)| resolve_meta(entries, span, consts, &mut errors));
    (train, meta, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Device;

    fn run(src: &str) -> (TrainConfig, Option<MetaConfig>, Vec<Diagnostic>) {
        let file = crate::syntax::parse(src).expect("parses");
        let mut consts = Consts::default();
        consts.values.insert("B".into(), 64);
        consts.values.insert("E".into(), 5);
        consts.declared = vec!["B".into(), "E".into(), "Q".into()];
        consts.failed.insert("Q".into());
        let (t, m, errs) = resolve(&file, &consts);
        (t, m, errs.into_iter().map(Diagnostic::from).collect())
    }

    #[test]
    fn learning_rate_decay() {
        let (t, _, d) = run("train { decay = linear(from = 0.5) }");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(t.decay, Decay::Linear { from: 0.5 });
        // Constant to half-way, then linearly to 0.
        assert_eq!(t.decay.factor(2.0, 10.0), 1.0);
        assert!((t.decay.factor(7.5, 10.0) - 0.5).abs() < 1e-12);
        assert_eq!(t.decay.factor(10.0, 10.0), 0.0);
        let (t, _, _) = run("train { decay = exponential(rate = 0.9) }");
        assert!((t.decay.factor(2.0, 10.0) - 0.81).abs() < 1e-12);
        assert_eq!(run("train { }").0.decay, Decay::None);
        let (code, text, _) = one("train { decay = linear(from = 1.5) }");
        assert_eq!((code, text.as_str()), (Code::E012, "1.5"));
        let (code, _, _) = one("train { decay = cosine }");
        assert_eq!(code, Code::E012);
    }

    /// The one diagnostic of `src`: its code and the text it points at.
    fn one(src: &str) -> (Code, String, Diagnostic) {
        let (_, _, d) = run(src);
        assert_eq!(d.len(), 1, "expected one diagnostic, got {d:#?}");
        let r = d[0].span.range().expect("a source span");
        (d[0].code, src[r].to_string(), d[0].clone())
    }

    #[test]
    fn defaults_without_blocks() {
        let (t, m, d) = run("model { }");
        assert!(d.is_empty());
        assert_eq!(t, TrainConfig::default());
        assert!(m.is_none());
    }

    #[test]
    fn every_train_key_resolves() {
        let src = r#"train {
            dataset = "data/x.idx.gz"; binarize = threshold(0.3); objective = iwae(samples = 5)
            kl = analytic; beta = 0.5; anneal = linear(epochs = E); free_bits = 0.25
            optimizer = adam(lr = 3e-4, betas = [0.5, 0.9], weight_decay = 1e-5); clip = 5
            schedule = alternate(e_steps = 1000, m_steps = 10); batch = B * 2; epochs = 3
            seed = 0; labels = 1000; supervised_weight = 0.2; eval = iwae(100)
            device = cuda:1; split = 0.2
        }"#;
        let (t, _, d) = run(src);
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(t.dataset, Dataset::Path("data/x.idx.gz".into()));
        assert_eq!(t.binarize, Binarize::Threshold(0.3));
        assert_eq!(t.objective, Objective::Iwae { samples: 5 });
        assert_eq!(t.kl, KlMode::Analytic);
        assert_eq!(t.beta, 0.5);
        assert_eq!(t.anneal, Some(Anneal { epochs: 5 }));
        assert_eq!(t.free_bits, 0.25);
        assert_eq!(
            t.optimizer,
            Optimizer::Adam {
                lr: 3e-4,
                betas: [0.5, 0.9],
                eps: 1e-8,
                weight_decay: 1e-5
            }
        );
        assert_eq!(t.clip, Some(5.0));
        assert_eq!(
            t.schedule,
            Schedule::Alternate {
                e_steps: 1000,
                m_steps: 10
            }
        );
        assert_eq!(t.batch, 128);
        assert_eq!(t.epochs, 3);
        assert_eq!(t.labels, Some(1000));
        assert_eq!(t.supervised_weight, 0.2);
        assert_eq!(t.eval, Objective::Iwae { samples: 100 });
        assert_eq!(t.device, Device::Cuda(1));
        assert_eq!(t.split, 0.2);
    }

    #[test]
    fn other_forms() {
        let (t, _, d) = run(
            r#"train { dataset = "mnist"; device = "cuda:2"; optimizer = sgd(0.1, momentum = 0.9); binarize = none }"#,
        );
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(t.dataset, Dataset::Builtin("mnist".into()));
        assert_eq!(t.device, Device::Cuda(2));
        assert_eq!(
            t.optimizer,
            Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.9
            }
        );
        assert_eq!(t.binarize, Binarize::None);
        let (t, _, d) = run("train { device = cuda; optimizer = adamax(); kl = mc }");
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!(t.device, Device::Cuda(0));
        assert_eq!(
            t.optimizer,
            Optimizer::Adamax {
                lr: 2e-3,
                betas: [0.9, 0.999],
                eps: 1e-8
            }
        );
        let (t, _, d) = run(r#"train { device = "cpu" }"#);
        assert!(d.is_empty());
        assert_eq!(t.device, Device::Cpu);
    }

    #[test]
    fn unknown_key_suggests() {
        let (code, text, d) = one("train { epoch = 3 }");
        assert_eq!((code, text.as_str()), (Code::E012, "epoch"));
        assert_eq!(d.hint.as_deref(), Some("did you mean `epochs`?"));
        let (code, text, _) = one("train { frobnicate = 3 }");
        assert_eq!((code, text.as_str()), (Code::E012, "frobnicate"));
    }

    #[test]
    fn duplicate_key() {
        let (code, text, d) = one("train { batch = 1\n batch = 2 }");
        assert_eq!((code, text.as_str()), (Code::E003, "batch"));
        assert_eq!(d.secondary.len(), 1);
    }

    #[test]
    fn wrong_kinds_and_ranges() {
        let cases: &[(&str, &str)] = &[
            (r#"train { batch = "big" }"#, r#""big""#),
            ("train { batch = 0 }", "0"),
            ("train { batch = 1.5 }", "1.5"),
            ("train { seed = -1 }", "-1"),
            ("train { beta = -0.5 }", "-0.5"),
            ("train { split = 1 }", "1"),
            ("train { clip = 0 }", "0"),
            ("train { kl = exakt }", "exakt"),
            ("train { kl = auto() }", "auto()"),
            ("train { optimizer = adagrad(lr = 1) }", "adagrad"),
            ("train { optimizer = adam(rate = 1) }", "rate"),
            ("train { optimizer = adam(lr = 1, lr = 2) }", "lr = 2"),
            (
                "train { optimizer = sgd(momentum = 0.9) }",
                "sgd(momentum = 0.9)",
            ),
            (
                "train { optimizer = adam(1, [0.9, 0.99], 1e-8, 0, 5) }",
                "5",
            ),
            ("train { optimizer = adam(betas = [0.9]) }", "[0.9]"),
            ("train { objective = iwae() }", "iwae()"),
            ("train { objective = iwae(samples = 0) }", "0"),
            (
                "train { schedule = alternate(e_steps = 3) }",
                "alternate(e_steps = 3)",
            ),
            (r#"train { anneal = linear(epochs = "x") }"#, r#""x""#),
            ("train { device = tpu }", "tpu"),
            (r#"train { device = "cuda:x" }"#, r#""cuda:x""#),
            ("train { dataset = mnist }", "mnist"),
            (r#"train { dataset = "mnsit" }"#, r#""mnsit""#),
            (r#"train { dataset = "data/x.txt" }"#, r#""data/x.txt""#),
            ("train { binarize = threshold(2) }", "2"),
        ];
        for (src, want) in cases {
            let (code, text, d) = one(src);
            assert_eq!(code, Code::E012, "{src}: {d:#?}");
            assert_eq!(&text, want, "{src}");
            assert!(d.hint.is_some(), "{src}");
        }
    }

    #[test]
    fn const_names_in_integers() {
        let (code, text, d) = one("train { epochs = Bb }");
        assert_eq!((code, text.as_str()), (Code::E002, "Bb"));
        assert!(d.hint.is_some());
        // A const that failed is reported once, by `consts`.
        let (_, _, d) = run("train { epochs = Q * 2; beta = Q }");
        assert!(d.is_empty(), "{d:#?}");
        let (t, _, d) = run("train { epochs = E - 1; batch = B / 4 + 1 }");
        assert!(d.is_empty(), "{d:#?}");
        assert_eq!((t.epochs, t.batch), (4, 17));
    }

    #[test]
    fn dataset_did_you_mean() {
        let (_, _, d) = one(r#"train { dataset = "fashion_mnist" }"#);
        assert_eq!(d.hint.as_deref(), Some("did you mean `\"fashion-mnist\"`?"));
    }

    #[test]
    fn all_errors_collected_and_defaults_kept() {
        let (t, _, d) = run("train { batch = 0; epochs = -2; epochz = 1; seed = 7 }");
        assert_eq!(d.len(), 3, "{d:#?}");
        assert_eq!(t.batch, 128);
        assert_eq!(t.seed, 7);
    }

    #[test]
    fn meta_resolves() {
        let (_, m, d) = run("meta { family = rotate(-180:160:20); train = even; test = odd }");
        assert!(d.is_empty(), "{d:#?}");
        let m = m.expect("meta");
        let Family::Rotate(angles) = &m.family else {
            panic!("{m:?}")
        };
        assert_eq!(angles.len(), 18);
        assert_eq!(angles[0], -180.0);
        assert_eq!(angles[17], 160.0);
        assert_eq!((m.train, m.test), (Members::Even, Members::Odd));
        let (_, m, d) = run("meta { family = scale([0.5, 1, 2]); train = [0, 1]; test = [2] }");
        assert!(d.is_empty(), "{d:#?}");
        let m = m.expect("meta");
        assert_eq!(m.family, Family::Scale(vec![0.5, 1.0, 2.0]));
        assert_eq!(m.test, Members::List(vec![2]));
        let (_, m, d) = run(r#"meta { family = datasets("a.npz", "b.npz") }"#);
        assert!(d.is_empty(), "{d:#?}");
        let m = m.expect("meta");
        assert_eq!(m.train, Members::All);
        assert_eq!(m.test, Members::List(vec![]));
        let (_, m, d) = run("meta { family = classes() }");
        assert!(d.is_empty());
        assert_eq!(m.expect("meta").family, Family::Classes);
        let (_, m, _) = run("meta { family = scale(0.5:2:0.1) }");
        let Some(Family::Scale(f)) = m.map(|m| m.family) else {
            panic!("scale")
        };
        assert_eq!(f.len(), 16);
        let (_, m, _) = run("meta { family = shear(0:10:4) }");
        assert_eq!(m.expect("meta").family, Family::Shear(vec![0.0, 4.0, 8.0]));
    }

    #[test]
    fn meta_errors() {
        let cases: &[(&str, &str)] = &[
            ("meta { family = rotate(0:90:30); tset = odd }", "tset"),
            ("meta { family = spin(0:90:30) }", "spin"),
            ("meta { family = rotate(90:0:30) }", "90:0:30"),
            ("meta { family = rotate(0:90:0) }", "0:90:0"),
            ("meta { family = rotate(0:90:30); train = [0, 4] }", "4"),
            (
                "meta { family = rotate(0:90:30); train = all; test = [1] }",
                "[1]",
            ),
            (
                "meta { family = classes(); train = even; test = [1, 2] }",
                "[1, 2]",
            ),
            ("meta { family = classes(3) }", "3"),
            (
                "meta { family = rotate(0:90:30); test = sometimes }",
                "sometimes",
            ),
            ("meta { family = rotate }", "rotate"),
            ("meta { family = datasets() }", "datasets()"),
            ("meta { family = datasets(1) }", "1"),
            ("meta { family = scale([1, -2]) }", "[1, -2]"),
            ("meta { train = all }", "meta { train = all }"),
        ];
        for (src, want) in cases {
            let (code, text, d) = one(src);
            assert_eq!(code, Code::E013, "{src}: {d:#?}");
            assert_eq!(&text, want, "{src}");
        }
        let (_, _, d) = one("meta { family = rotate(0:90:30); train = all; test = [1, 3] }");
        assert!(d.message.contains("members 1, 3"), "{}", d.message);
        let (_, _, d) = one("meta { family = rotate(0:90:30); train = [0, 1]; test = [1, 2, 0] }");
        assert!(d.message.contains("members 0, 1"), "{}", d.message);
    }

    #[test]
    fn only_first_blocks_read() {
        let (t, _, d) = run("train { batch = 3 } train { batch = 0 }");
        assert!(d.is_empty());
        assert_eq!(t.batch, 3);
    }
}
