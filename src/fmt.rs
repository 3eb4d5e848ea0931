//! `vic fmt`: print an AST back in one canonical layout, keeping comments.
//!
//! The layout: one item, statement or entry per line; blocks indented by two spaces; a
//! blank line around multi-line items and wherever the source had one or more blank lines
//! (at most one is kept); single spaces around `=`, `~`, `->`, `|>` and binary operators;
//! `, ` between arguments; numbers as written; the fewest parentheses that keep the tree.
//!
//! Comments are not in the AST, so they are re-attached by position: a comment alone on
//! its line is printed on its own line before the next thing that follows it (or before the
//! `}` of its block, or at the end of the file); a comment after code stays at the end of
//! that line (two spaces after the code; comments ending consecutive lines line up). A
//! comment inside a construct printed on one line moves just above it.

use crate::syntax::ast::{
    Arg, BinOp, Binding, Block, Call, Entry, Expr, ExprKind, File, GuideBody, Item, ItemKind,
    NetDecl, NetOutput, Stmt, StmtKind, Strategy, Target, TypeExpr, TypeExprKind,
};
use crate::syntax::Comment;

const INDENT: &str = "  ";

/// Format a parsed file; `comments` are those of the same source.
pub fn format_file(file: &File, comments: &[Comment], src: &str) -> String {
    let mut comments: Vec<&Comment> = comments.iter().collect();
    comments.sort_by_key(|c| c.span.range().map_or(usize::MAX, |r| r.start));
    let mut p = Printer {
        src,
        comments,
        next: 0,
        lines: Vec::new(),
        last_end: 0,
        at_block_start: true,
        force_blank: false,
    };
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 && (is_multiline(item) || is_multiline(&file.items[i - 1])) {
            p.force_blank = true;
        }
        p.item(item);
    }
    p.comments_before(usize::MAX, 0);
    render(&p.lines)
}

/// Whether an item prints as a block of several lines.
fn is_multiline(item: &Item) -> bool {
    matches!(
        &item.kind,
        ItemKind::Model(_)
            | ItemKind::Train(_)
            | ItemKind::Meta(_)
            | ItemKind::Guide(GuideBody::Block(_))
    )
}

fn start_of(span: crate::span::Span) -> usize {
    span.range().map_or(0, |r| r.start)
}

fn end_of(span: crate::span::Span) -> usize {
    span.range().map_or(0, |r| r.end)
}

/// Whether the text between two things holds an empty line.
fn has_blank_line(gap: &str) -> bool {
    let lines: Vec<&str> = gap.split('\n').collect();
    lines.len() >= 3
        && lines[1..lines.len() - 1]
            .iter()
            .any(|l| l.trim().is_empty())
}

/// One output line: code, and the comment that ends it.
#[derive(Default)]
struct Line {
    code: String,
    comment: Option<String>,
}

/// The lines as text; trailing comments on consecutive lines line up.
fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        // A run of consecutive lines that end in comments.
        let mut j = i;
        while j < lines.len() && lines[j].comment.is_some() {
            j += 1;
        }
        if j == i {
            out.push_str(&lines[i].code);
            out.push('\n');
            i += 1;
            continue;
        }
        let width = lines[i..j]
            .iter()
            .map(|l| l.code.chars().count())
            .max()
            .unwrap_or(0);
        for line in &lines[i..j] {
            let pad = width - line.code.chars().count();
            out.push_str(&line.code);
            out.push_str(&" ".repeat(pad + 2));
            out.push_str(line.comment.as_deref().unwrap_or(""));
            out.push('\n');
        }
        i = j;
    }
    out
}

struct Printer<'a> {
    src: &'a str,
    /// All comments, by position; `next` is the first not yet printed.
    comments: Vec<&'a Comment>,
    next: usize,
    lines: Vec<Line>,
    /// The source offset just after the last thing printed.
    last_end: usize,
    /// Right after a `{` line or at the top of the file: no blank line here.
    at_block_start: bool,
    /// A blank line is due before the next thing printed.
    force_blank: bool,
}

