//! Tests of `build`: one failing and one passing source per rule, asserting the code and
//! the offending text, and the language reference's examples building the expected IR.

use super::build;
use crate::check::consts;
use crate::diag::{Code, Diagnostic};
use crate::ir::*;
use crate::syntax::parse;

fn run(src: &str) -> (Program, Vec<Diagnostic>) {
    let file = match parse(src) {
        Ok(f) => f,
        Err(e) => panic!("parse error: {:?}", Diagnostic::from(e)),
    };
    let (c, ce) = consts::resolve(&file, &[]);
    let (p, be) = build(&file, &c);
    let mut d: Vec<Diagnostic> = ce.into_iter().map(Diagnostic::from).collect();
    d.extend(be.into_iter().map(Diagnostic::from));
    (p, d)
}

/// Build a source that must have no errors.
fn ok(src: &str) -> Program {
    let (p, d) = run(src);
    assert!(d.is_empty(), "unexpected diagnostics: {d:#?}");
    p
}

/// The (code, offending text) of every diagnostic.
fn errs(src: &str) -> Vec<(Code, String)> {
    let (_, d) = run(src);
    d.iter()
        .map(|d| {
            let text = d
                .span
                .range()
                .map(|r| src[r].to_string())
                .unwrap_or_default();
            (d.code, text)
        })
        .collect()
}

/// Exactly one diagnostic, with this code, pointing at this text.
#[track_caller]
fn one(src: &str, code: Code, text: &str) -> Diagnostic {
    let (_, d) = run(src);
    let got: Vec<(Code, String, String)> = d
        .iter()
        .map(|d| {
            (
                d.code,
                d.span
                    .range()
                    .map(|r| src[r].to_string())
                    .unwrap_or_default(),
                d.message.clone(),
            )
        })
        .collect();
    assert_eq!(d.len(), 1, "expected one diagnostic, got {got:#?}");
    assert_eq!((got[0].0, got[0].1.as_str()), (code, text), "{got:#?}");
    d.into_iter().next().expect("one")
}

const VAE_DECLS: &str = "
const D = 784
const Z = 32
const H = 512
data   x : Binary[D]
latent z : Real[Z]
net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H], act = relu)
net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H], act = relu)
";

fn vae(model: &str, guide: &str) -> String {
    format!("{VAE_DECLS}\nmodel {{ {model} }}\nguide {{ {guide} }}\n")
}

const VAE_MODEL: &str = "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z))";
const VAE_GUIDE: &str = "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale)";

#[test]
fn vae_example_builds() {
    let src = crate::sources::VAE;
    let p = ok(src);
    assert_eq!(p.consts.len(), 3);
    assert_eq!(p.data[0].ty, Type::new(Domain::Binary, vec![784]));
    assert_eq!(p.latents[0].ty, Type::new(Domain::Real, vec![32]));
    let enc = &p.nets[0];
    assert!(!enc.single_output);
    assert_eq!(enc.heads[1].activation, HeadActivation::Softplus);
    assert_eq!(
        enc.arch,
        Arch::Mlp {
            hidden: vec![512, 512],
            act: Activation::Relu,
            dropout: 0.0,
            norm: Norm::None
        }
    );
    let dec = &p.nets[1];
    assert!(dec.single_output && dec.heads[0].name == "decoder");
    assert_eq!(p.model.stmts.len(), 2);
    let Stmt::Sample(z) = &p.model.stmts[0] else {
        panic!("site")
    };
    assert_eq!(z.var, SiteVar::Latent(0));
    assert_eq!(z.dist.kind, DistKind::Normal);
    assert_eq!(z.dist.args[0].0, DistParam::Loc);
    assert_eq!(z.dist.support, Type::new(Domain::Real, vec![32]));
    assert_eq!(z.strategy, None);
    let Stmt::Sample(x) = &p.model.stmts[1] else {
        panic!("site")
    };
    assert_eq!(x.dist.args[0].0, DistParam::Logits);
    assert!(matches!(
        x.dist.args[0].1.kind,
        ExprKind::NetCall {
            net: 1,
            head: Some(0),
            ..
        }
    ));
    let Guide::Amortized(g) = &p.guide else {
        panic!("guide")
    };
    assert_eq!(g.locals.len(), 2);
    assert_eq!(g.locals[1].ty, Type::new(Domain::Positive, vec![32]));
    let Stmt::Let { targets, .. } = &g.stmts[0] else {
        panic!("let")
    };
    assert_eq!(targets[1].head, Some(1));
    let Stmt::Sample(q) = &g.stmts[1] else {
        panic!("site")
    };
    assert_eq!(q.strategy, Some(Strategy::Reparameterized));
    assert_eq!(p.train, TrainConfig::default());
    assert!(p.meta.is_none());
}

fn site(stmts: &[Stmt], i: usize) -> &Site {
    match &stmts[i] {
        Stmt::Sample(s) => s,
        other => panic!("not a site: {other:?}"),
    }
}

fn guide_body(p: &Program) -> &Body {
    match &p.guide {
        Guide::Amortized(b) => b,
        other => panic!("not amortized: {other:?}"),
    }
}

