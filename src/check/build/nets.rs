//! Network declarations: signatures, architectures and their keywords, checked against
//! the rules of LANGUAGE.md section 5.
//!
//! Conventions that lowering and cost estimates rely on:
//! - `conv`: each of the `len(channels)` layers is a convolution with padding
//!   `p = (kernel - 1) / 2`; a side of size `H` becomes `floor((H + 2p - kernel) / stride) + 1`.
//!   The feature map is then flattened, further inputs appended, and `hidden` dense layers
//!   lead to the heads.
//! - `deconv`: the dense inputs go through `hidden` dense layers, then one dense layer to
//!   `channels[0] x H/s^n x W/s^n` (`n = len(channels)`, `s = stride`), then `n` transposed
//!   convolutions with padding `(kernel - stride) / 2`, mapping `channels[i]` to
//!   `channels[i+1]` and the last to the head's `C`; each doubles (multiplies by `s`) the
//!   sides. So `H` and `W` must be divisible by `s^n` and `kernel - stride` must be even and
//!   non-negative.
//! - `attend_read(grid = N)`: inputs `(image [C, H, W], state)`, output `Real[C*N*N]`. The
//!   image may be a context set `Set[[C, H, W]]` (the one-shot exemplar): each member is
//!   read with the same filterbank and the glimpses are averaged over the members.
//! - `attend_write(grid = N)`: input `(state)`, one image head `[C, H, W]`.

use super::types::count_text;
use super::{bare_name, boolean, literal, BuildError, Builder};
use crate::check::consts::suggest;
use crate::ir::{
    Activation, Arch, Domain, Head, HeadActivation, NetDef, NetInput, Norm, Pool, Type, VdropKind,
    Weights,
};
use crate::span::Span;
use crate::syntax::ast;
use std::collections::HashMap;

pub(crate) const ARCHS: [&str; 10] = [
    "linear",
    "mlp",
    "conv",
    "deconv",
    "gru",
    "lstm",
    "made",
    "deepsets",
    "attend_read",
    "attend_write",
];

const ACTS: [&str; 7] = [
    "relu",
    "tanh",
    "softplus",
    "elu",
    "leaky_relu",
    "gelu",
    "sigmoid",
];

/// The output activation implied by a head's domain (section 4).
pub(super) fn head_activation(d: Domain) -> HeadActivation {
    match d {
        Domain::Positive => HeadActivation::Softplus,
        Domain::Unit | Domain::Binary => HeadActivation::Sigmoid,
        Domain::Simplex => HeadActivation::Softmax,
        _ => HeadActivation::None,
    }
}

