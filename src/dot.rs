//! `vic compile --emit dot`: the model as a Graphviz graph, in the spirit of Pyro's
//! `render_model`.
//!
//! Nodes: latent variables are white ellipses; observed data grey filled ellipses;
//! `partial` data grey dashed ellipses; `given` data grey boxes; context sets grey boxes
//! with their size; `param`s small plain boxes; networks rounded boxes with their
//! architecture. Per-example nodes (data, non-global latents, sets) sit in a plate
//! `cluster_N` labelled `N`; global latents, params and networks sit outside it. A
//! variable sampled step by step in a `model` loop sits in a nested plate `t = 1..T`.
//!
//! Edges: from every value a distribution's arguments depend on (through `let`s) to the
//! variable; a network call in between draws `argument sources → network → variable`.
//! Edges from `model` are solid; edges from `guide` are dashed and blue, over the same
//! nodes. A network feeding itself (a recurrent state) draws no self-loop; a variable
//! that depends on its own previous step does. The output is deterministic.

use crate::ir::walk::{self, Dataflow, Scope, Visitor};
use crate::ir::{
    Body, DataRole, ExactPosterior, Expr, Guide, LetTarget, Program, Ref, Site, SiteVar,
};
use crate::span::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Data(usize),
    Latent(usize),
    Param(usize),
    Set(usize),
    Net(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Block {
    Model,
    Guide,
}

fn var_node(v: SiteVar) -> Node {
    match v {
        SiteVar::Latent(i) => Node::Latent(i),
        SiteVar::Data(i) => Node::Data(i),
    }
}

/// Quote a string as a dot ID.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Graph<'a> {
    program: &'a Program,
    edges: BTreeSet<(Node, Node, Block)>,
    locals: Vec<BTreeSet<Node>>,
    block: Block,
}

impl Graph<'_> {
    fn id(&self, n: Node) -> String {
        let p = self.program;
        let (kind, i, name) = match n {
            Node::Data(i) => ("data", i, p.data.get(i).map(|d| d.name.as_str())),
            Node::Latent(i) => ("latent", i, p.latents.get(i).map(|d| d.name.as_str())),
            Node::Param(i) => ("param", i, p.params.get(i).map(|d| d.name.as_str())),
            Node::Set(i) => ("set", i, p.sets.get(i).map(|d| d.name.as_str())),
            Node::Net(i) => ("net", i, p.nets.get(i).map(|d| d.name.as_str())),
        };
        match name {
            Some(name) => quote(&format!("{kind}:{name}")),
            None => quote(&format!("{kind}:#{i}")),
        }
    }

    fn edge(&mut self, from: Node, to: Node) {
        if from == to && matches!(from, Node::Net(_)) {
            return;
        }
        self.edges.insert((from, to, self.block));
    }

    fn body(&mut self, body: &Body, block: Block) {
        self.block = block;
        self.locals = vec![BTreeSet::new(); body.locals.len()];
        // Loop-carried states make dependencies flow backwards: iterate to a fixpoint.
        for _ in 0..64 {
            let before = self.locals.clone();
            walk::walk_body(self, body);
            if before == self.locals {
                break;
            }
        }
    }
}

impl<'ir> Visitor<'ir> for Graph<'_> {
    fn let_stmt(&mut self, targets: &'ir [LetTarget], value: &'ir Expr, _: Span, _: &Scope<'ir>) {
        let deps = walk::flow(self, value);
        for t in targets {
            if let Some(slot) = self.locals.get_mut(t.local) {
                slot.extend(deps.iter().copied());
            }
        }
    }

    fn site(&mut self, site: &'ir Site, _: &Scope<'ir>) {
        let to = var_node(site.var);
        let mut deps = walk::flow_dist(self, &site.dist);
        for (net, _, f) in walk::flow_nets(site) {
            for e in &f.context {
                for d in walk::flow(self, e) {
                    self.edge(d, Node::Net(net));
                }
            }
            deps.insert(Node::Net(net));
        }
        for d in deps {
            self.edge(d, to);
        }
    }
}