#[test]
fn semi_supervised_m2_builds() {
    let p = ok("
const D = 784
const K = 10
const Z = 16
const H = 256
data x : Binary[D]
data y : Cat(K) partial
latent z : Real[Z]
net classify(x: Binary[D]) -> Real[K] = mlp(hidden = [H], act = softplus)
net encode(x: Binary[D], y: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decode(z: Real[Z], y: Cat(K)) -> Real[D] = mlp(hidden = [H])
model { y ~ Categorical(logits = zeros(K)); z ~ Normal(0, 1); x ~ Bernoulli(logits = decode(z, y)) }
guide { y ~ Categorical(logits = classify(x)); let (m, s) = encode(x, y); z ~ Normal(m, s) }
train { labels = 1000; supervised_weight = 0.1 }
");
    assert_eq!(p.data[1].role, DataRole::Partial);
    assert_eq!(p.data[1].ty, Type::scalar(Domain::Cat(10)));
    let y = site(&p.model.stmts, 0);
    assert_eq!(y.dist.support, Type::scalar(Domain::Cat(10)));
    assert!(matches!(y.dist.args[0].1.kind, ExprKind::Fill(v) if v == 0.0));
    let g = guide_body(&p);
    assert_eq!(site(&g.stmts, 0).strategy, Some(Strategy::Enumerate));
    assert_eq!(site(&g.stmts, 0).var, SiteVar::Data(1));
    assert_eq!(site(&g.stmts, 2).strategy, Some(Strategy::Reparameterized));
}

#[test]
fn gaussian_mixture_vae_builds() {
    let p = ok("
const D = 784
const K = 10
const Z = 16
const H = 256
data x : Binary[D]
latent c : Cat(K)
latent z : Real[Z]
net prior_z(c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = linear()
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H])
net q_c(x: Binary[D]) -> Real[K] = mlp(hidden = [H])
net q_z(x: Binary[D], c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
model { c ~ Categorical(logits = zeros(K)); let (m, s) = prior_z(c); z ~ Normal(m, s); x ~ Bernoulli(logits = dec(z)) }
guide { c ~ Categorical(logits = q_c(x)) @enumerate; let (m, s) = q_z(x, c); z ~ Normal(m, s) }
");
    assert_eq!(p.nets[0].arch, Arch::Linear { bias: true });
    assert_eq!(p.model.locals.len(), 2);
    assert_eq!(guide_body(&p).locals.len(), 2);
    assert_eq!(
        site(&guide_body(&p).stmts, 0).strategy,
        Some(Strategy::Enumerate)
    );
}

const FA_DECLS: &str = "
const D = 20
const L = 5
const H = 32
data x : Real[D]
latent z : Real[L]
param noise : Positive[D] = 1.0
net load(z: Real[L]) -> Real[D] = linear()
model { z ~ Normal(0, 1); x ~ Normal(load(z), noise) }
";

#[test]
fn factor_analysis_builds() {
    let p = ok(&format!("{FA_DECLS}\nguide exact\n"));
    assert_eq!(p.params[0].init, Init::Value(1.0));
    assert!(matches!(
        p.guide,
        Guide::Exact {
            posterior: ExactPosterior::LinearGaussian,
            ..
        }
    ));
    let x = site(&p.model.stmts, 1);
    assert!(matches!(
        x.dist.args[1].1.kind,
        ExprKind::Ref(Ref::Param(0))
    ));
    let p = ok(&format!(
        "{FA_DECLS}
net enc(x: Real[D]) -> (loc: Real[L], scale: Positive[L]) = mlp(hidden = [H])
guide {{ let (m, s) = enc(x); z ~ Normal(m, s) }}
train {{ schedule = alternate(e_steps = 1000, m_steps = 1000) }}"
    ));
    assert_eq!(guide_body(&p).stmts.len(), 2);
}

#[test]
fn gmm_with_params_builds() {
    ok("
const K = 3
const D = 2
data x : Real[D]
latent c : Cat(K)
param mu : Real[K, D] = normal(0, 1)
param sigma : Positive[K, D]
model { c ~ Categorical(logits = zeros(K)); x ~ Normal(mu[c], sigma[c]) }
guide exact
");
}

#[test]
fn conditional_vae_builds() {
    let p = ok("
const D = 784
const Z = 16
const H = 256
data x : Binary[D]
data c : Cat(10) given
latent z : Real[Z]
net prior(c: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net enc(x: Binary[D], c: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net dec(z: Real[Z], c: Cat(10)) -> Real[D] = mlp(hidden = [H])
model { let (pm, ps) = prior(c); z ~ Normal(pm, ps); x ~ Bernoulli(logits = dec(z, c)) }
guide { let (m, s) = enc(x, c); z ~ Normal(m, s) }
");
    assert_eq!(p.data[1].role, DataRole::Given);
}

#[test]
fn iaf_posterior_builds() {
    let p = ok("
const D = 784
const Z = 32
const H = 512
const C = 64
data x : Binary[D]
latent z : Real[Z]
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H])
net enc(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z], h: Real[C]) = mlp(hidden = [H, H], act = elu)
net ar(z: Real[Z], h: Real[C]) -> (m: Real[Z], s: Real[Z]) = made(hidden = [320, 320], act = elu)
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s, h) = enc(x); z ~ Normal(m, s) |> iaf(ar, h, steps = 2) }
train { free_bits = 0.25 }
");
    let z = site(&guide_body(&p).stmts, 1);
    assert_eq!(z.flows.len(), 1);
    assert_eq!(z.flows[0].kind, FlowKind::Iaf { net: 2, steps: 2 });
    assert!(matches!(
        z.flows[0].context[0].kind,
        ExprKind::Ref(Ref::Local(2))
    ));
    assert_eq!(
        p.nets[2].arch,
        Arch::Made {
            hidden: vec![320, 320],
            act: Activation::Elu
        }
    );
}

#[test]
fn variational_dropout_builds() {
    let p = ok(r#"
const D = 64
data x : Real[D] given
data y : Cat(10)
net clf(x: Real[D]) -> Real[10] = mlp(hidden = [1024, 1024], weights = vdrop(kind = "B"))
model { y ~ Categorical(logits = clf(x)) }
"#);
    assert_eq!(
        p.nets[0].weights,
        Weights::Vdrop {
            kind: VdropKind::B,
            kl: crate::ir::VdropKl::Molchanov
        }
    );
    assert_eq!(p.guide, Guide::None);
}

#[test]
fn variational_rnn_builds() {
    let p = ok("
const T = 28
const W = 28
const Z = 16
const H = 64
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
");
    assert_eq!(p.model.loops.len(), 1);
    assert_eq!((p.model.loops[0].from, p.model.loops[0].to), (1, 28));
    let h = &p.model.locals[0];
    assert_eq!((h.name.as_str(), h.steps), ("h", Some(28)));
    assert_eq!(h.ty, Type::new(Domain::Real, vec![64]));
    let Stmt::Loop { body, .. } = &p.model.stmts[1] else {
        panic!("loop")
    };
    let z = site(body, 1);
    assert_eq!(z.ty, Type::new(Domain::Real, vec![16]));
    assert_eq!(
        z.step,
        Some(Step {
            loop_id: Some(0),
            offset: 0
        })
    );
    let Stmt::Let { value, .. } = &body[0] else {
        panic!("let")
    };
    let ExprKind::NetCall { args, .. } = &value.kind else {
        panic!("call")
    };
    assert!(matches!(
        args[0].kind,
        ExprKind::Step {
            step: Step {
                loop_id: Some(0),
                offset: -1
            },
            ..
        }
    ));
    assert_eq!(p.nets[0].arch, Arch::Gru);
}

#[test]
fn draw_builds() {
    let p = ok("
const T = 8
const Z = 10
const H = 64
const N = 5
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
");
    assert_eq!(p.nets[2].arch, Arch::AttendRead { grid: 5 });
    assert_eq!(p.nets[2].heads[0].ty.shape, vec![50]);
    let x = site(&p.model.stmts, 3);
    assert!(matches!(
        x.dist.args[0].1.kind,
        ExprKind::Step {
            step: Step {
                loop_id: None,
                offset: 8
            },
            ..
        }
    ));
    assert_eq!(p.model.locals[1].steps, Some(8));
}

#[test]
fn meta_vae_builds() {
    let p = ok("
const D = 784
const H = 64
const Z = 16
data x : Binary[D]
latent z : Real[Z]
set S : Binary[D] size 10
net summary(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H, H], act = leaky_relu)
net enc(x: Binary[D], s: Real[H]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H])
@per_member net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H])
model { z ~ Normal(0, 1); x ~ Bernoulli(logits = dec(z)) }
guide { let (m, s) = enc(x, summary(S)); z ~ Normal(m, s) }
meta { family = rotate(-180:160:20); train = even; test = odd }
");
    assert_eq!(p.sets[0].size, 10);
    assert!(p.nets[0].inputs[0].set);
    assert!(p.nets[2].per_member && !p.nets[1].per_member);
    assert_eq!(
        p.nets[0].arch,
        Arch::DeepSets {
            phi: vec![64, 64],
            rho: vec![],
            pool: Pool::Mean,
            act: Activation::LeakyRelu
        }
    );
    assert!(p.meta.is_none());
}

#[test]
fn semi_amortized_and_random_function_build() {
    let p = ok(&vae(
        VAE_MODEL,
        "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @refine(steps = 20, lr = 1.0)",
    ));
    assert_eq!(
        site(&guide_body(&p).stmts, 1).strategy,
        Some(Strategy::Refine {
            steps: 20,
            lr: 1.0,
            through: true,
            momentum: 0.5,
            clip: 5.0,
        })
    );
    let p = ok(&vae(
        VAE_MODEL,
        "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @random_function(inducing = 64)",
    ));
    // The GP lives over the encoder's input: `encoder` (net 0) called on `x`.
    assert!(matches!(
        &site(&guide_body(&p).stmts, 1).strategy,
        Some(Strategy::RandomFunction {
            inducing: 64,
            kernel: Kernel::Rbf,
            net: Some(0),
            inputs,
        }) if matches!(inputs.as_slice(), [Expr { kind: ExprKind::Ref(Ref::Data(0)), .. }])
    ));
}

// ---------------------------------------------------------------------------------
// Names (E001, E002, E003)

#[test]
fn missing_model_is_e001_at_end() {
    let src = "const D = 3\ndata x : Real[D]\n";
    let (_, d) = run(src);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, Code::E001);
    assert_eq!(d[0].hint.as_deref(), Some("add `model { ... }`"));
    let r = d[0].span.range().expect("span");
    assert!(r.start >= src.trim_end().len() && r.start <= src.len());
}

#[test]
fn duplicate_declaration_e003() {
    let src = &format!("{VAE_DECLS}\nparam z : Real = 0\nmodel {{ {VAE_MODEL} }}");
    let d = one(src, Code::E003, "z");
    assert_eq!(d.secondary[0].message, "first declared here");
    assert_eq!(&src[d.secondary[0].span.range().expect("span")], "z");
}

#[test]
fn duplicate_block_e003() {
    let src = vae(VAE_MODEL, VAE_GUIDE) + "model { z ~ Normal(0, 1) }";
    one(&src, Code::E003, "model { z ~ Normal(0, 1) }");
    let src = vae(VAE_MODEL, VAE_GUIDE) + "train { batch = 3 }\ntrain { batch = 4 }";
    one(&src, Code::E003, "train { batch = 4 }");
}

#[test]
fn unknown_name_with_suggestion_e002() {
    let d = one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decodr(z))",
            VAE_GUIDE,
        ),
        Code::E002,
        "decodr",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `decoder`?"));
    let d = one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(lco, scale)",
        ),
        Code::E002,
        "lco",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `loc`?"));
}

