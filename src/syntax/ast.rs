//! The untyped syntax tree: exactly what the user wrote, every node with its span.
//!
//! Produced by `syntax::parse`, consumed by `check` (to the typed IR) and `fmt`
//! (back to canonical text). Serializable so `vic compile --emit ast` can print it.

use crate::span::Span;
use serde::{Deserialize, Serialize};

/// A name as written, with its span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole `.vi` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ItemKind {
    /// `const NAME = int_expr`
    Const { name: Ident, value: Expr },
    /// `data NAME : Type [given | partial]`
    Data {
        name: Ident,
        ty: TypeExpr,
        role: DataRole,
    },
    /// `[global] latent NAME : Type`
    Latent {
        name: Ident,
        ty: TypeExpr,
        /// Span of the `global` keyword, when present.
        global: Option<Span>,
    },
    /// `param NAME : Type [= init]`
    Param {
        name: Ident,
        ty: TypeExpr,
        init: Option<Expr>,
    },
    /// `[@annot]* net NAME(ARG: Type, ...) -> OUT = ARCH(kw = value, ...)`
    Net(NetDecl),
    /// `set NAME : Type size N`
    Set {
        name: Ident,
        ty: TypeExpr,
        size: Expr,
    },
    /// `model { ... }`
    Model(Block),
    /// `guide { ... }` or `guide exact`
    Guide(GuideBody),
    /// `train { key = value ... }`
    Train(Vec<Entry>),
    /// `meta { key = value ... }`
    Meta(Vec<Entry>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataRole {
    /// Explained by the model (observed exactly once).
    Observed,
    /// `given`: a conditioning input, never left of `~`.
    Given,
    /// `partial`: observed for some examples, sampled by the guide for the rest.
    Partial,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetDecl {
    /// `@per_member` and any other annotation, as written.
    pub annotations: Vec<Ident>,
    pub name: Ident,
    pub inputs: Vec<Binding>,
    pub output: NetOutput,
    /// The architecture call, e.g. `mlp(hidden = [H, H], act = relu)`.
    pub arch: Call,
}

/// `NAME: Type`, used for network inputs and named heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub name: Ident,
    pub ty: TypeExpr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum NetOutput {
    /// `-> Real[D]`
    Single(TypeExpr),
    /// `-> (loc: Real[Z], scale: Positive[Z])`
    Heads(Vec<Binding>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TypeExprKind {
    /// `Real`, `Real[D]`, `Cat(K)`, `Cat(K)[T]`: a domain name, the argument of
    /// `Cat(K)` if any, and the shape if any (`None` when no brackets were written).
    Domain {
        name: Ident,
        arg: Option<Box<Expr>>,
        shape: Option<Vec<Expr>>,
    },
    /// `Set[T]` (network signatures only).
    Set(Box<TypeExpr>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GuideBody {
    /// `guide exact`; the span is that of the `exact` keyword.
    Exact(Span),
    Block(Block),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    /// From `{` to `}`.
    pub span: Span,
}

/// `key = value` inside `train { }` or `meta { }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StmtKind {
    /// `let a = e`, `let h[t] = e`, `let (a, b) = net(...)`, `let (h[t], c[t]) = cell(...)`.
    Let {
        targets: Vec<Target>,
        /// Whether the parenthesized tuple form was written (even with one target).
        tuple: bool,
        value: Expr,
    },
    /// `x ~ Dist(args) [|> flow(args)]* [@strategy(args)]`
    Sample {
        target: Target,
        dist: Call,
        flows: Vec<Call>,
        strategy: Option<Strategy>,
    },
    /// `for t in a:b { ... }`
    For {
        var: Ident,
        from: Expr,
        to: Expr,
        body: Block,
    },
}

/// The left side of `let` or `~`: a name, optionally indexed by a time step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub name: Ident,
    pub index: Option<Expr>,
    pub span: Span,
}

/// `@name` or `@name(args)` after a guide site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Strategy {
    pub name: Ident,
    /// `None` when written without parentheses.
    pub args: Option<Vec<Arg>>,
    pub span: Span,
}

/// `name(args)` with no space before `(`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub callee: Ident,
    pub args: Vec<Arg>,
    pub span: Span,
}

/// A positional (`name == None`) or keyword argument.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// A numeric literal: its value and its text as written (`1e-3`), kept for `fmt`.
    Number {
        value: f64,
        text: String,
    },
    /// A string literal, unescaped.
    Str(String),
    Name(Ident),
    Call(Call),
    /// `e.head`
    Field {
        base: Box<Expr>,
        field: Ident,
    },
    /// `e[i]` (or `e[i, j]`)
    Index {
        base: Box<Expr>,
        indices: Vec<Expr>,
    },
    /// `-e`
    Neg(Box<Expr>),
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `[a, b, c]`
    List(Vec<Expr>),
    /// `a:b` or `a:b:step` (loop bounds, `meta` families).
    Range {
        from: Box<Expr>,
        to: Box<Expr>,
        step: Option<Box<Expr>>,
    },
}