impl Printer<'_> {
    /// A blank line before a thing starting at `start`, where one is due.
    fn blank_if_needed(&mut self, start: usize) {
        let gap = self.src.get(self.last_end..start).unwrap_or("");
        if !self.at_block_start && (self.force_blank || has_blank_line(gap)) {
            self.lines.push(Line::default());
        }
        self.force_blank = false;
        self.at_block_start = false;
    }

    fn line(&mut self, indent: usize, text: &str) {
        self.lines.push(Line {
            code: format!("{}{text}", INDENT.repeat(indent)),
            comment: None,
        });
    }

    /// Print, each on its own line, the comments that start before `upto`.
    fn comments_before(&mut self, upto: usize, indent: usize) {
        while let Some(c) = self.comments.get(self.next).copied() {
            let start = start_of(c.span);
            if start >= upto {
                break;
            }
            self.blank_if_needed(start);
            self.line(indent, c.text.trim_end());
            self.last_end = end_of(c.span);
            self.next += 1;
        }
    }

    /// Append the comment that follows `end` on the same line, if any.
    fn trailing(&mut self, end: usize) {
        let Some(c) = self.comments.get(self.next).copied() else {
            return;
        };
        let start = start_of(c.span);
        let same_line = self
            .src
            .get(end..start)
            .is_some_and(|gap| gap.chars().all(|ch| matches!(ch, ' ' | '\t' | '\r' | ';')));
        if same_line {
            if let Some(line) = self.lines.last_mut() {
                line.comment = Some(c.text.trim_end().to_string());
            }
            self.last_end = end_of(c.span);
            self.next += 1;
        }
    }

    /// A construct printed on one line, from source bytes `start..end`.
    fn unit(&mut self, indent: usize, start: usize, end: usize, text: &str) {
        self.comments_before(end, indent);
        self.blank_if_needed(start);
        self.line(indent, text);
        self.last_end = end;
        self.trailing(end);
    }

    /// The first line of a block, `header {`, whose `{` is at `brace`.
    fn open(&mut self, indent: usize, start: usize, brace: usize, header: &str) {
        self.comments_before(brace, indent);
        self.blank_if_needed(start);
        self.line(indent, &format!("{header} {{"));
        self.last_end = brace + 1;
        self.trailing(brace + 1);
        self.at_block_start = true;
    }

    /// The `}` at `brace`, after the comments that end the block.
    fn close(&mut self, indent: usize, brace: usize) {
        self.comments_before(brace, indent + 1);
        self.line(indent, "}");
        self.at_block_start = false;
        self.last_end = brace + 1;
        self.trailing(brace + 1);
    }

    /// Whether no comment sits between the braces at `open` and `close`.
    fn empty_inside(&self, open: usize, close: usize) -> bool {
        !self.comments[self.next..]
            .iter()
            .map(|c| start_of(c.span))
            .take_while(|&s| s < close)
            .any(|s| s > open)
    }

    fn item(&mut self, item: &Item) {
        let (start, end) = (start_of(item.span), end_of(item.span));
        match &item.kind {
            ItemKind::Model(block) => self.block_item(start, "model", block),
            ItemKind::Guide(GuideBody::Block(block)) => self.block_item(start, "guide", block),
            ItemKind::Train(entries) => self.entries_item(start, end, "train", entries),
            ItemKind::Meta(entries) => self.entries_item(start, end, "meta", entries),
            _ => {
                let text = item_line(item);
                self.unit(0, start, end, &text);
            }
        }
    }

    fn block_item(&mut self, start: usize, keyword: &str, block: &Block) {
        self.block(0, start, keyword, block);
    }

    /// `header { stmts }` at `indent`.
    fn block(&mut self, indent: usize, start: usize, header: &str, block: &Block) {
        let (open, close) = (start_of(block.span), end_of(block.span).saturating_sub(1));
        if block.stmts.is_empty() && self.empty_inside(open, close) {
            self.unit(indent, start, close + 1, &format!("{header} {{}}"));
            return;
        }
        self.open(indent, start, open, header);
        for stmt in &block.stmts {
            self.stmt(indent + 1, stmt);
        }
        self.close(indent, close);
    }

    fn entries_item(&mut self, start: usize, end: usize, keyword: &str, entries: &[Entry]) {
        let close = end.saturating_sub(1);
        let open = self.brace_after(start + keyword.len()).unwrap_or(start);
        if entries.is_empty() && self.empty_inside(open, close) {
            self.unit(0, start, end, &format!("{keyword} {{}}"));
            return;
        }
        self.open(0, start, open, keyword);
        for e in entries {
            let text = format!("{} = {}", e.key.name, expr(&e.value));
            self.unit(1, start_of(e.span), end_of(e.span), &text);
        }
        self.close(0, close);
    }

    /// The offset of the first `{` at or after `from`, skipping white space and comments.
    fn brace_after(&self, from: usize) -> Option<usize> {
        let bytes = self.src.as_bytes();
        let mut i = from;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => return Some(i),
                b'#' => i = self.src[i..].find('\n').map_or(bytes.len(), |n| i + n),
                _ => i += 1,
            }
        }
        None
    }

    fn stmt(&mut self, indent: usize, stmt: &Stmt) {
        let (start, end) = (start_of(stmt.span), end_of(stmt.span));
        match &stmt.kind {
            StmtKind::For {
                var,
                from,
                to,
                body,
            } => {
                let header = format!("for {} in {}:{}", var.name, expr(from), expr(to));
                self.block(indent, start, &header, body);
            }
            _ => {
                let text = stmt_line(stmt);
                self.unit(indent, start, end, &text);
            }
        }
    }
}