#[test]
fn unknown_distribution_architecture_domain_e002() {
    let d = one(
        &vae(
            "z ~ Normall(0, 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E002,
        "Normall",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `Normal`?"));
    let src = VAE_DECLS.replace(
        "-> Real[D] = mlp(hidden = [H, H], act = relu)",
        "-> Real[D] = mpl(hidden = [H, H], act = relu)",
    ) + &format!("model {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E002, "mpl");
    assert_eq!(d.hint.as_deref(), Some("did you mean `mlp`?"));
    let src = VAE_DECLS.replace("latent z : Real[Z]", "latent z : Reel[Z]")
        + &format!("model {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E002, "Reel");
    assert_eq!(d.hint.as_deref(), Some("did you mean `Real`?"));
    let src = VAE_DECLS.replace(
        "hidden = [H, H], act = relu)\nnet decoder",
        "hidden = [H, H], act = rleu)\nnet decoder",
    ) + &format!("model {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E002, "rleu");
    assert_eq!(d.hint.as_deref(), Some("did you mean `relu`?"));
}

#[test]
fn unknown_builtin_head_strategy_flow_annotation_e002() {
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(tanhh(z)))",
            VAE_GUIDE,
        ),
        Code::E002,
        "tanhh",
    );
    let d = one(
        &vae(VAE_MODEL, "z ~ Normal(encoder(x).loc, encoder(x).scal)"),
        Code::E002,
        "scal",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `scale`?"));
    ok(&vae(
        VAE_MODEL,
        "z ~ Normal(encoder(x).loc, encoder(x).scale)",
    ));
    let d = one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @enumerat",
        ),
        Code::E002,
        "enumerat",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `enumerate`?"));
    one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) |> planar(encoder)",
        ),
        Code::E002,
        "planar",
    );
    let src = format!("{VAE_DECLS}\n@per_membr net other(z: Real[Z]) -> Real[D] = linear()\nmodel {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E002, "per_membr");
    assert_eq!(d.hint.as_deref(), Some("did you mean `@per_member`?"));
}

#[test]
fn let_collisions_e003() {
    let d = one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n let loc = scale\n z ~ Normal(loc, scale)",
        ),
        Code::E003,
        "loc",
    );
    assert_eq!(d.secondary[0].message, "first declared here");
    one(
        &vae(
            VAE_MODEL,
            "let (x, scale) = encoder(x)\n z ~ Normal(0, scale)",
        ),
        Code::E003,
        "x",
    );
    // Separate blocks have separate locals.
    ok(&vae(
        "let loc = 0\n z ~ Normal(loc, 1)\n x ~ Bernoulli(logits = decoder(z))",
        VAE_GUIDE,
    ));
}

#[test]
fn duplicate_input_and_head_e003() {
    let src = format!("{VAE_DECLS}\nnet f(a: Real[Z], a: Real[Z]) -> (m: Real[Z], m: Real[Z]) = linear()\nmodel {{ {VAE_MODEL} }}");
    let e = errs(&src);
    assert_eq!(e, vec![(Code::E003, "a".into()), (Code::E003, "m".into())]);
}

// ---------------------------------------------------------------------------------
// Types and params (E004, E005, E006, E015)

