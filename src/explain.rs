//! The long explanations printed by `vic explain CODE`: what the rule is, a spec that
//! breaks it, and how to fix it.

use crate::diag::Code;

/// The sections of the language reference (docs/language.md) a code's rule lives in.
pub fn sections(code: Code) -> &'static str {
    match code {
        Code::E001 => "section 2, \"Lexical rules\", and section 3, \"Items\"",
        Code::E002 | Code::E003 => "section 3, \"Items\"",
        Code::E004 | Code::E005 => {
            "section 4, \"Types and domains\", and section 7, \"Expressions and built-ins\""
        }
        Code::E006 => "section 8, \"Distributions\", and section 5, \"Networks\"",
        Code::E007 | Code::E009 | Code::E010 => "section 6, \"Statements\"",
        Code::E008 | Code::E011 | Code::E014 | Code::E016 => "section 9, \"Inference\"",
        Code::E012 => "section 11, \"The `train` block\"",
        Code::E013 => "section 10, \"`meta` families and context sets\"",
        Code::E015 => "section 3, \"Items\" (`const`)",
        Code::E017 | Code::W001 | Code::W002 => {
            "section 12, \"Diagnostics: error and warning codes\""
        }
    }
}

/// `vic explain CODE`: the explanation, then where the reference says more.
pub fn full(code: Code) -> String {
    format!(
        "{}\nReference: docs/language.md, {}; every code is listed in section 12.\n",
        text(code),
        sections(code)
    )
}

/// The one-line title of a code (`syntax error`), the first line of its explanation.
pub fn title(code: Code) -> &'static str {
    let first = text(code).lines().next().unwrap_or("");
    first.split_once(": ").map_or(first, |(_, t)| t)
}

pub fn text(code: Code) -> &'static str {
    match code {
        Code::E001 => E001,
        Code::E002 => E002,
        Code::E003 => E003,
        Code::E004 => E004,
        Code::E005 => E005,
        Code::E006 => E006,
        Code::E007 => E007,
        Code::E008 => E008,
        Code::E009 => E009,
        Code::E010 => E010,
        Code::E011 => E011,
        Code::E012 => E012,
        Code::E013 => E013,
        Code::E014 => E014,
        Code::E015 => E015,
        Code::E016 => E016,
        Code::E017 => E017,
        Code::W001 => W001,
        Code::W002 => W002,
    }
}

const E001: &str = "\
E001: syntax error

The text is not a well-formed .vi file: a token is missing or out of place, a
bracket is not closed, a reserved word is used as a name, or a required block is
missing (every spec needs `model { ... }`).

    net dec (z: Real[Z]) -> Real[D] = mlp (hidden = [H])   # space before `(`

A call's `(` follows its name with no space between:

    net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])

Reserved words (const data latent param net set model guide train meta let for in
exact global given partial size) cannot be names; choose another (`size_` or `n`).
";

const E002: &str = "\
E002: unknown name

A name does not refer to anything the file declares or the language provides: a
const, data, latent, param, net, set or `let` binding, a distribution (Normal,
Bernoulli, ...), an architecture (mlp, conv, gru, ...), a built-in (exp, log,
softplus, concat, zeros, ...), a domain (Real, Positive, Cat(K), ...), a network
head, or an inference strategy.

    x ~ Bernouli(logits = decoder(z))

Check the spelling; the hint suggests the closest known name:

    x ~ Bernoulli(logits = decoder(z))
";

const E003: &str = "\
E003: duplicate declaration

Declarations share one namespace (const, data, latent, param, net, set), `let`
names must be new within their block, a network's inputs and heads need distinct
names, a key may be set once, and each of `model`, `guide`, `train` and `meta`
appears at most once.

    latent z : Real[Z]
    param  z : Real[Z]      # `z` is already the latent

Rename one of them, or merge the two blocks into one.
";

const E004: &str = "\
E004: shape mismatch

Shapes are checked statically, per example (the batch axis is implicit). Scalars
broadcast; any other shape must match exactly: network inputs against their
declared types, distribution arguments against the variable, both sides of `+`,
`concat` operands on every axis but the first, the number of targets of a tuple
`let` against the network's heads, and a `Cat(K)` index against a leading `K` axis.

    net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H])
    latent w : Real[8]
    x ~ Bernoulli(logits = decoder(w))     # Real[8] given where Real[Z] is expected

Pass a value of the declared shape, or change the declaration.
";

const E005: &str = "\
E005: domain mismatch

Every value has a domain (Real, Positive, Unit, Binary, Count, Simplex, Cat(K)).
Distribution parameters must lie in their domain (a Normal's scale is Positive),
observed data must lie in the distribution's support (Binary pixels need
Bernoulli or ContinuousBernoulli, not Normal), a latent's declared domain is its
distribution's support, and a Cat(K) value cannot be used where a Real is needed.

    let (loc, s) = encoder(x)              # s : Real[Z]
    z ~ Normal(loc, s)                     # scale must be Positive

Declare the head `scale: Positive[Z]` (it gets a softplus), or write
`softplus(s)` / `exp(s)`.
";

const E006: &str = "\
E006: wrong arguments

A call has the wrong number of arguments, an unknown or missing keyword, a
keyword given twice, or both `probs` and `logits`. This covers networks,
distributions, architectures, built-ins, flows and strategies.

    x ~ Bernoulli(probs = p, logits = l)

Give exactly one of `probs` or `logits`; the hint lists the accepted keywords.
";

const E007: &str = "\
E007: latent not sampled exactly once in model

Every latent is part of the generative story: `model` must sample it exactly once
(a `z[t] ~ ...` inside a loop over its steps counts as once).

    latent z : Real[Z]
    model { x ~ Bernoulli(logits = decoder(zeros(Z))) }   # z never sampled

