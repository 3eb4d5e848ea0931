//! Whole-program rules on the IR (E007-E009, E011, E013, E014, E016, W001, W002).
//!
//! The rules read the IR that `build` produced; places that already failed
//! (`ExprKind::Invalid`, `Domain::Unknown`) are skipped so one mistake is reported once.
//! Declarations are named at their name in the AST, which is what the user wrote.
//!
//! Decisions where LANGUAGE.md is silent:
//! - a stepped site `z[t] ~ ...` counts once; steps sampled twice (two loops over the
//!   same steps, or `z` sampled both whole and stepped) count as sampled twice, and a
//!   whole site inside a loop of more than one iteration is sampled once per iteration;
//! - `guide exact` keeps to section 8: continuous latents are Normal with parameters that
//!   do not depend on continuous latents; discrete latents are Categorical or Bernoulli
//!   and their parameters do not depend on continuous latents; an observation that
//!   depends on continuous latents is Normal, with a mean affine in them (through `+ -`,
//!   products with latent-free factors, `sum`, `mean`, `concat`, selections and `linear()`
//!   networks) and a latent-free scale. Global latents are not supported by it;
//! - W001 covers consts, params, networks, sets and `let` locals; a local bound by a tuple
//!   `let` that is never read is a W002 (an unused head) instead.

use crate::diag::{Code, Diagnostic};
use crate::ir::walk;
use crate::ir::{
    Arch, Body, DataRole, DistKind, Domain, ExactPosterior, Expr, ExprKind, Guide, KlMode,
    LatentId, LocalId, LoopDef, LoopId, Program, Ref, Site, SiteVar, Strategy,
};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, PartialEq)]
pub enum RuleError {
    /// E007: a latent with no site in `model`.
    LatentNotSampled { latent: String, span: Span },
    /// E007: a latent sampled twice in `model` (or once per iteration of a loop).
    LatentSampledTwice {
        latent: String,
        span: Span,
        first: Span,
        in_loop: bool,
    },
    /// E009: a non-`given` data variable never observed in `model`.
    DataNotObserved { data: String, span: Span },
    /// E009: a data variable observed twice in `model` (or once per loop iteration).
    DataObservedTwice {
        data: String,
        span: Span,
        first: Span,
        in_loop: bool,
    },
    /// E009: a `given` data variable left of `~`.
    GivenObserved {
        data: String,
        span: Span,
        declared: Span,
    },
    /// E008: a latent sampled in `model` but not in the amortized `guide`.
    LatentMissingFromGuide {
        latent: String,
        /// A guide statement for the latent's domain, for the hint.
        example: String,
        span: Span,
        guide: Span,
    },
    /// E008: the guide samples ordinary (not `partial`) data.
    GuideObservesData {
        data: String,
        span: Span,
        declared: Span,
    },
    /// E008: a guide site whose support differs from the model's site.
    SupportMismatch {
        name: String,
        guide_support: String,
        model_support: String,
        span: Span,
        model_site: Span,
    },
    /// E008: a `partial` data variable the guide does not sample.
    PartialNotSampled {
        data: String,
        span: Span,
        guide: Option<Span>,
    },
    /// E008: latents (or `partial` data) but no `guide` at all.
    NoGuide { names: Vec<String>, span: Span },
    /// E008: a guide site sampled twice (or once per loop iteration).
    GuideSampledTwice {
        name: String,
        span: Span,
        first: Span,
        in_loop: bool,
    },
    /// E011: `@enumerate` on a site whose support is not finite.
    EnumerateNotFinite {
        name: String,
        support: String,
        span: Span,
    },
    /// E011: a global latent enumerated (explicitly, or by default for a finite support):
    /// its one value is shared by the whole dataset, so a sum over it does not factor
    /// into per-example terms.
    EnumerateGlobal { name: String, span: Span },
    /// E011: a guide distribution without reparameterization left to be reparameterized
    /// (a continuous or Count site without `@reinforce`).
    NotReparameterizable {
        name: String,
        dist: &'static str,
        span: Span,
    },
    /// E011: `kl = analytic` while a (guide, model) pair has no closed-form KL.
    NoAnalyticKl {
        name: String,
        guide_dist: &'static str,
        model_dist: &'static str,
        flows: bool,
        span: Span,
        kl_entry: Span,
    },
    /// E011: `@refine` or `@random_function` on a guide site that is not Normal.
    StrategyNeedsNormal {
        name: String,
        strategy: &'static str,
        dist: &'static str,
        span: Span,
    },
    /// E011: flows on a discrete site.
    FlowOnDiscrete {
        name: String,
        support: String,
        span: Span,
    },
    /// E011: `@relax` on a site that is not a Categorical or Bernoulli one.
    RelaxNotApplicable {
        name: String,
        dist: &'static str,
        span: Span,
    },
    /// E013: a `set` declared without a `meta` block.
    SetWithoutMeta { set: String, span: Span },
    /// E013: `@per_member` on a network without a `meta` block.
    PerMemberWithoutMeta { net: String, span: Span },
    /// E014: `guide exact` with a latent that is neither Normal nor Categorical/Bernoulli.
    ExactLatentFamily {
        latent: String,
        dist: &'static str,
        span: Span,
    },
    /// E014: `guide exact` with a latent whose prior depends on a continuous latent.
    ExactPriorDependsOnLatent {
        latent: String,
        on: String,
        span: Span,
    },
    /// E014: a latent's Normal prior whose mean is not affine in the other latents.
    ExactPriorNonLinearMean {
        latent: String,
        on: String,
        span: Span,
    },
    /// E014: `guide exact` with a global latent.
    ExactGlobalLatent { latent: String, span: Span },
    /// E014: an observation that depends on a continuous latent but is not Normal.
    ExactObservationFamily {
        data: String,
        dist: &'static str,
        on: String,
        span: Span,
    },
    /// E014: a Normal observation whose mean is not affine in the continuous latents.
    ExactNonLinearMean {
        data: String,
        on: String,
        span: Span,
        /// The `let` where the mean became non-linear, when not in the statement itself.
        made_at: Option<Span>,
    },
    /// E014: a Normal observation whose scale depends on a continuous latent.
    ExactScaleDependsOnLatent {
        data: String,
        on: String,
        span: Span,
    },
    /// E016: a global latent whose guide site depends on per-example values.
    GlobalDependsOnExample {
        latent: String,
        on: String,
        span: Span,
    },
    /// W001: a declaration or `let` never used.
    Unused {
        kind: &'static str,
        name: String,
        span: Span,
    },
    /// W002: a network head never used (bound by a tuple `let` and never read, or never
    /// taken by any call).
    UnusedHead {
        net: String,
        head: String,
        span: Span,
    },
}