#[test]
fn set_type_outside_net_e005() {
    let src = format!("{VAE_DECLS}\ndata s : Set[Real[D]]\nmodel {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E005, "Set[Real[D]]");
    assert!(d.hint.is_some());
}

#[test]
fn simplex_needs_shape_and_cat_needs_k() {
    one(
        &format!("{VAE_DECLS}\nparam p : Simplex\nmodel {{ {VAE_MODEL} }}"),
        Code::E004,
        "Simplex",
    );
    one(
        &format!("{VAE_DECLS}\ndata c : Cat given\nmodel {{ {VAE_MODEL} }}"),
        Code::E006,
        "Cat",
    );
    ok(&format!(
        "{VAE_DECLS}\nparam p : Simplex[4]\ndata c : Cat(4)[3] given\nmodel {{ {VAE_MODEL} }}"
    ));
}

#[test]
fn dims_are_const_exprs_e015() {
    one(
        &format!("{VAE_DECLS}\ndata c : Real[D / 5] given\nmodel {{ {VAE_MODEL} }}"),
        Code::E015,
        "D / 5",
    );
    one(
        &format!("{VAE_DECLS}\ndata c : Real[Q] given\nmodel {{ {VAE_MODEL} }}"),
        Code::E002,
        "Q",
    );
    let p = ok(&format!(
        "{VAE_DECLS}\ndata c : Real[D / 4, Z - 2] given\nmodel {{ {VAE_MODEL} }}"
    ));
    assert_eq!(p.data[1].ty.shape, vec![196, 30]);
}

#[test]
fn param_init_in_domain_e005() {
    let d = one(
        &format!("{VAE_DECLS}\nparam noise : Positive[D] = 0\nmodel {{ {VAE_MODEL} }}"),
        Code::E005,
        "0",
    );
    assert!(d.hint.as_deref().unwrap_or("").contains("> 0"), "{d:?}");
    one(
        &format!("{VAE_DECLS}\nparam p : Unit = 1\nmodel {{ {VAE_MODEL} }}"),
        Code::E005,
        "1",
    );
    one(
        &format!("{VAE_DECLS}\nparam p : Positive = normal(0, 1)\nmodel {{ {VAE_MODEL} }}"),
        Code::E005,
        "normal(0, 1)",
    );
    one(
        &format!("{VAE_DECLS}\nparam p : Real = gaussian(0, 1)\nmodel {{ {VAE_MODEL} }}"),
        Code::E002,
        "gaussian",
    );
    one(
        &format!("{VAE_DECLS}\nparam p : Real = normal(0)\nmodel {{ {VAE_MODEL} }}"),
        Code::E006,
        "normal(0)",
    );
    let p = ok(&format!(
        "{VAE_DECLS}\nparam a : Positive[D] = uniform(0.5, 1.5)\nparam b : Real = normal(0, 0.1)\nparam c : Unit\nparam d : Positive\nparam e : Real[3] = zeros\nparam f : Positive = ones\nmodel {{ {VAE_MODEL} }}"
    ));
    let inits: Vec<&Init> = p.params.iter().map(|p| &p.init).collect();
    assert_eq!(
        inits,
        vec![
            &Init::Uniform {
                low: 0.5,
                high: 1.5
            },
            &Init::Normal {
                mean: 0.0,
                std: 0.1
            },
            &Init::Value(0.5),
            &Init::Ones,
            &Init::Zeros,
            &Init::Ones
        ]
    );
}

#[test]
fn set_declaration() {
    let p = ok(&format!(
        "{VAE_DECLS}\nset S : Binary[D] size 2 * 5\nmodel {{ {VAE_MODEL} }}"
    ));
    assert_eq!(p.sets[0].ty, Type::new(Domain::Binary, vec![784]));
    assert_eq!(p.sets[0].size, 10);
    one(
        &format!("{VAE_DECLS}\nset S : Binary[D] size 0\nmodel {{ {VAE_MODEL} }}"),
        Code::E015,
        "0",
    );
}

// ---------------------------------------------------------------------------------
// Networks (E004, E005, E006)

fn with_net(net: &str) -> String {
    format!("{VAE_DECLS}\n{net}\nmodel {{ {VAE_MODEL} }}")
}

#[test]
fn mlp_keywords_e006() {
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp(act = relu)"),
        Code::E006,
        "mlp(act = relu)",
    );
    let d = one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp(hidden = [H], acts = relu)"),
        Code::E006,
        "acts",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `act`?"));
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp(hidden = [H], dropout = 1.0)"),
        Code::E006,
        "1.0",
    );
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp(hidden = [H], hidden = [H])"),
        Code::E006,
        "hidden = [H]",
    );
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp([H])"),
        Code::E006,
        "[H]",
    );
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = mlp(hidden = [H], norm = group)"),
        Code::E002,
        "group",
    );
    let p = ok(&with_net(
        "net f(a: Real[Z], b: Cat(3)) -> (m: Unit[Z], p: Simplex[4], s: Binary[2]) = mlp(hidden = [H], act = gelu, dropout = 0.5, norm = layer, weights = bayes(prior_scale = 0.5))",
    ));
    let f = &p.nets[2];
    assert_eq!(f.weights, Weights::Bayes { prior_scale: 0.5 });
    let acts: Vec<HeadActivation> = f.heads.iter().map(|h| h.activation).collect();
    assert_eq!(
        acts,
        vec![
            HeadActivation::Sigmoid,
            HeadActivation::Softmax,
            HeadActivation::Sigmoid
        ]
    );
}

#[test]
fn weights_keyword() {
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = linear(weights = vdrop(kind = \"C\"))"),
        Code::E006,
        "\"C\"",
    );
    one(
        &with_net("net f(a: Real[Z]) -> Real[Z] = linear(weights = bayse)"),
        Code::E002,
        "bayse",
    );
    one(
        &with_net("net f(h: Real[Z]) -> Real[Z] = gru(weights = point)"),
        Code::E006,
        "weights",
    );
    let p = ok(&with_net(
        "net f(a: Real[Z]) -> Real[Z] = linear(bias = false, weights = vdrop(kind = \"A\"))",
    ));
    assert_eq!(
        p.nets[2].weights,
        Weights::Vdrop {
            kind: VdropKind::A,
            kl: crate::ir::VdropKl::Molchanov
        }
    );
    assert_eq!(p.nets[2].arch, Arch::Linear { bias: false });
}

#[test]
fn cat_head_is_e005() {
    one(
        &with_net("net f(a: Real[Z]) -> (k: Cat(3)) = linear()"),
        Code::E005,
        "Cat(3)",
    );
}

#[test]
fn set_input_only_in_deepsets() {
    one(
        &with_net("net f(s: Set[Real[Z]]) -> Real[Z] = mlp(hidden = [H])"),
        Code::E005,
        "s: Set[Real[Z]]",
    );
    one(
        &with_net("net f(s: Real[Z]) -> Real[Z] = deepsets(phi = [H])"),
        Code::E005,
        "s: Real[Z]",
    );
    one(
        &with_net("net f(s: Set[Real[Z]]) -> Real[Z] = deepsets(rho = [H])"),
        Code::E006,
        "deepsets(rho = [H])",
    );
    let p = ok(&with_net("net f(s: Set[Real[Z]], c: Real[2]) -> Real[Z] = deepsets(phi = [H], rho = [H], pool = max, act = tanh)"));
    assert!(p.nets[2].inputs[0].set);
    assert_eq!(p.nets[2].inputs[0].ty, Type::new(Domain::Real, vec![32]));
}

#[test]
fn conv_and_deconv_signatures() {
    one(
        &with_net("net f(img: Real[D]) -> Real[Z] = conv(channels = [8])"),
        Code::E004,
        "img: Real[D]",
    );
    one(
        &with_net("net f(img: Real[1, 28, 28]) -> Real[Z] = conv(kernel = 3)"),
        Code::E006,
        "conv(kernel = 3)",
    );
    let p = ok(&with_net("net f(img: Binary[1, 28, 28], y: Cat(10)) -> Real[Z] = conv(channels = [32, 64], hidden = [H])"));
    assert_eq!(
        p.nets[2].arch,
        Arch::Conv {
            channels: vec![32, 64],
            kernel: 3,
            stride: 2,
            act: Activation::Relu,
            hidden: vec![512]
        }
    );
    // 28 is divisible by 2^2 but not by 2^3.
    one(
        &with_net("net g(z: Real[Z]) -> Real[1, 28, 28] = deconv(channels = [64, 32, 16])"),
        Code::E004,
        "Real[1, 28, 28]",
    );
    one(
        &with_net("net g(z: Real[Z]) -> Real[1, 28, 28] = deconv(channels = [64, 32], kernel = 3)"),
        Code::E006,
        "deconv(channels = [64, 32], kernel = 3)",
    );
    one(
        &with_net("net g(z: Real[Z]) -> Real[D] = deconv(channels = [64])"),
        Code::E004,
        "Real[D]",
    );
    let p = ok(&with_net(
        "net g(z: Real[Z]) -> Unit[1, 28, 28] = deconv(channels = [64, 32])",
    ));
    assert_eq!(p.nets[2].heads[0].activation, HeadActivation::Sigmoid);
}

#[test]
fn recurrent_signatures() {
    one(
        &with_net("net f(h: Real[H], x: Real[Z]) -> Real[Z] = gru()"),
        Code::E004,
        "Real[Z]",
    );
    one(
        &with_net("net f(h: Positive[H]) -> Positive[H] = gru()"),
        Code::E005,
        "h: Positive[H]",
    );
    one(
        &with_net("net f(h: Real[H], c: Real[H]) -> Real[H] = lstm()"),
        Code::E004,
        "Real[H]",
    );
    ok(&with_net(
        "net f(h: Real[H], c: Real[H], x: Binary[D]) -> (h: Real[H], c: Real[H]) = lstm()",
    ));
}

