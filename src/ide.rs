//! What an editor asks of a spec (`vic lsp`): the diagnostics, the type of the name under
//! the cursor, where it is declared, what may be written there, the formatted text. Pure
//! functions of the source and a byte offset; the protocol lives in the binary. Positions
//! are converted by [`LineIndex`] (LSP counts UTF-16 code units).

use crate::check::CheckOptions;
use crate::diag::Diagnostic;
use crate::driver;
use crate::ir::{self, Program};
use crate::span::Span;
use crate::syntax::ast;

/// Byte offsets of line starts, for conversions to and from (line, UTF-16 column).
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(src: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    /// (line, UTF-16 column), both from 0, of byte `offset` of `src`.
    pub fn position(&self, src: &str, offset: usize) -> (u32, u32) {
        let offset = offset.min(src.len());
        let line = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let start = self.starts[line];
        let col: usize = src
            .get(start..offset)
            .unwrap_or("")
            .chars()
            .map(char::len_utf16)
            .sum();
        (line as u32, col as u32)
    }

    /// The byte offset of (line, UTF-16 column), clamped to the text.
    pub fn offset(&self, src: &str, line: u32, col: u32) -> usize {
        let Some(&start) = self.starts.get(line as usize) else {
            return src.len();
        };
        let mut units = 0usize;
        for (i, c) in src[start..].char_indices() {
            if units >= col as usize || c == '\n' {
                return start + i;
            }
            units += c.len_utf16();
        }
        src.len()
    }
}

/// The diagnostics of a source, as `vic check` reports them.
pub fn diagnostics(src: &str) -> Vec<Diagnostic> {
    driver::front_end(src, &CheckOptions::default()).diagnostics
}

/// The canonical text of a source (`vic fmt`), or `None` when it does not parse.
pub fn format(src: &str) -> Option<String> {
    driver::format(src).ok()
}

/// Markdown about the thing under the cursor, and the span it covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Hover {
    pub markdown: String,
    pub span: Span,
}

/// What can be written at a place.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub label: String,
    pub kind: CompletionKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionKind {
    /// A declared name or a `let`.
    Variable,
    Network,
    Constant,
    Distribution,
    /// An architecture or a built-in function.
    Function,
    /// A `train` or `meta` key.
    Key,
    /// An inference strategy after `@`.
    Strategy,
}

/// A declaration of the file: its name, where the name is written, and what to say about
/// it.
struct Decl {
    name: String,
    span: Span,
    markdown: String,
    kind: CompletionKind,
}

/// A block's `let`s, with the block's extent.
struct Block {
    span: Span,
    locals: Vec<(String, Span, String)>,
}

/// What one source says, indexed for lookups.
struct Index {
    decls: Vec<Decl>,
    blocks: Vec<Block>,
    train: Option<Span>,
    meta: Option<Span>,
}

fn code(s: &str) -> String {
    format!("```vi\n{s}\n```")
}

fn item_text(src: &str, span: Span) -> &str {
    span.range().and_then(|r| src.get(r)).unwrap_or("").trim()
}

impl Index {
    fn new(src: &str) -> Index {
        let mut out = Index {
            decls: Vec::new(),
            blocks: Vec::new(),
            train: None,
            meta: None,
        };
        let Ok(file) = crate::syntax::parse(src) else {
            return out;
        };
        let program = driver::front_end(src, &CheckOptions::default()).program;
        let p = program.as_ref();
        for item in &file.items {
            let text = item_text(src, item.span);
            match &item.kind {
                ast::ItemKind::Const { name, .. } => {
                    let value = p
                        .and_then(|p| p.consts.iter().find(|c| c.name == name.name))
                        .map(|c| format!(" (= {})", c.value))
                        .unwrap_or_default();
                    out.decl(name, text, &value, CompletionKind::Constant);
                }
                ast::ItemKind::Data { name, .. } => {
                    let ty = p
                        .and_then(|p| p.data.iter().find(|d| d.name == name.name))
                        .map(|d| format!("\n\n{}, one value per example", type_words(&d.ty)))
                        .unwrap_or_default();
                    out.decl(name, text, &ty, CompletionKind::Variable);
                }
                ast::ItemKind::Latent { name, .. } => {
                    let ty = p
                        .and_then(|p| p.latents.iter().find(|d| d.name == name.name))
                        .map(|d| {
                            format!(
                                "\n\n{}, {}",
                                type_words(&d.ty),
                                if d.global {
                                    "one copy for the dataset"
                                } else {
                                    "one value per example"
                                }
                            )
                        })
                        .unwrap_or_default();
                    out.decl(name, text, &ty, CompletionKind::Variable);
                }
                ast::ItemKind::Param { name, .. } => {
                    let ty = p
                        .and_then(|p| p.params.iter().find(|d| d.name == name.name))
                        .map(|d| format!("\n\n{}, a learned point estimate", type_words(&d.ty)))
                        .unwrap_or_default();
                    out.decl(name, text, &ty, CompletionKind::Variable);
                }
                ast::ItemKind::Set { name, .. } => {
                    out.decl(
                        name,
                        text,
                        "\n\na context set of further examples of the same member",
                        CompletionKind::Variable,
                    );
                }
                ast::ItemKind::Net(n) => {
                    let about = p
                        .and_then(|p| p.nets.iter().find(|d| d.name == n.name.name))
                        .map(net_words)
                        .unwrap_or_default();
                    out.decl(&n.name, text, &about, CompletionKind::Network);
                }
                ast::ItemKind::Model(b) => out.block(b.span, p.map(|p| &p.model)),
                ast::ItemKind::Guide(ast::GuideBody::Block(b)) => out.block(
                    b.span,
                    p.and_then(|p| match &p.guide {
                        ir::Guide::Amortized(body) => Some(body),
                        _ => None,
                    }),
                ),
                ast::ItemKind::Guide(ast::GuideBody::Exact(_)) => {}
                ast::ItemKind::Train(_) => out.train = Some(item.span),
                ast::ItemKind::Meta(_) => out.meta = Some(item.span),
            }
        }
        out
    }