// ------------------------------------------------------------------ one-line forms

fn item_line(item: &Item) -> String {
    match &item.kind {
        ItemKind::Const { name, value } => format!("const {} = {}", name.name, expr(value)),
        ItemKind::Data { name, ty, role } => {
            let role = match role {
                crate::syntax::ast::DataRole::Observed => "",
                crate::syntax::ast::DataRole::Given => " given",
                crate::syntax::ast::DataRole::Partial => " partial",
            };
            format!("data {} : {}{role}", name.name, type_expr(ty))
        }
        ItemKind::Latent { name, ty, global } => {
            let global = if global.is_some() { "global " } else { "" };
            format!("{global}latent {} : {}", name.name, type_expr(ty))
        }
        ItemKind::Param { name, ty, init } => {
            let init = init
                .as_ref()
                .map(|e| format!(" = {}", expr(e)))
                .unwrap_or_default();
            format!("param {} : {}{init}", name.name, type_expr(ty))
        }
        ItemKind::Net(net) => net_line(net),
        ItemKind::Set { name, ty, size } => {
            format!("set {} : {} size {}", name.name, type_expr(ty), expr(size))
        }
        ItemKind::Guide(GuideBody::Exact(_)) => "guide exact".to_string(),
        // Blocks are printed line by line by the printer; these are for completeness.
        ItemKind::Model(_) => "model {}".to_string(),
        ItemKind::Guide(GuideBody::Block(_)) => "guide {}".to_string(),
        ItemKind::Train(_) => "train {}".to_string(),
        ItemKind::Meta(_) => "meta {}".to_string(),
    }
}

fn net_line(net: &NetDecl) -> String {
    let mut s = String::new();
    for a in &net.annotations {
        s.push('@');
        s.push_str(&a.name);
        s.push(' ');
    }
    let inputs: Vec<String> = net.inputs.iter().map(binding).collect();
    let output = match &net.output {
        NetOutput::Single(ty) => type_expr(ty),
        NetOutput::Heads(heads) => {
            let heads: Vec<String> = heads.iter().map(binding).collect();
            format!("({})", heads.join(", "))
        }
    };
    s.push_str(&format!(
        "net {}({}) -> {} = {}",
        net.name.name,
        inputs.join(", "),
        output,
        call(&net.arch)
    ));
    s
}

fn binding(b: &Binding) -> String {
    format!("{}: {}", b.name.name, type_expr(&b.ty))
}

fn type_expr(t: &TypeExpr) -> String {
    match &t.kind {
        TypeExprKind::Set(inner) => format!("Set[{}]", type_expr(inner)),
        TypeExprKind::Domain { name, arg, shape } => {
            let mut s = name.name.clone();
            if let Some(arg) = arg {
                s.push_str(&format!("({})", expr(arg)));
            }
            if let Some(shape) = shape {
                s.push_str(&format!("[{}]", exprs(shape)));
            }
            s
        }
    }
}

