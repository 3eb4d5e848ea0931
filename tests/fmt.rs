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

#[test]
fn comments_in_every_position_are_kept_in_place() {
    let src = r#"# header comment

# second header, after a blank line
const D = 784   # trailing on an item
const Z = 32
# leading an item
data x : Binary[D]    # trailing


latent z : Real[Z]
net f(x: Binary[D])   # inside a multi-line item
  -> Real[Z] = mlp(hidden = [D])
model {   # after the brace
  # leading a statement
  z ~ Normal(0, 1)   # trailing a statement

  # after a blank line
  for t in 1:T {  # after a loop brace
    let h[t] = f(x)
    # at the end of a loop body
  }   # after the loop
  # at the end of the block
}  # after the block
guide exact # on guide exact
train {
  # leading an entry
  batch = 128 # trailing an entry
  # at the end of entries
}
# at the end of the file
"#;
    let out = check("comments", src);
    let want = r#"# header comment

# second header, after a blank line
const D = 784  # trailing on an item
const Z = 32
# leading an item
data x : Binary[D]  # trailing

latent z : Real[Z]
# inside a multi-line item
net f(x: Binary[D]) -> Real[Z] = mlp(hidden = [D])

model {  # after the brace
  # leading a statement
  z ~ Normal(0, 1)  # trailing a statement

  # after a blank line
  for t in 1:T {  # after a loop brace
    let h[t] = f(x)
    # at the end of a loop body
  }  # after the loop
  # at the end of the block
}  # after the block

guide exact  # on guide exact

train {
  # leading an entry
  batch = 128  # trailing an entry
  # at the end of entries
}
# at the end of the file
"#;
    assert_eq!(out, want);
}

#[test]
fn layout_is_normalised() {
    let src = "const A=1;const B =   2\n\n\n\nmodel{z~Normal(0,1);x~Bernoulli(logits=f(z))}\nguide {\n\n\n  let (m,s)=enc(x)\n\n\n\n  z ~ Normal(m,s)  @enumerate\n\n}\ntrain{a=1 b=[1,2] c=\"q\\\"x\"}\nmeta{}\nmodel {}\n";
    let out = check("layout", src);
    let want = "const A = 1\nconst B = 2\n\nmodel {\n  z ~ Normal(0, 1)\n  x ~ Bernoulli(logits = f(z))\n}\n\nguide {\n  let (m, s) = enc(x)\n\n  z ~ Normal(m, s) @enumerate\n}\n\ntrain {\n  a = 1\n  b = [1, 2]\n  c = \"q\\\"x\"\n}\n\nmeta {}\n\nmodel {}\n";
    assert_eq!(out, want);
}

#[test]
fn parentheses_are_minimal_but_keep_the_tree() {
    for (src, want) in [
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("(a * b) / c", "a * b / c"),
        ("((a))", "a"),
        ("-(a + b)", "-(a + b)"),
        ("(-a) * b", "-a * b"),
        ("(-a).x", "(-a).x"),
        ("-(a.x)", "-a.x"),
        ("(a + b)[t-1]", "(a + b)[t - 1]"),
        ("a + (b * c)", "a + b * c"),
        ("(a + b) * (c - d)", "(a + b) * (c - d)"),
        ("- -a", "--a"),
        ("f( x ,k=[ 1 , 2 ] ).loc", "f(x, k = [1, 2]).loc"),
        ("rotate(-180:160:20)", "rotate(-180:160:20)"),
        ("f(a+1:b*2)", "f(a + 1:b * 2)"),
        ("\"tab\\there\\\\\"", "\"tab\\there\\\\\""),
        ("1e-3 * 0.5", "1e-3 * 0.5"),
    ] {
        let out = check(src, &format!("const A = {src}\n"));
        assert_eq!(out, format!("const A = {want}\n"), "{src}");
    }
}

#[test]
fn every_construct_formats() {
    let src = "@per_member @x net dec(z: Real[Z], c: Cat(K)) -> (loc: Real[D], s: Positive[D]) = mlp(hidden = [H, H], weights = bayes(prior_scale = 1.0))\nset S : Binary[1, 28, 28] size N\nnet s(S: Set[Binary[1, 28, 28]]) -> Real[H] = deepsets(phi = [H])\nglobal latent mu : Real[K, D]\nparam w : Positive = uniform(0.1, 1)\ndata y : Cat(10)[T] partial\nmodel {\n  let (h[t], c[t]) = cell(h[t-1], c[t-1])\n  let (one) = g(x)\n  z ~ Normal(m, s) |> iaf(ar, h, steps = 2) |> iaf(ar, h) @refine(steps = 20, lr = 1.0, through = true)\n  for t in 1:T - 1 { for u in t:T {} }\n}\nguide exact\n";
    let out = check("constructs", src);
    assert!(
        out.contains("  for t in 1:T - 1 {\n    for u in t:T {}\n  }\n"),
        "{out}"
    );
    assert!(out.starts_with("@per_member @x net dec("), "{out}");
    assert!(out.contains("let (one) = g(x)"), "{out}");
}

