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

fn text(src: &str, span: vic::span::Span) -> &str {
    &src[span.range().expect("a source span")]
}

fn only_model_stmts(src: &str) -> Vec<ast::Stmt> {
    let f = parse_ok("model", src);
    for item in f.items {
        if let ast::ItemKind::Model(b) = item.kind {
            return b.stmts;
        }
    }
    panic!("no model")
}

fn const_value(src: &str) -> ast::Expr {
    let f = parse_ok("const", src);
    match f.items.into_iter().next().map(|i| i.kind) {
        Some(ast::ItemKind::Const { value, .. }) => value,
        other => panic!("{other:?}"),
    }
}

/// An expression written back with every operation in parentheses.
fn tree(e: &ast::Expr) -> String {
    use ast::ExprKind as K;
    match &e.kind {
        K::Number { text, .. } => text.clone(),
        K::Str(s) => format!("{s:?}"),
        K::Name(n) => n.name.clone(),
        K::Call(c) => format!(
            "{}({})",
            c.callee.name,
            c.args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}={}", n.name, tree(&a.value)),
                    None => tree(&a.value),
                })
                .collect::<Vec<_>>()
                .join(",")
        ),
        K::Field { base, field } => format!("({}.{})", tree(base), field.name),
        K::Index { base, indices } => format!(
            "({}[{}])",
            tree(base),
            indices.iter().map(tree).collect::<Vec<_>>().join(",")
        ),
        K::Neg(x) => format!("(-{})", tree(x)),
        K::Binary { op, lhs, rhs } => format!("({}{}{})", tree(lhs), op.symbol(), tree(rhs)),
        K::List(xs) => format!("[{}]", xs.iter().map(tree).collect::<Vec<_>>().join(",")),
        K::Range { from, to, step } => match step {
            Some(s) => format!("({}:{}:{})", tree(from), tree(to), tree(s)),
            None => format!("({}:{})", tree(from), tree(to)),
        },
    }
}

#[test]
fn spans_cover_exactly_their_text() {
    let src = sources::VAE;
    let f = parse_ok("vae", src);
    assert_eq!(text(src, f.items[0].span), "const D = 784");
    assert_eq!(text(src, f.items[3].span), "data   x : Binary[D]");
    assert_eq!(text(src, f.items[4].span), "latent z : Real[Z]");
    let ast::ItemKind::Net(net) = &f.items[5].kind else {
        panic!()
    };
    assert_eq!(
        text(src, f.items[5].span),
        "net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H, H], act = relu)"
    );
    assert_eq!(text(src, net.name.span), "encoder");
    assert_eq!(text(src, net.inputs[0].span), "x: Binary[D]");
    assert_eq!(text(src, net.inputs[0].ty.span), "Binary[D]");
    assert_eq!(text(src, net.arch.span), "mlp(hidden = [H, H], act = relu)");
    assert_eq!(text(src, net.arch.args[0].span), "hidden = [H, H]");
    assert_eq!(text(src, net.arch.args[0].value.span), "[H, H]");
    let ast::NetOutput::Heads(heads) = &net.output else {
        panic!()
    };
    assert_eq!(text(src, heads[1].span), "scale: Positive[Z]");
    let model = &f.items[7];
    assert!(text(src, model.span).starts_with("model {"));
    assert!(text(src, model.span).ends_with('}'));
    let ast::ItemKind::Model(block) = &model.kind else {
        panic!()
    };
    assert!(text(src, block.span).starts_with('{'));
    assert_eq!(text(src, block.stmts[0].span), "z ~ Normal(0, 1)");
    assert_eq!(
        text(src, block.stmts[1].span),
        "x ~ Bernoulli(logits = decoder(z))"
    );
    let ast::StmtKind::Sample { target, dist, .. } = &block.stmts[1].kind else {
        panic!()
    };
    assert_eq!(text(src, target.span), "x");
    assert_eq!(text(src, dist.span), "Bernoulli(logits = decoder(z))");
    assert_eq!(text(src, dist.args[0].value.span), "decoder(z)");
    let ast::ItemKind::Guide(ast::GuideBody::Block(guide)) = &f.items[8].kind else {
        panic!()
    };
    assert_eq!(
        text(src, guide.stmts[0].span),
        "let (loc, scale) = encoder(x)"
    );
    let ast::ItemKind::Train(entries) = &f.items[9].kind else {
        panic!()
    };
    assert_eq!(text(src, entries[0].span), "dataset   = \"fashion-mnist\"");
    assert_eq!(text(src, entries[0].key.span), "dataset");
    assert_eq!(text(src, entries[2].value.span), "adam(lr = 1e-3)");
    assert_eq!(text(src, f.items[9].span).lines().last(), Some("}"));
}