impl From<RuleError> for Diagnostic {
    fn from(e: RuleError) -> Diagnostic {
        use RuleError::*;
        match e {
            LatentNotSampled { latent, span } => Diagnostic::new(
                Code::E007,
                span,
                format!("latent `{latent}` is never sampled in `model`"),
            )
            .with_label("declared here")
            .with_hint(format!(
                "give it a prior in `model`, e.g. `{latent} ~ Normal(0, 1)`, or remove the declaration"
            )),
            LatentSampledTwice {
                latent,
                span,
                first,
                in_loop,
            } => {
                let d = Diagnostic::new(
                    Code::E007,
                    span,
                    format!("latent `{latent}` is sampled more than once in `model`"),
                );
                twice(d, first, in_loop, &latent, "sampled")
            }
            DataNotObserved { data, span } => Diagnostic::new(
                Code::E009,
                span,
                format!("data `{data}` is never observed in `model`"),
            )
            .with_label("declared here")
            .with_hint(format!(
                "observe it in `model` (`{data} ~ ...`), or declare it `given` if it only conditions the model"
            )),
            DataObservedTwice {
                data,
                span,
                first,
                in_loop,
            } => {
                let d = Diagnostic::new(
                    Code::E009,
                    span,
                    format!("data `{data}` is observed more than once in `model`"),
                );
                twice(d, first, in_loop, &data, "observed")
            }
            GivenObserved {
                data,
                span,
                declared,
            } => Diagnostic::new(
                Code::E009,
                span,
                format!("data `{data}` is declared `given` but is observed in `model`"),
            )
            .with_label("observed here")
            .with_secondary(declared, "declared `given` here")
            .with_hint(format!(
                "remove `given` from the declaration of `{data}`, or remove this statement"
            )),
            LatentMissingFromGuide {
                latent,
                example,
                span,
                guide,
            } => Diagnostic::new(
                Code::E008,
                span,
                format!("latent `{latent}` is sampled in `model` but not in `guide`"),
            )
            .with_label("sampled here in model")
            .with_secondary(guide, "the guide")
            .with_hint(format!("sample it in `guide`, e.g. {example}")),
            GuideObservesData {
                data,
                span,
                declared,
            } => Diagnostic::new(
                Code::E008,
                span,
                format!("the guide samples data `{data}`, which is observed, not latent"),
            )
            .with_label("data in guide")
            .with_secondary(declared, "declared as data here")
            .with_hint(format!(
                "remove this statement; the guide may read `{data}` but samples only latents and `partial` data"
            )),
            SupportMismatch {
                name,
                guide_support,
                model_support,
                span,
                model_site,
            } => Diagnostic::new(
                Code::E008,
                span,
                format!(
                    "the guide samples `{name}` on {guide_support} but the model on {model_support}"
                ),
            )
            .with_label(format!("support {guide_support}"))
            .with_secondary(model_site, format!("support {model_support} in model"))
            .with_hint(format!(
                "use a guide distribution whose support is {model_support}"
            )),
            PartialNotSampled { data, span, guide } => {
                let d = Diagnostic::new(
                    Code::E008,
                    span,
                    format!("`partial` data `{data}` is not sampled in `guide`"),
                )
                .with_label("partial data")
                .with_hint(format!(
                    "sample it in `guide` (e.g. `{data} ~ Categorical(logits = classify(x))`); the guide's value is used where `{data}` is missing"
                ));
                match guide {
                    Some(g) => d.with_secondary(g, "the guide"),
                    None => d,
                }
            }
            NoGuide { names, span } => Diagnostic::new(
                Code::E008,
                span,
                format!(
                    "the model has {} to infer but there is no `guide`",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_label("sampled here in model")
            .with_hint("add a `guide { ... }` that samples them, or `guide exact`"),
            GuideSampledTwice {
                name,
                span,
                first,
                in_loop,
            } => {
                let d = Diagnostic::new(
                    Code::E008,
                    span,
                    format!("`{name}` is sampled more than once in `guide`"),
                );
                twice(d, first, in_loop, &name, "sampled")
            }
            EnumerateNotFinite {
                name,
                support,
                span,
            } => Diagnostic::new(
                Code::E011,
                span,
                format!("`{name}` cannot be enumerated: its support {support} is not finite"),
            )
            .with_label("not a finite support")
            .with_hint("enumerate only Categorical or Bernoulli sites; use `@reinforce` here, or no strategy for a continuous site"),
            EnumerateGlobal { name, span } => Diagnostic::new(
                Code::E011,
                span,
                format!("the global latent `{name}` cannot be enumerated: its one value is shared by every example"),
            )
            .with_label("enumerated global latent")
            .with_hint("draw it with `@relax(temperature = 0.5)` or `@reinforce`, or make it per example (drop `global`)"),
            NotReparameterizable { name, dist, span } => Diagnostic::new(
                Code::E011,
                span,
                format!("the guide's {dist} for `{name}` has no reparameterized sampler"),
            )
            .with_label(format!("{dist} is not reparameterizable"))
            .with_hint("add `@reinforce`, or use a reparameterizable distribution such as Normal or LogNormal"),
            NoAnalyticKl {
                name,
                guide_dist,
                model_dist,
                flows,
                span,
                kl_entry,
            } => {
                let why = if flows {
                    format!("the guide's {guide_dist} for `{name}` goes through flows")
                } else {
                    format!("KL({guide_dist} || {model_dist}) for `{name}` has no closed form")
                };
                let d = Diagnostic::new(
                    Code::E011,
                    span,
                    format!("`kl = analytic` cannot apply: {why}"),
                )
                .with_label("no analytic KL")
                .with_hint("write `kl = auto` (analytic where possible) or `kl = mc`");
                if kl_entry.is_artificial() {
                    d
                } else {
                    d.with_secondary(kl_entry, "analytic KL asked here")
                }
            }
            StrategyNeedsNormal {
                name,
                strategy,
                dist,
                span,
            } => Diagnostic::new(
                Code::E011,
                span,
                format!("`@{strategy}` needs a Normal guide site, but `{name}` is {dist}"),
            )
            .with_label(format!("`@{strategy}` here"))
            .with_hint(format!(
                "use `{name} ~ Normal(loc, scale) @{strategy}(...)`, or remove the strategy"
            )),
            FlowOnDiscrete {
                name,
                support,
                span,
            } => Diagnostic::new(
                Code::E011,
                span,
                format!("flows cannot apply to `{name}`, whose support {support} is discrete"),
            )
            .with_label("flow on a discrete site")
            .with_hint("remove the `|> ...` flows; they transform continuous sites only"),
            RelaxNotApplicable { name, dist, span } => Diagnostic::new(
                Code::E011,
                span,
                format!("`@relax` needs a Categorical or Bernoulli site, but `{name}` is {dist}"),
            )
            .with_label("`@relax` here")
            .with_hint("remove `@relax`; continuous sites are reparameterized by default"),
            SetWithoutMeta { set, span } => Diagnostic::new(
                Code::E013,
                span,
                format!("set `{set}` is declared but there is no `meta` block"),
            )
            .with_label("set without meta")
            .with_hint("add `meta { family = ... }` to say which member distribution a set is drawn from"),
            PerMemberWithoutMeta { net, span } => Diagnostic::new(
                Code::E013,
                span,
                format!("network `{net}` is `@per_member` but there is no `meta` block"),
            )
            .with_label("`@per_member` without meta")
            .with_hint("add `meta { family = ... }`, or remove `@per_member`"),
            ExactLatentFamily { latent, dist, span } => Diagnostic::new(
                Code::E014,
                span,
                format!(
                    "`guide exact` has no closed form: latent `{latent}` has a {dist} prior"
                ),
            )
            .with_label("breaks conjugacy")
            .with_hint("exact posteriors need Normal continuous latents or Categorical/Bernoulli discrete ones; write an amortized `guide { ... }` instead"),
            ExactPriorDependsOnLatent { latent, on, span } => Diagnostic::new(
                Code::E014,
                span,
                format!(
                    "`guide exact` has no closed form: the prior scale of `{latent}` depends on the continuous latent `{on}`"
                ),
            )
            .with_label("breaks conjugacy")
            .with_hint("give the prior a scale free of latents (its mean may depend on them through `linear()` networks), or write an amortized `guide { ... }`"),
            ExactPriorNonLinearMean { latent, on, span } => Diagnostic::new(
                Code::E014,
                span,
                format!(
                    "`guide exact` has no closed form: the prior mean of `{latent}` is not affine in the continuous latent `{on}`"
                ),
            )
            .with_label("breaks conjugacy")
            .with_hint("compute the prior mean from latents with `linear()` networks, sums and scalings only, or write an amortized `guide { ... }`"),
            ExactGlobalLatent { latent, span } => Diagnostic::new(
                Code::E014,
                span,
                format!("`guide exact` does not support the global latent `{latent}`"),
            )
            .with_label("global latent")
            .with_hint("make it a `param`, or write an amortized `guide { ... }`"),
            ExactObservationFamily {
                data,
                dist,
                on,
                span,
            } => Diagnostic::new(
                Code::E014,
                span,
                format!(
                    "`guide exact` has no closed form: `{data}` is {dist} given the continuous latent `{on}`"
                ),
            )
            .with_label("breaks conjugacy")
            .with_hint("observations of continuous latents must be Normal for an exact posterior; write an amortized `guide { ... }` instead"),
            ExactNonLinearMean {
                data,
                on,
                span,
                made_at,
            } => {
                let d = Diagnostic::new(
                    Code::E014,
                    span,
                    format!(
                        "`guide exact` has no closed form: the mean of `{data}` is not linear in the latent `{on}`"
                    ),
                )
                .with_label("breaks conjugacy")
                .with_hint("use `linear()` networks, params and sums for the mean, or write an amortized `guide { ... }`");
                match made_at {
                    Some(at) => d.with_secondary(at, format!("made non-linear in `{on}` here")),
                    None => d,
                }
            }
            ExactScaleDependsOnLatent { data, on, span } => Diagnostic::new(
                Code::E014,
                span,
                format!(
                    "`guide exact` has no closed form: the scale of `{data}` depends on the latent `{on}`"
                ),
            )
            .with_label("breaks conjugacy")
            .with_hint("make the scale a number or a `param`, or write an amortized `guide { ... }`"),
            GlobalDependsOnExample { latent, on, span } => Diagnostic::new(
                Code::E016,
                span,
                format!(
                    "the guide of global latent `{latent}` depends on the per-example value `{on}`"
                ),
            )
            .with_label(format!("depends on `{on}`"))
            .with_hint(format!(
                "a global latent has one posterior for the whole dataset: give `{latent}` guide parameters that are `param`s"
            )),
            Unused { kind, name, span } => Diagnostic::new(
                Code::W001,
                span,
                format!("the {kind} `{name}` is never used"),
            )
            .with_label("never used")
            .with_hint(format!("remove it, or use `{name}`")),
            UnusedHead { net, head, span } => Diagnostic::new(
                Code::W002,
                span,
                format!("head `{head}` of network `{net}` is never used"),
            )
            .with_label("never used")
            .with_hint("remove the head from the network's outputs, or use it"),
        }
    }
}

/// A guide statement that fits a latent's domain, for hints: a `Categorical` for a class,
/// a `Bernoulli` for a binary value, a `LogNormal` for a positive one, a `Normal` else.
fn guide_example(name: &str, ty: &crate::ir::Type) -> String {
    use crate::ir::Domain;
    match ty.domain {
        Domain::Cat(_) => format!(
            "`{name} ~ Categorical(logits = classify(x))` with `classify` a network of the data"
        ),
        Domain::Binary => {
            format!("`{name} ~ Bernoulli(logits = enc(x))` with `enc` a network of the data")
        }
        Domain::Positive => {
            format!("`{name} ~ LogNormal(loc, scale)` with `loc` and `scale` from an encoder")
        }
        Domain::Simplex => {
            format!("`{name} ~ Dirichlet(conc) @reinforce` with `conc` from an encoder")
        }
        _ => format!("`{name} ~ Normal(loc, scale)` with `loc` and `scale` from an encoder"),
    }
}

fn twice(d: Diagnostic, first: Span, in_loop: bool, name: &str, verb: &str) -> Diagnostic {
    if in_loop {
        d.with_label(format!("{verb} once per loop iteration"))
            .with_secondary(first, "in this loop")
            .with_hint(format!(
                "index it by the loop's step (`{name}[t] ~ ...`) or move it out of the loop"
            ))
    } else {
        d.with_label(format!("{verb} again here"))
            .with_secondary(first, format!("first {verb} here"))
            .with_hint("keep one statement for it")
    }
}

// ---------------------------------------------------------------------------------
// Walking the IR

/// Every site of `body` with the loops enclosing it (outermost first).
fn sites(body: &Body) -> Vec<(&Site, Vec<LoopId>)> {
    let mut out = Vec::new();
    walk::for_each_site(body, |s, scope| out.push((s, scope.loops.clone())));
    out
}

fn site_name(program: &Program, var: SiteVar) -> String {
    match var {
        SiteVar::Latent(l) => program.latents.get(l).map(|d| d.name.clone()),
        SiteVar::Data(d) => program.data.get(d).map(|d| d.name.clone()),
    }
    .unwrap_or_else(|| "?".into())
}

fn iterations(l: &LoopDef) -> usize {
    if l.to >= l.from {
        l.to - l.from + 1
    } else {
        0
    }
}

/// Which steps a site covers: `None` for the whole variable, or an inclusive range.
fn coverage(site: &Site, loops: &[LoopDef]) -> Option<(i64, i64)> {
    let step = site.step?;
    match step.loop_id {
        Some(l) => loops
            .get(l)
            .map(|d| (d.from as i64 + step.offset, d.to as i64 + step.offset)),
        None => Some((step.offset, step.offset)),
    }
}

/// For each occurrence of a variable that repeats an earlier one: (site, first span, in_loop).
fn repeats<'a>(occs: &[(&'a Site, Vec<LoopId>)], loops: &[LoopDef]) -> Vec<(&'a Site, Span, bool)> {
    let mut out = Vec::new();
    for (i, (site, enclosing)) in occs.iter().enumerate() {
        let step_loop = site.step.and_then(|s| s.loop_id);
        let repeating_loop = enclosing
            .iter()
            .filter(|l| Some(**l) != step_loop)
            .filter_map(|l| loops.get(*l))
            .find(|d| iterations(d) > 1);
        if let Some(l) = repeating_loop {
            out.push((*site, l.span, true));
            continue;
        }
        let mine = coverage(site, loops);
        let clash = occs[..i]
            .iter()
            .find(|(other, _)| match (mine, coverage(other, loops)) {
                (Some((a, b)), Some((c, d))) => a <= d && c <= b && a <= b && c <= d,
                _ => true,
            });
        if let Some((other, _)) = clash {
            out.push((*site, other.span, false));
        }
    }
    out
}