#[test]
fn made_and_attention_signatures() {
    one(
        &with_net("net f(z: Real[Z]) -> (m: Real[Z], s: Real[H]) = made(hidden = [H])"),
        Code::E004,
        "s: Real[H]",
    );
    one(
        &with_net("net f(z: Real[Z]) -> Real[Z] = made()"),
        Code::E006,
        "made()",
    );
    one(
        &with_net("net f(z: Binary[Z]) -> Real[Z] = made(hidden = [H])"),
        Code::E005,
        "z: Binary[Z]",
    );
    one(
        &with_net("net r(img: Real[1, 28, 28], h: Real[H]) -> Real[10] = attend_read(grid = 3)"),
        Code::E004,
        "Real[10]",
    );
    ok(&with_net(
        "net r(img: Real[1, 28, 28], h: Real[H]) -> Real[9] = attend_read(grid = 3)",
    ));
    one(
        &with_net("net w(h: Real[H]) -> Real[D] = attend_write(grid = 3)"),
        Code::E004,
        "Real[D]",
    );
    one(
        &with_net("net w(h: Real[H]) -> Real[1, 28, 28] = attend_write()"),
        Code::E006,
        "attend_write()",
    );
}

// ---------------------------------------------------------------------------------
// Expressions (E004, E005, E006)

#[test]
fn net_call_arity_shape_domain() {
    let d = one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z, z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "decoder(z, z)",
    );
    assert_eq!(d.message, "`decoder` expects 1 argument, but 2 were given");
    let d = one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(x))",
            VAE_GUIDE,
        ),
        Code::E004,
        "x",
    );
    assert!(d.message.contains("`z`"), "{}", d.message);
    one(
        &format!("{VAE_DECLS}\nparam p : Real[D]\nmodel {{ z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z))\n }}\nguide {{ let (loc, scale) = encoder(p)\n z ~ Normal(loc, scale) }}"),
        Code::E005,
        "p",
    );
    // Binary data into a Real input is fine.
    ok(&format!("{VAE_DECLS}\nnet g(v: Real[D]) -> Real[Z] = linear()\nmodel {{ {VAE_MODEL} }}\nguide {{ z ~ Normal(g(x), 1) }}"));
}

#[test]
fn cat_values_e005() {
    let decls = format!("{VAE_DECLS}\ndata c : Cat(10) given\nnet g(c: Cat(10)) -> Real[Z] = linear()\nnet r(c: Real[10]) -> Real[Z] = linear()\nparam mu : Real[10, Z]\nparam bad : Real[9, Z]");
    one(
        &format!("{decls}\nmodel {{ z ~ Normal(c + 1, 1)\n x ~ Bernoulli(logits = decoder(z)) }}"),
        Code::E005,
        "c",
    );
    one(
        &format!("{decls}\nmodel {{ z ~ Normal(r(c), 1)\n x ~ Bernoulli(logits = decoder(z)) }}"),
        Code::E005,
        "c",
    );
    one(
        &format!("{decls}\nmodel {{ z ~ Normal(bad[c], 1)\n x ~ Bernoulli(logits = decoder(z)) }}"),
        Code::E004,
        "bad",
    );
    let p = ok(&format!(
        "{decls}\nmodel {{ z ~ Normal(g(c) + mu[c], 1)\n x ~ Bernoulli(logits = decoder(z)) }}"
    ));
    let z = site(&p.model.stmts, 0);
    let ExprKind::Binary { rhs, .. } = &z.dist.args[0].1.kind else {
        panic!("binary")
    };
    assert!(matches!(rhs.kind, ExprKind::Select { .. }));
    assert_eq!(rhs.ty, Type::new(Domain::Real, vec![32]));
}

#[test]
fn broadcast_and_domains() {
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z) + z)",
            VAE_GUIDE,
        ),
        Code::E004,
        "decoder(z) + z",
    );
    let d = one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(log(z)))",
            VAE_GUIDE,
        ),
        Code::E005,
        "z",
    );
    assert!(d.message.contains("Positive"));
    let p = ok(&vae(
        "z ~ Normal(0, exp(sum(x * 0)) * 2)\n x ~ Bernoulli(logits = decoder(sqrt(softplus(z)) - relu(z) / 2))",
        "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale)",
    ));
    let z = site(&p.model.stmts, 0);
    assert_eq!(z.dist.args[1].1.ty, Type::scalar(Domain::Positive));
}

#[test]
fn builtins_shapes() {
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(concat(z, ones(2, 2))))",
            VAE_GUIDE,
        ),
        Code::E004,
        "ones(2, 2)",
    );
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(exp(z, z)))",
            VAE_GUIDE,
        ),
        Code::E006,
        "exp(z, z)",
    );
    let p = ok(&format!("{VAE_DECLS}\nnet g(v: Real[64]) -> Real[D] = linear()\nmodel {{ z ~ Normal(0, 1)\n x ~ Bernoulli(logits = g(concat(z, zeros(Z)))) }}"));
    let x = site(&p.model.stmts, 1);
    let ExprKind::NetCall { args, .. } = &x.dist.args[0].1.kind else {
        panic!("call")
    };
    assert_eq!(args[0].ty, Type::new(Domain::Real, vec![64]));
}

#[test]
fn multi_head_value_e004() {
    let d = one(
        &vae(VAE_MODEL, "let e = encoder(x)\n z ~ Normal(0, 1)"),
        Code::E004,
        "encoder(x)",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("destructure with `let (a, b) = ...` or pick a head with `.loc`")
    );
    one(
        &vae(VAE_MODEL, "let (a, b, c) = encoder(x)\n z ~ Normal(a, b)"),
        Code::E004,
        "a, b, c",
    );
}

// ---------------------------------------------------------------------------------
// Distributions (E002, E004, E005, E006)