#[test]
fn spans_of_sequences_loops_strategies_and_types() {
    let src = "global latent mu : Real[K, D]\nlatent c : Cat(K)[T]\nguide exact\nmodel {\n  for t in 1:T {\n    let c[t] = c[t-1] + (a + b) * 2\n  }\n  z ~ Normal(m, s) |> iaf(ar, h, steps = 2) @refine(steps = 20)\n  y ~ Categorical(logits = l) @enumerate\n}\n";
    let f = parse_ok("src", src);
    let ast::ItemKind::Latent { global, ty, .. } = &f.items[0].kind else {
        panic!()
    };
    assert_eq!(text(src, global.expect("global")), "global");
    assert_eq!(text(src, ty.span), "Real[K, D]");
    assert_eq!(text(src, f.items[0].span), "global latent mu : Real[K, D]");
    let ast::ItemKind::Latent { ty, .. } = &f.items[1].kind else {
        panic!()
    };
    assert_eq!(text(src, ty.span), "Cat(K)[T]");
    let ast::TypeExprKind::Domain { name, arg, shape } = &ty.kind else {
        panic!()
    };
    assert_eq!(name.name, "Cat");
    assert_eq!(text(src, arg.as_ref().expect("arg").span), "K");
    assert_eq!(shape.as_ref().map(Vec::len), Some(1));
    let ast::ItemKind::Guide(ast::GuideBody::Exact(exact)) = &f.items[2].kind else {
        panic!()
    };
    assert_eq!(text(src, *exact), "exact");
    assert_eq!(text(src, f.items[2].span), "guide exact");
    let ast::ItemKind::Model(b) = &f.items[3].kind else {
        panic!()
    };
    assert!(text(src, b.stmts[0].span).starts_with("for t in 1:T {"));
    let ast::StmtKind::For {
        var,
        from,
        to,
        body,
    } = &b.stmts[0].kind
    else {
        panic!()
    };
    assert_eq!(
        (
            text(src, var.span),
            text(src, from.span),
            text(src, to.span)
        ),
        ("t", "1", "T")
    );
    let ast::StmtKind::Let {
        targets,
        tuple,
        value,
    } = &body.stmts[0].kind
    else {
        panic!()
    };
    assert!(!tuple);
    assert_eq!(text(src, targets[0].span), "c[t]");
    assert_eq!(
        text(src, targets[0].index.as_ref().expect("index").span),
        "t"
    );
    assert_eq!(text(src, value.span), "c[t-1] + (a + b) * 2");
    let ast::ExprKind::Binary { lhs, rhs, .. } = &value.kind else {
        panic!()
    };
    assert_eq!(text(src, lhs.span), "c[t-1]");
    assert_eq!(text(src, rhs.span), "(a + b) * 2");
    let ast::StmtKind::Sample {
        flows, strategy, ..
    } = &b.stmts[1].kind
    else {
        panic!()
    };
    assert_eq!(text(src, flows[0].span), "iaf(ar, h, steps = 2)");
    let strategy = strategy.as_ref().expect("strategy");
    assert_eq!(text(src, strategy.span), "@refine(steps = 20)");
    assert_eq!(text(src, strategy.name.span), "refine");
    assert_eq!(strategy.args.as_ref().map(Vec::len), Some(1));
    let ast::StmtKind::Sample { strategy, .. } = &b.stmts[2].kind else {
        panic!()
    };
    let strategy = strategy.as_ref().expect("strategy");
    assert_eq!(text(src, strategy.span), "@enumerate");
    assert!(strategy.args.is_none());
}