impl Builder<'_> {
    pub(super) fn net(&mut self, decl: &ast::NetDecl) -> NetDef {
        let name = decl.name.name.clone();
        let mut per_member = false;
        for a in &decl.annotations {
            if a.name == "per_member" {
                per_member = true;
            } else {
                self.errors.push(BuildError::UnknownAnnotation {
                    name: a.name.clone(),
                    span: a.span,
                    suggestion: suggest(&a.name, ["per_member"]),
                });
            }
        }
        let mut seen: HashMap<String, Span> = HashMap::new();
        let mut inputs = Vec::new();
        for b in &decl.inputs {
            if let Some(first) = seen.get(&b.name.name) {
                self.errors.push(BuildError::Duplicate {
                    what: "input",
                    name: b.name.name.clone(),
                    span: b.name.span,
                    first: *first,
                });
            } else {
                seen.insert(b.name.name.clone(), b.name.span);
            }
            let (ty, set) = self.input_type(&b.ty);
            inputs.push(NetInput {
                name: b.name.name.clone(),
                ty,
                set,
                span: b.span,
            });
        }
        let (heads, single_output) = match &decl.output {
            ast::NetOutput::Single(t) => {
                let ty = self.value_type(t);
                self.head_domain(&name, &ty, t.span);
                (
                    vec![Head {
                        name: name.clone(),
                        activation: head_activation(ty.domain),
                        ty,
                        span: t.span,
                    }],
                    true,
                )
            }
            ast::NetOutput::Heads(bs) => {
                let mut seen: HashMap<String, Span> = HashMap::new();
                let mut heads = Vec::new();
                for b in bs {
                    if let Some(first) = seen.get(&b.name.name) {
                        self.errors.push(BuildError::Duplicate {
                            what: "head",
                            name: b.name.name.clone(),
                            span: b.name.span,
                            first: *first,
                        });
                    } else {
                        seen.insert(b.name.name.clone(), b.name.span);
                    }
                    let ty = self.value_type(&b.ty);
                    self.head_domain(&b.name.name, &ty, b.ty.span);
                    heads.push(Head {
                        name: b.name.name.clone(),
                        activation: head_activation(ty.domain),
                        ty,
                        span: b.span,
                    });
                }
                (heads, false)
            }
        };
        let mut net = NetDef {
            name,
            inputs,
            heads,
            single_output,
            arch: Arch::Linear { bias: true },
            weights: Weights::Point,
            per_member,
            span: decl.name.span,
        };
        if let Some((arch, weights)) = self.arch(&decl.arch) {
            net.arch = arch;
            net.weights = weights;
            self.check_signature(&net, decl);
        }
        net
    }

    fn head_domain(&mut self, head: &str, ty: &Type, span: Span) {
        if matches!(ty.domain, Domain::Cat(_) | Domain::Count) {
            self.errors.push(BuildError::HeadDomain {
                head: head.to_string(),
                domain: ty.domain.name(),
                span,
            });
        }
    }

    /// The architecture call: its keywords with their defaults.
    fn arch(&mut self, call: &ast::Call) -> Option<(Arch, Weights)> {
        let arch = call.callee.name.as_str();
        let names: &[&str] = match arch {
            "linear" => &["bias", "weights"],
            "mlp" => &["hidden", "act", "dropout", "norm", "weights"],
            "conv" | "deconv" => &["channels", "kernel", "stride", "act", "hidden", "weights"],
            "gru" | "lstm" => &[],
            "made" => &["hidden", "act", "weights"],
            "deepsets" => &["phi", "rho", "pool", "act", "weights"],
            "attend_read" | "attend_write" => &["grid"],
            other => {
                self.errors.push(BuildError::Unknown {
                    what: "architecture",
                    name: other.to_string(),
                    span: call.callee.span,
                    suggestion: suggest(other, ARCHS),
                });
                return None;
            }
        };
        let args = self.bind_args(arch, call, names, false)?;
        let get = |k: &str| -> Option<&ast::Expr> {
            names
                .iter()
                .position(|n| *n == k)
                .and_then(|i| args.get(i).copied().flatten())
        };
        let mut ok = true;
        macro_rules! need {
            ($e:expr) => {
                match $e {
                    Some(v) => v,
                    None => {
                        ok = false;
                        Default::default()
                    }
                }
            };
        }
        let weights = match get("weights") {
            Some(e) => match self.weights(arch, e) {
                Some(w) => w,
                None => {
                    ok = false;
                    Weights::Point
                }
            },
            None => Weights::Point,
        };
        let act = |b: &mut Self, ok: &mut bool| match get("act") {
            Some(e) => match b.activation(arch, e) {
                Some(a) => a,
                None => {
                    *ok = false;
                    Activation::Relu
                }
            },
            None => Activation::Relu,
        };
        let out = match arch {
            "linear" => Arch::Linear {
                bias: match get("bias") {
                    Some(e) => need!(self.flag(arch, "bias", e)),
                    None => true,
                },
            },
            "mlp" => {
                let hidden =
                    need!(self.required_list(arch, "hidden", get("hidden"), call.span, true));
                let act = act(self, &mut ok);
                let dropout = match get("dropout") {
                    Some(e) => match literal(e).filter(|v| (0.0..1.0).contains(v)) {
                        Some(v) => v,
                        None => {
                            ok = false;
                            self.bad(arch, "dropout", "a number in [0, 1)", e.span);
                            0.0
                        }
                    },
                    None => 0.0,
                };
                let norm = match get("norm") {
                    Some(e) => match bare_name(e).map(|n| n.name.as_str()) {
                        Some("none") => Norm::None,
                        Some("layer") => Norm::Layer,
                        Some("batch") => Norm::Batch,
                        _ => {
                            ok = false;
                            self.choice(arch, "norm", e, &["none", "layer", "batch"]);
                            Norm::None
                        }
                    },
                    None => Norm::None,
                };
                Arch::Mlp {
                    hidden,
                    act,
                    dropout,
                    norm,
                }
            }
            "conv" | "deconv" => {
                let channels =
                    need!(self.required_list(arch, "channels", get("channels"), call.span, false));
                let kernel = match get("kernel") {
                    Some(e) => need!(self.count(arch, "kernel", e)),
                    None if arch == "conv" => 3,
                    None => 4,
                };
                let stride = match get("stride") {
                    Some(e) => need!(self.count(arch, "stride", e)),
                    None => 2,
                };
                let act = act(self, &mut ok);
                let hidden = match get("hidden") {
                    Some(e) => need!(self.int_list(arch, "hidden", e, true)),
                    None => Vec::new(),
                };
                if arch == "conv" {
                    Arch::Conv {
                        channels,
                        kernel,
                        stride,
                        act,
                        hidden,
                    }
                } else {
                    Arch::Deconv {
                        channels,
                        kernel,
                        stride,
                        act,
                        hidden,
                    }
                }
            }
            "gru" => Arch::Gru,
            "lstm" => Arch::Lstm,
            // `hidden = []`: one masked linear map, a linear autoregressive flow step.
            "made" => Arch::Made {
                hidden: need!(self.required_list(arch, "hidden", get("hidden"), call.span, true)),
                act: act(self, &mut ok),
            },
            "deepsets" => {
                let phi = need!(self.required_list(arch, "phi", get("phi"), call.span, false));
                let rho = match get("rho") {
                    Some(e) => need!(self.int_list(arch, "rho", e, true)),
                    None => Vec::new(),
                };
                let pool = match get("pool") {
                    Some(e) => match bare_name(e).map(|n| n.name.as_str()) {
                        Some("mean") => Pool::Mean,
                        Some("sum") => Pool::Sum,
                        Some("max") => Pool::Max,
                        _ => {
                            ok = false;
                            self.choice(arch, "pool", e, &["mean", "sum", "max"]);
                            Pool::Mean
                        }
                    },
                    None => Pool::Mean,
                };
                Arch::DeepSets {
                    phi,
                    rho,
                    pool,
                    act: act(self, &mut ok),
                }
            }
            "attend_read" | "attend_write" => {
                let grid = match get("grid") {
                    Some(e) => need!(self.count(arch, "grid", e)),
                    None => {
                        ok = false;
                        self.errors.push(BuildError::MissingKeyword {
                            callee: arch.into(),
                            keyword: "grid".into(),
                            span: call.span,
                        });
                        1
                    }
                };
                if arch == "attend_read" {
                    Arch::AttendRead { grid }
                } else {
                    Arch::AttendWrite { grid }
                }
            }
            _ => return None,
        };
        ok.then_some((out, weights))
    }

    fn bad(&mut self, callee: &str, kw: &str, expected: &str, span: Span) {
        self.errors.push(BuildError::BadValue {
            callee: callee.into(),
            keyword: kw.into(),
            expected: expected.into(),
            span,
        });
    }

    /// A keyword whose value is one of a few names: E002 with a suggestion for an unknown
    /// name, E006 for something that is not a name.
    fn choice(&mut self, callee: &str, kw: &str, e: &ast::Expr, options: &[&str]) {
        match bare_name(e) {
            Some(id) => self.errors.push(BuildError::Unknown {
                what: match kw {
                    "act" => "activation",
                    "norm" => "normalization",
                    "pool" => "pooling",
                    _ => "option",
                },
                name: id.name.clone(),
                span: id.span,
                suggestion: suggest(&id.name, options.iter().copied()),
            }),
            None => {
                let v: Vec<String> = options.iter().map(|o| format!("`{o}`")).collect();
                self.bad(callee, kw, &format!("one of {}", v.join(", ")), e.span)
            }
        }
    }

    fn activation(&mut self, callee: &str, e: &ast::Expr) -> Option<Activation> {
        let a = match bare_name(e).map(|n| n.name.as_str()) {
            Some("relu") => Activation::Relu,
            Some("tanh") => Activation::Tanh,
            Some("softplus") => Activation::Softplus,
            Some("elu") => Activation::Elu,
            Some("leaky_relu") => Activation::LeakyRelu,
            Some("gelu") => Activation::Gelu,
            Some("sigmoid") => Activation::Sigmoid,
            _ => {
                self.choice(callee, "act", e, &ACTS);
                return None;
            }
        };
        Some(a)
    }

    fn flag(&mut self, callee: &str, kw: &str, e: &ast::Expr) -> Option<bool> {
        let b = boolean(e);
        if b.is_none() {
            self.bad(callee, kw, "`true` or `false`", e.span);
        }
        b
    }

    /// A positive integer keyword value.
    fn count(&mut self, callee: &str, kw: &str, e: &ast::Expr) -> Option<usize> {
        if matches!(e.kind, ast::ExprKind::List(_) | ast::ExprKind::Str(_)) {
            self.bad(callee, kw, "a positive integer", e.span);
            return None;
        }
        self.positive(e)
    }

    fn int_list(
        &mut self,
        callee: &str,
        kw: &str,
        e: &ast::Expr,
        allow_empty: bool,
    ) -> Option<Vec<usize>> {
        let ast::ExprKind::List(items) = &e.kind else {
            self.bad(
                callee,
                kw,
                "a list of positive integers such as `[H, H]`",
                e.span,
            );
            return None;
        };
        if items.is_empty() && !allow_empty {
            self.bad(callee, kw, "a non-empty list of positive integers", e.span);
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for it in items {
            match self.positive(it) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn required_list(
        &mut self,
        callee: &str,
        kw: &str,
        e: Option<&ast::Expr>,
        span: Span,
        allow_empty: bool,
    ) -> Option<Vec<usize>> {
        match e {
            Some(e) => self.int_list(callee, kw, e, allow_empty),
            None => {
                self.errors.push(BuildError::MissingKeyword {
                    callee: callee.into(),
                    keyword: kw.into(),
                    span,
                });
                None
            }
        }
    }

    /// `weights = point | bayes(prior_scale = 1.0) | vdrop(kind = "B")`.
    fn weights(&mut self, callee: &str, e: &ast::Expr) -> Option<Weights> {
        let (id, call) = match &e.kind {
            ast::ExprKind::Name(id) => (id, None),
            ast::ExprKind::Call(c) => (&c.callee, Some(c)),
            _ => {
                self.bad(
                    callee,
                    "weights",
                    "`point`, `bayes(...)` or `vdrop(...)`",
                    e.span,
                );
                return None;
            }
        };
        match id.name.as_str() {
            "point" => {
                if let Some(c) = call {
                    if !c.args.is_empty() {
                        self.errors.push(BuildError::Arity {
                            callee: "point".into(),
                            expected: count_text(0),
                            given: c.args.len(),
                            span: c.span,
                        });
                        return None;
                    }
                }
                Some(Weights::Point)
            }
            "bayes" => {
                let mut prior_scale = 1.0;
                if let Some(c) = call {
                    let args = self.bind_args("bayes", c, &["prior_scale"], true)?;
                    if let Some(a) = args[0] {
                        match literal(a).filter(|v| *v > 0.0) {
                            Some(v) => prior_scale = v,
                            None => {
                                self.bad("bayes", "prior_scale", "a positive number", a.span);
                                return None;
                            }
                        }
                    }
                }
                Some(Weights::Bayes { prior_scale })
            }
            "vdrop" => {
                let mut kind = VdropKind::B;
                let mut kl = crate::ir::VdropKl::Molchanov;
                if let Some(c) = call {
                    let args = self.bind_args("vdrop", c, &["kind", "kl"], true)?;
                    if let Some(a) = args[0] {
                        match &a.kind {
                            ast::ExprKind::Str(s) if s == "A" => kind = VdropKind::A,
                            ast::ExprKind::Str(s) if s == "B" => kind = VdropKind::B,
                            _ => {
                                self.bad("vdrop", "kind", "`\"A\"` or `\"B\"`", a.span);
                                return None;
                            }
                        }
                    }
                    if let Some(a) = args[1] {
                        match &a.kind {
                            ast::ExprKind::Str(s) if s == "molchanov" => {
                                kl = crate::ir::VdropKl::Molchanov
                            }
                            ast::ExprKind::Str(s) if s == "kingma" => {
                                kl = crate::ir::VdropKl::Kingma
                            }
                            _ => {
                                self.bad("vdrop", "kl", "`\"molchanov\"` or `\"kingma\"`", a.span);
                                return None;
                            }
                        }
                    }
                }
                Some(Weights::Vdrop { kind, kl })
            }
            other => {
                self.errors.push(BuildError::Unknown {
                    what: "weight posterior",
                    name: other.to_string(),
                    span: id.span,
                    suggestion: suggest(other, ["point", "bayes", "vdrop"]),
                });
                None
            }
        }
    }

    fn arch_err(
        &mut self,
        code: u8,
        net: &NetDef,
        span: Span,
        problem: String,
        hint: Option<String>,
    ) {
        let net = net.name.clone();
        self.errors.push(match code {
            4 => BuildError::ArchShape {
                net,
                problem,
                span,
                hint,
            },
            5 => BuildError::ArchDomain {
                net,
                problem,
                span,
                hint,
            },
            _ => BuildError::ArchArgs {
                net,
                problem,
                span,
                hint,
            },
        });
    }

    /// The signature rules of section 5's table.
    fn check_signature(&mut self, net: &NetDef, decl: &ast::NetDecl) {
        let arch = net.arch.name();
        let out_span = match &decl.output {
            ast::NetOutput::Single(t) => t.span,
            ast::NetOutput::Heads(bs) => bs
                .first()
                .map(|b| b.span)
                .unwrap_or(decl.name.span)
                .to(bs.last().map(|b| b.span).unwrap_or(decl.name.span)),
        };
        let sig_span = decl
            .inputs
            .first()
            .map(|b| b.span)
            .unwrap_or(decl.name.span);
        // Set inputs: only the first input of deepsets.
        for (i, inp) in net.inputs.iter().enumerate() {
            let set_ok =
                i == 0 && matches!(net.arch, Arch::DeepSets { .. } | Arch::AttendRead { .. });
            if inp.set && !set_ok {
                self.arch_err(
                    5,
                    net,
                    inp.span,
                    format!("`{arch}` takes dense inputs, but `{}` is a set", inp.name),
                    Some("only the first input of a `deepsets` or `attend_read` network can be a `Set[...]`".into()),
                );
            }
        }
        let first = net.inputs.first();
        let need_inputs = |b: &mut Self, n: usize, what: &str| -> bool {
            if net.inputs.len() < n {
                b.arch_err(
                    6,
                    net,
                    if net.inputs.is_empty() {
                        decl.name.span
                    } else {
                        sig_span
                    },
                    format!("`{arch}` needs {what}"),
                    None,
                );
                false
            } else {
                true
            }
        };
        let image = |t: &Type| t.shape.len() == 3;
        match &net.arch {
            Arch::Linear { .. } | Arch::Mlp { .. } => {}
            Arch::Conv {
                channels,
                kernel,
                stride,
                ..
            } => {
                if need_inputs(self, 1, "an image input `[C, H, W]`") {
                    if let Some(f) = first {
                        if !image(&f.ty) && f.ty.domain != Domain::Unknown {
                            self.arch_err(
                                4,
                                net,
                                f.span,
                                format!(
                                    "`conv` needs an image `[C, H, W]` as its first input, but `{}` is `{}`",
                                    f.name,
                                    f.ty.display()
                                ),
                                Some("declare it as e.g. `Real[1, 28, 28]`".into()),
                            );
                        } else if image(&f.ty) {
                            let pad = (kernel - 1) / 2;
                            let (mut h, mut w) = (f.ty.shape[1], f.ty.shape[2]);
                            for _ in channels {
                                if h.saturating_add(2 * pad) < *kernel
                                    || w.saturating_add(2 * pad) < *kernel
                                {
                                    self.arch_err(
                                        4,
                                        net,
                                        f.span,
                                        format!(
                                            "the image of `{}` shrinks below the kernel size {kernel} after the convolutions",
                                            f.name
                                        ),
                                        Some("use fewer `channels` or a smaller `stride`".into()),
                                    );
                                    break;
                                }
                                h = (h.saturating_add(2 * pad) - kernel) / stride + 1;
                                w = (w.saturating_add(2 * pad) - kernel) / stride + 1;
                            }
                        }
                    }
                }
            }
            Arch::Deconv {
                channels,
                kernel,
                stride,
                ..
            } => {
                if net.heads.len() != 1 || !image(&net.heads[0].ty) {
                    if net.heads.iter().all(|h| h.ty.domain != Domain::Unknown) {
                        self.arch_err(
                            4,
                            net,
                            out_span,
                            "`deconv` needs exactly one image head `[C, H, W]`".into(),
                            Some("write `-> Real[C, H, W]`".into()),
                        );
                    }
                } else {
                    let shape = &net.heads[0].ty.shape;
                    let n = channels.len() as u32;
                    let f = stride.checked_pow(n).unwrap_or(usize::MAX);
                    if !shape[1].is_multiple_of(f) || !shape[2].is_multiple_of(f) {
                        self.arch_err(
                            4,
                            net,
                            out_span,
                            format!(
                                "`deconv` with stride {stride} and {n} layer(s) needs height and width divisible by {f}, but the head is {}x{}",
                                shape[1], shape[2]
                            ),
                            Some("change `channels` (one layer per doubling) or `stride`".into()),
                        );
                    }
                }
                if kernel < stride || (kernel - stride) % 2 != 0 {
                    self.arch_err(
                        6,
                        net,
                        decl.arch.span,
                        format!(
                            "`deconv` needs `kernel - stride` even and non-negative, but kernel {kernel} and stride {stride} give {}",
                            *kernel as i64 - *stride as i64
                        ),
                        Some("use `kernel = 4, stride = 2`".into()),
                    );
                }
            }
            Arch::Gru => {
                if need_inputs(self, 1, "the state `Real[H]` as its first input") {
                    if let Some(f) = first {
                        self.state_input(net, f);
                        let ok = net.heads.len() == 1
                            && (net.heads[0].ty == f.ty
                                || net.heads[0].ty.domain == Domain::Unknown
                                || f.ty.domain == Domain::Unknown);
                        if !ok {
                            self.arch_err(
                                4,
                                net,
                                out_span,
                                format!(
                                    "`gru` outputs its new state, so the output must be `{}` like `{}`",
                                    f.ty.display(),
                                    f.name
                                ),
                                Some(format!("write `-> {}`", f.ty.display())),
                            );
                        }
                    }
                }
            }
            Arch::Lstm => {
                if need_inputs(
                    self,
                    2,
                    "the states `h: Real[H]` and `c: Real[H]` as its first two inputs",
                ) {
                    let (h, c) = (&net.inputs[0], &net.inputs[1]);
                    self.state_input(net, h);
                    self.state_input(net, c);
                    if h.ty != c.ty {
                        self.arch_err(
                            4,
                            net,
                            c.span,
                            format!(
                                "`lstm` needs `{}` and `{}` of the same type",
                                h.name, c.name
                            ),
                            None,
                        );
                    }
                    let ok = net.heads.len() == 2
                        && !net.single_output
                        && net.heads.iter().all(|hd| hd.ty == h.ty);
                    if !ok {
                        self.arch_err(
                            4,
                            net,
                            out_span,
                            "`lstm` outputs its new states: heads must be `(h: Real[H], c: Real[H])`"
                                .into(),
                            Some(format!(
                                "write `-> (h: {0}, c: {0})`",
                                h.ty.display()
                            )),
                        );
                    }
                }
            }
            Arch::Made { .. } => {
                if need_inputs(self, 1, "the autoregressive input `Real[Z]` first") {
                    if let Some(f) = first {
                        if f.ty.shape.len() != 1 {
                            self.arch_err(
                                4,
                                net,
                                f.span,
                                format!(
                                    "`made` needs a vector `Real[Z]` first, but `{}` is `{}`",
                                    f.name,
                                    f.ty.display()
                                ),
                                None,
                            );
                        } else if f.ty.domain != Domain::Real && f.ty.domain != Domain::Unknown {
                            self.arch_err(
                                5,
                                net,
                                f.span,
                                format!(
                                    "`made` needs a Real first input, but `{}` is `{}`",
                                    f.name,
                                    f.ty.display()
                                ),
                                None,
                            );
                        }
                        for hd in &net.heads {
                            if hd.ty.shape != f.ty.shape && hd.ty.domain != Domain::Unknown {
                                self.arch_err(
                                    4,
                                    net,
                                    hd.span,
                                    format!(
                                        "every head of `made` must be `Real{:?}` like `{}`",
                                        f.ty.shape, f.name
                                    ),
                                    None,
                                );
                            } else if hd.ty.domain != Domain::Real
                                && hd.ty.domain != Domain::Unknown
                            {
                                self.arch_err(
                                    5,
                                    net,
                                    hd.span,
                                    format!(
                                        "every head of `made` must be Real, but `{}` is {}",
                                        hd.name,
                                        hd.ty.domain.name()
                                    ),
                                    None,
                                );
                            }
                        }
                    }
                }
            }
            Arch::DeepSets { .. } => {
                if need_inputs(self, 1, "a `Set[T]` as its first input") {
                    if let Some(f) = first {
                        if !f.set {
                            self.arch_err(
                                5,
                                net,
                                f.span,
                                format!(
                                    "`deepsets` needs a `Set[...]` first input, but `{}` is `{}`",
                                    f.name,
                                    f.ty.display()
                                ),
                                Some(format!("write `{}: Set[{}]`", f.name, f.ty.display())),
                            );
                        }
                    }
                }
            }
            Arch::AttendRead { grid } => {
                if net.inputs.len() != 2 {
                    self.arch_err(
                        6,
                        net,
                        sig_span,
                        format!("`attend_read` takes an image and a state, but {} input(s) are declared", net.inputs.len()),
                        None,
                    );
                } else {
                    let img = &net.inputs[0];
                    if !image(&img.ty) {
                        self.arch_err(
                            4,
                            net,
                            img.span,
                            format!(
                                "`attend_read` reads an image `[C, H, W]`, but `{}` is `{}`",
                                img.name,
                                img.ty.display()
                            ),
                            None,
                        );
                    } else {
                        let want = img.ty.shape[0].saturating_mul(grid.saturating_mul(*grid));
                        let ok = net.heads.len() == 1 && net.heads[0].ty.shape == vec![want];
                        if !ok {
                            self.arch_err(
                                4,
                                net,
                                out_span,
                                format!("`attend_read(grid = {grid})` on {} channel(s) outputs `Real[{want}]`", img.ty.shape[0]),
                                Some(format!("write `-> Real[{want}]`")),
                            );
                        }
                    }
                    if net.inputs[1].ty.shape.len() != 1 {
                        self.arch_err(
                            4,
                            net,
                            net.inputs[1].span,
                            "the state of `attend_read` must be a vector".into(),
                            None,
                        );
                    }
                }
            }
            Arch::AttendWrite { .. } => {
                if net.inputs.len() != 1 || net.inputs[0].ty.shape.len() != 1 {
                    self.arch_err(
                        4,
                        net,
                        sig_span,
                        "`attend_write` takes one state vector as input".into(),
                        None,
                    );
                }
                if net.heads.len() != 1 || !image(&net.heads[0].ty) {
                    self.arch_err(
                        4,
                        net,
                        out_span,
                        "`attend_write` writes one image head `[C, H, W]`".into(),
                        Some("write `-> Real[C, H, W]`".into()),
                    );
                }
            }
        }
    }

    /// A recurrent state input: `Real[H]`.
    fn state_input(&mut self, net: &NetDef, inp: &NetInput) {
        let arch = net.arch.name();
        if inp.ty.domain == Domain::Unknown {
            return;
        }
        if inp.ty.shape.len() != 1 {
            self.arch_err(
                4,
                net,
                inp.span,
                format!(
                    "`{arch}` needs the state `{}` to be a vector `Real[H]`, not `{}`",
                    inp.name,
                    inp.ty.display()
                ),
                None,
            );
        } else if inp.ty.domain != Domain::Real {
            self.arch_err(
                5,
                net,
                inp.span,
                format!(
                    "`{arch}` needs the state `{}` to be Real, not {}",
                    inp.name,
                    inp.ty.domain.name()
                ),
                Some(format!("write `{}: Real[{}]`", inp.name, inp.ty.shape[0])),
            );
        }
    }
}