Add `z ~ Normal(0, 1)` (or its prior) to `model`, or remove the declaration.
";

const E008: &str = "\
E008: guide does not match model

The guide (section 8) must sample every latent exactly once, with the same
support as in `model`; it must sample every `partial` data variable (used where
the value is missing); and it must not sample anything else or observe data.

    model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
    guide { x ~ Bernoulli(logits = dec(zeros(Z))) }       # observes data, misses z

A guide that reads a `partial` variable (`enc(x, y)`) must sample it first
(`y ~ Categorical(logits = classify(x))`): where `y` is missing, that is its value.

Sample each latent in `guide` from a distribution with the model's support.
";

const E009: &str = "\
E009: data not observed correctly

Each data variable that is not `given` is explained by the model: it appears left
of `~` in `model` exactly once. A `given` variable is a conditioning input and is
never left of `~`.

    data c : Cat(10) given
    model { c ~ Categorical(logits = zeros(10)) }   # `given` data observed

Drop `given` if the model should explain `c`, or remove the `~` statement.
";

const E010: &str = "\
E010: used before definition

Statements run in order: a `let` value, a latent, or `partial` data is read only
after it is defined or sampled earlier in the same block. A sequence `h[t]` is
read only at steps already defined (`h[t-1]` inside the loop after `let h[0]`),
and a loop that samples a `[T, ...]` variable step by step covers exactly 1..T.

    model {
      x ~ Bernoulli(logits = decoder(z))     # z is sampled below
      z ~ Normal(0, 1)
    }

Move the definition above its first use.
";

const E011: &str = "\
E011: inference strategy cannot apply

Section 8 fixes what each strategy applies to: `@enumerate` and `@relax` need a
finite discrete site (Categorical, Bernoulli); continuous guide sites are
reparameterized, so a guide distribution without a reparameterized sampler
(Gamma, Beta, Dirichlet) needs `@reinforce`; `@refine` and `@random_function` need
a Normal site; flows (`|> iaf(...)`) need a continuous site; strategies belong to
guide sites only; `kl = analytic` needs a closed-form KL for every latent. A
`global` discrete latent cannot be enumerated (its one value is shared by every
example, so the sum does not split into per-example terms): give it `@relax` or
`@reinforce`.

    z ~ Gamma(a, b)                 # no reparameterized sampler

Write `z ~ Gamma(a, b) @reinforce`, or use a LogNormal guide.
";

const E012: &str = "\
E012: invalid train setting

A `train` key is unknown, or its value has the wrong kind or range (section 10):
for example `lr` must be positive, `split` lies in (0, 1), `batch` and `epochs`
are positive integers, `objective` is `elbo(samples = N)` or `iwae(samples = K)`.

    train { optimiser = adam(lr = 1e-3) }

Use the key the hint suggests: `optimizer = adam(lr = 1e-3)`.
";

const E013: &str = "\
E013: invalid meta or set

A `set` context and `@per_member` networks only make sense for a `meta` family of
member distributions (section 9). The family must be one of rotate, scale, shear,
classes or datasets, and the `train` and `test` members must not overlap.

    set S : Binary[D] size 10       # no meta block

Add `meta { family = rotate(-180:160:20); train = even; test = odd }`.
";

const E014: &str = "\
E014: no closed-form posterior

`guide exact` asks the compiler for the exact posterior. That exists for
linear-Gaussian models (Normal latents with fixed or learned parameters, Normal
observations whose mean comes from `linear()` networks of the latents and whose
scale does not depend on them) and for finite discrete latents (enumeration). The
message names the statement that breaks conjugacy.

    net dec(z: Real[L]) -> Real[D] = mlp(hidden = [64])
    model { z ~ Normal(0, 1); x ~ Normal(dec(z), 1) }   # mlp: not linear
    guide exact

Use `linear()` for the mean, or write an amortized `guide { ... }`.
";

const E015: &str = "\
E015: invalid const

A const is a positive integer, computed from literals and other consts with
`+ - * /` (division must be exact); consts may not depend on themselves. Every
dimension is such an expression.

    const A = B + 1
    const B = A * 2        # cycle A -> B -> A

Give one of them a literal value.
";

const E016: &str = "\
E016: global latent depends on per-example values

A `global latent` has one copy for the whole dataset, so its guide cannot depend
on any one example's data or per-example latents.

    global latent w : Real[D]
    guide { let (m, s) = enc(x); w ~ Normal(m, s) }      # depends on x

Give the global latent `param` parameters: `w ~ Normal(w_loc, w_scale)`.
";

const E017: &str = "\
E017: cost beyond reason

The estimated cost is too large to be what you meant: enumeration over more than
1024 joint values of discrete latents, or more than 1e9 learned parameters.

    latent c : Cat(10)[8]           # 10^8 joint values enumerated

Use `@relax(temperature = 0.5)` or `@reinforce` for the site, or make the
networks smaller.
";

const W001: &str = "\
W001: unused declaration

A const, param, network, set or `let` binding is never used. It is probably a
leftover or a typo elsewhere. Warnings fail `vic check` only with
`--deny-warnings`.

Remove it, or use it where it was meant to be used.
";

const W002: &str = "\
W002: unused network head

A network head is never read: it still costs parameters and computation.

    net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[C]) = mlp(...)
    guide { let (m, s, h) = enc(x); z ~ Normal(m, s) }   # h never used

Remove the head from the signature, or use it (for example as flow context).
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_an_explanation_that_starts_with_the_code() {
        for code in Code::ALL {
            let t = text(code);
            assert!(t.starts_with(code.as_str()), "{code}");
            assert!(t.lines().count() >= 5, "{code} is too short");
        }
    }
}