#[test]
fn items_of_every_kind() {
    let src = "const N = 2 * 3\ndata c : Cat(10) given\ndata y : Cat(K) partial\ndata x : Real\nparam w : Real[D] = normal(0, 0.1)\nparam b : Real\nset E : Binary[1, 28, 28] size 1\n@per_member @other net f() -> Real = linear()\nnet s(S: Set[Binary[D]]) -> Real[H] = deepsets(phi = [H])\nmeta { family = rotate(-180:160:20); train = even; test = odd }\nmodel {}\n";
    let f = parse_ok("items", src);
    let kinds: Vec<&str> = f
        .items
        .iter()
        .map(|i| match &i.kind {
            ast::ItemKind::Const { .. } => "const",
            ast::ItemKind::Data {
                role: ast::DataRole::Given,
                ..
            } => "given",
            ast::ItemKind::Data {
                role: ast::DataRole::Partial,
                ..
            } => "partial",
            ast::ItemKind::Data {
                role: ast::DataRole::Observed,
                ..
            } => "data",
            ast::ItemKind::Param { init: Some(_), .. } => "param=",
            ast::ItemKind::Param { init: None, .. } => "param",
            ast::ItemKind::Set { .. } => "set",
            ast::ItemKind::Net(n) if n.annotations.len() == 2 => "@@net",
            ast::ItemKind::Net(_) => "net",
            ast::ItemKind::Meta(e) if e.len() == 3 => "meta",
            ast::ItemKind::Model(b) if b.stmts.is_empty() => "model",
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "const", "given", "partial", "data", "param=", "param", "set", "@@net", "net", "meta",
            "model"
        ]
    );
    let ast::ItemKind::Net(n) = &f.items[8].kind else {
        panic!()
    };
    let ast::TypeExprKind::Set(inner) = &n.inputs[0].ty.kind else {
        panic!("{:?}", n.inputs[0].ty)
    };
    assert_eq!(text(src, inner.span), "Binary[D]");
    let ast::ItemKind::Net(n) = &f.items[7].kind else {
        panic!()
    };
    assert_eq!(text(src, n.annotations[0].span), "per_member");
    assert!(n.inputs.is_empty());
    let ast::ItemKind::Meta(e) = &f.items[9].kind else {
        panic!()
    };
    assert_eq!(tree(&e[0].value), "rotate(((-180):160:20))");
    assert_eq!(e[1].key.name, "train");
}