/// Spans of what the user wrote, found in the AST.
struct Names {
    /// Declaration name spans by name, per item kind.
    latent: HashMap<String, Span>,
    data: HashMap<String, Span>,
    meta: bool,
    /// Site statement span → span of its `@strategy`.
    strategy: HashMap<Span, Span>,
    /// The `kl = ...` entry of the first `train` block.
    kl_entry: Span,
}

fn strategy_spans(stmts: &[ast::Stmt], out: &mut HashMap<Span, Span>) {
    for s in stmts {
        match &s.kind {
            ast::StmtKind::Sample {
                strategy: Some(st), ..
            } => {
                out.insert(s.span, st.span);
            }
            ast::StmtKind::For { body, .. } => strategy_spans(&body.stmts, out),
            _ => {}
        }
    }
}

fn names(file: &ast::File) -> Names {
    let mut n = Names {
        latent: HashMap::new(),
        data: HashMap::new(),
        meta: false,
        strategy: HashMap::new(),
        kl_entry: Span::Artificial,
    };
    let mut train_seen = false;
    for item in &file.items {
        match &item.kind {
            ast::ItemKind::Latent { name, .. } => {
                n.latent.entry(name.name.clone()).or_insert(name.span);
            }
            ast::ItemKind::Data { name, .. } => {
                n.data.entry(name.name.clone()).or_insert(name.span);
            }
            ast::ItemKind::Meta(_) => n.meta = true,
            ast::ItemKind::Guide(ast::GuideBody::Block(b)) => {
                strategy_spans(&b.stmts, &mut n.strategy)
            }
            ast::ItemKind::Train(entries) if !train_seen => {
                train_seen = true;
                if let Some(e) = entries.iter().find(|e| e.key.name == "kl") {
                    n.kl_entry = e.span;
                }
            }
            _ => {}
        }
    }
    n
}

// ---------------------------------------------------------------------------------
// The rules

/// `front_errors`: earlier phases reported errors, so only rules that cannot be
/// confused by unresolved names should run.
pub fn check(program: &mut Program, file: &ast::File, front_errors: bool) -> Vec<RuleError> {
    let mut errors = Vec::new();
    let names = names(file);
    // Rules that look at one site or one item at a time, where a name that failed to
    // resolve can only hide a violation, never invent one.
    meta_rules(file, &names, &mut errors);
    if let Guide::Amortized(guide) = &program.guide {
        strategy_rules(program, guide, &names, &mut errors);
        global_rules(program, guide, &mut errors);
    }
    // Rules that count sites or uses: a site or a use lost to an earlier error would
    // make them report a latent as unsampled or a declaration as unused.
    if front_errors {
        return errors;
    }
    model_rules(program, &names, &mut errors);
    guide_rules(program, &names, &mut errors);
    if let Guide::Exact { span, .. } = program.guide {
        let before = errors.len();
        let posterior = exact_posterior(program, &mut errors);
        if errors.len() == before {
            program.guide = Guide::Exact { posterior, span };
        }
    }
    unused_rules(program, file, &mut errors);
    errors
}

/// E013: sets and `@per_member` networks need a `meta` block.
fn meta_rules(file: &ast::File, names: &Names, errors: &mut Vec<RuleError>) {
    if names.meta {
        return;
    }
    for item in &file.items {
        match &item.kind {
            ast::ItemKind::Set { name, .. } => errors.push(RuleError::SetWithoutMeta {
                set: name.name.clone(),
                span: name.span,
            }),
            ast::ItemKind::Net(decl) => {
                if let Some(a) = decl.annotations.iter().find(|a| a.name == "per_member") {
                    errors.push(RuleError::PerMemberWithoutMeta {
                        net: decl.name.name.clone(),
                        span: a.span,
                    });
                }
            }
            _ => {}
        }
    }
}

/// E007, E009: every latent sampled once and every non-`given` data observed once in `model`.
fn model_rules(program: &Program, names: &Names, errors: &mut Vec<RuleError>) {
    let model_sites = sites(&program.model);
    for (id, latent) in program.latents.iter().enumerate() {
        let occs: Vec<_> = model_sites
            .iter()
            .filter(|(s, _)| s.var == SiteVar::Latent(id))
            .cloned()
            .collect();
        if occs.is_empty() {
            errors.push(RuleError::LatentNotSampled {
                latent: latent.name.clone(),
                span: names
                    .latent
                    .get(&latent.name)
                    .copied()
                    .unwrap_or(latent.span),
            });
        }
        for (site, first, in_loop) in repeats(&occs, &program.model.loops) {
            errors.push(RuleError::LatentSampledTwice {
                latent: latent.name.clone(),
                span: site.span,
                first,
                in_loop,
            });
        }
    }
    for (id, data) in program.data.iter().enumerate() {
        let occs: Vec<_> = model_sites
            .iter()
            .filter(|(s, _)| s.var == SiteVar::Data(id))
            .cloned()
            .collect();
        let declared = names.data.get(&data.name).copied().unwrap_or(data.span);
        if data.role == DataRole::Given {
            for (site, _) in &occs {
                errors.push(RuleError::GivenObserved {
                    data: data.name.clone(),
                    span: site.span,
                    declared,
                });
            }
            continue;
        }
        if occs.is_empty() {
            errors.push(RuleError::DataNotObserved {
                data: data.name.clone(),
                span: declared,
            });
        }
        for (site, first, in_loop) in repeats(&occs, &program.model.loops) {
            errors.push(RuleError::DataObservedTwice {
                data: data.name.clone(),
                span: site.span,
                first,
                in_loop,
            });
        }
    }
}

/// E008: the guide samples every latent and `partial` variable once, with the model's
/// support, and nothing else.
fn guide_rules(program: &Program, names: &Names, errors: &mut Vec<RuleError>) {
    let model_sites = sites(&program.model);
    let first_model_site = |var: SiteVar| {
        model_sites
            .iter()
            .find(|(s, _)| s.var == var)
            .map(|(s, _)| *s)
    };
    let partial: Vec<usize> = program
        .data
        .iter()
        .enumerate()
        .filter(|(_, d)| d.role == DataRole::Partial)
        .map(|(i, _)| i)
        .collect();
    let guide = match &program.guide {
        Guide::Amortized(b) => b,
        Guide::Exact { .. } => return,
        Guide::None => {
            let mut inferred: Vec<(String, Span)> = Vec::new();
            for (id, l) in program.latents.iter().enumerate() {
                if let Some(s) = first_model_site(SiteVar::Latent(id)) {
                    inferred.push((l.name.clone(), s.span));
                }
            }
            for &id in &partial {
                let d = &program.data[id];
                let span = first_model_site(SiteVar::Data(id))
                    .map(|s| s.span)
                    .unwrap_or_else(|| names.data.get(&d.name).copied().unwrap_or(d.span));
                inferred.push((d.name.clone(), span));
            }
            if let Some((_, span)) = inferred.first() {
                errors.push(RuleError::NoGuide {
                    names: inferred.iter().map(|(n, _)| n.clone()).collect(),
                    span: *span,
                });
            }
            return;
        }
    };
    let guide_sites = sites(guide);
    // Sites for ordinary data; supports.
    for (site, _) in &guide_sites {
        let name = site_name(program, site.var);
        if let SiteVar::Data(d) = site.var {
            if let Some(def) = program.data.get(d) {
                if def.role != DataRole::Partial {
                    errors.push(RuleError::GuideObservesData {
                        data: name,
                        span: site.span,
                        declared: names.data.get(&def.name).copied().unwrap_or(def.span),
                    });
                    continue;
                }
            }
        }
        if let Some(m) = first_model_site(site.var) {
            let (g, p) = (site.dist.support.domain, m.dist.support.domain);
            if g != Domain::Unknown && p != Domain::Unknown && g != p {
                errors.push(RuleError::SupportMismatch {
                    name,
                    guide_support: g.name(),
                    model_support: p.name(),
                    span: site.dist.span,
                    model_site: m.span,
                });
            }
        }
    }
    // Every latent and partial variable sampled, once.
    let mut vars: Vec<SiteVar> = (0..program.latents.len()).map(SiteVar::Latent).collect();
    vars.extend(partial.iter().map(|&d| SiteVar::Data(d)));
    for var in vars {
        let occs: Vec<_> = guide_sites
            .iter()
            .filter(|(s, _)| s.var == var)
            .cloned()
            .collect();
        let name = site_name(program, var);
        if occs.is_empty() {
            match var {
                SiteVar::Latent(_) => {
                    // A latent the model does not sample either is E007 already.
                    if let Some(m) = first_model_site(var) {
                        let example = guide_example(&name, &m.ty);
                        errors.push(RuleError::LatentMissingFromGuide {
                            latent: name,
                            example,
                            span: m.span,
                            guide: guide.span,
                        });
                    }
                }
                SiteVar::Data(d) => {
                    let span = first_model_site(var).map(|s| s.span).unwrap_or_else(|| {
                        names
                            .data
                            .get(&name)
                            .copied()
                            .unwrap_or(program.data[d].span)
                    });
                    errors.push(RuleError::PartialNotSampled {
                        data: name,
                        span,
                        guide: Some(guide.span),
                    });
                }
            }
        }
        for (site, first, in_loop) in repeats(&occs, &guide.loops) {
            errors.push(RuleError::GuideSampledTwice {
                name: site_name(program, var),
                span: site.span,
                first,
                in_loop,
            });
        }
    }
}