    /// A declared name: its declaration's text as code, then what the checker knows of it.
    fn decl(&mut self, name: &ast::Ident, text: &str, about: &str, kind: CompletionKind) {
        self.decls.push(Decl {
            name: name.name.clone(),
            span: name.span,
            markdown: format!("{}{about}", code(text)),
            kind,
        });
    }

    fn block(&mut self, span: Span, body: Option<&ir::Body>) {
        let locals = body
            .map(|b| {
                b.locals
                    .iter()
                    .filter(|l| l.name != "_")
                    .map(|l| {
                        let steps = l
                            .steps
                            .map(|s| format!(", a sequence of steps 0..{s}"))
                            .unwrap_or_default();
                        (
                            l.name.clone(),
                            l.span,
                            format!(
                                "{}\n\n{}{steps}",
                                code(&format!("let {} : {}", l.name, l.ty.display())),
                                type_words(&l.ty)
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.blocks.push(Block { span, locals });
    }

    /// The block (model or guide) around `offset`.
    fn block_at(&self, offset: usize) -> Option<&Block> {
        self.blocks
            .iter()
            .find(|b| b.span.range().is_some_and(|r| r.contains(&offset)))
    }

    fn within(span: Option<Span>, offset: usize) -> bool {
        span.and_then(|s| s.range())
            .is_some_and(|r| r.contains(&offset))
    }
}

/// A type in words: `Real[32]: 32 real values`.
fn type_words(ty: &ir::Type) -> String {
    let n = ty.numel();
    let what = match ty.domain {
        ir::Domain::Real => "real",
        ir::Domain::Positive => "positive",
        ir::Domain::Unit => "(0, 1)",
        ir::Domain::Binary => "binary",
        ir::Domain::Count => "count",
        ir::Domain::Simplex => "probability",
        ir::Domain::Cat(_) => "class",
        ir::Domain::Unknown => "unknown",
    };
    let plural = if n == 1 { "value" } else { "values" };
    format!("`{}`: {n} {what} {plural}", ty.display())
}

fn net_words(def: &ir::NetDef) -> String {
    let inputs: Vec<String> = def
        .inputs
        .iter()
        .map(|i| {
            if i.set {
                format!("{}: Set[{}]", i.name, i.ty.display())
            } else {
                format!("{}: {}", i.name, i.ty.display())
            }
        })
        .collect();
    let heads: Vec<String> = def
        .heads
        .iter()
        .map(|h| format!("{}: {}", h.name, h.ty.display()))
        .collect();
    let params = crate::arch::param_count(def);
    let copies = if def.per_member {
        " per training member"
    } else {
        ""
    };
    format!(
        "\n\n`{}({}) -> ({})`, `{}`: {} parameters{copies}",
        def.name,
        inputs.join(", "),
        heads.join(", "),
        def.arch.name(),
        thousands(params)
    )
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The identifier at `offset` (or just before it) and its span.
fn word_at(src: &str, offset: usize) -> Option<(String, Span)> {
    let offset = offset.min(src.len());
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let start = src[..offset]
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word(*c))
        .last()
        .map_or(offset, |(i, _)| i);
    let end = src[offset..]
        .char_indices()
        .find(|(_, c)| !is_word(*c))
        .map_or(src.len(), |(i, _)| offset + i);
    (end > start).then(|| (src[start..end].to_string(), Span::new(start, end)))
}

fn architecture_words(name: &str) -> Option<&'static str> {
    Some(match name {
        "linear" => "`linear(bias = true)`: one dense layer from the concatenated inputs to the heads",
        "mlp" => "`mlp(hidden = [...], act = relu, dropout = 0, norm = none)`: dense layers with the activation between them",
        "conv" => "`conv(channels = [...], kernel = 3, stride = 2, act, hidden = [])`: convolutions over an image input, then dense layers",
        "deconv" => "`deconv(channels = [...], kernel = 4, stride = 2, act, hidden = [])`: dense layers, then transposed convolutions to an image head",
        "gru" => "`gru()`: a GRU cell; the first input is the state",
        "lstm" => "`lstm()`: an LSTM cell; inputs `h`, `c` first, heads `(h, c)`",
        "made" => "`made(hidden = [...], act = relu)`: a masked autoencoder, autoregressive in its first input (IAF steps)",
        "deepsets" => "`deepsets(phi = [...], rho = [], pool = mean, act)`: a permutation-invariant summary of a context set",
        "attend_read" => "`attend_read(grid = N)`: DRAW's Gaussian filterbank read of an image, an N x N grid per channel",
        "attend_write" => "`attend_write(grid = N)`: DRAW's Gaussian filterbank write to an image",
        _ => return None,
    })
}

fn strategy_words(name: &str) -> Option<&'static str> {
    Some(match name {
        "enumerate" => "`@enumerate`: an exact sum over the site's support (discrete sites)",
        "relax" => "`@relax(temperature = 0.5)`: the Concrete / Gumbel-softmax relaxation",
        "reinforce" => "`@reinforce`: the score-function estimator with a learned baseline",
        "refine" => "`@refine(steps = 20, lr = 1.0, through = true)`: semi-amortized refinement (SA-VAE)",
        "random_function" => "`@random_function(inducing = 64, kernel = \"rbf\")`: a Gaussian-process error over the encoder's input",
        "reparameterized" => "`@reparameterized`: a pathwise draw (the default for continuous sites)",
        "per_member" => "`@per_member`: one copy of the network's weights per member of the `meta` family",
        _ => return None,
    })
}

/// What to show for the name under the cursor: its declaration and type, a `let`'s type,
/// a network's signature and parameter count, a distribution's signature.
pub fn hover(src: &str, offset: usize) -> Option<Hover> {
    let (word, span) = word_at(src, offset)?;
    let index = Index::new(src);
    if let Some(b) = index.block_at(offset) {
        if let Some((_, _, md)) = b.locals.iter().find(|(n, _, _)| *n == word) {
            return Some(Hover {
                markdown: md.clone(),
                span,
            });
        }
    }
    if let Some(d) = index.decls.iter().find(|d| d.name == word) {
        return Some(Hover {
            markdown: d.markdown.clone(),
            span,
        });
    }
    let markdown = if let Some(sig) = crate::check::build::dists::signature(&word) {
        code(&sig)
    } else if let Some(a) = architecture_words(&word) {
        a.to_string()
    } else if let Some(s) = strategy_words(&word) {
        s.to_string()
    } else {
        return None;
    };
    Some(Hover { markdown, span })
}

/// Where the name under the cursor is declared: a `let` of the same block, or an item.
pub fn definition(src: &str, offset: usize) -> Option<Span> {
    let (word, _) = word_at(src, offset)?;
    let index = Index::new(src);
    if let Some(b) = index.block_at(offset) {
        if let Some((_, span, _)) = b.locals.iter().find(|(n, _, _)| *n == word) {
            return Some(*span);
        }
    }
    index.decls.iter().find(|d| d.name == word).map(|d| d.span)
}

/// What may be written at `offset`: strategies after `@`, keys in `train` and `meta`,
/// otherwise the file's names (the block's `let`s first), distributions, built-ins and
/// architectures.
pub fn completions(src: &str, offset: usize) -> Vec<Completion> {
    let offset = offset.min(src.len());
    let index = Index::new(src);
    let start = word_at(src, offset).map_or(offset, |(_, s)| {
        s.range().map_or(offset, |r| r.start.min(offset))
    });
    let item = |label: &str, kind, detail: &str| Completion {
        label: label.to_string(),
        kind,
        detail: detail.to_string(),
    };
    if src[..start].ends_with('@') {
        return crate::check::build::dists::STRATEGIES
            .iter()
            .chain(&["per_member"])
            .map(|s| item(s, CompletionKind::Strategy, strategy_words(s).unwrap_or("")))
            .collect();
    }
    if Index::within(index.train, offset) {
        return crate::check::config::TRAIN_KEYS
            .iter()
            .map(|k| item(k, CompletionKind::Key, "train setting"))
            .collect();
    }
    if Index::within(index.meta, offset) {
        return crate::check::config::META_KEYS
            .iter()
            .map(|k| item(k, CompletionKind::Key, "meta setting"))
            .collect();
    }
    let mut out = Vec::new();
    if let Some(b) = index.block_at(offset) {
        for (name, _, _) in &b.locals {
            out.push(item(name, CompletionKind::Variable, "let"));
        }
    }
    for d in &index.decls {
        out.push(item(&d.name, d.kind, ""));
    }
    for d in crate::check::build::dists::DISTS {
        let sig = crate::check::build::dists::signature(d).unwrap_or_default();
        out.push(item(d, CompletionKind::Distribution, &sig));
    }
    for f in crate::check::build::exprs::BUILTINS {
        out.push(item(f, CompletionKind::Function, "built-in"));
    }
    for a in crate::check::build::nets::ARCHS {
        out.push(item(
            a,
            CompletionKind::Function,
            architecture_words(a).unwrap_or("architecture"),
        ));
    }
    out
}

/// The checked program of a source, when it checks (for callers that want more).
pub fn program(src: &str) -> Option<Program> {
    driver::front_end(src, &CheckOptions::default()).program
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SRC: &str = "const D = 4\ndata x : Real[D]\nlatent z : Real[2]\nnet enc(x: Real[D]) -> (loc: Real[2], scale: Positive[2]) = mlp(hidden = [3])\nnet dec(z: Real[2]) -> Real[D] = linear()\nmodel {\n  z ~ Normal(0, 1)\n  x ~ Normal(dec(z), 1)\n}\nguide {\n  let (m, s) = enc(x)\n  z ~ Normal(m, s)\n}\ntrain { epochs = 2 }\n";

    fn at(needle: &str, nth: usize) -> usize {
        SRC.match_indices(needle).nth(nth).unwrap().0 + 1
    }

    #[test]
    fn positions_round_trip_in_utf16() {
        let src = "a\nβ𝛃x\n";
        let li = LineIndex::new(src);
        let x = src.find('x').unwrap();
        // β is one UTF-16 unit, 𝛃 two.
        assert_eq!(li.position(src, x), (1, 3));
        assert_eq!(li.offset(src, 1, 3), x);
        assert_eq!(li.offset(src, 9, 0), src.len());
    }

    #[test]
    fn hover_gives_types_counts_and_signatures() {
        let h = hover(SRC, at("m, s", 0)).unwrap();
        assert!(h.markdown.contains("let m : Real[2]"), "{}", h.markdown);
        let h = hover(SRC, at("enc(x)", 0)).unwrap();
        // 4*3 + 3 + 3*4 + 4 parameters.
        assert!(h.markdown.contains("31 parameters"), "{}", h.markdown);
        let h = hover(SRC, at("Normal(0", 0)).unwrap();
        assert!(h
            .markdown
            .contains("Normal(loc: Real, scale: Positive) -> Real"));
        let h = hover(SRC, at("x ~", 0)).unwrap();
        assert!(h.markdown.contains("4 real values"), "{}", h.markdown);
    }

    #[test]
    fn definitions_lead_to_declarations_and_lets() {
        let d = definition(SRC, at("dec(z)", 0)).unwrap();
        assert_eq!(d.range().unwrap().start, SRC.find("dec(z: Real").unwrap());
        let m = definition(SRC, at("m, s)", 1)).unwrap();
        assert_eq!(m.range().unwrap().start, SRC.find("m, s").unwrap());
    }

    #[test]
    fn completions_fit_the_place() {
        let train = completions(SRC, SRC.find("epochs").unwrap() + 2);
        assert!(train.iter().any(|c| c.label == "optimizer"));
        let guide = completions(SRC, SRC.find("z ~ Normal(m").unwrap());
        assert!(guide.iter().any(|c| c.label == "m"));
        assert!(guide.iter().any(|c| c.label == "Categorical"));
        let src = "model { z ~ Normal(0, 1) @ }";
        let at = completions(src, src.find("@ ").unwrap() + 1);
        assert!(at.iter().any(|c| c.label == "enumerate"));
    }
}
