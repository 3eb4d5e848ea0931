//! `vic fmt`: idempotent, faithful to the tree, and keeps every comment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources;

use vic::syntax::{self, ast};

/// The AST as JSON with every span replaced by `Artificial`, so trees compare by shape.
fn shape(file: &ast::File) -> serde_json::Value {
    fn clear(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if map.len() == 1 && map.contains_key("Src") {
                    *v = serde_json::Value::String("Artificial".into());
                    return;
                }
                for (_, x) in map.iter_mut() {
                    clear(x);
                }
            }
            serde_json::Value::Array(xs) => xs.iter_mut().for_each(clear),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(file).expect("AST serializes");
    clear(&mut v);
    v
}

fn format(src: &str) -> String {
    let file = syntax::parse(src).unwrap_or_else(|e| panic!("{e:?}\n{src}"));
    vic::fmt::format_file(&file, &syntax::comments(src), src)
}

/// The three properties every formatted source must have.
fn check(name: &str, src: &str) -> String {
    let once = format(src);
    let twice = format(&once);
    assert_eq!(once, twice, "{name}: not idempotent:\n{once}");
    let a = syntax::parse(src).expect("parses");
    let b = syntax::parse(&once)
        .unwrap_or_else(|e| panic!("{name}: output does not parse: {e:?}\n{once}"));
    assert_eq!(shape(&a), shape(&b), "{name}: tree changed:\n{once}");
    for c in syntax::comments(src) {
        assert!(
            once.contains(c.text.trim_end()),
            "{name}: lost comment {:?}\n{once}",
            c.text
        );
    }
    assert_eq!(
        syntax::comments(src).len(),
        syntax::comments(&once).len(),
        "{name}: comment count\n{once}"
    );
    once
}

#[test]
fn language_examples_format_faithfully() {
    for (name, src) in sources::ALL {
        let out = check(name, src);
        eprintln!("===== {name}\n{out}");
    }
}