#[test]
fn an_empty_file_and_a_comment_only_file() {
    assert_eq!(format(""), "");
    assert_eq!(format("\n\n"), "");
    assert_eq!(
        check("comment-only", "  # just this\n\n\n# and this"),
        "# just this\n\n# and this\n"
    );
}

/// A small deterministic generator of expression trees.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn expr(&mut self, depth: u32) -> String {
        let leaf = depth == 0 || self.next(4) == 0;
        if leaf {
            return ["a", "b", "1", "2.5", "1e-3", "\"s\""][self.next(6) as usize].to_string();
        }
        match self.next(8) {
            0 => format!("-{}", self.wrap(depth)),
            1 => format!("{}.loc", self.wrap(depth)),
            2 => format!("{}[{}]", self.wrap(depth), self.expr(depth - 1)),
            3 => format!("f({}, k = {})", self.expr(depth - 1), self.expr(depth - 1)),
            4 => format!("[{}, {}]", self.expr(depth - 1), self.expr(depth - 1)),
            _ => {
                let op = ["+", "-", "*", "/"][self.next(4) as usize];
                format!("{} {op} {}", self.wrap(depth), self.wrap(depth))
            }
        }
    }

    /// A sub-expression in parentheses, so the generated text has a known tree.
    fn wrap(&mut self, depth: u32) -> String {
        format!("({})", self.expr(depth - 1))
    }
}

#[test]
fn random_expressions_round_trip() {
    let mut g = Gen(7);
    for _ in 0..500 {
        let e = g.expr(5);
        let src = format!("const A = {e}\n");
        let out = check(&e, &src);
        // Parenthesised input never needs more parentheses than it had.
        assert!(
            out.matches('(').count() <= src.matches('(').count(),
            "{src}{out}"
        );
    }
}

#[test]
fn a_comment_anywhere_survives_and_settles() {
    for (name, src) in sources::ALL {
        let comments = syntax::comments(src);
        let in_comment = |i: usize| {
            comments
                .iter()
                .any(|c| c.span.range().is_some_and(|r| r.start <= i && i <= r.end))
        };
        let mut in_string = false;
        for (i, ch) in src.char_indices() {
            if ch == '"' {
                in_string = !in_string;
            }
            // Every third gap keeps the test quick; newlines are all tried.
            let tried = ch == '\n' || i % 3 == 0;
            if in_string || !ch.is_whitespace() || !tried || in_comment(i) {
                continue;
            }
            let with = format!("{} # inserted\n{}", &src[..i], &src[i..]);
            check(&format!("{name}@{i}"), &with);
        }
    }
}

#[test]
fn trailing_comments_on_consecutive_lines_line_up() {
    let out = check("vae", sources::VAE);
    assert!(out.contains(
        "const D = 784  # pixels\nconst Z = 32   # latent size\nconst H = 512  # hidden width\n"
    ), "{out}");
    assert!(
        out.contains("model {  # p(x, z) = p(z) p(x | z)\n"),
        "{out}"
    );
}

#[test]
fn comments_around_empty_blocks_settle() {
    for src in [
        "model # before the brace\n{}\n",
        "model {} # after\n",
        "model { # inside\n}\n",
        "train # before\n{\n}\nmeta {\n  # inside\n}\n",
        "model {\n  for t in 1:T # before\n  {}\n}\n",
    ] {
        check(src, src);
    }
    assert_eq!(
        format("model # before the brace\n{}\n"),
        "# before the brace\nmodel {}\n"
    );
}

/// Random well-formed files as lists of tokens that must stay glued (`f(x)`, `@name`);
/// between any two, random white space, `;`, blank lines and comments.
struct FileGen {
    g: Gen,
    comments: usize,
}

