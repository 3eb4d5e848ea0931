//! The syntax layer against the language reference: every example parses, spans point at
//! the right text, and each kind of mistake gives a precise E001.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources;

use vic::diag::{Code, Diagnostic};
use vic::syntax::{self, ast};

fn parse_ok(name: &str, src: &str) -> ast::File {
    match syntax::parse(src) {
        Ok(f) => f,
        Err(e) => {
            let d = Diagnostic::from(e);
            let r = d.span.range().unwrap_or(0..0);
            panic!(
                "{name}: {} at {:?} ({:?}) hint {:?}",
                d.message,
                r,
                &src[r.clone()],
                d.hint
            )
        }
    }
}

#[test]
fn every_language_example_parses() {
    for (name, src) in sources::ALL {
        let f = parse_ok(name, src);
        assert!(!f.items.is_empty(), "{name}");
    }
}

fn err(src: &str) -> Diagnostic {
    match syntax::parse(src) {
        Ok(f) => panic!("parsed: {f:?}"),
        Err(e) => {
            let d = Diagnostic::from(e);
            assert_eq!(d.code, Code::E001);
            d
        }
    }
}

fn show(src: &str) {
    let d = err(src);
    let r = d.span.range().unwrap_or(0..0);
    eprintln!(
        "{src:?}\n  -> {} @ {:?} {:?} hint={:?} sec={:?}",
        d.message,
        r,
        &src[r.clone()],
        d.hint,
        d.secondary
    );
}

#[test]
#[ignore]
fn debug_errors() {
    for s in [
        "const D = ",
        "latent data : Real",
        "model { z = Normal(0, 1) }",
        "model { let z ~ Normal(0, 1) }",
        "model { z ~ Normal (0, 1) }",
        "model { x ~ Bernoulli(logits = decoder (z)) }",
        "model { z ~ Normal(0, 1)",
        "model { z ~ Normal(0, 1 }",
        "train { dataset = \"abc }",
        "train { lr = 1e }",
        "data x Real",
        "data x : Real[D",
        "net f(x: Real) -> Real = mlp(hidden = [H]",
        "model { z ~ Normal(0, 1) }\nfoo",
        "model { for t in 1:T { z[t] ~ } }",
        "const A = 3 +",
        "model { let (a, b) = }",
        "latent z : Real\nmodel { 3 }",
        "meta { family = rotate(-180:160:20) train = even }",
    ] {
        show(s);
    }
}