#[test]
fn operators_have_the_usual_precedence_and_associativity() {
    for (src, want) in [
        ("a - b - c", "((a-b)-c)"),
        ("a / b / c", "((a/b)/c)"),
        ("a - (b - c)", "(a-(b-c))"),
        ("a / (b * c)", "(a/(b*c))"),
        ("a + b * c", "(a+(b*c))"),
        ("a * b + c", "((a*b)+c)"),
        ("(a + b) * c", "((a+b)*c)"),
        ("-a * b", "((-a)*b)"),
        ("-a.x", "(-(a.x))"),
        ("- -a", "(-(-a))"),
        ("a - -b", "(a-(-b))"),
        ("f(x).loc[t - 1]", "((f(x).loc)[(t-1)])"),
        ("h[t, 0] * 2", "((h[t,0])*2)"),
        ("2*N*N", "((2*N)*N)"),
        ("[1, 2.5, 1e-3]", "[1,2.5,1e-3]"),
        ("\"a\\\"b\"", "\"a\\\"b\""),
    ] {
        let e = const_value(&format!("const A = {src}"));
        assert_eq!(tree(&e), want, "{src}");
    }
    let e = const_value("const A = 1e-3");
    assert_eq!(
        e.kind,
        ast::ExprKind::Number {
            value: 1e-3,
            text: "1e-3".into()
        }
    );
    let e = const_value(r#"const A = "x\"y\\z""#);
    assert_eq!(e.kind, ast::ExprKind::Str("x\"y\\z".into()));
}

#[test]
fn ranges_are_values_of_arguments_and_entries() {
    let e = const_value("const A = f(1:10, 0:1:0.5, k = a:b)");
    assert_eq!(tree(&e), "f((1:10),(0:1:0.5),k=(a:b))");
    assert!(syntax::parse("const A = 1:2").is_err());
}

#[test]
fn keywords_are_reserved_but_not_their_prefixes() {
    let src = "data dataset : Real\ndata settings : Real\nlatent lets : Real\nlatent index : Real[formats]\nlatent in_ : Real\nmodel { lets ~ Normal(dataset, settings) }\nmeta { train = even; test = odd; given = 1 }\ntrain { meta = f(size = 3, in = 2) }\n";
    let f = parse_ok("keywords", src);
    assert_eq!(f.items.len(), 8);
    for kw in [
        "const", "data", "latent", "param", "net", "set", "model", "guide", "train", "meta", "let",
        "for", "in", "exact", "global", "given", "partial", "size",
    ] {
        let d = err(&format!("latent {kw} : Real"));
        assert!(
            d.message.contains(&format!("`{kw}` is a reserved word")),
            "{kw}: {}",
            d.message
        );
        assert_eq!(d.span.range(), Some(7..7 + kw.len()));
        assert_eq!(
            d.hint.as_deref(),
            Some(format!("choose another name such as `{kw}_`").as_str())
        );
    }
    let d = err("model { let data = 3 }");
    assert!(d.message.contains("`data` is a reserved word"));
    let d = err("model { data ~ Normal(0, 1) }");
    assert_eq!(d.span.range(), Some(8..12));
}

#[test]
fn a_call_needs_its_paren_next_to_its_name() {
    let stmts = only_model_stmts("model { x ~ Bernoulli(logits = decoder(z)) }");
    assert_eq!(stmts.len(), 1);
    let src = "model { x ~ Bernoulli(logits = decoder (z)) }";
    let d = err(src);
    assert_eq!(text(src, d.span), "decoder (");
    assert_eq!(d.hint.as_deref(), Some("write `decoder(` with no space"));
    let src = "model { z ~ Normal  (0, 1) }";
    let d = err(src);
    assert_eq!(text(src, d.span), "Normal  (");
    assert!(d.message.contains("no space"));
    let src = "model {} guide { c ~ Categorical(logits = l) @ enumerate }";
    let d = err(src);
    assert_eq!(text(src, d.span), "@ enumerate");
    assert_eq!(d.hint.as_deref(), Some("write `@enumerate`"));
}

#[test]
fn statements_of_every_form() {
    let stmts = only_model_stmts(
        "model { let a = 1; let h[0] = zeros(H); let (m, s) = f(x); let (h[t], c[t]) = cell(h[t-1]); let (one) = g(x)\n z[t] ~ Normal(0, 1) |> iaf(ar, h) |> iaf(ar2, h, steps = 2) @relax(temperature = 0.5) }",
    );
    let shapes: Vec<String> = stmts
        .iter()
        .map(|s| match &s.kind {
            ast::StmtKind::Let { targets, tuple, .. } => format!(
                "let{}{}",
                if *tuple { "()" } else { "" },
                targets
                    .iter()
                    .map(|t| if t.index.is_some() { "i" } else { "n" })
                    .collect::<String>()
            ),
            ast::StmtKind::Sample {
                target,
                flows,
                strategy,
                ..
            } => format!(
                "~{}{}{}",
                if target.index.is_some() { "i" } else { "n" },
                flows.len(),
                strategy.as_ref().map_or("", |s| s.name.name.as_str())
            ),
            ast::StmtKind::For { .. } => "for".into(),
        })
        .collect();
    assert_eq!(
        shapes,
        ["letn", "leti", "let()nn", "let()ii", "let()n", "~i2relax"]
    );
}

#[test]
fn syntax_errors_point_at_the_offending_token() {
    // (source, the text under the primary span, a fragment of the message)
    for (src, at, msg) in [
        ("data x Real", "Real", "expected `:`, found `Real`"),
        (
            "const D = ",
            "",
            "expected an expression, found the end of the file",
        ),
        ("model { z ~ }", "}", "expected a call"),
        ("guide model", "model", "expected `exact` or `{`"),
        ("net f(x: Real) Real = mlp()", "Real", "expected `->`"),
        ("net f(x: Real) -> Real = mlp", "", "expected `(`"),
        ("model { z ~ Normal(0, 1) }\nfoo", "foo", "expected an item"),
        (
            "latent z : Real\nmodel { 3 }",
            "3",
            "expected a statement or `}`",
        ),
        ("model { for t 1:T {} }", "1", "expected `in`"),
        ("set S : Real 10", "10", "expected `size`"),
        ("model { x ~ Normal(a,, b) }", ",", "found `,`"),
        ("model { z ~ Normal }", "}", "expected `(`, found `}`"),
        (
            "model { z ~ Normal(0, 1) @ }",
            "@",
            "a name right after `@`",
        ),
        ("const = 3", "=", "expected a name, found `=`"),
        (
            "data x : ",
            "",
            "expected a type, found the end of the file",
        ),
        (
            "model { let (a b) = f(x) }",
            "b",
            "expected a name, `,`, `)` or `[`",
        ),
    ] {
        let d = err(src);
        assert_eq!(text(src, d.span), at, "{src}: {}", d.message);
        assert!(d.message.contains(msg), "{src}: {}", d.message);
    }
}

#[test]
fn equals_and_tilde_confusions_get_a_hint() {
    let src = "model { z = Normal(0, 1) }";
    let d = err(src);
    assert_eq!(text(src, d.span), "=");
    assert_eq!(d.message, "expected `~`, found `=`");
    assert!(d
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("z ~ Dist(...)") && h.contains("let z = ...")));
    let src = "model { let z ~ Normal(0, 1) }";
    let d = err(src);
    assert_eq!(text(src, d.span), "~");
    assert!(d
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("drop the `let`")));
}