/// What an expression depends on: the variables, params and sets it reads (through
/// `let`s), and the networks it calls, which draw edges from their arguments' sources.
impl Dataflow for Graph<'_> {
    type Fact = BTreeSet<Node>;

    fn join(&mut self, into: &mut BTreeSet<Node>, other: BTreeSet<Node>) {
        into.extend(other)
    }

    fn reference(&mut self, r: Ref, _: &Expr) -> BTreeSet<Node> {
        match r {
            Ref::Data(i) => BTreeSet::from([Node::Data(i)]),
            Ref::Latent(i) => BTreeSet::from([Node::Latent(i)]),
            Ref::Param(i) => BTreeSet::from([Node::Param(i)]),
            Ref::Set(i) => BTreeSet::from([Node::Set(i)]),
            Ref::Local(l) => self.locals.get(l).cloned().unwrap_or_default(),
            Ref::LoopVar(_) => BTreeSet::new(),
        }
    }

    fn call(&mut self, net: usize, _: &[Expr], joined: BTreeSet<Node>, _: &Expr) -> BTreeSet<Node> {
        for d in joined {
            self.edge(d, Node::Net(net));
        }
        BTreeSet::from([Node::Net(net)])
    }
}

/// The model (and guide) of a checked program as a Graphviz digraph.
pub fn render(program: &Program) -> String {
    let mut g = Graph {
        program,
        edges: BTreeSet::new(),
        locals: Vec::new(),
        block: Block::Model,
    };
    g.body(&program.model, Block::Model);
    if let Guide::Amortized(b) = &program.guide {
        g.body(b, Block::Guide);
    }

    // The model loop each stepped variable lives in.
    let mut plate_of: BTreeMap<Node, usize> = BTreeMap::new();
    crate::ir::walk::for_each_site(&program.model, |site, _| {
        if let Some(l) = site.step.and_then(|s| s.loop_id) {
            plate_of.entry(var_node(site.var)).or_insert(l);
        }
    });

    let mut out = String::new();
    let _ = writeln!(out, "digraph \"vic\" {{");
    let _ = writeln!(out, "  graph [fontname=\"Helvetica\", newrank=true];");
    let _ = writeln!(out, "  node [fontname=\"Helvetica\"];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\"];");
    if let Guide::Exact { posterior, .. } = &program.guide {
        let what = match posterior {
            ExactPosterior::LinearGaussian => "linear-Gaussian",
            ExactPosterior::Enumerate => "enumerated",
            ExactPosterior::EnumerateLinearGaussian => "enumerated, then linear-Gaussian",
        };
        let _ = writeln!(
            out,
            "  label={}; labelloc=b;",
            quote(&format!("guide exact ({what} posterior)"))
        );
    }

    // Outside the example plate: params, networks, global latents.
    for (i, p) in program.params.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {} [label={}, shape=box, fontsize=10, width=0.3, height=0.2];",
            g.id(Node::Param(i)),
            quote(&format!("{}\n{}", p.name, p.ty.display()))
        );
    }
    for (i, n) in program.nets.iter().enumerate() {
        let mut label = format!("{}\n{}", n.name, n.arch.name());
        if n.per_member {
            label.push_str(" @per_member");
        }
        let _ = writeln!(
            out,
            "  {} [label={}, shape=box, style=rounded];",
            g.id(Node::Net(i)),
            quote(&label)
        );
    }
    for (i, l) in program.latents.iter().enumerate() {
        if l.global {
            let _ = writeln!(
                out,
                "  {} [label={}, shape=ellipse];",
                g.id(Node::Latent(i)),
                quote(&format!("{}\n{} (global)", l.name, l.ty.display()))
            );
        }
    }

    // The example plate, with a nested plate per model loop.
    let mut per_example: Vec<(Node, String)> = Vec::new();
    // A stepped variable is drawn inside its loop plate with the type of one step.
    let ty_in_plate = |node: Node, ty: &crate::ir::Type| -> String {
        match (plate_of.contains_key(&node), ty.shape.split_first()) {
            (true, Some((_, rest))) => crate::ir::Type::new(ty.domain, rest.to_vec()).display(),
            _ => ty.display(),
        }
    };
    for (i, d) in program.data.iter().enumerate() {
        let (shape, style, note) = match d.role {
            DataRole::Observed => ("ellipse", "filled", ""),
            DataRole::Partial => ("ellipse", "\"filled,dashed\"", " (partial)"),
            DataRole::Given => ("box", "filled", " (given)"),
        };
        per_example.push((
            Node::Data(i),
            format!(
                "label={}, shape={shape}, style={style}, fillcolor=lightgrey",
                quote(&format!(
                    "{}\n{}{note}",
                    d.name,
                    ty_in_plate(Node::Data(i), &d.ty)
                ))
            ),
        ));
    }
    for (i, l) in program.latents.iter().enumerate() {
        if !l.global {
            per_example.push((
                Node::Latent(i),
                format!(
                    "label={}, shape=ellipse",
                    quote(&format!(
                        "{}\n{}",
                        l.name,
                        ty_in_plate(Node::Latent(i), &l.ty)
                    ))
                ),
            ));
        }
    }
    for (i, s) in program.sets.iter().enumerate() {
        per_example.push((
            Node::Set(i),
            format!(
                "label={}, shape=box, style=filled, fillcolor=lightgrey",
                quote(&format!(
                    "{}\nSet[{}] size {}",
                    s.name,
                    s.ty.display(),
                    s.size
                ))
            ),
        ));
    }
    let _ = writeln!(out, "  subgraph \"cluster_N\" {{");
    let _ = writeln!(
        out,
        "    label=\"N\"; labeljust=r; labelloc=b; style=rounded;"
    );
    for (node, attrs) in per_example
        .iter()
        .filter(|(n, _)| !plate_of.contains_key(n))
    {
        let _ = writeln!(out, "    {} [{attrs}];", g.id(*node));
    }
    for (l, lp) in program.model.loops.iter().enumerate() {
        let inside: Vec<&(Node, String)> = per_example
            .iter()
            .filter(|(n, _)| plate_of.get(n) == Some(&l))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let _ = writeln!(out, "    subgraph \"cluster_loop_{l}\" {{");
        let _ = writeln!(
            out,
            "      label={}; labeljust=r; labelloc=b; style=rounded;",
            quote(&format!(
                "{} = {}..{}",
                lp.var,
                lp.from,
                loop_bound(program, lp.to)
            ))
        );
        for (node, attrs) in inside {
            let _ = writeln!(out, "      {} [{attrs}];", g.id(*node));
        }
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "  }}");

    for (from, to, block) in &g.edges {
        let style = match block {
            Block::Model => "",
            Block::Guide => " [style=dashed, color=\"#1f5fbf\"]",
        };
        let _ = writeln!(out, "  {} -> {}{style};", g.id(*from), g.id(*to));
    }
    out.push_str("}\n");
    out
}

