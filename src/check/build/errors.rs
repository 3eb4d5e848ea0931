//! The failures of `build`, one variant each, and their one conversion into diagnostics.

use super::shape_text;
use crate::check::consts::ConstError;
use crate::diag::{Code, Diagnostic};
use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub enum BuildError {
    /// A dimension, size or bound that is not a valid integer expression (E015, E002).
    Const(ConstError),
    /// The spec has no `model` block (E001); the span is the end of the file.
    MissingModel { span: Span },
    /// A name declared twice: a declaration, a network input or head, a `let` (E003).
    Duplicate {
        what: &'static str,
        name: String,
        span: Span,
        first: Span,
    },
    /// `model`, `guide`, `train` or `meta` given twice (E003).
    DuplicateBlock {
        block: &'static str,
        span: Span,
        first: Span,
    },
    /// A name that is not declared or not known as the kind expected here (E002).
    Unknown {
        what: &'static str,
        name: String,
        span: Span,
        suggestion: Option<String>,
    },
    /// `net(...).head` naming no head of the network (E002).
    UnknownHead {
        net: String,
        head: String,
        span: Span,
        suggestion: Option<String>,
    },
    /// `Set[T]` anywhere but a network input (E005).
    SetOutsideNet { span: Span },
    /// `Set[Set[T]]` or a set of a non-dense type (E005).
    NestedSet { span: Span },
    /// `Cat` without its class count, or a count on another domain (E006).
    DomainArg {
        domain: String,
        needs_arg: bool,
        span: Span,
    },
    /// `Simplex` without a shape (E004).
    SimplexWithoutShape { span: Span },
    /// A param of a domain a learned point cannot have (Binary, Count, Cat) (E005).
    ParamDomain {
        name: String,
        domain: String,
        span: Span,
    },
    /// A param's `init` outside its constrained domain (E005).
    InitOutsideDomain {
        name: String,
        ty: String,
        span: Span,
        hint: String,
    },
    /// A call with too many or too few positional arguments (E006).
    Arity {
        callee: String,
        expected: String,
        given: usize,
        span: Span,
    },
    /// A keyword argument the callee does not take (E006).
    UnknownKeyword {
        callee: String,
        keyword: String,
        span: Span,
        suggestion: Option<String>,
        /// The arguments the callee takes.
        accepted: Vec<String>,
    },
    /// A required argument not given (E006).
    MissingKeyword {
        callee: String,
        keyword: String,
        span: Span,
    },
    /// The same argument given twice (E006).
    DuplicateKeyword {
        callee: String,
        keyword: String,
        span: Span,
        first: Span,
    },
    /// A positional argument where only keywords are accepted (E006).
    PositionalNotAllowed {
        callee: String,
        span: Span,
        hint: String,
    },
    /// A distribution called inside an expression (E002: it is not a function).
    DistributionAsValue { name: String, span: Span },
    /// A keyword argument to a network or built-in, which take positional ones (E006).
    KeywordNotAllowed { callee: String, span: Span },
    /// A `|> flow` on a model site (E011).
    FlowInModel { span: Span },
    /// `Bernoulli`/`Categorical` with both `probs` and `logits`, or neither (E006).
    ProbsOrLogits {
        dist: String,
        both: bool,
        span: Span,
    },
    /// An argument value of the wrong kind or range (E006).
    BadValue {
        callee: String,
        keyword: String,
        expected: String,
        span: Span,
    },
    /// A network signature whose shapes do not fit its architecture (E004).
    ArchShape {
        net: String,
        problem: String,
        span: Span,
        hint: Option<String>,
    },
    /// A network signature whose domains do not fit its architecture (E005).
    ArchDomain {
        net: String,
        problem: String,
        span: Span,
        hint: Option<String>,
    },
    /// A network signature or keyword combination the architecture cannot build (E006).
    ArchArgs {
        net: String,
        problem: String,
        span: Span,
        hint: Option<String>,
    },
    /// A head of a domain no output activation produces (Cat, Count) (E005).
    HeadDomain {
        head: String,
        domain: String,
        span: Span,
    },
    /// An annotation other than `@per_member` (E002).
    UnknownAnnotation {
        name: String,
        span: Span,
        suggestion: Option<String>,
    },
    /// Operands of `+ - * /` whose shapes neither match nor broadcast (E004).
    Broadcast {
        op: &'static str,
        lhs: Vec<usize>,
        rhs: Vec<usize>,
        span: Span,
    },
    /// A `concat` operand whose trailing axes differ from the first's (E004).
    ConcatShape {
        expected: Vec<usize>,
        found: Vec<usize>,
        span: Span,
    },
    /// A network argument of the wrong shape (E004).
    NetArgShape {
        net: String,
        input: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        span: Span,
    },
    /// A network argument outside the input's domain (E005).
    NetArgDomain {
        net: String,
        input: String,
        expected: String,
        found: String,
        span: Span,
    },
    /// Something other than a set passed to a `Set[T]` input, or a set elsewhere (E005).
    SetArg {
        net: String,
        input: String,
        span: Span,
    },
    /// A set passed where a value is needed (E005).
    SetAsValue { name: String, span: Span },
    /// A value of the wrong domain for an operation (E005), e.g. `log` of a Real.
    DomainRequired {
        context: String,
        expected: String,
        found: String,
        span: Span,
        hint: Option<String>,
    },
    /// A name that is not a value (a network without a call) used as one (E005).
    NotAValue {
        name: String,
        kind: &'static str,
        span: Span,
    },
    /// A network with several heads used as one value (E004).
    MultiHeadValue {
        net: String,
        first_head: String,
        span: Span,
    },
    /// A tuple `let` whose target count differs from the network's head count (E004).
    TupleArity {
        net: String,
        heads: usize,
        targets: usize,
        span: Span,
    },
    /// A tuple `let` whose value is not a network call (E004).
    TupleNeedsNet { span: Span },
    /// `a[i]` on something that is neither a sequence nor indexed by a Cat value (E004).
    BadIndex { what: String, span: Span },
    /// `mu[c]` where `mu`'s leading axis is not `K` for `c : Cat(K)` (E004).
    SelectAxis {
        classes: usize,
        shape: Vec<usize>,
        span: Span,
    },
    /// A constant step outside a sequence's range (E004).
    StepOutOfRange {
        name: String,
        step: i64,
        first: i64,
        last: usize,
        span: Span,
    },
    /// A distribution argument of the wrong shape (E004).
    DistArgShape {
        dist: String,
        param: String,
        /// The shapes as the spec writes them (`[Z]` where a const `Z` has the value).
        expected: String,
        found: String,
        /// Whether a scalar would have been accepted (it broadcasts).
        scalar_ok: bool,
        span: Span,
        /// The network head the argument comes from: its declaration's span and name.
        head: Option<(Span, String)>,
    },
    /// A distribution argument outside the parameter's domain (E005).
    DistArgDomain {
        dist: String,
        param: String,
        expected: String,
        found: String,
        span: Span,
        hint: Option<String>,
    },
    /// A latent whose declared domain differs from its distribution's support (E005).
    LatentSupport {
        name: String,
        declared: String,
        dist: String,
        support: String,
        span: Span,
        hint: String,
    },
    /// Observed data outside its distribution's support (E005).
    DataSupport {
        name: String,
        declared: String,
        dist: String,
        support: String,
        span: Span,
        hint: String,
    },
    /// A `~` target that is not a latent or data variable (E005).
    NotSampleable {
        name: String,
        kind: &'static str,
        span: Span,
    },
    /// A guide site whose target is not a latent or data variable (E008).
    GuideSiteNotLatent {
        name: String,
        kind: &'static str,
        span: Span,
    },
    /// The guide reads a `partial` variable it never samples (E008).
    PartialReadNotSampled {
        name: String,
        span: Span,
        guide: Span,
    },
    /// A local, latent or `partial` data read before it is defined in this block (E010).
    UseBeforeDef {
        name: String,
        what: &'static str,
        span: Span,
        hint: String,
    },
    /// A sequence read at a step not yet defined (E010).
    StepNotDefined {
        name: String,
        step: String,
        span: Span,
        hint: String,
    },
    /// A stepped site in a loop that does not cover `1..T` (E010).
    LoopCoverage {
        name: String,
        from: usize,
        to: usize,
        steps: usize,
        span: Span,
    },
    /// A stepped `~` or `let h[t]` not indexed by an enclosing loop's variable (E010).
    StepOutsideLoop { name: String, span: Span },
    /// `@strategy` on a model site (E011).
    StrategyInModel { span: Span },
    /// An `iaf` flow whose network is not a `made` network (E006).
    FlowNotMade {
        net: String,
        arch: &'static str,
        span: Span,
    },
    /// `@random_function` on a site whose `loc` is not a network's output (E011).
    RandomFunctionNoNet {
        name: String,
        reason: &'static str,
        span: Span,
    },
    /// A state the checker should never reach; a bug in vic.
    Internal { what: String, span: Span },
}