#[test]
fn unclosed_brackets_point_at_the_opener() {
    for (src, opener_at) in [
        ("model { z ~ Normal(0, 1)", 6),
        ("data x : Real[D", 13),
        ("net f(x: Real) -> Real = mlp(hidden = [H]", 28),
        (
            "model {\n  for t in 1:T {\n    z[t] ~ Normal(0, 1)\n  }\n",
            6,
        ),
    ] {
        let d = err(src);
        assert!(d.message.contains("never closed"), "{src}: {}", d.message);
        let end = src.trim_end().len();
        assert_eq!(d.span.range(), Some(end..end), "{src}");
        assert_eq!(d.secondary.len(), 1, "{src}");
        assert_eq!(
            d.secondary[0].span.range(),
            Some(opener_at..opener_at + 1),
            "{src}"
        );
    }
    let src = "model { z ~ Normal(0, 1 }";
    let d = err(src);
    assert_eq!(text(src, d.span), "}");
    assert_eq!(d.message, "expected `)`, found `}`");
    assert_eq!(d.secondary[0].span.range(), Some(18..19));
    let src = "model { z ~ Normal(0, 1) } }";
    let d = err(src);
    assert_eq!(d.span.range(), Some(27..28));
    assert!(d.message.contains("closes nothing"));
}