#[test]
fn dist_arguments_e006() {
    one(
        &vae(
            "z ~ Normal(0)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "Normal(0)",
    );
    one(
        &vae(
            "z ~ Normal(0, 1, 2)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "2",
    );
    let d = one(
        &vae(
            "z ~ Normal(0, sigma = 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "sigma",
    );
    assert_eq!(d.hint.as_deref(), Some("`Normal` takes `loc`, `scale`"));
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(probs = 0.5, logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "Bernoulli(probs = 0.5, logits = decoder(z))",
    );
    ok(&vae(
        "z ~ Normal(scale = 1, loc = 0)\n x ~ Bernoulli(probs = sigmoid(decoder(z)))",
        VAE_GUIDE,
    ));
}

#[test]
fn one_arity_error_per_call() {
    one(
        &vae(
            "z ~ Normal(0, 1, 2, 3)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "2",
    );
}

#[test]
fn dist_argument_domains_e005() {
    let d = one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(loc, loc)",
        ),
        Code::E005,
        "loc",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("wrap it in softplus(...) or declare the head Positive")
    );
    one(
        &vae(
            "z ~ Normal(0, -1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E005,
        "-1",
    );
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(probs = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E005,
        "decoder(z)",
    );
}

#[test]
fn dist_argument_shapes_e004() {
    one(
        &vae(
            "z ~ Normal(zeros(3), 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E004,
        "zeros(3)",
    );
    let decls = format!("{VAE_DECLS}\ndata y : Cat(4)\nlatent w : Simplex[4]");
    one(&format!("{decls}\nmodel {{ {VAE_MODEL}\n w ~ Dirichlet(ones(4))\n y ~ Categorical(logits = zeros(5)) }}"), Code::E004, "zeros(5)");
    one(&format!("{decls}\nmodel {{ {VAE_MODEL}\n w ~ Dirichlet(ones(3))\n y ~ Categorical(probs = w) }}"), Code::E004, "ones(3)");
    let p = ok(&format!(
        "{decls}\nmodel {{ {VAE_MODEL}\n w ~ Dirichlet(ones(4))\n y ~ Categorical(probs = w) }}"
    ));
    assert_eq!(
        site(&p.model.stmts, 3).dist.support,
        Type::scalar(Domain::Cat(4))
    );
    assert_eq!(
        site(&p.model.stmts, 2).dist.support,
        Type::new(Domain::Simplex, vec![4])
    );
}

#[test]
fn mixture() {
    let decls = format!("{VAE_DECLS}\ndata v : Real[2]\nparam w : Real[3]\nparam mu : Real[3, 2]\nparam sd : Positive[3, 2]");
    let p = ok(&format!(
        "{decls}\nmodel {{ {VAE_MODEL}\n v ~ Mixture(logits = w, component = Normal(mu, sd)) }}"
    ));
    let v = site(&p.model.stmts, 2);
    assert_eq!(v.dist.kind, DistKind::Mixture);
    assert_eq!(v.dist.support, Type::new(Domain::Real, vec![2]));
    let c = v.dist.component.as_ref().expect("component");
    assert_eq!((c.kind, c.args.len()), (DistKind::Normal, 2));
    one(&format!("{decls}\nmodel {{ {VAE_MODEL}\n v ~ Mixture(logits = w, component = Normal(mu, ones(2))) }}"), Code::E004, "ones(2)");
}

#[test]
fn latent_support_e005() {
    let src = VAE_DECLS.replace("latent z : Real[Z]", "latent z : Positive[Z]")
        + &format!("model {{ {VAE_MODEL} }}");
    let d = one(&src, Code::E005, "Normal(0, 1)");
    assert_eq!(
        d.hint.as_deref(),
        Some("use LogNormal or declare `Real[32]`")
    );
    let src = VAE_DECLS.replace("latent z : Real[Z]", "latent z : Positive[Z]")
        + "model { z ~ LogNormal(0, 1)\n x ~ Bernoulli(logits = decoder(log(z))) }";
    ok(&src);
    // In the guide the rules compare the site with the model's (E008), not here.
    ok(&vae(
        VAE_MODEL,
        "let (loc, scale) = encoder(x)\n z ~ LogNormal(loc, scale)",
    ));
}

#[test]
fn data_support_e005() {
    let d = one(
        &vae("z ~ Normal(0, 1)\n x ~ Normal(decoder(z), 1)", VAE_GUIDE),
        Code::E005,
        "Normal(decoder(z), 1)",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("use Bernoulli(logits = ...) or ContinuousBernoulli")
    );
    ok(&vae(
        "z ~ Normal(0, 1)\n x ~ ContinuousBernoulli(logits = decoder(z))",
        VAE_GUIDE,
    ));
    let src = VAE_DECLS.replace("data   x : Binary[D]", "data   x : Real[D]")
        + "model { z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z)) }";
    one(&src, Code::E005, "Bernoulli(logits = decoder(z))");
    let src = VAE_DECLS.replace("data   x : Binary[D]", "data   x : Positive[D]")
        + "model { z ~ Normal(0, 1)\n x ~ Gamma(exp(decoder(z)), 1) }";
    ok(&src);
}

#[test]
fn sample_target_must_be_variable() {
    one(
        &format!("{VAE_DECLS}\nparam p : Real\nmodel {{ {VAE_MODEL}\n p ~ Normal(0, 1) }}"),
        Code::E005,
        "p",
    );
    one(
        &vae(&format!("{VAE_MODEL}\n q ~ Normal(0, 1)"), VAE_GUIDE),
        Code::E002,
        "q",
    );
    one(&format!("{VAE_DECLS}\nparam p : Real\nmodel {{ {VAE_MODEL} }}\nguide {{ {VAE_GUIDE}\n p ~ Normal(0, 1) }}"), Code::E008, "p");
    one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n loc ~ Normal(0, 1)",
        ),
        Code::E008,
        "loc",
    );
}

// ---------------------------------------------------------------------------------
// Strategies and flows (E002, E006, E011)

#[test]
fn strategies() {
    one(
        &vae(
            "z ~ Normal(0, 1) @reinforce\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E011,
        "@reinforce",
    );
    one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @relax(temp = 0.5)",
        ),
        Code::E006,
        "temp",
    );
    one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @refine(steps = 0)",
        ),
        Code::E006,
        "0",
    );
    let d = one(&vae(VAE_MODEL, "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @random_function(kernel = \"rfb\")"), Code::E002, "\"rfb\"");
    assert_eq!(d.hint.as_deref(), Some("did you mean `rbf`?"));
    let p = ok(&vae(VAE_MODEL, "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @random_function(inducing = 16, kernel = \"matern52\")"));
    // The GP lives over the encoder's input: `encoder` (net 0) called on `x`.
    assert!(matches!(
        &site(&guide_body(&p).stmts, 1).strategy,
        Some(Strategy::RandomFunction {
            inducing: 16,
            kernel: Kernel::Matern52,
            net: Some(0),
            inputs,
        }) if matches!(inputs.as_slice(), [Expr { kind: ExprKind::Ref(Ref::Data(0)), .. }])
    ));
    let p = ok(&vae(VAE_MODEL, "let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) @refine(steps = 5, lr = 0.1, through = false)"));
    assert_eq!(
        site(&guide_body(&p).stmts, 1).strategy,
        Some(Strategy::Refine {
            steps: 5,
            lr: 0.1,
            through: false,
            momentum: 0.5,
            clip: 5.0,
        })
    );
    let src = format!("{VAE_DECLS}\nlatent b : Binary[3]\nmodel {{ {VAE_MODEL}\n b ~ Bernoulli(logits = zeros(3)) }}\nguide {{ {VAE_GUIDE}\n b ~ Bernoulli(logits = zeros(3)) @relax(temperature = 0.3) }}");
    let p = ok(&src);
    assert_eq!(
        site(&guide_body(&p).stmts, 2).strategy,
        Some(Strategy::Relax { temperature: 0.3 })
    );
}

#[test]
fn flows() {
    let decls = format!("{VAE_DECLS}\nnet ar(z: Real[Z], h: Real[H]) -> (m: Real[Z], s: Real[Z]) = made(hidden = [H])\nnet notmade(z: Real[Z]) -> Real[Z] = linear()");
    let g = |flow: &str| {
        format!("{decls}\nmodel {{ {VAE_MODEL} }}\nguide {{ let (loc, scale) = encoder(x)\n z ~ Normal(loc, scale) |> {flow} }}")
    };
    one(&g("iaf(notmade)"), Code::E006, "notmade");
    one(&g("iaf(ar)"), Code::E006, "iaf(ar)");
    one(&g("iaf(ar, loc)"), Code::E004, "loc");
    one(&g("iaf(ar, zeros(H), step = 2)"), Code::E006, "step");
    let m = format!("{decls}\nmodel {{ z ~ Normal(0, 1) |> iaf(ar, zeros(H))\n x ~ Bernoulli(logits = decoder(z)) }}");
    one(&m, Code::E011, "iaf(ar, zeros(H))");
    one(
        &vae(
            "z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(z = z))",
            VAE_GUIDE,
        ),
        Code::E006,
        "z = z",
    );
    let p = ok(&g("iaf(ar, zeros(H))"));
    assert_eq!(
        site(&guide_body(&p).stmts, 1).flows[0].kind,
        FlowKind::Iaf { net: 2, steps: 1 }
    );
}

// ---------------------------------------------------------------------------------
// Statement order, sequences and loops (E010)