/// A loop's upper bound, by its const's name when exactly one const has that value.
fn loop_bound(program: &Program, to: usize) -> String {
    let mut named = program.consts.iter().filter(|c| c.value == to);
    match (named.next(), named.next()) {
        (Some(c), None) => c.name.clone(),
        _ => to.to_string(),
    }
}

#[cfg(test)]
mod tests_support {
    use std::collections::BTreeSet;

    /// Structural validity: balanced braces outside quotes, every ID quoted, every edge
    /// endpoint declared as a node. Returns the declared nodes and the edges.
    pub fn validate(dot: &str) -> (BTreeSet<String>, Vec<(String, String, String)>) {
        let (mut depth, mut in_q, mut esc) = (0i64, false, false);
        for c in dot.chars() {
            if in_q {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_q = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_q = true,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    assert!(depth >= 0, "unbalanced braces:\n{dot}");
                }
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unbalanced braces:\n{dot}");
        assert!(!in_q, "unterminated quote");
        assert!(dot.starts_with("digraph "));
        let mut nodes = BTreeSet::new();
        let mut edges = Vec::new();
        for line in dot.lines().map(str::trim) {
            if let Some((lhs, rest)) = line.split_once(" -> ") {
                assert!(
                    lhs.starts_with('"') && lhs.ends_with('"'),
                    "unquoted: {line}"
                );
                let (rhs, attrs) = rest.split_once([' ', ';']).unwrap_or((rest, ""));
                assert!(
                    rhs.starts_with('"') && rhs.ends_with('"'),
                    "unquoted: {line}"
                );
                assert!(line.ends_with(';'));
                edges.push((lhs.to_string(), rhs.to_string(), attrs.to_string()));
            } else if line.starts_with('"') {
                let (id, attrs) = line.split_once(" [").unwrap_or((line, ""));
                assert!(id.ends_with('"'), "unquoted node: {line}");
                assert!(attrs.ends_with("];"), "node line: {line}");
                nodes.insert(id.to_string());
            }
        }
        for (a, b, _) in &edges {
            assert!(nodes.contains(a), "undeclared {a}\n{dot}");
            assert!(nodes.contains(b), "undeclared {b}\n{dot}");
        }
        (nodes, edges)
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::validate;
    use super::*;
    use crate::arch::testkit::*;
    use crate::ir::*;
    use crate::span::Span;

    fn has_edge(edges: &[(String, String, String)], a: &str, b: &str, dashed: bool) -> bool {
        edges.iter().any(|(x, y, attrs)| {
            x == &format!("\"{a}\"")
                && y == &format!("\"{b}\"")
                && attrs.contains("dashed") == dashed
        })
    }

    #[test]
    fn vae_graph() {
        let dot = render(&vae());
        let (nodes, edges) = validate(&dot);
        assert_eq!(nodes.len(), 4);
        assert!(has_edge(&edges, "latent:z", "net:decoder", false));
        assert!(has_edge(&edges, "net:decoder", "data:x", false));
        assert!(has_edge(&edges, "data:x", "net:encoder", true));
        assert!(has_edge(&edges, "net:encoder", "latent:z", true));
        assert_eq!(edges.len(), 4);
        // x and z inside the example plate, the networks outside it.
        let plate = &dot[dot.find("cluster_N").unwrap_or(0)..];
        assert!(plate.find("\"data:x\" [") < plate.find("  }"));
        assert!(dot.find("\"net:encoder\" [") < dot.find("cluster_N"));
        assert!(dot.contains("fillcolor=lightgrey"));
        assert_eq!(dot, render(&vae()), "deterministic");
    }

    /// `h[0] = zeros; for t in 1:T { z[t] ~ Normal(prior(h[t-1]), s); h[t] = cell(h[t-1], z[t]) }`
    /// and `x ~ Normal(out(h[T]), noise)`, with a global `theta` and a given `c`.
    fn rnn() -> Program {
        let mut p = P::new();
        p.0.consts.push(ConstDef {
            name: "T".into(),
            value: 5,
            overridden: false,
            span: Span::Artificial,
        });
        p.data("x", real(&[3]), DataRole::Observed);
        p.data("c", cat(4, &[]), DataRole::Given);
        let z = p.latent("z", real(&[5, 2]), false);
        let theta = p.latent("theta", real(&[]), true);
        p.param("noise", pos(&[3]));
        let prior = p.net(
            "prior",
            &[("h", real(&[8]))],
            &[("prior", real(&[2]))],
            Arch::Linear { bias: true },
        );
        let cell = p.net(
            "cell",
            &[("h", real(&[8])), ("z", real(&[2]))],
            &[("cell", real(&[8]))],
            Arch::Gru,
        );
        let outn = p.net(
            "out",
            &[("h", real(&[8])), ("c", cat(4, &[]))],
            &[("out", real(&[3]))],
            Arch::Linear { bias: true },
        );
        let step = |e: Expr, offset: i64| Expr {
            kind: ExprKind::Step {
                base: Box::new(e),
                step: Step {
                    loop_id: Some(0),
                    offset,
                },
            },
            ty: real(&[8]),
            span: Span::Artificial,
        };
        let h = || reference(Ref::Local(0), real(&[8]));
        let zt = Stmt::Sample(Site {
            var: SiteVar::Latent(z),
            step: Some(Step {
                loop_id: Some(0),
                offset: 0,
            }),
            ty: real(&[2]),
            dist: normal(
                call(prior, vec![step(h(), -1)], Some(0), real(&[2])),
                reference(Ref::Latent(theta), real(&[])),
                real(&[2]),
            ),
            flows: vec![],
            strategy: None,
            span: Span::Artificial,
        });
        let ht = let1(
            0,
            call(
                cell,
                vec![
                    step(h(), -1),
                    step(reference(Ref::Latent(z), real(&[2])), 0),
                ],
                Some(0),
                real(&[8]),
            ),
        );
        let mut model = body(
            vec![
                sample(
                    SiteVar::Latent(theta),
                    real(&[]),
                    normal(num(0.0), num(1.0), real(&[])),
                    None,
                    1,
                ),
                let1(
                    0,
                    Expr {
                        kind: ExprKind::Fill(0.0),
                        ty: real(&[8]),
                        span: Span::Artificial,
                    },
                ),
                Stmt::Loop {
                    loop_id: 0,
                    body: vec![zt, ht],
                    span: Span::Artificial,
                },
                sample(
                    SiteVar::Data(0),
                    real(&[3]),
                    normal(
                        call(
                            outn,
                            vec![h(), reference(Ref::Data(1), cat(4, &[]))],
                            Some(0),
                            real(&[3]),
                        ),
                        reference(Ref::Param(0), pos(&[3])),
                        real(&[3]),
                    ),
                    None,
                    2,
                ),
            ],
            vec![Local {
                name: "h".into(),
                ty: real(&[8]),
                steps: Some(5),
                span: Span::Artificial,
            }],
        );
        model.loops.push(LoopDef {
            var: "t".into(),
            from: 1,
            to: 5,
            span: Span::Artificial,
        });
        p.0.model = model;
        p.0
    }

    #[test]
    fn loops_plates_and_recurrence() {
        let dot = render(&rnn());
        let (nodes, edges) = validate(&dot);
        assert_eq!(nodes.len(), 8);
        // The recurrent state carries z into the next step's prior, without a self-loop.
        assert!(has_edge(&edges, "latent:z", "net:cell", false));
        assert!(has_edge(&edges, "net:cell", "net:prior", false));
        assert!(has_edge(&edges, "net:prior", "latent:z", false));
        assert!(!has_edge(&edges, "net:cell", "net:cell", false));
        assert!(has_edge(&edges, "net:cell", "net:out", false));
        assert!(has_edge(&edges, "data:c", "net:out", false));
        assert!(has_edge(&edges, "param:noise", "data:x", false));
        assert!(has_edge(&edges, "latent:theta", "latent:z", false));
        // z in the nested loop plate, theta and noise outside the example plate.
        let lp = dot.find("cluster_loop_0").unwrap_or(usize::MAX);
        assert!(dot.contains("label=\"t = 1..T\""));
        assert!(dot.contains("label=\"z\\nReal[2]\""), "{dot}");
        assert!(dot.find("\"latent:z\" [") > Some(lp));
        assert!(dot.find("\"latent:theta\" [") < dot.find("cluster_N"));
        assert!(dot.find("\"param:noise\" [") < dot.find("cluster_N"));
        assert!(dot.contains("(given)"));
    }

    #[test]
    fn sets_partial_and_guide_exact() {
        let mut p = rnn();
        p.sets.push(SetDef {
            name: "S".into(),
            ty: binary(&[4]),
            size: 10,
            span: Span::Artificial,
        });
        p.data[1].role = DataRole::Partial;
        p.guide = Guide::Exact {
            posterior: ExactPosterior::LinearGaussian,
            span: Span::Artificial,
        };
        let dot = render(&p);
        let (nodes, _) = validate(&dot);
        assert!(nodes.contains("\"set:S\""));
        assert!(dot.contains("Set[Binary[4]] size 10"));
        assert!(dot.contains("guide exact (linear-Gaussian posterior)"));
        assert!(dot.contains("\"filled,dashed\""));
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
}

#[cfg(test)]
mod e2e_tests {
    use super::tests_support::validate;
    use super::*;
    use crate::arch::e2e;

    #[test]
    fn appendix_models_render_valid_dot() {
        for src in [e2e::VAE, e2e::VRNN, e2e::M2, e2e::DRAW] {
            let p = match e2e::program(src) {
                Ok(p) => p,
                Err(d) => panic!("{d:#?}"),
            };
            let dot = render(&p);
            let (nodes, edges) = validate(&dot);
            assert!(!nodes.is_empty() && !edges.is_empty(), "{dot}");
        }
    }
}