#[test]
fn strings_and_numbers_are_checked() {
    let src = "train { dataset = \"mnist }\nmodel {}";
    let d = err(src);
    assert_eq!(text(src, d.span), "\"mnist }");
    assert!(d.message.contains("no closing"));
    let src = "train { a = \"x\\q\" }";
    let d = err(src);
    assert_eq!(text(src, d.span), "\\q");
    for (src, bad) in [
        ("train { lr = 1e }", "1e"),
        ("const A = 2x", "2x"),
        ("const A = 1.5.3", "1.5.3"),
        ("const A = 1.", "1."),
        ("const A = 0x1F", "0x1F"),
    ] {
        let d = err(src);
        assert_eq!(text(src, d.span), bad, "{src}");
        assert_eq!(d.message, format!("`{bad}` is not a valid number"));
    }
    let d = err("const A = 1e999");
    assert!(d.message.contains("too large"));
    // A `#` inside a string is not a comment.
    let src = "train { dataset = \"a#b\" } # real";
    let f = parse_ok("hash", src);
    assert_eq!(f.items.len(), 1);
    let c = syntax::comments(src);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].text, "# real");
    assert_eq!(text(src, c[0].span), "# real");
}

#[test]
fn comments_are_found_with_their_spans() {
    let src = sources::VAE;
    let cs = syntax::comments(src);
    assert_eq!(cs.len(), 6);
    for c in &cs {
        assert_eq!(text(src, c.span), c.text);
        assert!(c.text.starts_with('#'));
    }
    assert_eq!(cs[1].text, "# pixels");
    let crlf = "const A = 1 # one\r\nconst B = 2\r\n";
    let cs = syntax::comments(crlf);
    assert_eq!(cs[0].text, "# one");
    parse_ok("crlf", crlf);
}

#[test]
fn spans_are_byte_offsets_in_utf8_text() {
    let src = "# é ü 漢字\nconst A = 1 # ü\ntrain { dataset = \"données\" }";
    let f = parse_ok("utf8", src);
    assert_eq!(text(src, f.items[0].span), "const A = 1");
    let ast::ItemKind::Train(e) = &f.items[1].kind else {
        panic!()
    };
    assert_eq!(e[0].value.kind, ast::ExprKind::Str("données".into()));
    let src = "model { 漢 ~ Normal(0, 1) }";
    let d = err(src);
    assert_eq!(text(src, d.span), "漢");
}

#[test]
fn a_missing_brace_before_the_next_item_is_named() {
    let src = "model {\n  z ~ Normal(0, 1)\n\nguide {\n  z ~ Normal(0, 1)\n}\n";
    let d = err(src);
    assert_eq!(text(src, d.span), "guide");
    assert_eq!(d.message, "expected `}`, found `guide`");
    assert_eq!(d.secondary[0].span.range(), Some(6..7));
    assert!(d
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("before `guide`")));
}

#[test]
fn commas_between_entries_get_a_hint() {
    let src = "train { batch = 128, epochs = 3 }";
    let d = err(src);
    assert_eq!(text(src, d.span), ",");
    assert!(d
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("no separator")));
}

#[test]
fn common_slips_get_hints() {
    for (src, at, hint) in [
        ("model { for t in 1..T {} }", "1..T", "`a:b`"),
        ("const A = 'x'", "'", "double quotes"),
        ("const A = 3 ^ 2", "^", "`+`, `-`, `*` and `/`"),
        ("model { let a, b = f(x) }", ",", "let (a, b)"),
        ("model {}\ntrain { lr: 1e-3 }", ":", "`key = value`"),
        (
            "net f(x: Real) -> loc: Real = linear()",
            ":",
            "named heads go in parentheses",
        ),
    ] {
        let d = err(src);
        assert_eq!(text(src, d.span), at, "{src}: {}", d.message);
        assert!(
            d.hint.as_deref().is_some_and(|h| h.contains(hint)),
            "{src}: {:?}",
            d.hint
        );
    }
}

#[test]
fn set_types_allow_comments_and_space_before_the_bracket() {
    for src in [
        "net s(S: Set[Binary[D]]) -> Real = linear()",
        "net s(S: Set # the context\n  [Binary[D]]) -> Real = linear()",
        "net s(S: Set [ Binary[D] ]) -> Real = linear()",
    ] {
        let f = parse_ok(src, src);
        let ast::ItemKind::Net(n) = &f.items[0].kind else {
            panic!()
        };
        assert!(
            matches!(n.inputs[0].ty.kind, ast::TypeExprKind::Set(_)),
            "{src}"
        );
    }
}
