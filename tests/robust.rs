//! No input may panic, hang or overflow the stack in the syntax layer or the formatter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources;

use vic::diag::{Code, Diagnostic};
use vic::syntax;

fn e001(src: &str) -> Diagnostic {
    let d = Diagnostic::from(syntax::parse(src).expect_err("should not parse"));
    assert_eq!(d.code, Code::E001);
    d
}

/// Parse and, when that works, format: neither may panic.
fn survive(src: &str) {
    if let Ok(f) = syntax::parse(src) {
        let out = vic::fmt::format_file(&f, &syntax::comments(src), src);
        let again = syntax::parse(&out)
            .unwrap_or_else(|e| panic!("formatted output does not parse: {e:?}\n{out}"));
        let twice = vic::fmt::format_file(&again, &syntax::comments(&out), &out);
        assert_eq!(out, twice, "formatting is not idempotent on {src:?}");
    }
}

#[test]
fn deep_parentheses_are_refused_not_overflowed() {
    let src = format!("const A = {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let d = e001(&src);
    assert!(d.message.contains("256"), "{}", d.message);
    assert_eq!(d.span.range(), Some(10 + 256..10 + 257));
    for open in ["[", "{"] {
        let src = open.repeat(100_000);
        assert!(e001(&src).message.contains("nested"));
    }
}

#[test]
fn nesting_at_the_limit_parses_and_formats() {
    let depth = 250;
    let src = format!("const A = {}1{}", "(".repeat(depth), ")".repeat(depth));
    survive(&src);
    let src = format!("const A = {}1{}", "f(".repeat(depth), ")".repeat(depth));
    survive(&src);
    let src = format!(
        "train {{ a = {}1{} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    survive(&src);
    let src = format!(
        "const A = {}1{}",
        "(-".repeat(depth / 2),
        ")".repeat(depth / 2)
    );
    survive(&src);
}

#[test]
fn long_operator_chains_are_refused_not_overflowed() {
    for op in ["-", "+a", "*a", ".a"] {
        let src = format!("const A = a{}", op.repeat(100_000));
        let _ = syntax::parse(&src);
    }
    let src = format!("const A = {}a", "-".repeat(100_000));
    assert!(e001(&src).message.contains("operators"));
    // A long but reasonable chain still parses.
    let src = format!("const A = a{}", " + a".repeat(500));
    survive(&src);
}

#[test]
fn every_truncation_is_survived() {
    for (name, src) in sources::ALL {
        // Every offset of the first example; every other one of the rest, to stay quick.
        let step = if *name == "vae" { 1 } else { 2 };
        for (i, _) in src.char_indices().step_by(step) {
            survive(&src[..i]);
        }
    }
}

#[test]
fn odd_characters_are_survived() {
    for src in [
        "",
        " ",
        "\n",
        "#",
        "# only a comment",
        "\"",
        "é",
        "model { é }",
        "const A = \"é",
        "\0",
        "model {\u{1F600}}",
        "train { a = \"\\",
        "const A = 1e",
        "const A = 1e999",
        "latent z : Real[",
        "@",
        "@ ",
        "net",
        "guide",
        "))))",
        "}",
        "{",
        "\r\n\r\n",
        "model { z ~ N(0, 1) @ }",
        "const A = 0x",
        "const A = 1.",
        "train { a = \"x\\é\" }",
    ] {
        survive(src);
    }
}

#[test]
fn large_inputs_parse_in_linear_time() {
    // A quadratic pass would make this test take minutes rather than seconds.
    // One long line: spans must not rescan it for every node.
    let list = vec!["1.5"; 20_000].join(", ");
    let src = format!("train {{ a = [{list}] }} # done\n");
    survive(&src);
    // Many statements.
    let body = "  z ~ Normal(f(x)[t - 1].loc, 1) # c\n".repeat(5_000);
    let src = format!("model {{\n{body}}}\n");
    survive(&src);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Text made of the language's own characters: no panic, and what parses formats stably.
    #[test]
    fn arbitrary_text_is_survived(src in "[a-z_ (){}\\[\\]@#=~:;,.+*/\\-|>\"\\\\0-9\néü漢]{0,60}") {
        survive(&src);
    }

    /// Fragments of real specs glued in random order.
    #[test]
    fn shuffled_fragments_are_survived(parts in proptest::collection::vec(
        proptest::sample::select(vec![
            "model {", "guide {", "}", "z ~ Normal(0, 1)", "let (a, b) = f(x)", "for t in 1:T {",
            "const A = 2 * B", "data x : Real[D]", "# c\n", "\n", "; ", "@enumerate", "|> iaf(ar, h)",
            "train {", "a = [1, 2]", "net f(x: Real) -> (a: Real, b: Real) = mlp(hidden = [H])",
            "guide exact", "latent z : Cat(K)[T]", "h[t - 1]", "(", ")", "-", "\"s#\"",
        ]),
        0..12,
    )) {
        survive(&parts.join(" "));
    }
}

#[test]
fn single_edits_of_real_specs_are_survived() {
    for src in [sources::VAE, sources::VRNN] {
        let positions: Vec<usize> = src.char_indices().map(|(i, _)| i).step_by(5).collect();
        for &i in &positions {
            for insert in ["é", " (", "@ ", "=", "~", "\"", "#", "漢 ", "1e"] {
                survive(&format!("{}{insert}{}", &src[..i], &src[i..]));
            }
        }
    }
}