#[test]
fn use_before_definition_e010() {
    let d = one(
        &vae(
            "x ~ Bernoulli(logits = decoder(z))\n z ~ Normal(0, 1)",
            VAE_GUIDE,
        ),
        Code::E010,
        "z",
    );
    assert!(d.hint.is_some());
    one(
        &vae(VAE_MODEL, "z ~ Normal(loc, 1)\n let loc = encoder(x).loc"),
        Code::E010,
        "loc",
    );
    // Guide and model have separate definitions: z sampled in model is not defined in guide.
    one(
        &vae(
            VAE_MODEL,
            "let (loc, scale) = encoder(x)\n let w = z\n z ~ Normal(loc, scale)",
        ),
        Code::E010,
        "z",
    );
    // Data and params are readable anywhere.
    ok(&format!("{VAE_DECLS}\nparam s : Positive\nmodel {{ z ~ Normal(0, s)\n x ~ Bernoulli(logits = decoder(z)) }}"));
}

#[test]
fn partial_data_must_be_defined_e010() {
    let decls = "const K = 3\ndata x : Real[2]\ndata y : Cat(K) partial\nnet f(x: Real[2]) -> Real[K] = linear()\nnet g(y: Cat(K)) -> Real[2] = linear()";
    one(
        &format!("{decls}\nmodel {{ x ~ Normal(g(y), 1)\n y ~ Categorical(logits = zeros(K)) }}"),
        Code::E010,
        "y",
    );
    ok(&format!("{decls}\nmodel {{ y ~ Categorical(logits = zeros(K))\n x ~ Normal(g(y), 1) }}\nguide {{ y ~ Categorical(logits = f(x)) }}"));
}

const SEQ_DECLS: &str = "
const T = 5
const H = 4
data x : Real[T, H]
latent z : Real[T, H]
net cell(h: Real[H], z: Real[H]) -> Real[H] = gru()
";

fn seq(model: &str) -> String {
    format!("{SEQ_DECLS}\nmodel {{ {model} }}")
}

#[test]
fn sequences_e010() {
    let good = "let h[0] = zeros(H)\n for t in 1:T { z[t] ~ Normal(h[t-1], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }\n let last = h[T]";
    let p = ok(&seq(good));
    assert_eq!(p.model.locals[0].steps, Some(5));
    // h[0] never set.
    let d = one(&seq("for t in 1:T { z[t] ~ Normal(h[t-1], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }"), Code::E010, "h[t-1]");
    assert_eq!(
        d.hint.as_deref(),
        Some("define `let h[0] = ...` before the loop")
    );
    // Reading a step not yet defined.
    one(&seq("let h[0] = zeros(H)\n for t in 1:T { z[t] ~ Normal(h[t+1], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }"), Code::E010, "h[t+1]");
    one(&seq("let h[0] = zeros(H)\n for t in 1:T { z[t] ~ Normal(h[t], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }"), Code::E010, "h[t]");
    // A latent step read before it is sampled, and z[t-1] at t = 1.
    one(
        &seq("for t in 1:T { x[t] ~ Normal(z[t], 1)\n z[t] ~ Normal(0, 1) }"),
        Code::E010,
        "z[t]",
    );
    one(
        &seq("for t in 1:T { z[t] ~ Normal(0, 1)\n x[t] ~ Normal(z[t-1], 1) }"),
        Code::E010,
        "z[t-1]",
    );
    // The whole latent after the loop is fine; h[T] inside the loop is not.
    ok(&seq(
        "for t in 1:T { z[t] ~ Normal(0, 1) }\n x ~ Normal(z, 1)",
    ));
    one(&seq("let h[0] = zeros(H)\n for t in 1:T { z[t] ~ Normal(h[T], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }"), Code::E010, "h[T]");
}

#[test]
fn loop_coverage_e010() {
    let (_, d) = run(&seq(
        "for t in 2:T { z[t] ~ Normal(0, 1)\n x[t] ~ Normal(z[t], 1) }",
    ));
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].message, "the loop covers 2..5 but `z` has 5 steps");
    // Only the first offending site of each variable is reported per statement.
    assert_eq!(
        errs(&seq(
            "for t in 1:4 { z[t] ~ Normal(0, 1) }\n x ~ Normal(0, 1)"
        )),
        vec![(Code::E010, "z[t]".to_string())]
    );
    one(
        &seq("z[1] ~ Normal(0, 1)\n x ~ Normal(0, 1)"),
        Code::E010,
        "z[1]",
    );
    let p = ok(&seq(
        "for t in 1:T { z[t] ~ Normal(0, 1) }\n x ~ Normal(z, 1)",
    ));
    assert_eq!(
        p.model.loops[0],
        LoopDef {
            var: "t".into(),
            from: 1,
            to: 5,
            span: p.model.loops[0].span
        }
    );
    assert_eq!(
        site(&p.model.stmts[..], 1).ty,
        Type::new(Domain::Real, vec![5, 4])
    );
}

#[test]
fn nested_loops_and_scoping() {
    let src = seq("for t in 1:T { z[t] ~ Normal(0, 1)\n let a = z[t]\n for s in 1:2 { let b = a * s } }\n x ~ Normal(z, 1)");
    let p = ok(&src);
    assert_eq!(p.model.loops.len(), 2);
    // A plain local defined inside a loop is out of scope after it.
    one(
        &seq("for t in 1:T { z[t] ~ Normal(0, 1)\n let a = z[t] }\n x ~ Normal(a, 1)"),
        Code::E010,
        "a",
    );
    // A let may not reuse a loop variable or a declaration.
    one(
        &seq("for t in 1:T { z[t] ~ Normal(0, 1)\n let t = 1 }\n x ~ Normal(z, 1)"),
        Code::E003,
        "t",
    );
}

#[test]
fn strategy_defaults() {
    let src = format!(
        "{VAE_DECLS}\nlatent c : Cat(3)\nlatent n : Count\nmodel {{ {VAE_MODEL}\n c ~ Categorical(logits = zeros(3))\n n ~ Poisson(1) }}\nguide {{ {VAE_GUIDE}\n c ~ Categorical(logits = zeros(3))\n n ~ Poisson(2) }}"
    );
    let p = ok(&src);
    let g = guide_body(&p);
    assert_eq!(site(&g.stmts, 2).strategy, Some(Strategy::Enumerate));
    assert_eq!(site(&g.stmts, 3).strategy, Some(Strategy::Reparameterized));
    assert!(site(&p.model.stmts, 2).strategy.is_none());
}

#[test]
fn given_data_site_is_kept_for_rules() {
    let src =
        format!("{VAE_DECLS}\ndata c : Real given\nmodel {{ {VAE_MODEL}\n c ~ Normal(0, 1) }}");
    let p = ok(&src);
    assert_eq!(site(&p.model.stmts, 2).var, SiteVar::Data(1));
}

#[test]
fn errors_are_all_collected_and_never_panic() {
    let src = format!(
        "{VAE_DECLS}\nnet bad(a: Foo[Q]) -> Cat = mlpp(hidden = 3)\nmodel {{ z ~ Normall(q, 1)\n x ~ Bernoulli(logits = decoder(z, z))\n let (a, b) = 3\n for t in 1:Q {{ w[t] ~ Normal(0, 1) }} }}\nguide {{ z ~ Normal(0, 1) |> bar(1) @foo }}"
    );
    let e = errs(&src);
    assert!(e.len() >= 8, "{e:#?}");
    // Garbage of every kind still builds a program.
    for s in [
        "model { }",
        "model { x ~ x(1) }",
        "model { let (a) = 1 }",
        "data x : Real[0]\nmodel { x ~ Normal(x[x], x.x) }",
        "const A = A\nlatent z : Real[A, A]\nmodel { for t in A:0 { z[t] ~ Normal(z[t-9], 1) } }",
        "net f(s: Set[Set[Real]]) -> Real = deepsets(phi = [])\nmodel { }",
    ] {
        let _ = run(s);
    }
}

