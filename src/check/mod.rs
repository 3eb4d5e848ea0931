//! The checker: AST to typed IR, with every static rule of LANGUAGE.md section 11.
//!
//! Sub-phases, run in order by [`check`]:
//! - `consts`: resolve `const` items and `--set` overrides (E015);
//! - `build`: resolve names, type every expression (domain and shape), check networks,
//!   distributions and statement order, and build the IR (E002-E006, E010);
//! - `config`: the `train` and `meta` blocks (E012, E013);
//! - `rules`: whole-program rules on the IR: model/guide agreement, strategies,
//!   conjugacy for `guide exact`, globals, unused names (E007-E009, E011, E013, E014,
//!   E016, W001, W002);
//! - `crate::arch::check_costs`: E017.
//!
//! Each sub-phase collects all its errors; every error is turned into a
//! [`Diagnostic`] by its enum's `From` impl.

pub mod build;
pub mod config;
pub mod consts;
pub mod rules;

use crate::diag::{self, Diagnostic};
use crate::ir::Program;
use crate::syntax::ast;

/// Inputs to the checker beyond the file itself.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// `--set NAME=VALUE` const overrides, in command-line order.
    pub overrides: Vec<(String, i64)>,
    /// `--set train.KEY=VALUE` settings, the value as it would be written in the spec's
    /// `train` block: checked by the same rules, replacing the block's own entry
    /// (`driver::front_end`).
    pub train: Vec<(String, String)>,
}

impl CheckOptions {
    /// Options from `--set` values: `NAME=INT` overrides a const, `train.KEY=VALUE` a
    /// `train` setting (VALUE written as in the spec: `--set train.lr=5e-4`,
    /// `--set 'train.dataset="digits"'`). A value that is not `NAME=VALUE`, or a const
    /// value that is not an integer, is an error message.
    pub fn from_sets(sets: &[String]) -> Result<CheckOptions, String> {
        let mut opts = CheckOptions::default();
        for s in sets {
            let (k, v) = s
                .split_once('=')
                .ok_or_else(|| format!("expected NAME=VALUE or train.KEY=VALUE, found `{s}`"))?;
            let k = k.trim();
            match k.strip_prefix("train.") {
                Some(key) => opts.train.push((key.to_string(), v.trim().to_string())),
                None => {
                    let v: i64 = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("`{v}` is not an integer (in `--set {s}`)"))?;
                    opts.overrides.push((k.to_string(), v));
                }
            }
        }
        Ok(opts)
    }
}

/// The outcome of checking one file.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The typed IR, present when there are no errors (warnings allowed).
    pub program: Option<Program>,
    /// Every error and warning, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

/// Check a parsed file.
pub fn check(file: &ast::File, opts: &CheckOptions) -> Checked {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();

    let (consts, errs) = consts::resolve(file, &opts.overrides);
    diagnostics.extend(errs.into_iter().map(Diagnostic::from));

    let (mut program, errs) = build::build(file, &consts);
    diagnostics.extend(errs.into_iter().map(Diagnostic::from));

    let (train, meta, errs) = config::resolve(file, &consts);
    diagnostics.extend(errs.into_iter().map(Diagnostic::from));
    program.train = train;
    program.meta = meta;

    // Whole-program rules assume names resolved; with unresolved names they would only
    // repeat the same mistake in other words.
    let front_errors = diagnostics.iter().any(|d| d.is_error());
    let errs = rules::check(&mut program, file, front_errors);
    diagnostics.extend(errs.into_iter().map(Diagnostic::from));
    if !front_errors {
        // A cost estimate of a statement already in error would repeat that error in
        // other words (E017 on an E008's site): only the others are reported.
        let errors: Vec<std::ops::Range<usize>> = diagnostics
            .iter()
            .filter(|d| d.is_error())
            .filter_map(|d| d.span.range())
            .collect();
        diagnostics.extend(crate::arch::check_costs(&program).into_iter().filter(|d| {
            d.span
                .range()
                .is_none_or(|r| !errors.iter().any(|e| e.start < r.end && r.start < e.end))
        }));
    }

    diag::sort_and_dedup(&mut diagnostics);
    let ok = !diagnostics.iter().any(|d| d.is_error());
    Checked {
        program: ok.then_some(program),
        diagnostics,
    }
}