/// E011: strategies, reparameterization, flows and `kl = analytic` on guide sites.
fn strategy_rules(program: &Program, guide: &Body, names: &Names, errors: &mut Vec<RuleError>) {
    let model_sites = sites(&program.model);
    for (site, _) in sites(guide) {
        let support = site.dist.support.domain;
        if support == Domain::Unknown {
            continue;
        }
        if let SiteVar::Data(d) = site.var {
            if program
                .data
                .get(d)
                .is_some_and(|d| d.role != DataRole::Partial)
            {
                continue; // E008 already.
            }
        }
        let name = site_name(program, site.var);
        let kind = site.dist.kind;
        let strategy_span = names.strategy.get(&site.span).copied().unwrap_or(site.span);
        let finite = matches!(support, Domain::Cat(_) | Domain::Binary);
        let global = match site.var {
            SiteVar::Latent(l) => program.latents.get(l).is_some_and(|d| d.global),
            SiteVar::Data(_) => false,
        };
        match &site.strategy {
            Some(Strategy::Enumerate) if finite && global => {
                errors.push(RuleError::EnumerateGlobal {
                    name: name.clone(),
                    span: strategy_span,
                })
            }
            Some(Strategy::Enumerate) if !finite => errors.push(RuleError::EnumerateNotFinite {
                name: name.clone(),
                support: support.name(),
                span: strategy_span,
            }),
            Some(Strategy::Relax { .. })
                if !matches!(kind, DistKind::Categorical | DistKind::Bernoulli) =>
            {
                errors.push(RuleError::RelaxNotApplicable {
                    name: name.clone(),
                    dist: kind.name(),
                    span: strategy_span,
                })
            }
            Some(s @ (Strategy::Refine { .. } | Strategy::RandomFunction { .. }))
                if kind != DistKind::Normal =>
            {
                errors.push(RuleError::StrategyNeedsNormal {
                    name: name.clone(),
                    strategy: s.name(),
                    dist: kind.name(),
                    span: strategy_span,
                })
            }
            // Continuous sites default to this; so does a Count site (Poisson), which
            // can be neither reparameterized nor enumerated.
            Some(Strategy::Reparameterized) | None if !kind.has_rsample() => {
                errors.push(RuleError::NotReparameterizable {
                    name: name.clone(),
                    dist: kind.name(),
                    span: site.dist.span,
                })
            }
            _ => {}
        }
        if support.is_discrete() {
            if let Some(flow) = site.flows.first() {
                errors.push(RuleError::FlowOnDiscrete {
                    name: name.clone(),
                    support: support.name(),
                    span: flow.span,
                });
            }
        }
        if program.train.kl == KlMode::Analytic {
            if let SiteVar::Latent(_) = site.var {
                let model = model_sites.iter().find(|(s, _)| s.var == site.var);
                if let Some((m, _)) = model {
                    let flows = walk::flow_nets(site).any(|(_, steps, _)| steps > 0);
                    if flows || !crate::ir::has_analytic_kl(kind, m.dist.kind) {
                        errors.push(RuleError::NoAnalyticKl {
                            name,
                            guide_dist: kind.name(),
                            model_dist: m.dist.kind.name(),
                            flows,
                            span: site.span,
                            kl_entry: names.kl_entry,
                        });
                    }
                }
            }
        }
    }
}