impl FileGen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.g.next(xs.len() as u64) as usize]
    }

    fn ty(&mut self) -> String {
        match self.g.next(4) {
            0 => "Real".into(),
            1 => format!("Real\u{1}[{}]", self.g.expr(1)),
            2 => "Cat\u{1}(K)\u{1}[T]".into(),
            _ => "Set\u{1}[Binary[1, 28, 28]]".into(),
        }
    }

    fn stmts(&mut self, out: &mut Vec<String>, depth: u32) {
        for _ in 0..self.g.next(4) {
            match self.g.next(5) {
                0 => out.extend(["let".into(), "a".into(), "=".into(), self.g.expr(2)]),
                1 => out.extend([
                    "let".into(),
                    "(h[t],".into(),
                    "c)".into(),
                    "=".into(),
                    "cell(h[t - 1])".into(),
                ]),
                2 if depth < 2 => {
                    out.extend([
                        "for".into(),
                        "t".into(),
                        "in".into(),
                        "1:T".into(),
                        "{".into(),
                    ]);
                    self.stmts(out, depth + 1);
                    out.push("}".into());
                }
                _ => {
                    out.extend([
                        "z\u{1}[t]".into(),
                        "~".into(),
                        format!("Normal({}, 1)", self.g.expr(1)),
                    ]);
                    if self.g.next(2) == 0 {
                        out.extend(["|>".into(), "iaf(ar, h, steps = 2)".into()]);
                    }
                    if self.g.next(2) == 0 {
                        out.push(
                            self.pick(&["@enumerate", "@relax(temperature = 0.5)"])
                                .into(),
                        );
                    }
                }
            }
        }
    }

    fn file(&mut self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for _ in 0..self.g.next(7) {
            match self.g.next(10) {
                0 => out.extend(["const".into(), "A".into(), "=".into(), self.g.expr(2)]),
                1 => {
                    out.extend(["data".into(), "x".into(), ":".into(), self.ty()]);
                    let role = self.pick(&["", "given", "partial"]);
                    if !role.is_empty() {
                        out.push(role.into());
                    }
                }
                2 => out.extend([
                    "global".into(),
                    "latent".into(),
                    "m".into(),
                    ":".into(),
                    self.ty(),
                ]),
                3 => out.extend([
                    "param".into(),
                    "w".into(),
                    ":".into(),
                    self.ty(),
                    "=".into(),
                    "normal(0, 0.1)".into(),
                ]),
                4 => out.extend([
                    "@per_member".into(),
                    "net".into(),
                    "f(x:".into(),
                    self.ty(),
                    ")".into(),
                    "->".into(),
                    "(loc: Real,".into(),
                    "scale: Positive)".into(),
                    "=".into(),
                    "mlp(hidden = [H])".into(),
                ]),
                5 => out.extend([
                    "set".into(),
                    "S".into(),
                    ":".into(),
                    self.ty(),
                    "size".into(),
                    "10".into(),
                ]),
                6 | 7 => {
                    out.push(self.pick(&["model", "guide"]).into());
                    out.push("{".into());
                    self.stmts(&mut out, 0);
                    out.push("}".into());
                }
                8 => out.extend(["guide".into(), "exact".into()]),
                _ => {
                    out.push(self.pick(&["train", "meta"]).into());
                    out.push("{".into());
                    for _ in 0..self.g.next(3) {
                        out.extend(["train".into(), "=".into(), self.g.expr(2)]);
                    }
                    out.push("}".into());
                }
            }
        }
        out
    }

    fn text(&mut self) -> String {
        let mut s = String::new();
        // `\u{1}` marks where trivia may also go inside a token (`Set [`, `Cat (K)`).
        let tokens: Vec<String> = self
            .file()
            .iter()
            .flat_map(|t| t.split('\u{1}').map(str::to_string).collect::<Vec<_>>())
            .collect();
        for tok in tokens {
            let trivia = match self.g.next(12) {
                0 => "\n".to_string(),
                1 => "\n\n\n".to_string(),
                2 => "; ".to_string(),
                3 | 4 => {
                    self.comments += 1;
                    format!(" # c{}\n", self.comments)
                }
                5 => {
                    self.comments += 1;
                    format!("\n\n# c{}\n", self.comments)
                }
                _ => " ".to_string(),
            };
            s.push_str(&trivia);
            s.push_str(&tok);
        }
        s
    }
}

#[test]
fn random_files_with_comments_round_trip() {
    let mut f = FileGen {
        g: Gen(11),
        comments: 0,
    };
    for _ in 0..400 {
        let src = f.text();
        check(&src, &src);
    }
}