fn dym(d: Diagnostic, suggestion: Option<String>) -> Diagnostic {
    match suggestion {
        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
        None => d,
    }
}

/// What exists, for an unknown name of a closed kind with no close match.
fn known(what: &str) -> Option<String> {
    let list = match what {
        "domain" => "the domains are Real, Positive, Unit, Binary, Count, Simplex and Cat(K)",
        "distribution" => "the distributions are Normal, LogNormal, Laplace, StudentT, Uniform, Exponential, Gamma, Beta, Bernoulli, ContinuousBernoulli, Categorical, Poisson, Dirichlet and Mixture",
        "architecture" => "the architectures are linear, mlp, conv, deconv, gru, lstm, made, deepsets, attend_read and attend_write",
        "inference strategy" => "the strategies are @enumerate, @relax, @reinforce, @refine and @random_function",
        "flow" => "the only flow is `iaf(net, context..., steps = N)`",
        "activation" => "the activations are relu, tanh, softplus, elu, leaky_relu, gelu and sigmoid",
        "network or function" => "no network of that name is declared; the built-ins are exp, log, sqrt, abs, softplus, sigmoid, tanh, relu, sum, mean, concat, zeros and ones",
        "kernel" => "the kernels are \"rbf\", \"matern32\" and \"matern52\"",
        "initializer" => "write `zeros`, `ones`, a number, `normal(m, s)` or `uniform(a, b)`",
        _ => return None,
    };
    Some(list.to_string())
}