/// E016: the guide of a global latent reads only global things.
fn global_rules(program: &Program, guide: &Body, errors: &mut Vec<RuleError>) {
    // Which locals depend on per-example values (and on which one), to a fixpoint.
    let mut local_dep: HashMap<LocalId, String> = HashMap::new();
    let per_example = |e: &Expr, local_dep: &HashMap<LocalId, String>| -> Option<String> {
        let mut found = None;
        walk::for_each_subexpr(e, &mut |x| {
            if found.is_some() {
                return;
            }
            if let ExprKind::Ref(r) = &x.kind {
                found = match *r {
                    Ref::Data(d) => program.data.get(d).map(|d| d.name.clone()),
                    Ref::Latent(l) => program
                        .latents
                        .get(l)
                        .filter(|l| !l.global)
                        .map(|l| l.name.clone()),
                    Ref::Set(s) => program.sets.get(s).map(|s| s.name.clone()),
                    Ref::Local(l) => local_dep.get(&l).cloned(),
                    Ref::Param(_) | Ref::LoopVar(_) => None,
                };
            }
        });
        found
    };
    let lets = lets(guide);
    for _ in 0..=guide.locals.len() {
        let mut changed = false;
        for (targets, value, _) in &lets {
            if let Some(on) = per_example(value, &local_dep) {
                for t in targets {
                    if !local_dep.contains_key(t) {
                        local_dep.insert(*t, on.clone());
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (site, _) in sites(guide) {
        let SiteVar::Latent(l) = site.var else {
            continue;
        };
        let Some(def) = program.latents.get(l) else {
            continue;
        };
        if !def.global {
            continue;
        }
        let mut on = None;
        for e in walk::site_exprs(site, &walk::Scope::of(guide)) {
            if on.is_none() {
                on = per_example(e, &local_dep);
            }
        }
        if let Some(on) = on {
            errors.push(RuleError::GlobalDependsOnExample {
                latent: def.name.clone(),
                on,
                span: site.span,
            });
        }
    }
}

/// Every `let` of a body (recursing into loops): its target locals and its value.
fn lets(body: &Body) -> Vec<(Vec<LocalId>, &Expr, Span)> {
    let mut out = Vec::new();
    walk::for_each_let(body, |targets, value, span, _| {
        out.push((targets.iter().map(|t| t.local).collect(), value, span))
    });
    out
}

// ---------------------------------------------------------------------------------
// guide exact

/// How an expression depends on the continuous latents: not at all, affinely, or otherwise
/// (with the latent that makes it so).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lin {
    Const,
    Affine(LatentId),
    NonLinear(LatentId),
}

impl Lin {
    fn rank(self) -> u8 {
        match self {
            Lin::Const => 0,
            Lin::Affine(_) => 1,
            Lin::NonLinear(_) => 2,
        }
    }

    fn join(self, other: Lin) -> Lin {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    fn latent(self) -> Option<LatentId> {
        match self {
            Lin::Const => None,
            Lin::Affine(l) | Lin::NonLinear(l) => Some(l),
        }
    }

    /// Any dependence on a latent becomes non-linear.
    fn nonlinear(self) -> Lin {
        match self {
            Lin::Affine(l) => Lin::NonLinear(l),
            x => x,
        }
    }
}

struct Linearity<'a> {
    program: &'a Program,
    continuous: &'a HashSet<LatentId>,
    locals: HashMap<LocalId, Lin>,
    /// For a non-linear local: the `let` statement where the non-linearity arose.
    origin: HashMap<LocalId, Span>,
}

impl Linearity<'_> {
    /// Where the non-linearity of `e` arose, when it comes from a non-linear local.
    fn origin_in(&self, e: &Expr) -> Option<Span> {
        let mut found = None;
        walk::for_each_subexpr(e, &mut |x| {
            if let (None, ExprKind::Ref(Ref::Local(l))) = (found, &x.kind) {
                found = self.origin.get(l).copied();
            }
        });
        found
    }

    fn class(&self, e: &Expr) -> Lin {
        match &e.kind {
            ExprKind::Number(_) | ExprKind::Fill(_) | ExprKind::Invalid => Lin::Const,
            ExprKind::Ref(r) => match *r {
                Ref::Latent(l) if self.continuous.contains(&l) => Lin::Affine(l),
                Ref::Local(l) => self.locals.get(&l).copied().unwrap_or(Lin::Const),
                _ => Lin::Const,
            },
            ExprKind::Step { base, .. } => self.class(base),
            ExprKind::Select { base, index } => {
                let i = self.class(index);
                self.class(base).join(i.nonlinear())
            }
            ExprKind::NetCall { net, args, .. } => {
                let joined = args.iter().fold(Lin::Const, |a, x| a.join(self.class(x)));
                let linear = self
                    .program
                    .nets
                    .get(*net)
                    .is_some_and(|n| matches!(n.arch, Arch::Linear { .. }));
                if linear {
                    joined
                } else {
                    joined.nonlinear()
                }
            }
            ExprKind::Unary { op, arg } => {
                let a = self.class(arg);
                if *op == crate::ir::UnaryFn::Neg {
                    a
                } else {
                    a.nonlinear()
                }
            }
            ExprKind::Binary { op, lhs, rhs } => {
                let (a, b) = (self.class(lhs), self.class(rhs));
                use crate::ir::BinaryOp::*;
                match op {
                    Add | Sub => a.join(b),
                    Mul if a == Lin::Const || b == Lin::Const => a.join(b),
                    Div if b == Lin::Const => a,
                    _ => a.join(b).nonlinear(),
                }
            }
            ExprKind::Reduce { arg, .. } => self.class(arg),
            ExprKind::Concat(xs) => xs.iter().fold(Lin::Const, |a, x| a.join(self.class(x))),
        }
    }
}

/// Whether the model of `program` is linear-Gaussian (every latent Normal, every observation
/// that depends on a latent Normal, each with a mean affine in the latents and a
/// latent-free scale: a Gaussian network, such as a linear dynamical system), whatever its
/// guide: its log p(x) then has a closed form.
pub fn linear_gaussian(program: &Program) -> bool {
    let mut errors = Vec::new();
    let posterior = exact_posterior(program, &mut errors);
    errors.is_empty() && posterior == ExactPosterior::LinearGaussian
}

/// Decide the exact posterior of the model, or report the statement that breaks conjugacy.
fn exact_posterior(program: &Program, errors: &mut Vec<RuleError>) -> ExactPosterior {
    let model_sites = sites(&program.model);
    let latent_name = |l: LatentId| {
        program
            .latents
            .get(l)
            .map(|d| d.name.clone())
            .unwrap_or_default()
    };
    let mut continuous: HashSet<LatentId> = HashSet::new();
    let mut discrete = false;
    for (site, _) in &model_sites {
        let SiteVar::Latent(l) = site.var else {
            continue;
        };
        let name = latent_name(l);
        if program.latents.get(l).is_some_and(|d| d.global) {
            errors.push(RuleError::ExactGlobalLatent {
                latent: name,
                span: site.span,
            });
            continue;
        }
        match site.dist.kind {
            DistKind::Normal => {
                continuous.insert(l);
            }
            DistKind::Categorical | DistKind::Bernoulli => discrete = true,
            kind => errors.push(RuleError::ExactLatentFamily {
                latent: name,
                dist: kind.name(),
                span: site.span,
            }),
        }
    }
    let mut lin = Linearity {
        program,
        continuous: &continuous,
        locals: HashMap::new(),
        origin: HashMap::new(),
    };
    let lets = lets(&program.model);
    for _ in 0..=(2 * program.model.locals.len() + 1) {
        let mut changed = false;
        for (targets, value, span) in &lets {
            let c = lin.class(value);
            let origin = lin.origin_in(value).unwrap_or(*span);
            for t in targets {
                let old = lin.locals.get(t).copied().unwrap_or(Lin::Const);
                let new = old.join(c);
                if new != old {
                    lin.locals.insert(*t, new);
                    if matches!(new, Lin::NonLinear(_)) {
                        lin.origin.insert(*t, origin);
                    }
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (site, _) in &model_sites {
        let args = |p: &dyn Fn(crate::ir::DistParam) -> bool| {
            let mut c = Lin::Const;
            let mut dist = Some(&site.dist);
            while let Some(d) = dist {
                for (param, e) in &d.args {
                    if p(*param) {
                        c = c.join(lin.class(e));
                    }
                }
                dist = d.component.as_deref();
            }
            c
        };
        let all = args(&|_| true);
        match site.var {
            SiteVar::Latent(l) => {
                if program.latents.get(l).is_some_and(|d| d.global) {
                    continue;
                }
                // A Gaussian network: the prior mean may be affine in other latents (a
                // linear dynamical system's transition), its scale free of them.
                let scale = args(&|p| p != crate::ir::DistParam::Loc);
                if let Some(on) = scale.latent() {
                    errors.push(RuleError::ExactPriorDependsOnLatent {
                        latent: latent_name(l),
                        on: latent_name(on),
                        span: site.span,
                    });
                } else if let Lin::NonLinear(on) = args(&|p| p == crate::ir::DistParam::Loc) {
                    if site.dist.kind == DistKind::Normal {
                        errors.push(RuleError::ExactPriorNonLinearMean {
                            latent: latent_name(l),
                            on: latent_name(on),
                            span: site.span,
                        });
                    }
                }
            }
            SiteVar::Data(d) => {
                let data = program
                    .data
                    .get(d)
                    .map(|d| d.name.clone())
                    .unwrap_or_default();
                let Some(on) = all.latent() else { continue };
                if site.dist.kind != DistKind::Normal {
                    errors.push(RuleError::ExactObservationFamily {
                        data,
                        dist: site.dist.kind.name(),
                        on: latent_name(on),
                        span: site.span,
                    });
                    continue;
                }
                let scale = args(&|p| p != crate::ir::DistParam::Loc);
                if let Some(on) = scale.latent() {
                    errors.push(RuleError::ExactScaleDependsOnLatent {
                        data,
                        on: latent_name(on),
                        span: site.span,
                    });
                    continue;
                }
                if let Lin::NonLinear(on) = args(&|p| p == crate::ir::DistParam::Loc) {
                    let loc = site
                        .dist
                        .args
                        .iter()
                        .find(|(p, _)| *p == crate::ir::DistParam::Loc);
                    errors.push(RuleError::ExactNonLinearMean {
                        data,
                        on: latent_name(on),
                        span: site.span,
                        made_at: loc.and_then(|(_, e)| lin.origin_in(e)),
                    });
                }
            }
        }
    }
    match (continuous.is_empty(), discrete) {
        (true, _) => ExactPosterior::Enumerate,
        (false, false) => ExactPosterior::LinearGaussian,
        (false, true) => ExactPosterior::EnumerateLinearGaussian,
    }
}

// ---------------------------------------------------------------------------------
// W001, W002

fn ast_names(e: &ast::Expr, out: &mut HashSet<String>) {
    match &e.kind {
        ast::ExprKind::Number { .. } | ast::ExprKind::Str(_) => {}
        ast::ExprKind::Name(id) => {
            out.insert(id.name.clone());
        }
        ast::ExprKind::Call(c) => ast_call_names(c, out),
        ast::ExprKind::Field { base, .. } | ast::ExprKind::Neg(base) => ast_names(base, out),
        ast::ExprKind::Index { base, indices } => {
            ast_names(base, out);
            for i in indices {
                ast_names(i, out);
            }
        }
        ast::ExprKind::Binary { lhs, rhs, .. } => {
            ast_names(lhs, out);
            ast_names(rhs, out);
        }
        ast::ExprKind::List(xs) => {
            for x in xs {
                ast_names(x, out);
            }
        }
        ast::ExprKind::Range { from, to, step } => {
            ast_names(from, out);
            ast_names(to, out);
            if let Some(s) = step {
                ast_names(s, out);
            }
        }
    }
}

fn ast_call_names(c: &ast::Call, out: &mut HashSet<String>) {
    for a in &c.args {
        ast_names(&a.value, out);
    }
}

fn ast_type_names(t: &ast::TypeExpr, out: &mut HashSet<String>) {
    match &t.kind {
        ast::TypeExprKind::Domain { arg, shape, .. } => {
            if let Some(a) = arg {
                ast_names(a, out);
            }
            for d in shape.iter().flatten() {
                ast_names(d, out);
            }
        }
        ast::TypeExprKind::Set(inner) => ast_type_names(inner, out),
    }
}

fn ast_stmt_names(stmts: &[ast::Stmt], out: &mut HashSet<String>) {
    for s in stmts {
        match &s.kind {
            ast::StmtKind::Let { targets, value, .. } => {
                for t in targets {
                    if let Some(i) = &t.index {
                        ast_names(i, out);
                    }
                }
                ast_names(value, out);
            }
            ast::StmtKind::Sample {
                target,
                dist,
                flows,
                strategy,
            } => {
                if let Some(i) = &target.index {
                    ast_names(i, out);
                }
                ast_call_names(dist, out);
                for f in flows {
                    ast_call_names(f, out);
                }
                if let Some(args) = strategy.as_ref().and_then(|s| s.args.as_ref()) {
                    for a in args {
                        ast_names(&a.value, out);
                    }
                }
            }
            ast::StmtKind::For { from, to, body, .. } => {
                ast_names(from, out);
                ast_names(to, out);
                ast_stmt_names(&body.stmts, out);
            }
        }
    }
}

/// Every name read anywhere in the file, outside the declaration that introduces it.
fn names_read(file: &ast::File) -> HashSet<String> {
    let mut out = HashSet::new();
    for item in &file.items {
        match &item.kind {
            ast::ItemKind::Const { value, .. } => ast_names(value, &mut out),
            ast::ItemKind::Data { ty, .. } | ast::ItemKind::Latent { ty, .. } => {
                ast_type_names(ty, &mut out)
            }
            ast::ItemKind::Param { ty, init, .. } => {
                ast_type_names(ty, &mut out);
                if let Some(i) = init {
                    ast_names(i, &mut out);
                }
            }
            ast::ItemKind::Net(decl) => {
                for b in &decl.inputs {
                    ast_type_names(&b.ty, &mut out);
                }
                match &decl.output {
                    ast::NetOutput::Single(t) => ast_type_names(t, &mut out),
                    ast::NetOutput::Heads(hs) => {
                        for h in hs {
                            ast_type_names(&h.ty, &mut out);
                        }
                    }
                }
                ast_call_names(&decl.arch, &mut out);
            }
            ast::ItemKind::Set { ty, size, .. } => {
                ast_type_names(ty, &mut out);
                ast_names(size, &mut out);
            }
            ast::ItemKind::Model(b) | ast::ItemKind::Guide(ast::GuideBody::Block(b)) => {
                ast_stmt_names(&b.stmts, &mut out)
            }
            ast::ItemKind::Guide(ast::GuideBody::Exact(_)) => {}
            ast::ItemKind::Train(es) | ast::ItemKind::Meta(es) => {
                for e in es {
                    ast_names(&e.value, &mut out);
                }
            }
        }
    }
    out
}

/// W001 (unused consts, params, networks, sets, locals) and W002 (unused heads).
fn unused_rules(program: &Program, file: &ast::File, errors: &mut Vec<RuleError>) {
    // Uses in the IR.
    let mut params = HashSet::new();
    let mut sets = HashSet::new();
    let mut nets = HashSet::new();
    let mut heads: HashSet<(usize, usize)> = HashSet::new();
    let mut bodies = vec![&program.model];
    if let Guide::Amortized(g) = &program.guide {
        bodies.push(g);
    }
    for body in &bodies {
        let mut locals_read: HashSet<LocalId> = HashSet::new();
        walk::for_each_expr(body, |x| match &x.kind {
            ExprKind::Ref(Ref::Param(p)) => {
                params.insert(*p);
            }
            ExprKind::Ref(Ref::Set(s)) => {
                sets.insert(*s);
            }
            ExprKind::Ref(Ref::Local(l)) => {
                locals_read.insert(*l);
            }
            ExprKind::NetCall { net, head, .. } => {
                nets.insert(*net);
                if let Some(h) = head {
                    heads.insert((*net, *h));
                }
            }
            _ => {}
        });
        for (s, _) in sites(body) {
            for (net, _, _) in walk::flow_nets(s) {
                nets.insert(net);
                if let Some(n) = program.nets.get(net) {
                    for h in 0..n.heads.len() {
                        heads.insert((net, h));
                    }
                }
            }
        }
        // Locals: a tuple-let target never read is an unused head.
        let mut tuple_local: HashMap<LocalId, (usize, usize)> = HashMap::new();
        walk::for_each_let(body, |targets, value, _, _| {
            if let ExprKind::NetCall {
                net, head: None, ..
            } = &value.kind
            {
                for t in targets {
                    if let Some(h) = t.head {
                        tuple_local.insert(t.local, (*net, h));
                    }
                }
            }
        });
        for (id, local) in body.locals.iter().enumerate() {
            // `_` (or a name starting with `_`) says the value is not wanted.
            let read = locals_read.contains(&id) || local.name.starts_with('_');
            match tuple_local.get(&id) {
                Some(&(net, h)) => {
                    if read {
                        heads.insert((net, h));
                    } else if let Some(n) = program.nets.get(net) {
                        errors.push(RuleError::UnusedHead {
                            net: n.name.clone(),
                            head: n.heads.get(h).map(|h| h.name.clone()).unwrap_or_default(),
                            span: local.span,
                        });
                        // Reported here; do not report the head again at the network.
                        heads.insert((net, h));
                    }
                }
                None if !read => errors.push(RuleError::Unused {
                    kind: "`let` binding",
                    name: local.name.clone(),
                    span: local.span,
                }),
                None => {}
            }
        }
    }
    // Declarations, named where the user wrote them.
    let read = names_read(file);
    for item in &file.items {
        match &item.kind {
            ast::ItemKind::Const { name, .. } if !read.contains(&name.name) => {
                errors.push(RuleError::Unused {
                    kind: "const",
                    name: name.name.clone(),
                    span: name.span,
                })
            }
            ast::ItemKind::Param { name, .. } => {
                let used = program
                    .params
                    .iter()
                    .position(|p| p.name == name.name)
                    .is_none_or(|i| params.contains(&i));
                if !used {
                    errors.push(RuleError::Unused {
                        kind: "param",
                        name: name.name.clone(),
                        span: name.span,
                    });
                }
            }
            ast::ItemKind::Set { name, .. } => {
                let used = program
                    .sets
                    .iter()
                    .position(|s| s.name == name.name)
                    .is_none_or(|i| sets.contains(&i));
                if !used {
                    errors.push(RuleError::Unused {
                        kind: "set",
                        name: name.name.clone(),
                        span: name.span,
                    });
                }
            }
            ast::ItemKind::Net(decl) => {
                let Some(id) = program.nets.iter().position(|n| n.name == decl.name.name) else {
                    continue;
                };
                if !nets.contains(&id) {
                    errors.push(RuleError::Unused {
                        kind: "network",
                        name: decl.name.name.clone(),
                        span: decl.name.span,
                    });
                    continue;
                }
                let net = &program.nets[id];
                if net.single_output {
                    continue;
                }
                if let ast::NetOutput::Heads(hs) = &decl.output {
                    for (i, h) in net.heads.iter().enumerate() {
                        if !heads.contains(&(id, i)) {
                            let span = hs.get(i).map(|b| b.name.span).unwrap_or(h.span);
                            errors.push(RuleError::UnusedHead {
                                net: net.name.clone(),
                                head: h.name.clone(),
                                span,
                            });
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::{Code, Diagnostic, Severity};
    use crate::ir::{ExactPosterior, Guide};

    /// The checker's phases up to the rules (the cost rule E017 is not ours to test).
    fn run(src: &str) -> crate::check::Checked {
        let file = crate::syntax::parse(src).expect("parses");
        let mut ds: Vec<Diagnostic> = Vec::new();
        let (consts, errs) = crate::check::consts::resolve(&file, &[]);
        ds.extend(errs.into_iter().map(Diagnostic::from));
        let (mut program, errs) = crate::check::build::build(&file, &consts);
        ds.extend(errs.into_iter().map(Diagnostic::from));
        let (train, meta, errs) = crate::check::config::resolve(&file, &consts);
        ds.extend(errs.into_iter().map(Diagnostic::from));
        program.train = train;
        program.meta = meta;
        let front = ds.iter().any(|d| d.is_error());
        ds.extend(
            super::check(&mut program, &file, front)
                .into_iter()
                .map(Diagnostic::from),
        );
        crate::diag::sort_and_dedup(&mut ds);
        let ok = !ds.iter().any(|d| d.is_error());
        crate::check::Checked {
            program: ok.then_some(program),
            diagnostics: ds,
        }
    }

    /// The text a diagnostic points at.
    fn text<'a>(src: &'a str, d: &Diagnostic) -> &'a str {
        &src[d.span.range().expect("a source span")]
    }

    /// One diagnostic of `src` has `code` and points at `want`; every error has `code`
    /// (warnings of other codes are allowed when `code` is an error).
    #[track_caller]
    fn expect(src: &str, code: Code, want: &str) -> Diagnostic {
        let ds = run(src).diagnostics;
        let is_error = code.severity() == Severity::Error;
        assert!(
            ds.iter()
                .all(|d| d.code == code || (is_error && !d.is_error())),
            "expected only {code} in\n{src}\ngot {ds:#?}"
        );
        ds.iter()
            .find(|d| d.code == code && text(src, d) == want)
            .cloned()
            .unwrap_or_else(|| panic!("no {code} at `{want}` in\n{src}\ngot {ds:#?}"))
    }

    #[track_caller]
    fn clean(src: &str) -> crate::ir::Program {
        let c = run(src);
        assert!(c.diagnostics.is_empty(), "{src}\n{:#?}", c.diagnostics);
        c.program.expect("a program")
    }

    const HEAD: &str = "const D = 4\nconst Z = 2\nconst H = 8\n";

    fn vae(decls: &str, model: &str, guide: &str) -> String {
        format!(
            "{HEAD}data x : Binary[D]\nlatent z : Real[Z]\n\
             net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])\n\
             net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])\n{decls}\n\
             model {{ {model} }}\n{guide}\n"
        )
    }

    const MODEL: &str = "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = dec(z))";
    const GUIDE: &str = "guide { let (m, s) = enc(x)\n z ~ Normal(m, s) }";

    const SECTION1_VAE: &str = crate::sources::VAE;

    #[test]
    fn section1_vae_passes() {
        let p = clean(SECTION1_VAE);
        assert!(matches!(p.guide, Guide::Amortized(_)));
    }

    #[test]
    fn appendix_sketches_pass() {
        let m2 = r#"const D = 784; const K = 10; const Z = 16; const H = 256
data x : Binary[D]
data y : Cat(K) partial
latent z : Real[Z]
net classify(x: Binary[D]) -> Real[K] = mlp(hidden = [H], act = softplus)
net encode(x: Binary[D], y: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decode(z: Real[Z], y: Cat(K)) -> Real[D] = mlp(hidden = [H])
model { y ~ Categorical(logits = zeros(K)); z ~ Normal(0, 1); x ~ Bernoulli(logits = decode(z, y)) }
guide { y ~ Categorical(logits = classify(x)); let (m, s) = encode(x, y); z ~ Normal(m, s) }
train { labels = 1000; supervised_weight = 0.1 }
"#;
        let gmvae = r#"const D = 784; const K = 10; const Z = 16; const H = 256
data x : Binary[D]
latent c : Cat(K)
latent z : Real[Z]
net prior_z(c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = linear()
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])
net q_c(x: Binary[D]) -> Real[K] = mlp(hidden = [H])
net q_z(x: Binary[D], c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
model { c ~ Categorical(logits = zeros(K)); let (m, s) = prior_z(c); z ~ Normal(m, s); x ~ Bernoulli(logits = dec(z)) }
guide { c ~ Categorical(logits = q_c(x)) @enumerate; let (m, s) = q_z(x, c); z ~ Normal(m, s) }
"#;
        let fa_amortized = r#"const D = 10; const L = 3; const H = 32
data x : Real[D]
latent z : Real[L]
param noise : Positive[D] = 1.0
net load(z: Real[L]) -> Real[D] = linear()
net enc(x: Real[D]) -> (loc: Real[L], scale: Positive[L]) = mlp(hidden = [H])
model { z ~ Normal(0, 1); x ~ Normal(load(z), noise) }
guide { let (m, s) = enc(x); z ~ Normal(m, s) }
train { schedule = alternate(e_steps = 1000, m_steps = 1000) }
"#;
        let cvae = r#"const D = 784; const Z = 16; const H = 256
data x : Binary[D]
data c : Cat(10) given
latent z : Real[Z]
net prior(c: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net enc(x: Binary[D], c: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net dec(z: Real[Z], c: Cat(10)) -> Real[D] = mlp(hidden = [H])
model { let (pm, ps) = prior(c); z ~ Normal(pm, ps); x ~ Bernoulli(logits = dec(z, c)) }
guide { let (m, s) = enc(x, c); z ~ Normal(m, s) }
"#;
        let iaf = r#"const D = 784; const Z = 32; const C = 64; const H = 256
data x : Binary[D]
latent z : Real[Z]
net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[C]) = mlp(hidden = [H, H], act = elu)
net ar(z: Real[Z], h: Real[C]) -> (m: Real[Z], s: Real[Z]) = made(hidden = [320, 320], act = elu)
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s, h) = enc(x); z ~ Normal(m, s) |> iaf(ar, h, steps = 2) }
train { free_bits = 0.25 }
"#;
        let vdrop = r#"const D = 784
data x : Real[D] given
data y : Cat(10)
net clf(x: Real[D]) -> Real[10] = mlp(hidden = [1024, 1024], weights = vdrop(kind = "B"))
model { y ~ Categorical(logits = clf(x)) }
"#;
        let vrnn = r#"const T = 28; const W = 28; const Z = 16; const H = 64
data x : Binary[T, W]
latent z : Real[T, Z]
net cell(h: Real[H], x: Binary[W], z: Real[Z]) -> Real[H] = gru()
net prior(h: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net post(h: Real[H], x: Binary[W]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net emit(h: Real[H], z: Real[Z]) -> Real[W] = mlp(hidden = [H])
model {
  let h[0] = zeros(H)
  for t in 1:T {
    let (pm, ps) = prior(h[t-1])
    z[t] ~ Normal(pm, ps)
    x[t] ~ Bernoulli(logits = emit(h[t-1], z[t]))
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
guide {
  let h[0] = zeros(H)
  for t in 1:T {
    let (qm, qs) = post(h[t-1], x[t])
    z[t] ~ Normal(qm, qs)
    let h[t] = cell(h[t-1], x[t], z[t])
  }
}
"#;
        let metavae = r#"const D = 784; const H = 128; const Z = 16
data x : Binary[D]
latent z : Real[Z]
set S : Binary[D] size 10
net summary(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H, H], act = leaky_relu)
net enc(x: Binary[D], s: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H])
@per_member net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H])
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s) = enc(x, summary(S)); z ~ Normal(m, s) }
meta { family = rotate(-180:160:20); train = even; test = odd }
"#;
        let savae = SECTION1_VAE.replace(
            "z ~ Normal(loc, scale)",
            "z ~ Normal(loc, scale) @refine(steps = 20, lr = 1.0)",
        );
        let rf = SECTION1_VAE.replace(
            "z ~ Normal(loc, scale)",
            "z ~ Normal(loc, scale) @random_function(inducing = 64)",
        );
        for src in [
            m2,
            gmvae,
            fa_amortized,
            cvae,
            iaf,
            vdrop,
            vrnn,
            metavae,
            &savae,
            &rf,
        ] {
            clean(src);
        }
    }

    const DRAW: &str = r#"const T = 4; const Z = 10; const H = 64; const N = 5
data x : Binary[1, 28, 28]
latent z : Real[T, Z]
net dec_cell(h: Real[H], z: Real[Z]) -> Real[H] = gru()
net enc_cell(e: Real[H], r: Real[2*N*N], h: Real[H]) -> Real[H] = gru()
net read(img: Real[2, 28, 28], h: Real[H]) -> Real[2*N*N] = attend_read(grid = N)
net write(h: Real[H]) -> Real[1, 28, 28] = attend_write(grid = N)
net q(e: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = linear()
model {
  let h[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T { z[t] ~ Normal(0, 1); let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t]) }
  x ~ Bernoulli(logits = c[T])
}
guide {
  let h[0] = zeros(H); let e[0] = zeros(H); let c[0] = zeros(1, 28, 28)
  for t in 1:T {
    let e[t] = enc_cell(e[t-1], read(concat(x, x - sigmoid(c[t-1])), h[t-1]), h[t-1])
    let (m, s) = q(e[t])
    z[t] ~ Normal(m, s)
    let h[t] = dec_cell(h[t-1], z[t]); let c[t] = c[t-1] + write(h[t])
  }
}
"#;

    /// DRAW (appendix).
    #[test]
    fn appendix_draw_passes() {
        clean(DRAW);
    }

    #[test]
    fn factor_analysis_is_linear_gaussian() {
        let src = r#"const D = 10; const L = 3
data x : Real[D]
latent z : Real[L]
param noise : Positive[D] = 1.0
net load(z: Real[L]) -> Real[D] = linear()
model { z ~ Normal(0, 1); x ~ Normal(load(z), noise) }
guide exact
"#;
        let p = clean(src);
        assert!(
            matches!(
                p.guide,
                Guide::Exact {
                    posterior: ExactPosterior::LinearGaussian,
                    ..
                }
            ),
            "{:?}",
            p.guide
        );
    }

    #[test]
    fn gmm_is_enumerate() {
        let src = r#"const K = 3; const D = 2
data x : Real[D]
latent c : Cat(K)
param mu : Real[K, D] = normal(0, 1)
param sigma : Positive[K, D] = 1.0
model { c ~ Categorical(logits = zeros(K)); x ~ Normal(mu[c], sigma[c]) }
guide exact
"#;
        let p = clean(src);
        assert!(
            matches!(
                p.guide,
                Guide::Exact {
                    posterior: ExactPosterior::Enumerate,
                    ..
                }
            ),
            "{:?}",
            p.guide
        );
    }

    #[test]
    fn mixture_of_factor_analysers_is_enumerate_linear_gaussian() {
        let src = r#"const K = 3; const D = 4; const L = 2
data x : Real[D]
latent c : Cat(K)
latent z : Real[L]
param mu : Real[K, D]
param noise : Positive[D] = 1.0
net load(z: Real[L]) -> Real[D] = linear()
model { c ~ Categorical(logits = zeros(K)); z ~ Normal(0, 1); x ~ Normal(mu[c] + 2 * load(z), noise) }
guide exact
"#;
        let p = clean(src);
        assert!(
            matches!(
                p.guide,
                Guide::Exact {
                    posterior: ExactPosterior::EnumerateLinearGaussian,
                    ..
                }
            ),
            "{:?}",
            p.guide
        );
    }

    #[test]
    fn e007_latent_not_sampled_or_twice() {
        let src = vae("latent w : Real[Z]", MODEL, GUIDE);
        let d = expect(&src, Code::E007, "w");
        assert!(d.message.contains("`w`"));
        let src = vae("", &format!("{MODEL}\n z ~ Normal(1, 1)"), GUIDE);
        let d = expect(&src, Code::E007, "z ~ Normal(1, 1)");
        let first = d.secondary[0].span.range().expect("a source span");
        assert_eq!(&src[first], "z ~ Normal(0, 1)");
        let seq = format!(
            "const T = 3\n{HEAD}data x : Real[T]\nlatent z : Real[T]\n\
             model {{ z ~ Normal(0, 1)\n for t in 1:T {{ z[t] ~ Normal(0, 1) }}\n x ~ Normal(z, 1) }}\n\
             guide {{ z ~ Normal(x, 1) }}\n"
        );
        expect(&seq, Code::E007, "z[t] ~ Normal(0, 1)");
        let in_loop = format!(
            "const T = 3\n{HEAD}data x : Real[T]\nlatent z : Real[T]\n\
             model {{ for t in 1:T {{ z ~ Normal(0, 1) }}\n x ~ Normal(z, 1) }}\n\
             guide {{ z ~ Normal(x, 1) }}\n"
        );
        expect(&in_loop, Code::E007, "z ~ Normal(0, 1)");
    }

    #[test]
    fn e008_guide_mismatches() {
        let src = vae(
            "latent w : Real[Z]",
            &format!("{MODEL}\n w ~ Normal(0, 1)"),
            GUIDE,
        );
        expect(&src, Code::E008, "w ~ Normal(0, 1)");
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Normal(m, s)\n x ~ Bernoulli(logits = zeros(D)) }",
        );
        expect(&src, Code::E008, "x ~ Bernoulli(logits = zeros(D))");
        let src = vae("", MODEL, "");
        expect(&src, Code::E008, "z ~ Normal(0, 1)");
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Normal(m, s)\n z ~ Normal(m, 1) }",
        );
        expect(&src, Code::E008, "z ~ Normal(m, 1)");
        let partial = format!(
            "{HEAD}data x : Real[D]\ndata y : Cat(3) partial\nlatent z : Real[Z]\n\
             net enc(x: Real[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])\n\
             net dec(z: Real[Z], y: Cat(3)) -> Real[D] = mlp(hidden = [H])\n\
             model {{ y ~ Categorical(logits = zeros(3))\n z ~ Normal(0, 1)\n x ~ Normal(dec(z, y), 1) }}\n\
             guide {{ let (m, s) = enc(x)\n z ~ Normal(m, s) }}\n"
        );
        expect(&partial, Code::E008, "y ~ Categorical(logits = zeros(3))");
    }

    /// `build` leaves a guide latent site whose support differs from the model's to this
    /// rule (E008); the edit of the IR below keeps the test independent of that.
    #[test]
    fn e008_support_mismatch() {
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ LogNormal(m, s) }",
        );
        let file = crate::syntax::parse(&src).expect("parses");
        let (consts, _) = crate::check::consts::resolve(&file, &[]);
        let (mut program, errs) = crate::check::build::build(&file, &consts);
        assert!(errs.is_empty(), "{errs:?}");
        let Guide::Amortized(g) = &mut program.guide else {
            panic!("amortized guide")
        };
        for stmt in &mut g.stmts {
            if let crate::ir::Stmt::Sample(site) = stmt {
                site.dist.support.domain = crate::ir::Domain::Positive;
            }
        }
        let errs: Vec<Diagnostic> = super::check(&mut program, &file, false)
            .into_iter()
            .map(Diagnostic::from)
            .collect();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert_eq!(errs[0].code, Code::E008);
        assert_eq!(text(&src, &errs[0]), "LogNormal(m, s)");
        assert!(errs[0].message.contains("Positive") && errs[0].message.contains("Real"));
        let model_site = errs[0].secondary[0].span.range().expect("span");
        assert!(src[model_site].starts_with("z ~ Normal(0, 1)"));
    }

    #[test]
    fn e009_data_observation() {
        let src = vae("data u : Real[D]", MODEL, GUIDE);
        expect(&src, Code::E009, "u");
        let src = vae(
            "",
            &format!("{MODEL}\n x ~ Bernoulli(logits = zeros(D))"),
            GUIDE,
        );
        expect(&src, Code::E009, "x ~ Bernoulli(logits = zeros(D))");
        let src = vae(
            "data c : Real[D] given",
            &format!("{MODEL}\n c ~ Normal(0, 1)"),
            GUIDE,
        );
        let d = expect(&src, Code::E009, "c ~ Normal(0, 1)");
        assert_eq!(d.secondary.len(), 1);
    }

    #[test]
    fn e011_strategies() {
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Normal(m, s) @enumerate }",
        );
        expect(&src, Code::E011, "@enumerate");
        let gamma = format!(
            "{HEAD}data x : Binary[D]\nlatent z : Positive[Z]\n\
             net enc(x: Binary[D]) -> (a: Positive[Z], b: Positive[Z]) = mlp(hidden = [H])\n\
             net dec(z: Positive[Z]) -> Real[D] = mlp(hidden = [H])\n\
             model {{ z ~ Gamma(1, 1)\n x ~ Bernoulli(logits = dec(z)) }}\n\
             guide {{ let (a, b) = enc(x)\n z ~ Gamma(a, b) }}\n"
        );
        expect(&gamma, Code::E011, "Gamma(a, b)");
        clean(&gamma.replace("z ~ Gamma(a, b)", "z ~ Gamma(a, b) @reinforce"));
        let poisson = format!(
            "{HEAD}data x : Binary[D]\nlatent z : Count[Z]\n\
             net enc(x: Binary[D]) -> Positive[Z] = mlp(hidden = [H])\n\
             net dec(z: Count[Z]) -> Real[D] = mlp(hidden = [H])\n\
             model {{ z ~ Poisson(1)\n x ~ Bernoulli(logits = dec(z)) }}\n\
             guide {{ z ~ Poisson(enc(x)) }}\n"
        );
        expect(&poisson, Code::E011, "Poisson(enc(x))");
        clean(&poisson.replace("z ~ Poisson(enc(x))", "z ~ Poisson(enc(x)) @reinforce"));
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Laplace(m, s) }",
        ) + "train { kl = analytic }\n";
        let d = expect(&src, Code::E011, "z ~ Laplace(m, s)");
        assert_eq!(d.secondary.len(), 1);
        let ok = vae("", MODEL, GUIDE) + "train { kl = analytic }\n";
        clean(&ok);
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Laplace(m, s) @refine(steps = 5) }",
        );
        expect(&src, Code::E011, "@refine(steps = 5)");
        let src = vae(
            "",
            MODEL,
            "guide { let (m, s) = enc(x)\n z ~ Normal(m, s) @relax(temperature = 0.5) }",
        );
        expect(&src, Code::E011, "@relax(temperature = 0.5)");
    }

    #[test]
    fn e011_flow_on_discrete() {
        let src = format!(
            "{HEAD}data x : Real[D]\nlatent c : Cat(3)\n\
             net q(x: Real[D]) -> (l: Real[3], h: Real[H]) = mlp(hidden = [H])\n\
             net ar(z: Real[3], h: Real[H]) -> (m: Real[3], s: Real[3]) = made(hidden = [H])\n\
             param mu : Real[3, D]\n\
             model {{ c ~ Categorical(logits = zeros(3))\n x ~ Normal(mu[c], 1) }}\n\
             guide {{ let (l, h) = q(x)\n c ~ Categorical(logits = l) |> iaf(ar, h, steps = 1) }}\n"
        );
        let ds = run(&src).diagnostics;
        assert!(
            ds.iter()
                .any(|d| d.code == Code::E011 && text(&src, d) == "iaf(ar, h, steps = 1)"),
            "{ds:#?}"
        );
    }

    #[test]
    fn e013_without_meta() {
        let src = vae("set S : Binary[D] size 5\nnet summ(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H])",
            MODEL, "guide { let (m, s) = enc(x)\n z ~ Normal(m + 0 * sum(summ(S)), s) }");
        expect(&src, Code::E013, "S");
        let src = vae("", MODEL, GUIDE).replace("net dec(", "@per_member net dec(");
        expect(&src, Code::E013, "per_member");
        clean(
            &(vae("", MODEL, GUIDE).replace("net dec(", "@per_member net dec(")
                + "meta { family = classes() }\n"),
        );
    }

    #[test]
    fn e014_no_closed_form() {
        let exact = |model: &str| {
            vae("", model, "guide exact").replace(
                "net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])\n",
                "",
            )
        };
        let src = exact(MODEL);
        let d = expect(&src, Code::E014, "x ~ Bernoulli(logits = dec(z))");
        assert!(d.message.contains("`z`"), "{}", d.message);
        let fa = |model: &str| {
            format!(
                "const D = 4; const L = 2\ndata x : Real[D]\nlatent z : Real[L]\n\
                 param noise : Positive[D] = 1.0\n\
                 net load(z: Real[L]) -> Real[D] = linear()\n\
                 net curve(z: Real[L]) -> Real[D] = mlp(hidden = [8])\n\
                 model {{ {model} }}\nguide exact\n"
            )
        };
        let src =
            fa("z ~ Normal(0, 1); let m = curve(z) + load(z); let n = m + 1; x ~ Normal(n, noise)");
        let d = expect(&src, Code::E014, "x ~ Normal(n, noise)");
        let at = d.secondary[0].span.range().expect("span");
        assert_eq!(&src[at], "let m = curve(z) + load(z)");
        let src = fa("z ~ Normal(0, 1); x ~ Normal(load(z) + 0 * curve(z), exp(load(z)))");
        expect(
            &src,
            Code::E014,
            "x ~ Normal(load(z) + 0 * curve(z), exp(load(z)))",
        );
        let src = fa("z ~ Laplace(0, 1); x ~ Normal(load(z) + 0 * sum(curve(z)), noise)");
        expect(&src, Code::E014, "z ~ Laplace(0, 1)");
    }

    #[test]
    fn e016_global_depends_on_example() {
        let src = format!(
            "{HEAD}data x : Real[D]\nglobal latent w : Real[D]\nlatent z : Real[Z]\n\
             param wm : Real[D]\n\
             net enc(x: Real[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])\n\
             net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])\n\
             model {{ w ~ Normal(0, 1)\n z ~ Normal(0, 1)\n x ~ Normal(dec(z) + w, 1) }}\n\
             guide {{ let (m, s) = enc(x)\n z ~ Normal(m, s)\n W_SITE }}\n"
        );
        clean(&src.replace("W_SITE", "w ~ Normal(wm, 1)"));
        let bad = src.replace("W_SITE", "w ~ Normal(wm + x, 1)");
        let d = expect(&bad, Code::E016, "w ~ Normal(wm + x, 1)");
        assert!(d.message.contains("`x`"));
        let bad = src.replace("W_SITE", "let u = wm + sum(z)\n w ~ Normal(u, 1)");
        let d = expect(&bad, Code::E016, "w ~ Normal(u, 1)");
        assert!(d.message.contains("`z`"), "{}", d.message);
    }

    #[test]
    fn front_errors_silence_rules_names_confuse() {
        let src = vae(
            "set S : Binary[D] size 5",
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decodr(z))",
            GUIDE,
        );
        let ds = run(&src).diagnostics;
        let codes: Vec<Code> = ds.iter().map(|d| d.code).collect();
        assert!(codes.contains(&Code::E002), "{ds:#?}");
        assert!(codes.contains(&Code::E013), "{ds:#?}");
        assert!(
            !codes.iter().any(|c| matches!(
                c,
                Code::E007 | Code::E008 | Code::E009 | Code::W001 | Code::W002
            )),
            "{ds:#?}"
        );
    }

    #[test]
    fn w001_unused() {
        let src = vae("const Q = 3", MODEL, GUIDE);
        expect(&src, Code::W001, "Q");
        let src = vae("param p : Real[D]", MODEL, GUIDE);
        expect(&src, Code::W001, "p");
        let src = vae("net other(z: Real[Z]) -> Real[D] = linear()", MODEL, GUIDE);
        expect(&src, Code::W001, "other");
        let src = vae(
            "",
            "z ~ Normal(0, 1)\n let k = dec(z)\n x ~ Bernoulli(logits = dec(z))",
            GUIDE,
        );
        expect(&src, Code::W001, "k");
    }

    #[test]
    fn w002_unused_heads() {
        let src = vae(
            "net enc3(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[H]) = mlp(hidden = [H])",
            MODEL,
            "guide { let (m, s, h) = enc3(x)\n z ~ Normal(m + 0 * sum(enc(x).loc) + 0 * sum(enc(x).scale), s) }",
        );
        expect(&src, Code::W002, "h");
        let src = vae("", MODEL, "guide { z ~ Normal(enc(x).loc, 1) }");
        expect(&src, Code::W002, "scale");
    }

    /// No input makes the rules panic: every word of a spec full of mistakes is deleted
    /// or replaced in turn, and every variant that parses is checked (with and without
    /// earlier errors).
    #[test]
    fn rules_never_panic_on_mutations() {
        let bad = vae(
            "global latent w : Real[Z]\nset S : Binary[D] size 3\nparam p : Real[D]",
            &format!("{MODEL}\n w ~ Normal(0, 1)"),
            "guide { let (m, s) = enc(x)\n z ~ Normal(m + sum(p), s) @refine(steps = 2)\n \
             w ~ Gamma(p, 1) @enumerate }",
        )
            + "train { kl = analytic; batch = 0 }\nmeta { family = rotate(0:90:30); test = [1] }\n";
        let exact = "const K = 3; const D = 2\ndata x : Real[D]\nlatent c : Cat(K)\n\
                     latent z : Real[D]\nparam mu : Real[K, D]\nparam sigma : Positive[K, D]\n\
                     model { c ~ Categorical(logits = zeros(K)); z ~ Normal(mu[c], 1)\n\
                     x ~ Normal(z * sigma[c] + tanh(z), sigma[c]) }\nguide exact\n";
        for src in [bad.as_str(), exact] {
            let mut words = Vec::new();
            let mut start = None;
            for (i, ch) in src.char_indices().chain([(src.len(), ' ')]) {
                match (ch.is_whitespace(), start) {
                    (false, None) => start = Some(i),
                    (true, Some(st)) => {
                        words.push((st, i));
                        start = None;
                    }
                    _ => {}
                }
            }
            for &(a, b) in &words {
                for repl in ["", "z", "exact"] {
                    let m = format!("{}{}{}", &src[..a], repl, &src[b..]);
                    let Ok(file) = crate::syntax::parse(&m) else {
                        continue;
                    };
                    let (consts, _) = crate::check::consts::resolve(&file, &[]);
                    let (program, _) = crate::check::build::build(&file, &consts);
                    for front in [false, true] {
                        let mut p = program.clone();
                        for e in super::check(&mut p, &file, front) {
                            let _ = Diagnostic::from(e);
                        }
                    }
                }
            }
        }
    }
}