#[test]
fn no_panic_on_mangled_specs() {
    let bases = [
        vae(VAE_MODEL, VAE_GUIDE),
        seq("let h[0] = zeros(H)\n for t in 1:T { z[t] ~ Normal(h[t-1], 1)\n x[t] ~ Normal(z[t], 1)\n let h[t] = cell(h[t-1], z[t]) }\n let last = h[T]"),
    ];
    for base in &bases {
        let chars: Vec<char> = base.chars().collect();
        for len in [1usize, 2, 5] {
            for start in 0..chars.len().saturating_sub(len) {
                let s: String = chars[..start].iter().chain(&chars[start + len..]).collect();
                if let Ok(file) = parse(&s) {
                    let (c, _) = consts::resolve(&file, &[]);
                    let _ = build(&file, &c);
                }
            }
        }
    }
}

#[test]
fn more_blocks_twice_e003() {
    let src = vae(VAE_MODEL, VAE_GUIDE) + "guide exact";
    one(&src, Code::E003, "guide exact");
    let src = vae(VAE_MODEL, VAE_GUIDE) + "meta { train = all }\nmeta { train = all }";
    one(&src, Code::E003, "meta { train = all }");
}

#[test]
fn step_indexing_e004() {
    one(
        &seq("x ~ Normal(0, 1)\n for t in 1:T { z[t] ~ Normal(x[0], 1) }"),
        Code::E004,
        "0",
    );
    one(
        &seq("x ~ Normal(0, 1)\n for t in 1:T { z[t] ~ Normal(x[T + 1], 1) }"),
        Code::E004,
        "T + 1",
    );
    ok(&seq(
        "x ~ Normal(0, 1)\n for t in 1:T { z[t] ~ Normal(x[T] + x[1] + x[t], 1) }",
    ));
    let src = format!("{SEQ_DECLS}\nparam p : Real[H]\nmodel {{ x ~ Normal(0, 1)\n for t in 1:T {{ z[t] ~ Normal(p[t], 1) }} }}");
    one(&src, Code::E004, "p[t]");
    one(
        &seq("let a = zeros(H)\n x ~ Normal(0, 1)\n for t in 1:T { z[t] ~ Normal(a[t], 1) }"),
        Code::E004,
        "a[t]",
    );
}

#[test]
fn data_steps_stay_in_range_e004() {
    one(
        &seq("for t in 1:T { z[t] ~ Normal(x[t+1], 1) }\n x ~ Normal(z, 1)"),
        Code::E004,
        "t+1",
    );
    one(
        &seq("for t in 1:T { z[t] ~ Normal(x[t-1], 1) }\n x ~ Normal(z, 1)"),
        Code::E004,
        "t-1",
    );
    ok(&seq("for t in 2:T { let a = x[t-1] }\n for t in 1:T { z[t] ~ Normal(x[t], 1) }\n x ~ Normal(z, 1)"));
}

#[test]
fn lstm_tuple_steps() {
    let p = ok("
const T = 5
const H = 4
data x : Real[T, H]
net cell(h: Real[H], c: Real[H], x: Real[H]) -> (h: Real[H], c: Real[H]) = lstm()
net out(h: Real[H]) -> Real[H] = linear()
model {
  let h[0] = zeros(H); let c[0] = zeros(H)
  for t in 1:T { x[t] ~ Normal(out(h[t-1]), 1); let (h[t], c[t]) = cell(h[t-1], c[t-1], x[t]) }
}
");
    let Stmt::Loop { body, .. } = &p.model.stmts[2] else {
        panic!("loop")
    };
    let Stmt::Let { targets, .. } = &body[1] else {
        panic!("let")
    };
    assert_eq!(targets.len(), 2);
    assert_eq!((targets[0].local, targets[0].head), (0, Some(0)));
    assert_eq!((targets[1].local, targets[1].head), (1, Some(1)));
    assert_eq!(
        targets[1].step,
        Some(Step {
            loop_id: Some(0),
            offset: 0
        })
    );
    assert_eq!(p.model.locals[1].steps, Some(5));
}

#[test]
fn domain_algebra() {
    ok(&vae(
        "z ~ Normal(0, 1 + exp(z0()) * 2)\n x ~ Bernoulli(logits = decoder(z))",
        VAE_GUIDE,
    )
    .replace("exp(z0())", "softplus(zeros(Z))"));
    let d = one(
        &vae(
            "z ~ Normal(0, 2 - 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E005,
        "2 - 1",
    );
    assert_eq!(
        d.message,
        "`scale` of `Normal` must be Positive, but this is Real"
    );
    one(
        &vae(
            "z ~ Normal(0, sqrt(-1))\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E005,
        "-1",
    );
    one(
        &vae(
            "z ~ Normal(0, abs(z0))\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        )
        .replace("z0", "2"),
        Code::E005,
        "abs(2)",
    );
    ok(&vae(
        "z ~ Normal(0, exp(1) / mean(ones(3)))\n x ~ Bernoulli(probs = sigmoid(decoder(z)) * 1)",
        VAE_GUIDE,
    )
    .replace(" * 1)", ")"));
}

#[test]
fn bernoulli_and_categorical_need_keywords() {
    one(
        &vae("z ~ Normal(0, 1)\n x ~ Bernoulli()", VAE_GUIDE),
        Code::E006,
        "Bernoulli()",
    );
    let d = one(
        &vae("z ~ Normal(0, 1)\n x ~ Bernoulli(decoder(z))", VAE_GUIDE),
        Code::E006,
        "decoder(z)",
    );
    assert!(d.hint.as_deref().unwrap_or("").contains("`logits`"));
}

#[test]
fn set_arguments_e005() {
    let decls = format!("{VAE_DECLS}\nset S : Binary[D] size 4\nset R : Binary[Z] size 4\nnet summary(s: Set[Binary[D]]) -> Real[Z] = deepsets(phi = [H])");
    one(
        &format!(
            "{decls}\nmodel {{ z ~ Normal(summary(x), 1)\n x ~ Bernoulli(logits = decoder(z)) }}"
        ),
        Code::E005,
        "x",
    );
    one(
        &format!(
            "{decls}\nmodel {{ z ~ Normal(summary(R), 1)\n x ~ Bernoulli(logits = decoder(z)) }}"
        ),
        Code::E004,
        "R",
    );
    one(
        &format!("{decls}\nmodel {{ z ~ Normal(0, 1)\n x ~ Bernoulli(logits = decoder(S)) }}"),
        Code::E005,
        "S",
    );
    let p = ok(&format!(
        "{decls}\nmodel {{ z ~ Normal(summary(S), 1)\n x ~ Bernoulli(logits = decoder(z)) }}"
    ));
    let ExprKind::NetCall { args, .. } = &site(&p.model.stmts, 0).dist.args[0].1.kind else {
        panic!("call")
    };
    assert!(matches!(args[0].kind, ExprKind::Ref(Ref::Set(0))));
}

#[test]
fn fill_dims_are_consts() {
    one(
        &vae(
            "z ~ Normal(zeros(Z / 5), 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E015,
        "Z / 5",
    );
    one(
        &vae(
            "z ~ Normal(zeros(x), 1)\n x ~ Bernoulli(logits = decoder(z))",
            VAE_GUIDE,
        ),
        Code::E002,
        "x",
    );
}

#[test]
fn conv_image_too_small() {
    one(
        &with_net("net f(img: Real[1, 2, 2]) -> Real[Z] = conv(channels = [8, 8], kernel = 6)"),
        Code::E004,
        "img: Real[1, 2, 2]",
    );
}