fn stmt_line(stmt: &Stmt) -> String {
    match &stmt.kind {
        StmtKind::Let {
            targets,
            tuple,
            value,
        } => {
            let targets: Vec<String> = targets.iter().map(target).collect();
            if *tuple {
                format!("let ({}) = {}", targets.join(", "), expr(value))
            } else {
                format!("let {} = {}", targets.join(", "), expr(value))
            }
        }
        StmtKind::Sample {
            target: t,
            dist,
            flows,
            strategy: strat,
        } => {
            let mut s = format!("{} ~ {}", target(t), call(dist));
            for f in flows {
                s.push_str(" |> ");
                s.push_str(&call(f));
            }
            if let Some(st) = strat {
                s.push(' ');
                s.push_str(&strategy(st));
            }
            s
        }
        StmtKind::For { var, from, to, .. } => {
            format!("for {} in {}:{} {{}}", var.name, expr(from), expr(to))
        }
    }
}

fn target(t: &Target) -> String {
    match &t.index {
        Some(i) => format!("{}[{}]", t.name.name, expr(i)),
        None => t.name.name.clone(),
    }
}

fn strategy(s: &Strategy) -> String {
    match &s.args {
        Some(args) => format!("@{}({})", s.name.name, self::args(args)),
        None => format!("@{}", s.name.name),
    }
}

// ------------------------------------------------------------------ expressions

/// Binding strength: how tightly a form holds its operands.
const SUM: u8 = 1;
const PRODUCT: u8 = 2;
const PREFIX: u8 = 3;
const POSTFIX: u8 = 4;

fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Range { .. } => 0,
        ExprKind::Binary { op, .. } => match op {
            BinOp::Add | BinOp::Sub => SUM,
            BinOp::Mul | BinOp::Div => PRODUCT,
        },
        ExprKind::Neg(_) => PREFIX,
        _ => POSTFIX,
    }
}

/// An expression in canonical form.
pub fn expr(e: &Expr) -> String {
    expr_at(e, 0)
}

/// `e`, in parentheses if it binds less tightly than `min`.
fn expr_at(e: &Expr, min: u8) -> String {
    let s = match &e.kind {
        ExprKind::Number { text, .. } => text.clone(),
        ExprKind::Str(s) => string(s),
        ExprKind::Name(n) => n.name.clone(),
        ExprKind::Call(c) => call(c),
        // `(1).x`, not `1.x`, which would read as a malformed number.
        ExprKind::Field { base, field } if matches!(base.kind, ExprKind::Number { .. }) => {
            format!("({}).{}", expr(base), field.name)
        }
        ExprKind::Field { base, field } => format!("{}.{}", expr_at(base, POSTFIX), field.name),
        ExprKind::Index { base, indices } => {
            format!("{}[{}]", expr_at(base, POSTFIX), exprs(indices))
        }
        ExprKind::Neg(inner) => format!("-{}", expr_at(inner, PREFIX)),
        ExprKind::Binary { op, lhs, rhs } => {
            let p = precedence(e);
            // Left-associative: a right operand of the same strength keeps its parentheses.
            format!(
                "{} {} {}",
                expr_at(lhs, p),
                op.symbol(),
                expr_at(rhs, p + 1)
            )
        }
        ExprKind::List(items) => format!("[{}]", exprs(items)),
        ExprKind::Range { from, to, step } => {
            let mut s = format!("{}:{}", expr_at(from, SUM), expr_at(to, SUM));
            if let Some(step) = step {
                s.push(':');
                s.push_str(&expr_at(step, SUM));
            }
            s
        }
    };
    if precedence(e) < min {
        format!("({s})")
    } else {
        s
    }
}

fn exprs(es: &[Expr]) -> String {
    es.iter().map(expr).collect::<Vec<_>>().join(", ")
}

fn call(c: &Call) -> String {
    format!("{}({})", c.callee.name, args(&c.args))
}

fn args(args: &[Arg]) -> String {
    args.iter()
        .map(|a| match &a.name {
            Some(n) => format!("{} = {}", n.name, expr(&a.value)),
            None => expr(&a.value),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A string literal with `"`, `\`, newlines and tabs escaped.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