fn opt_hint(d: Diagnostic, hint: Option<String>) -> Diagnostic {
    match hint {
        Some(h) => d.with_hint(h),
        None => d,
    }
}

impl From<BuildError> for Diagnostic {
    fn from(e: BuildError) -> Diagnostic {
        use BuildError as B;
        match e {
            B::Const(c) => Diagnostic::from(c),
            B::MissingModel { span } => {
                Diagnostic::new(Code::E001, span, "the spec has no `model` block")
                    .with_hint("add `model { ... }`")
            }
            B::Duplicate {
                what,
                name,
                span,
                first,
            } => Diagnostic::new(
                Code::E003,
                span,
                format!("the {what} `{name}` is declared twice"),
            )
            .with_label("declared again here")
            .with_secondary(first, "first declared here")
            .with_hint("rename one of them"),
            B::DuplicateBlock { block, span, first } => Diagnostic::new(
                Code::E003,
                span,
                format!("the `{block}` block is given twice"),
            )
            .with_label("second block")
            .with_secondary(first, "first given here")
            .with_hint(format!("merge them into one `{block}` block")),
            B::Unknown {
                what,
                name,
                span,
                suggestion,
            } => {
                let d = Diagnostic::new(Code::E002, span, format!("unknown {what} `{name}`"))
                    .with_label("not found");
                match (suggestion, known(what)) {
                    (Some(s), _) => d.with_hint(format!("did you mean `{s}`?")),
                    (None, Some(list)) => d.with_hint(list),
                    (None, None) => d,
                }
            }
            B::UnknownHead {
                net,
                head,
                span,
                suggestion,
            } => dym(
                Diagnostic::new(
                    Code::E002,
                    span,
                    format!("the network `{net}` has no head `{head}`"),
                )
                .with_label("unknown head"),
                suggestion,
            ),
            B::SetOutsideNet { span } => Diagnostic::new(
                Code::E005,
                span,
                "`Set[...]` is only allowed in a network's input signature",
            )
            .with_label("not a network input")
            .with_hint("declare the context set with `set NAME : Type size N`"),
            B::NestedSet { span } => Diagnostic::new(
                Code::E005,
                span,
                "a set's member type cannot itself be a set",
            )
            .with_label("nested set"),
            B::DomainArg {
                domain,
                needs_arg,
                span,
            } => {
                if needs_arg {
                    Diagnostic::new(
                        Code::E006,
                        span,
                        format!("`{domain}` needs its number of classes"),
                    )
                    .with_hint("write `Cat(K)`")
                } else {
                    Diagnostic::new(
                        Code::E006,
                        span,
                        format!("the domain `{domain}` takes no argument"),
                    )
                    .with_hint(format!("write `{domain}[...]` for a shape"))
                }
            }
            B::SimplexWithoutShape { span } => Diagnostic::new(
                Code::E004,
                span,
                "`Simplex` needs a shape whose last axis holds the probabilities",
            )
            .with_hint("write `Simplex[K]`"),
            B::ParamDomain { name, domain, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("the param `{name}` cannot have the discrete domain `{domain}`"),
            )
            .with_hint("a param is a learned point: use Real, Positive, Unit or Simplex"),
            B::InitOutsideDomain {
                name,
                ty,
                span,
                hint,
            } => Diagnostic::new(
                Code::E005,
                span,
                format!("the initial value of `{name}` lies outside `{ty}`"),
            )
            .with_label("outside the domain")
            .with_hint(hint),
            B::Arity {
                callee,
                expected,
                given,
                span,
            } => Diagnostic::new(
                Code::E006,
                span,
                format!(
                    "`{callee}` expects {expected}, but {given} {} given",
                    if given == 1 { "was" } else { "were" }
                ),
            )
            .with_label("wrong number of arguments"),
            B::UnknownKeyword {
                callee,
                keyword,
                span,
                suggestion,
                accepted,
            } => {
                let d = Diagnostic::new(
                    Code::E006,
                    span,
                    format!("`{callee}` has no argument `{keyword}`"),
                )
                .with_label("unknown keyword");
                match suggestion {
                    Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                    None if accepted.is_empty() => {
                        d.with_hint(format!("`{callee}` takes no arguments"))
                    }
                    None => {
                        let v: Vec<String> = accepted.iter().map(|a| format!("`{a}`")).collect();
                        d.with_hint(format!("`{callee}` takes {}", v.join(", ")))
                    }
                }
            }
            B::MissingKeyword {
                callee,
                keyword,
                span,
            } => Diagnostic::new(
                Code::E006,
                span,
                format!("`{callee}` needs the argument `{keyword}`"),
            )
            .with_hint(format!("add `{keyword} = ...`")),
            B::DuplicateKeyword {
                callee,
                keyword,
                span,
                first,
            } => Diagnostic::new(
                Code::E006,
                span,
                format!("the argument `{keyword}` of `{callee}` is given twice"),
            )
            .with_secondary(first, "first given here"),
            B::PositionalNotAllowed { callee, span, hint } => Diagnostic::new(
                Code::E006,
                span,
                format!("`{callee}` takes its arguments by keyword"),
            )
            .with_hint(hint),
            B::DistributionAsValue { name, span } => Diagnostic::new(
                Code::E002,
                span,
                format!("`{name}` is a distribution, which can only appear right of `~`"),
            )
            .with_label("not a function")
            .with_hint(format!("sample a declared variable first, `v ~ {name}(...)`, then use `v`")),
            B::KeywordNotAllowed { callee, span } => Diagnostic::new(
                Code::E006,
                span,
                format!("`{callee}` takes positional arguments, not keywords"),
            )
            .with_hint("pass the arguments in order, without `name =`"),
            B::FlowInModel { span } => Diagnostic::new(
                Code::E011,
                span,
                "flows apply to guide sites, not model sites",
            )
            .with_hint("move the `|> ...` to the matching site in `guide`"),
            B::ProbsOrLogits { dist, both, span } => {
                if both {
                    Diagnostic::new(
                        Code::E006,
                        span,
                        format!("`{dist}` takes `probs` or `logits`, not both"),
                    )
                    .with_hint("keep one of them")
                } else {
                    Diagnostic::new(
                        Code::E006,
                        span,
                        format!("`{dist}` needs `probs = ...` or `logits = ...`"),
                    )
                    .with_hint(format!("write `{dist}(logits = ...)`"))
                }
            }
            B::BadValue {
                callee,
                keyword,
                expected,
                span,
            } => Diagnostic::new(
                Code::E006,
                span,
                format!("`{keyword}` of `{callee}` must be {expected}"),
            )
            .with_label("invalid value"),
            B::ArchShape {
                net,
                problem,
                span,
                hint,
            } => opt_hint(
                Diagnostic::new(Code::E004, span, format!("network `{net}`: {problem}")),
                hint,
            ),
            B::ArchDomain {
                net,
                problem,
                span,
                hint,
            } => opt_hint(
                Diagnostic::new(Code::E005, span, format!("network `{net}`: {problem}")),
                hint,
            ),
            B::ArchArgs {
                net,
                problem,
                span,
                hint,
            } => opt_hint(
                Diagnostic::new(Code::E006, span, format!("network `{net}`: {problem}")),
                hint,
            ),
            B::HeadDomain { head, domain, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("the head `{head}` cannot have the domain `{domain}`"),
            )
            .with_hint("output logits (`Real[K]`) and sample with `Categorical(logits = ...)` or `Poisson`"),
            B::UnknownAnnotation {
                name,
                span,
                suggestion,
            } => {
                let d = Diagnostic::new(Code::E002, span, format!("unknown annotation `@{name}`"));
                match suggestion {
                    Some(s) => d.with_hint(format!("did you mean `@{s}`?")),
                    None => d.with_hint("the only network annotation is `@per_member`"),
                }
            }
            B::Broadcast { op, lhs, rhs, span } => Diagnostic::new(
                Code::E004,
                span,
                format!(
                    "the operands of `{op}` have shapes {} and {}, which do not match",
                    shape_text(&lhs),
                    shape_text(&rhs)
                ),
            )
            .with_hint("only scalars broadcast; other shapes must be equal"),
            B::ConcatShape {
                expected,
                found,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!(
                    "`concat` joins along the first axis, so the other axes must be {}, but this has {}",
                    shape_text(&expected),
                    shape_text(&found)
                ),
            )
            .with_label("axes after the first differ"),
            B::NetArgShape {
                net,
                input,
                expected,
                found,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!(
                    "the input `{input}` of `{net}` has shape {}, but this argument has {}",
                    shape_text(&expected),
                    shape_text(&found)
                ),
            )
            .with_label("wrong shape")
            .with_hint(format!(
                "pass a value of shape {}, or change the declared type of `{input}`",
                shape_text(&expected)
            )),
            B::NetArgDomain {
                net,
                input,
                expected,
                found,
                span,
            } => {
                let d = Diagnostic::new(
                    Code::E005,
                    span,
                    format!("the input `{input}` of `{net}` is {expected}, but this argument is {found}"),
                )
                .with_label("wrong domain");
                if found.starts_with("Cat") {
                    d.with_hint(format!("a Cat fed where {expected} is needed: declare the input `Cat(K)`"))
                } else if expected.starts_with("Cat") {
                    d.with_hint(format!("pass a {expected} value (a class), not a {found} one"))
                } else {
                    d.with_hint(format!("declare the input `{input}` as {found}, or pass a {expected} value"))
                }
            }
            B::SetArg { net, input, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("the input `{input}` of `{net}` is a set, so it takes the name of a matching `set`"),
            )
            .with_label("not a matching set"),
            B::SetAsValue { name, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("the set `{name}` can only be passed to a network's `Set[...]` input"),
            ),
            B::DomainRequired {
                context,
                expected,
                found,
                span,
                hint,
            } => opt_hint(
                Diagnostic::new(
                    Code::E005,
                    span,
                    format!("{context} needs {expected}, but this is {found}"),
                )
                .with_label("wrong domain"),
                hint,
            ),
            B::NotAValue { name, kind, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("`{name}` is a {kind}, not a value"),
            )
            .with_hint(format!("call it: `{name}(...)`")),
            B::MultiHeadValue {
                net,
                first_head,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!("`{net}` has several heads, so its call is not one value"),
            )
            .with_hint(format!(
                "destructure with `let (a, b) = ...` or pick a head with `.{first_head}`"
            )),
            B::TupleArity {
                net,
                heads,
                targets,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!("`{net}` has {heads} head(s), but {targets} name(s) are bound"),
            )
            .with_hint("bind one name per head, in the order of the heads"),
            B::TupleNeedsNet { span } => Diagnostic::new(
                Code::E004,
                span,
                "a tuple `let` needs a network call with named heads",
            ),
            B::BadIndex { what, span } => {
                Diagnostic::new(Code::E004, span, what).with_hint(
                    "index a sequence with a loop variable (`h[t]`, `h[t-1]`) or a const, or a leading K axis with a `Cat(K)` value",
                )
            }
            B::SelectAxis {
                classes,
                shape,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!(
                    "indexing with a Cat({classes}) value needs a leading axis of {classes}, but this has shape {}",
                    shape_text(&shape)
                ),
            ),
            B::StepOutOfRange {
                name,
                step,
                first,
                last,
                span,
            } => Diagnostic::new(
                Code::E004,
                span,
                format!("step {step} of `{name}` is outside its steps {first}..{last}"),
            ),
            B::DistArgShape {
                dist,
                param,
                expected,
                found,
                scalar_ok,
                span,
                head,
            } => {
                let d = Diagnostic::new(
                    Code::E004,
                    span,
                    format!(
                        "`{param}` of `{dist}` must {}have shape {expected}, but this has {found}",
                        if scalar_ok { "be a scalar or " } else { "" },
                    ),
                )
                .with_label("wrong shape");
                match head {
                    Some((at, name)) => d
                        .with_secondary(at, format!("`{name}` is declared {found} here"))
                        .with_hint(format!(
                            "declare the head `{name}` with shape {expected}, or give the distribution an argument of that shape"
                        )),
                    None => d,
                }
            }
            B::DistArgDomain {
                dist,
                param,
                expected,
                found,
                span,
                hint,
            } => opt_hint(
                Diagnostic::new(
                    Code::E005,
                    span,
                    format!("`{param}` of `{dist}` must be {expected}, but this is {found}"),
                )
                .with_label("wrong domain"),
                hint,
            ),
            B::LatentSupport {
                name,
                declared,
                dist,
                support,
                span,
                hint,
            } => Diagnostic::new(
                Code::E005,
                span,
                format!("the latent `{name}` is declared {declared}, but `{dist}` draws {support} values"),
            )
            .with_hint(hint),
            B::DataSupport {
                name,
                declared,
                dist,
                support,
                span,
                hint,
            } => Diagnostic::new(
                Code::E005,
                span,
                format!("the data `{name}` is {declared}, which lies outside the support {support} of `{dist}`"),
            )
            .with_hint(hint),
            B::NotSampleable { name, kind, span } => Diagnostic::new(
                Code::E005,
                span,
                format!("`{name}` is a {kind}; only a latent or data variable can be left of `~`"),
            )
            .with_hint(format!("declare `latent {name} : ...` or `data {name} : ...`")),
            B::GuideSiteNotLatent { name, kind, span } => Diagnostic::new(
                Code::E008,
                span,
                format!("the guide samples `{name}`, which is a {kind}, not a latent"),
            )
            .with_label("not a latent")
            .with_hint("the guide samples latents and `partial` data only; remove this site"),
            B::PartialReadNotSampled { name, span, guide } => Diagnostic::new(
                Code::E008,
                span,
                format!("`partial` data `{name}` is read in `guide` but never sampled there"),
            )
            .with_label("read here")
            .with_secondary(guide, "the guide")
            .with_hint(format!(
                "sample it in `guide` before this use (e.g. `{name} ~ Categorical(logits = classify(x))`); the guide's value is used where `{name}` is missing"
            )),
            B::UseBeforeDef {
                name,
                what,
                span,
                hint,
            } => Diagnostic::new(
                Code::E010,
                span,
                format!("the {what} `{name}` is used before it is defined in this block"),
            )
            .with_label("not defined yet")
            .with_hint(hint),
            B::StepNotDefined {
                name,
                step,
                span,
                hint,
            } => Diagnostic::new(
                Code::E010,
                span,
                format!("`{name}[{step}]` is read before that step is defined"),
            )
            .with_label("step not defined yet")
            .with_hint(hint),
            B::LoopCoverage {
                name,
                from,
                to,
                steps,
                span,
            } => Diagnostic::new(
                Code::E010,
                span,
                format!("the loop covers {from}..{to} but `{name}` has {steps} steps"),
            )
            .with_hint(format!("loop with `for t in 1:{steps}`")),
            B::StepOutsideLoop { name, span } => Diagnostic::new(
                Code::E010,
                span,
                format!("a step of `{name}` is defined outside a loop over its steps"),
            )
            .with_hint("define steps inside `for t in 1:T { ... }` with index `t`"),
            B::StrategyInModel { span } => Diagnostic::new(
                Code::E011,
                span,
                "inference strategies apply to guide sites, not model sites",
            )
            .with_hint("move the `@...` to the matching site in `guide`"),
            B::FlowNotMade { net, arch, span } => Diagnostic::new(
                Code::E006,
                span,
                format!("`iaf` needs a `made` network, but `{net}` is `{arch}`"),
            )
            .with_hint(format!("declare `net {net}(...) -> ... = made(hidden = [...])`")),
            B::RandomFunctionNoNet { name, reason, span } => Diagnostic::new(
                Code::E011,
                span,
                format!("`@random_function` on `{name}` needs {reason}"),
            )
            .with_hint(
                "compute the site's parameters with a network of the guide's inputs: `let (loc, scale) = encoder(x)` then `Normal(loc, scale) @random_function(...)`",
            ),
            B::Internal { what, span } => Diagnostic::new(
                Code::E001,
                span,
                format!("internal compiler error: {what}"),
            )
            .with_hint("this is a bug in vic; please report it with the spec"),
        }
    }
}
