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
    let src = r#"
# Variational autoencoder (Kingma & Welling 2013) on binarized images.
const D = 784          # pixels
const Z = 32           # latent size
const H = 512          # hidden width

data   x : Binary[D]
latent z : Real[Z]

net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H], act = relu)
net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H, H], act = relu)

model {                              # p(x, z) = p(z) p(x | z)
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = decoder(z))
}

guide {                              # q(z | x), amortized by `encoder`
  let (loc, scale) = encoder(x)
  z ~ Normal(loc, scale)
}

train {
  dataset   = "fashion-mnist"
  objective = elbo(samples = 1)
  optimizer = adam(lr = 1e-3)
  batch     = 128
  epochs    = 30
}
"#;
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
