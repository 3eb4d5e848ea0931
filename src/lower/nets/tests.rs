//! Tests of the networks against independent truth: PyTorch outputs for the same weights
//! (tests/fixtures/nets_fixtures.py writes them), hand computations, closed forms, and
//! the parameter counts and names of `arch`.

use super::*;
use crate::arch;
use crate::ir::{
    Activation, Domain, Head, HeadActivation, NetInput, Norm, Pool, Type, VdropKind, Weights,
};
use crate::span::Span;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const FIXTURES: &str = include_str!("../../../tests/fixtures/nets_fixtures.json");

fn ty(domain: Domain, shape: &[usize]) -> Type {
    Type::new(domain, shape.to_vec())
}
fn real(shape: &[usize]) -> Type {
    ty(Domain::Real, shape)
}

fn head_act(d: Domain) -> HeadActivation {
    match d {
        Domain::Positive => HeadActivation::Softplus,
        Domain::Unit | Domain::Binary => HeadActivation::Sigmoid,
        Domain::Simplex => HeadActivation::Softmax,
        _ => HeadActivation::None,
    }
}

fn net(name: &str, inputs: &[(&str, Type)], heads: &[(&str, Type)], arch: Arch) -> NetDef {
    NetDef {
        name: name.into(),
        inputs: inputs
            .iter()
            .map(|(n, t)| NetInput {
                name: n.to_string(),
                ty: t.clone(),
                set: false,
                span: Span::Artificial,
            })
            .collect(),
        heads: heads
            .iter()
            .map(|(n, t)| Head {
                name: n.to_string(),
                ty: t.clone(),
                activation: head_act(t.domain),
                span: Span::Artificial,
            })
            .collect(),
        single_output: heads.len() == 1,
        arch,
        weights: Weights::Point,
        per_member: false,
        span: Span::Artificial,
    }
}

fn mlp(hidden: &[usize], act: Activation, norm: Norm) -> Arch {
    Arch::Mlp {
        hidden: hidden.to_vec(),
        act,
        dropout: 0.0,
        norm,
    }
}

fn tensor_of(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn fixture(name: &str) -> Value {
    let all: Value = serde_json::from_str(FIXTURES).unwrap();
    all["cases"][name].clone()
}

fn built(net: &NetDef) -> (VarMap, Box<dyn Network>) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp(&net.name);
    let n = build(net, vb).unwrap();
    (vm, n)
}

fn keys(vm: &VarMap) -> BTreeSet<String> {
    vm.data().lock().unwrap().keys().cloned().collect()
}

fn close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
    assert_eq!(a.dims(), b.dims(), "{what}: shapes");
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Builds `net`, loads the fixture's parameters (every key must exist, and every
/// variable of the net must be given), runs it and compares with PyTorch's outputs.
fn against_torch(net: &NetDef, case: &str, train: bool) -> VarMap {
    let fx = fixture(case);
    assert!(fx.is_object(), "no fixture {case}");
    let (mut vm, n) = built(net);
    let params = fx["params"].as_object().unwrap();
    let given: BTreeSet<String> = params.keys().map(|k| format!("{}.{k}", net.name)).collect();
    assert_eq!(keys(&vm), given, "{case}: checkpoint keys");
    for (k, v) in params {
        vm.set_one(format!("{}.{k}", net.name), tensor_of(v))
            .unwrap();
    }
    let inputs: Vec<Tensor> = fx["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(tensor_of)
        .collect();
    let mut rng = Rng::seed(1);
    let mut ctx = NetCtx {
        train,
        rng: &mut rng,
        prune: None,
    };
    let out = n.forward(&inputs, &mut ctx).unwrap();
    let want: Vec<Tensor> = fx["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(tensor_of)
        .collect();
    assert_eq!(out.len(), want.len(), "{case}: heads");
    for (i, (o, w)) in out.iter().zip(&want).enumerate() {
        close(o, w, 2e-5, &format!("{case} head {i}"));
    }
    assert!(n.weight_kl().unwrap().is_none());
    vm
}

#[test]
fn linear_matches_torch() {
    let n = net(
        "enc",
        &[("x", real(&[3])), ("c", ty(Domain::Cat(2), &[]))],
        &[("loc", real(&[2])), ("scale", ty(Domain::Positive, &[2]))],
        Arch::Linear { bias: true },
    );
    against_torch(&n, "linear", false);
    let n = net(
        "p",
        &[("x", real(&[2, 2]))],
        &[("p", ty(Domain::Simplex, &[3]))],
        Arch::Linear { bias: false },
    );
    against_torch(&n, "linear_nobias", false);
}

#[test]
fn linear_by_hand() {
    // y = W x + b with W = [[1, 2], [-1, 0.5]], b = [0.5, -1]; the Positive head gets
    // softplus + 1e-4.
    let n = net(
        "f",
        &[("x", real(&[2]))],
        &[("a", real(&[])), ("s", ty(Domain::Positive, &[]))],
        Arch::Linear { bias: true },
    );
    let (mut vm, f) = built(&n);
    let d = &Device::Cpu;
    vm.set_one(
        "f.layer0.weight",
        Tensor::new(&[[1f32, 2.], [-1., 0.5]], d).unwrap(),
    )
    .unwrap();
    vm.set_one("f.layer0.bias", Tensor::new(&[0.5f32, -1.], d).unwrap())
        .unwrap();
    let x = Tensor::new(&[[1f32, 1.], [2., -4.]], d).unwrap();
    let mut rng = Rng::seed(0);
    let out = f
        .forward(
            &[x],
            &mut NetCtx {
                train: true,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    // Scalar heads are [R].
    assert_eq!(out[0].dims(), &[2]);
    let a: Vec<f32> = out[0].to_vec1().unwrap();
    assert_eq!(a, vec![3.5, -5.5]);
    let s: Vec<f32> = out[1].to_vec1().unwrap();
    let sp = |v: f64| (1.0 + v.exp()).ln() + 1e-4;
    assert!((s[0] as f64 - sp(-1.5)).abs() < 1e-6);
    assert!((s[1] as f64 - sp(-5.0)).abs() < 1e-6);
}

fn mlp_net(act: Activation, norm: Norm) -> NetDef {
    net(
        "m",
        &[("x", real(&[4])), ("y", real(&[2]))],
        &[
            ("a", real(&[2])),
            ("u", ty(Domain::Unit, &[1])),
            ("s", ty(Domain::Simplex, &[3])),
        ],
        mlp(&[5, 3], act, norm),
    )
}

#[test]
fn mlp_matches_torch_for_every_activation() {
    for (act, norm, case) in [
        (Activation::Relu, Norm::None, "mlp_relu"),
        (Activation::Tanh, Norm::Layer, "mlp_tanh_layer"),
        (Activation::Gelu, Norm::None, "mlp_gelu"),
        (Activation::Elu, Norm::None, "mlp_elu"),
        (Activation::Softplus, Norm::None, "mlp_softplus"),
        (Activation::Sigmoid, Norm::None, "mlp_sigmoid"),
        (Activation::LeakyRelu, Norm::Batch, "mlp_leaky_batch_eval"),
    ] {
        against_torch(&mlp_net(act, norm), case, false);
    }
}

#[test]
fn batch_norm_trains_on_batch_statistics_and_updates_running_averages() {
    let n = mlp_net(Activation::LeakyRelu, Norm::Batch);
    let vm = against_torch(&n, "mlp_leaky_batch_train", true);
    let fx = fixture("mlp_leaky_batch_train");
    let data = vm.data().lock().unwrap();
    for i in 0..2 {
        for s in ["running_mean", "running_var"] {
            let got = data[&format!("m.norm{i}.{s}")].as_tensor().clone();
            close(&got, &tensor_of(&fx[format!("after.norm{i}.{s}")]), 2e-5, s);
        }
    }
}

#[test]
fn dropout_is_off_in_eval_and_seeded_in_training() {
    let mut n = mlp_net(Activation::Relu, Norm::None);
    if let Arch::Mlp { dropout, .. } = &mut n.arch {
        *dropout = 0.5;
    }
    let (_vm, f) = built(&n);
    let d = &Device::Cpu;
    let x = Tensor::ones((64, 4), DType::F32, d).unwrap();
    let y = Tensor::ones((64, 2), DType::F32, d).unwrap();
    let run = |train: bool, seed: u64| -> Vec<f32> {
        let mut rng = Rng::seed(seed);
        let out = f
            .forward(
                &[x.clone(), y.clone()],
                &mut NetCtx {
                    train,
                    rng: &mut rng,
                    prune: None,
                },
            )
            .unwrap();
        out[0].flatten_all().unwrap().to_vec1().unwrap()
    };
    // Evaluation: identical rows, whatever the seed.
    let e1 = run(false, 1);
    assert_eq!(e1, run(false, 2));
    assert!(e1.chunks(2).all(|r| r == &e1[0..2]));
    // Training: the same seed gives the same masks, rows differ from one another.
    let t1 = run(true, 7);
    assert_eq!(t1, run(true, 7));
    assert_ne!(t1, run(true, 8));
    assert!(t1.chunks(2).any(|r| r != &t1[0..2]));
}

#[test]
fn dropout_keeps_the_expected_fraction_and_scales() {
    let mut rng = Rng::seed(3);
    let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu).unwrap();
    let mut ctx = NetCtx {
        train: true,
        rng: &mut rng,
        prune: None,
    };
    let y: Vec<f32> = layers::dropout(&x, 0.3, &mut ctx)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
    assert!((kept - 0.7).abs() < 0.02, "{kept}");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
}

/// Every architecture the tests know, for counts, names and gradients.
fn zoo() -> Vec<NetDef> {
    let mut v = vec![
        net(
            "lin",
            &[("x", real(&[3])), ("c", ty(Domain::Cat(4), &[2]))],
            &[("loc", real(&[2])), ("scale", ty(Domain::Positive, &[2]))],
            Arch::Linear { bias: true },
        ),
        net(
            "nob",
            &[("x", real(&[3]))],
            &[("y", real(&[2]))],
            Arch::Linear { bias: false },
        ),
        mlp_net(Activation::Tanh, Norm::None),
        mlp_net(Activation::Relu, Norm::Layer),
        mlp_net(Activation::Elu, Norm::Batch),
        net(
            "made",
            &[("z", real(&[4])), ("h", real(&[3]))],
            &[("m", real(&[4])), ("s", real(&[4]))],
            Arch::Made {
                hidden: vec![7, 5],
                act: Activation::Elu,
            },
        ),
    ];
    v.extend(more_zoo());
    v
}

fn all_weights() -> Vec<Weights> {
    vec![
        Weights::Point,
        Weights::Bayes { prior_scale: 0.5 },
        Weights::Vdrop {
            kind: VdropKind::A,
            kl: crate::ir::VdropKl::Molchanov,
        },
        Weights::Vdrop {
            kind: VdropKind::B,
            kl: crate::ir::VdropKl::Molchanov,
        },
    ]
}

/// Feeds a network random inputs of its signature's shapes.
fn inputs_for(n: &NetDef, r: usize, rng: &mut Rng) -> Vec<Tensor> {
    let d = &Device::Cpu;
    n.inputs
        .iter()
        .map(|i| {
            let mut shape = vec![r];
            if i.set {
                shape.push(SET_SIZE);
            }
            shape.extend_from_slice(&i.ty.shape);
            if let Domain::Cat(k) = i.ty.domain {
                // one-hot along a trailing K axis
                let m: usize = shape.iter().product();
                let idx: Vec<u32> = (0..m).map(|_| rng.below(k) as u32).collect();
                let idx = Tensor::from_vec(idx, m, d).unwrap();
                let eye = Tensor::eye(k, DType::F32, d).unwrap();
                shape.push(k);
                eye.index_select(&idx, 0).unwrap().reshape(shape).unwrap()
            } else {
                rng.normal(&shape, d).unwrap()
            }
        })
        .collect()
}

const SET_SIZE: usize = 5;

#[test]
fn parameter_counts_and_names_agree_with_arch() {
    for base in zoo() {
        for w in all_weights() {
            let mut n = base.clone();
            n.weights = w.clone();
            let (vm, _f) = built(&n);
            let data = vm.data().lock().unwrap();
            let count: usize = data
                .iter()
                .filter(|(k, _)| !layers::is_buffer(k))
                .map(|(_, v)| v.elem_count())
                .sum();
            assert_eq!(count as u64, arch::param_count(&n), "{} ({:?})", n.name, w);
            // Every key is `<net>.<layer>.<param>` with a layer of arch::layers.
            let layer_names: BTreeSet<String> =
                arch::layers(&n).into_iter().map(|l| l.name).collect();
            let mut per_layer: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in data.iter() {
                let rest = k.strip_prefix(&format!("{}.", n.name)).unwrap();
                let (layer, _) = rest.split_once('.').unwrap();
                assert!(
                    layer_names.contains(layer),
                    "{k} not a layer of {layer_names:?}"
                );
                if !layers::is_buffer(k) {
                    *per_layer.entry(layer.to_string()).or_default() += v.elem_count() as u64;
                }
            }
            for l in arch::layers(&n) {
                let want = l.kind.param_count(&n.weights);
                assert_eq!(
                    per_layer.get(&l.name).copied().unwrap_or(0),
                    want,
                    "{}.{} ({:?})",
                    n.name,
                    l.name,
                    w
                );
            }
        }
    }
}

#[test]
fn checkpoint_names() {
    let n = mlp_net(Activation::Relu, Norm::Batch);
    let (vm, _) = built(&n);
    let k = keys(&vm);
    let want: BTreeSet<String> = [
        "m.layer0.weight",
        "m.layer0.bias",
        "m.norm0.weight",
        "m.norm0.bias",
        "m.norm0.running_mean",
        "m.norm0.running_var",
        "m.layer1.weight",
        "m.layer1.bias",
        "m.norm1.weight",
        "m.norm1.bias",
        "m.norm1.running_mean",
        "m.norm1.running_var",
        "m.layer2.weight",
        "m.layer2.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(k, want);
    let mut n = net(
        "enc",
        &[("x", real(&[3]))],
        &[("y", real(&[2]))],
        Arch::Linear { bias: true },
    );
    n.weights = Weights::Bayes { prior_scale: 1.0 };
    let got = keys(&built(&n).0);
    let want: BTreeSet<String> = [
        "enc.layer0.weight_mu",
        "enc.layer0.weight_logvar",
        "enc.layer0.bias_mu",
        "enc.layer0.bias_logvar",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
    n.weights = Weights::Vdrop {
        kind: VdropKind::B,
        kl: crate::ir::VdropKl::Molchanov,
    };
    // Sparse variational dropout learns log σ² (the additive parameterization)...
    let got = keys(&built(&n).0);
    let want: BTreeSet<String> = [
        "enc.layer0.weight",
        "enc.layer0.weight_log_sigma2",
        "enc.layer0.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
    // ... Kingma et al.'s form log α.
    n.weights = Weights::Vdrop {
        kind: VdropKind::B,
        kl: crate::ir::VdropKl::Kingma,
    };
    let got = keys(&built(&n).0);
    let want: BTreeSet<String> = [
        "enc.layer0.weight",
        "enc.layer0.weight_log_alpha",
        "enc.layer0.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want);
}

#[test]
fn initialization_is_seeded_and_loaded_values_are_kept() {
    let n = mlp_net(Activation::Relu, Norm::None);
    let w = |vm: &VarMap| -> Vec<f32> {
        vm.data().lock().unwrap()["m.layer0.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    let (a, _) = built(&n);
    let (b, _) = built(&n);
    assert_eq!(w(&a), w(&b));
    // PyTorch's bound 1/sqrt(fan_in), fan_in = 6.
    let bound = 1.0 / 6f32.sqrt();
    assert!(w(&a).iter().all(|v| v.abs() < bound));
    // A second build over the same store reuses the variables.
    let vb = VarBuilder::from_varmap(&a, DType::F32, &Device::Cpu).pp("m");
    let before = w(&a);
    let mut rng = Rng::seed(99);
    let _ = build_with_rng(&n, vb, &mut rng).unwrap();
    assert_eq!(w(&a), before);
}

#[test]
fn heads_have_their_domains() {
    let n = net(
        "h",
        &[("x", real(&[3]))],
        &[
            ("p", ty(Domain::Positive, &[4])),
            ("u", ty(Domain::Unit, &[2, 2])),
            ("s", ty(Domain::Simplex, &[2, 3])),
        ],
        mlp(&[8], Activation::Relu, Norm::None),
    );
    let (vm, f) = built(&n);
    // Scale the last layer up so some pre-activations are far negative.
    {
        let data = vm.data().lock().unwrap();
        let w = &data["h.layer1.weight"];
        w.set(&(w.as_tensor() * 200.0).unwrap()).unwrap();
    }
    let mut rng = Rng::seed(5);
    let x = inputs_for(&n, 50, &mut rng);
    let out = f
        .forward(
            &x,
            &mut NetCtx {
                train: false,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    assert_eq!(out[0].dims(), &[50, 4]);
    assert_eq!(out[1].dims(), &[50, 2, 2]);
    assert_eq!(out[2].dims(), &[50, 2, 3]);
    let p: Vec<f32> = out[0].flatten_all().unwrap().to_vec1().unwrap();
    assert!(p.iter().all(|&v| v >= 1e-4 && v.is_finite()));
    let u: Vec<f32> = out[1].flatten_all().unwrap().to_vec1().unwrap();
    assert!(u.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let sums: Vec<f32> = out[2]
        .sum(2)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(sums.iter().all(|&v| (v - 1.0).abs() < 1e-5));
}

#[test]
fn gradients_reach_every_parameter() {
    for base in zoo() {
        for w in all_weights() {
            let mut n = base.clone();
            n.weights = w.clone();
            let (vm, f) = built(&n);
            let mut rng = Rng::seed(11);
            let x = inputs_for(&n, 6, &mut rng);
            let mut ctx = NetCtx {
                train: true,
                rng: &mut rng,
                prune: None,
            };
            let out = f.forward(&x, &mut ctx).unwrap();
            let mut loss = out
                .iter()
                .map(|o| o.sqr().unwrap().sum_all().unwrap())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap();
            if let Some(kl) = f.weight_kl().unwrap() {
                assert_eq!(kl.rank(), 0);
                loss = (loss + kl).unwrap();
            }
            let grads = loss.backward().unwrap();
            for (k, v) in vm.data().lock().unwrap().iter() {
                // Buffers are not learned; a vdrop-A log α of a GRU cell without
                // inputs (kept for arch's count) acts on nothing.
                if layers::is_buffer(k) || k == "g0.cell.weight_ih_log_alpha" {
                    continue;
                }
                let g = grads.get(v.as_tensor());
                assert!(g.is_some(), "{k} ({w:?}) has no gradient");
                let g: Vec<f32> = g.unwrap().flatten_all().unwrap().to_vec1().unwrap();
                assert!(g.iter().all(|x| x.is_finite()), "{k}: {g:?}");
            }
        }
    }
}

#[test]
fn made_is_autoregressive() {
    for (z, hidden) in [(4, vec![7, 5]), (5, vec![8]), (1, vec![4]), (3, vec![])] {
        let n = net(
            "made",
            &[("z", real(&[z])), ("h", real(&[2]))],
            &[("m", real(&[z])), ("s", real(&[z]))],
            Arch::Made {
                hidden,
                act: Activation::Tanh,
            },
        );
        let (_vm, f) = built(&n);
        let mut rng = Rng::seed(2);
        let x = inputs_for(&n, 1, &mut rng);
        let eval = |zv: &Tensor, h: &Tensor| -> Vec<Vec<f32>> {
            let mut r = Rng::seed(0);
            f.forward(
                &[zv.clone(), h.clone()],
                &mut NetCtx {
                    train: false,
                    rng: &mut r,
                    prune: None,
                },
            )
            .unwrap()
            .iter()
            .map(|o| o.flatten_all().unwrap().to_vec1().unwrap())
            .collect()
        };
        let base = eval(&x[0], &x[1]);
        let z0: Vec<f32> = x[0].flatten_all().unwrap().to_vec1().unwrap();
        // Changing input j must leave outputs 0..=j unchanged, and (with these random
        // weights) change some later output.
        for j in 0..z {
            let mut zj = z0.clone();
            zj[j] += 1.5;
            let zt = Tensor::from_vec(zj, (1, z), &Device::Cpu).unwrap();
            let moved = eval(&zt, &x[1]);
            let mut later_changed = false;
            for (hb, hm) in base.iter().zip(&moved) {
                for i in 0..z {
                    if i <= j {
                        assert_eq!(hb[i], hm[i], "z={z} input {j} moved output {i}");
                    } else if (hb[i] - hm[i]).abs() > 1e-7 {
                        later_changed = true;
                    }
                }
            }
            assert!(
                later_changed || j + 1 == z,
                "z={z}: input {j} reaches no output"
            );
        }
        // The context reaches every output but the first (which, as in Germain et al.
        // and Pyro's conditional MADE, sees no hidden unit: hidden degrees start at 1).
        let h2 = (&x[1] + 1.0).unwrap();
        let moved = eval(&x[0], &h2);
        assert!(moved[0].iter().zip(&base[0]).skip(1).all(|(a, b)| a != b));
    }
}

#[test]
fn made_masks_by_hand() {
    // Z = 3, no context, one hidden layer of 4: hidden degrees 1, 2, 1, 2.
    let m = dense::made_masks(3, 0, &[4], 1);
    assert_eq!(m[0].1, 4);
    assert_eq!(m[0].2, 3);
    #[rustfmt::skip]
    let want0 = vec![
        1., 0., 0.,
        1., 1., 0.,
        1., 0., 0.,
        1., 1., 0.,
    ];
    assert_eq!(m[0].0, want0);
    // output degrees 1, 2, 3 see hidden degrees < d.
    #[rustfmt::skip]
    let want1 = vec![
        0., 0., 0., 0.,
        1., 0., 1., 0.,
        1., 1., 1., 1.,
    ];
    assert_eq!(m[1].0, want1);
}

// ---------------------------------------------------------------------------------
// Weight posteriors

fn bayes_linear(weights: Weights) -> (VarMap, Box<dyn Network>, NetDef) {
    let mut n = net(
        "b",
        &[("x", real(&[3]))],
        &[("y", real(&[2]))],
        Arch::Linear { bias: true },
    );
    n.weights = weights;
    let (vm, f) = built(&n);
    (vm, f, n)
}

fn set(vm: &mut VarMap, k: &str, v: &[f32], shape: &[usize]) {
    vm.set_one(
        k,
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap(),
    )
    .unwrap();
}

const X: [f32; 3] = [0.5, -1.0, 2.0];
const MU: [f32; 6] = [0.3, -0.2, 0.1, 0.7, 0.0, -0.4];
const LV: [f32; 6] = [-1.0, -2.0, -0.5, -3.0, -1.5, -2.5];

#[test]
fn bayes_kl_matches_closed_form() {
    let (mut vm, f, _) = bayes_linear(Weights::Bayes { prior_scale: 0.5 });
    set(&mut vm, "b.layer0.weight_mu", &MU, &[2, 3]);
    set(&mut vm, "b.layer0.weight_logvar", &LV, &[2, 3]);
    set(&mut vm, "b.layer0.bias_mu", &[0.2, -0.1], &[2]);
    set(&mut vm, "b.layer0.bias_logvar", &[-1.0, 0.0], &[2]);
    let kl: f32 = f.weight_kl().unwrap().unwrap().to_scalar().unwrap();
    // KL(N(m, s²) ‖ N(0, p²)) = ln(p/s) + (s² + m²)/(2p²) − ½
    let p = 0.5f64;
    let one = |m: f64, lv: f64| (p.ln() - 0.5 * lv) + (lv.exp() + m * m) / (2.0 * p * p) - 0.5;
    let want: f64 = MU
        .iter()
        .zip(&LV)
        .map(|(&m, &l)| one(m as f64, l as f64))
        .sum::<f64>()
        + one(0.2, -1.0)
        + one(-0.1, 0.0);
    assert!(
        (kl as f64 - want).abs() < 1e-4 * want.abs(),
        "{kl} vs {want}"
    );
}

/// Mean and variance over rows of each output column.
fn moments(t: &Tensor) -> Vec<(f64, f64)> {
    let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
    let r = v.len() as f64;
    (0..v[0].len())
        .map(|j| {
            let m = v.iter().map(|row| row[j] as f64).sum::<f64>() / r;
            let var = v.iter().map(|row| (row[j] as f64 - m).powi(2)).sum::<f64>() / r;
            (m, var)
        })
        .collect()
}

#[test]
fn bayes_local_reparameterization_has_the_right_moments() {
    let (mut vm, f, _) = bayes_linear(Weights::Bayes { prior_scale: 1.0 });
    set(&mut vm, "b.layer0.weight_mu", &MU, &[2, 3]);
    set(&mut vm, "b.layer0.weight_logvar", &LV, &[2, 3]);
    set(&mut vm, "b.layer0.bias_mu", &[0.2, -0.1], &[2]);
    set(&mut vm, "b.layer0.bias_logvar", &[-1.0, 0.0], &[2]);
    let r = 40_000;
    let x = Tensor::from_vec(X.to_vec(), (1, 3), &Device::Cpu)
        .unwrap()
        .repeat((r, 1))
        .unwrap();
    let mut rng = Rng::seed(4);
    let y = f
        .forward(
            std::slice::from_ref(&x),
            &mut NetCtx {
                train: true,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    let bm = [0.2f64, -0.1];
    let blv = [-1.0f64, 0.0];
    for (j, (m, v)) in moments(&y[0]).into_iter().enumerate() {
        let want_m: f64 = (0..3)
            .map(|i| X[i] as f64 * MU[j * 3 + i] as f64)
            .sum::<f64>()
            + bm[j];
        let want_v: f64 = (0..3)
            .map(|i| (X[i] as f64).powi(2) * (LV[j * 3 + i] as f64).exp())
            .sum::<f64>()
            + blv[j].exp();
        let se = (want_v / r as f64).sqrt();
        assert!((m - want_m).abs() < 5.0 * se, "mean {j}: {m} vs {want_m}");
        assert!(
            (v - want_v).abs() < 0.05 * want_v,
            "var {j}: {v} vs {want_v}"
        );
    }
    // The noise comes from vic's generator: the same seed gives the same draws.
    let again = f
        .forward(
            std::slice::from_ref(&x),
            &mut NetCtx {
                train: true,
                rng: &mut Rng::seed(4),
                prune: None,
            },
        )
        .unwrap();
    let first: Vec<f32> = y[0].flatten_all().unwrap().to_vec1().unwrap();
    let second: Vec<f32> = again[0].flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(first, second);
    // Evaluation uses the mean weights.
    let e = f
        .forward(
            &[x.narrow(0, 0, 2).unwrap()],
            &mut NetCtx {
                train: false,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    let e: Vec<Vec<f32>> = e[0].to_vec2().unwrap();
    let want0: f64 = (0..3).map(|i| X[i] as f64 * MU[i] as f64).sum::<f64>() + 0.2;
    assert!((e[0][0] as f64 - want0).abs() < 1e-6);
    assert_eq!(e[0], e[1]);
}

/// Molchanov et al. (2017)'s approximation, written out independently.
fn molchanov_kl(la: f64) -> f64 {
    let (k1, k2, k3) = (0.63576, 1.87320, 1.48695);
    let sig = 1.0 / (1.0 + (-(k2 + k3 * la)).exp());
    -(k1 * sig - 0.5 * (1.0 + (-la).exp()).ln() - k1)
}

#[test]
fn vdrop_kl_and_moments() {
    let theta = [0.5f32, -1.0, 0.25, 2.0, 0.1, -0.3];
    let la_b = [-2.0f32, 0.0, 1.0, -4.0, 2.5, -0.5];
    // kind B: one log α per weight, learned as log σ² = log α + log θ² (the additive
    // parameterization of sparse variational dropout).
    let (mut vm, f, _) = bayes_linear(Weights::Vdrop {
        kind: VdropKind::B,
        kl: crate::ir::VdropKl::Molchanov,
    });
    set(&mut vm, "b.layer0.weight", &theta, &[2, 3]);
    let ls2: Vec<f32> = la_b
        .iter()
        .zip(&theta)
        .map(|(l, t)| l + (t * t).ln())
        .collect();
    set(&mut vm, "b.layer0.weight_log_sigma2", &ls2, &[2, 3]);
    set(&mut vm, "b.layer0.bias", &[0.2, -0.1], &[2]);
    let kl: f32 = f.weight_kl().unwrap().unwrap().to_scalar().unwrap();
    let want: f64 = la_b.iter().map(|&l| molchanov_kl(l as f64)).sum();
    assert!(
        (kl as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
        "{kl} vs {want}"
    );
    // The approximation is close to 0 for huge α and grows like −½ ln α for small α.
    assert!(molchanov_kl(8.0) < 0.01);
    let r = 40_000;
    let x = Tensor::from_vec(X.to_vec(), (1, 3), &Device::Cpu)
        .unwrap()
        .repeat((r, 1))
        .unwrap();
    let mut rng = Rng::seed(9);
    let y = f
        .forward(
            &[x],
            &mut NetCtx {
                train: true,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    let b = [0.2f64, -0.1];
    for (j, (m, v)) in moments(&y[0]).into_iter().enumerate() {
        let want_m: f64 = (0..3)
            .map(|i| X[i] as f64 * theta[j * 3 + i] as f64)
            .sum::<f64>()
            + b[j];
        let want_v: f64 = (0..3)
            .map(|i| {
                let k = j * 3 + i;
                (X[i] as f64).powi(2) * (la_b[k] as f64).exp() * (theta[k] as f64).powi(2)
            })
            .sum();
        let se = (want_v / r as f64).sqrt();
        assert!((m - want_m).abs() < 5.0 * se, "mean {j}: {m} vs {want_m}");
        assert!(
            (v - want_v).abs() < 0.05 * want_v,
            "var {j}: {v} vs {want_v}"
        );
    }
    // kind A: one log α per output unit, counted once per weight of its row.
    let (mut vm, f, _) = bayes_linear(Weights::Vdrop {
        kind: VdropKind::A,
        kl: crate::ir::VdropKl::Molchanov,
    });
    set(&mut vm, "b.layer0.weight", &theta, &[2, 3]);
    set(&mut vm, "b.layer0.weight_log_alpha", &[-1.0, 2.0], &[2]);
    let kl: f32 = f.weight_kl().unwrap().unwrap().to_scalar().unwrap();
    let want = 3.0 * (molchanov_kl(-1.0) + molchanov_kl(2.0));
    assert!(
        (kl as f64 - want).abs() < 1e-4 * want.abs(),
        "{kl} vs {want}"
    );
}

fn set_net(mut n: NetDef) -> NetDef {
    n.inputs[0].set = true;
    n
}

fn gru_net() -> NetDef {
    net(
        "cell",
        &[
            ("h", real(&[3])),
            ("x", real(&[2])),
            ("b", ty(Domain::Binary, &[1])),
        ],
        &[("cell", real(&[3]))],
        Arch::Gru,
    )
}

fn lstm_net() -> NetDef {
    net(
        "lstm",
        &[("h", real(&[2])), ("c", real(&[2])), ("x", real(&[3]))],
        &[("h", real(&[2])), ("c", real(&[2]))],
        Arch::Lstm,
    )
}

fn conv_net() -> NetDef {
    net(
        "enc",
        &[("img", real(&[1, 5, 5])), ("e", real(&[2]))],
        &[("loc", real(&[3])), ("scale", ty(Domain::Positive, &[3]))],
        Arch::Conv {
            channels: vec![2, 3],
            kernel: 3,
            stride: 2,
            act: Activation::Relu,
            hidden: vec![4],
        },
    )
}

fn deconv_net(head: &[usize], channels: &[usize], kernel: usize, hidden: &[usize]) -> NetDef {
    net(
        "dec",
        &[("z", real(&[3]))],
        &[("x", ty(Domain::Binary, head))],
        Arch::Deconv {
            channels: channels.to_vec(),
            kernel,
            stride: 2,
            act: Activation::Elu,
            hidden: hidden.to_vec(),
        },
    )
}

fn deepsets_net(pool: Pool) -> NetDef {
    set_net(net(
        "summary",
        &[("S", real(&[2])), ("w", real(&[1]))],
        &[("s", real(&[2]))],
        Arch::DeepSets {
            phi: vec![3],
            rho: vec![4],
            pool,
            act: Activation::Tanh,
        },
    ))
}

fn more_zoo() -> Vec<NetDef> {
    vec![
        gru_net(),
        net("g0", &[("h", real(&[4]))], &[("h", real(&[4]))], Arch::Gru),
        lstm_net(),
        conv_net(),
        net(
            "c2",
            &[("img", ty(Domain::Binary, &[6, 7]))],
            &[("y", ty(Domain::Simplex, &[4]))],
            Arch::Conv {
                channels: vec![2],
                kernel: 4,
                stride: 1,
                act: Activation::Gelu,
                hidden: vec![],
            },
        ),
        deconv_net(&[1, 7, 7], &[2], 4, &[5]),
        deconv_net(&[2, 8, 12], &[3, 2], 4, &[]),
        deconv_net(&[5, 4], &[], 4, &[6]),
        deepsets_net(Pool::Mean),
        deepsets_net(Pool::Max),
        read_net(),
        write_net(),
        set_net(net(
            "ds",
            &[("S", ty(Domain::Cat(3), &[2]))],
            &[("s", real(&[2]))],
            Arch::DeepSets {
                phi: vec![],
                rho: vec![],
                pool: Pool::Sum,
                act: Activation::Relu,
            },
        )),
    ]
}

#[test]
fn gru_and_lstm_match_torch() {
    against_torch(&gru_net(), "gru", false);
    against_torch(&lstm_net(), "lstm", false);
}

#[test]
fn gru_by_hand() {
    // H = 1, I = 1: every weight 0.5, every bias 0: r = z = σ(0.5 x + 0.5 h),
    // n = tanh(0.5 x + r · 0.5 h), h' = (1 − z) n + z h.
    let n = net(
        "g",
        &[("h", real(&[1])), ("x", real(&[1]))],
        &[("g", real(&[1]))],
        Arch::Gru,
    );
    let (mut vm, f) = built(&n);
    for k in ["weight_ih", "weight_hh"] {
        set(&mut vm, &format!("g.cell.{k}"), &[0.5; 3], &[3, 1]);
    }
    for k in ["bias_ih", "bias_hh"] {
        set(&mut vm, &format!("g.cell.{k}"), &[0.0; 3], &[3]);
    }
    let (h, x) = (0.8f64, -0.6f64);
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let r = sig(0.5 * x + 0.5 * h);
    let nn = (0.5 * x + r * 0.5 * h).tanh();
    let want = (1.0 - r) * nn + r * h;
    let d = &Device::Cpu;
    let mut rng = Rng::seed(0);
    let out = f
        .forward(
            &[
                Tensor::new(&[[h as f32]], d).unwrap(),
                Tensor::new(&[[x as f32]], d).unwrap(),
            ],
            &mut NetCtx {
                train: false,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    let got: Vec<Vec<f32>> = out[0].to_vec2().unwrap();
    assert!((got[0][0] as f64 - want).abs() < 1e-6, "{got:?} vs {want}");
}

#[test]
fn conv_deconv_and_deepsets_match_torch() {
    against_torch(&conv_net(), "conv", false);
    against_torch(&deconv_net(&[1, 7, 7], &[2], 4, &[5]), "deconv", false);
    let mut uneven = deconv_net(&[1, 5, 4], &[2], 4, &[]);
    uneven.heads[0] = Head {
        activation: HeadActivation::None,
        ty: real(&[1, 5, 4]),
        ..uneven.heads[0].clone()
    };
    against_torch(&uneven, "deconv_uneven", false);
    against_torch(&deepsets_net(Pool::Mean), "deepsets_mean", false);
    against_torch(&deepsets_net(Pool::Sum), "deepsets_sum", false);
    against_torch(&deepsets_net(Pool::Max), "deepsets_max", false);
}

fn shapes_of(n: &NetDef, r: usize) -> Vec<Vec<usize>> {
    let (_vm, f) = built(n);
    let mut rng = Rng::seed(3);
    let x = inputs_for(n, r, &mut rng);
    let out = f
        .forward(
            &x,
            &mut NetCtx {
                train: true,
                rng: &mut rng,
                prune: None,
            },
        )
        .unwrap();
    out.iter().map(|o| o.dims().to_vec()).collect()
}

#[test]
fn conv_and_deconv_output_shapes() {
    // Odd and even sides, one or more layers, [H, W] read as one channel.
    for (head, channels, kernel) in [
        (vec![1, 28, 28], vec![64, 32], 4),
        (vec![1, 7, 7], vec![2], 4),
        (vec![3, 9, 9], vec![4, 2], 4),
        (vec![2, 8, 12], vec![3, 2], 4),
        (vec![1, 11, 11], vec![3], 3),
        (vec![5, 4], vec![2], 4),
        (vec![1, 5, 5], vec![], 4),
    ] {
        let n = deconv_net(&head, &channels, kernel, &[6]);
        let mut want = vec![2];
        want.extend_from_slice(&head);
        assert_eq!(shapes_of(&n, 2), vec![want], "{head:?} {channels:?}");
    }
    for (img, kernel, stride) in [
        (vec![1, 28, 28], 3, 2),
        (vec![3, 9, 7], 3, 2),
        (vec![2, 5, 5], 5, 1),
        (vec![6, 7], 4, 3),
    ] {
        let n = net(
            "c",
            &[("img", real(&img)), ("y", ty(Domain::Cat(3), &[]))],
            &[("a", real(&[2, 2])), ("b", ty(Domain::Unit, &[3]))],
            Arch::Conv {
                channels: vec![4, 3],
                kernel,
                stride,
                act: Activation::Relu,
                hidden: vec![5],
            },
        );
        assert_eq!(shapes_of(&n, 3), vec![vec![3, 2, 2], vec![3, 3]], "{img:?}");
        let (vm, _) = built(&n);
        let count: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(count as u64, arch::param_count(&n));
    }
}

#[test]
fn deconv_that_cannot_reach_the_head_is_an_error() {
    // k = 3, s = 2, p = 0: sides 2·h + 1 from h = 8/4 = 2 give 5, then 11: never 8.
    let n = deconv_net(&[1, 8, 8], &[2, 2], 3, &[]);
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu).pp("dec");
    let e = match build(&n, vb) {
        Ok(_) => panic!("built"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("8x8"), "{e}");
}

#[test]
fn deepsets_is_permutation_invariant() {
    for pool in [Pool::Mean, Pool::Sum, Pool::Max] {
        let n = deepsets_net(pool);
        let (_vm, f) = built(&n);
        let mut rng = Rng::seed(8);
        let x = inputs_for(&n, 2, &mut rng);
        let perm = Tensor::new(&[3u32, 0, 4, 2, 1], &Device::Cpu).unwrap();
        let shuffled = x[0].index_select(&perm, 1).unwrap();
        let run = |s: &Tensor| -> Vec<f32> {
            let mut r = Rng::seed(0);
            f.forward(
                &[s.clone(), x[1].clone()],
                &mut NetCtx {
                    train: false,
                    rng: &mut r,
                    prune: None,
                },
            )
            .unwrap()[0]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let (a, b) = (run(&x[0]), run(&shuffled));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5, "{pool:?}: {a:?} vs {b:?}");
        }
    }
}

fn read_net() -> NetDef {
    net(
        "read",
        &[("img", real(&[2, 6, 5])), ("h", real(&[3]))],
        &[("read", real(&[18]))],
        Arch::AttendRead { grid: 3 },
    )
}

fn write_net() -> NetDef {
    net(
        "write",
        &[("h", real(&[3]))],
        &[("write", real(&[2, 6, 5]))],
        Arch::AttendWrite { grid: 3 },
    )
}

#[test]
fn attention_matches_torch() {
    against_torch(&read_net(), "attend_read", false);
    against_torch(&write_net(), "attend_write", false);
}

#[test]
fn attention_with_a_unit_grid_copies_the_image() {
    // N = H = W = 4, centre g̃ = 0, δ̃ = 1 (δ = (4 − 1)/(4 − 1) = 1), σ² = 1e-4, γ = 1:
    // the filter centres are the pixels 1..4 and both filterbanks are the identity.
    let params = |vm: &mut VarMap, name: &str, inp: usize| {
        set(
            vm,
            &format!("{name}.params.weight"),
            &vec![0.0; 5 * inp],
            &[5, inp],
        );
        set(
            vm,
            &format!("{name}.params.bias"),
            &[0.0, 0.0, (1e-4f32).ln(), 0.0, 0.0],
            &[5],
        );
    };
    let d = &Device::Cpu;
    let read = net(
        "r",
        &[("img", real(&[1, 4, 4])), ("h", real(&[2]))],
        &[("g", real(&[1, 4, 4]))],
        Arch::AttendRead { grid: 4 },
    );
    let (mut vm, f) = built(&read);
    params(&mut vm, "r", 2);
    let mut rng = Rng::seed(1);
    let img = rng.normal(&[2, 1, 4, 4], d).unwrap();
    let h = rng.normal(&[2, 2], d).unwrap();
    let mut ctx = NetCtx {
        train: false,
        rng: &mut rng,
        prune: None,
    };
    let out = f.forward(&[img.clone(), h.clone()], &mut ctx).unwrap();
    close(&out[0], &img, 1e-5, "read");
    let write = net(
        "w",
        &[("h", real(&[2]))],
        &[("x", real(&[1, 4, 4]))],
        Arch::AttendWrite { grid: 4 },
    );
    let (mut vm, f) = built(&write);
    params(&mut vm, "w", 2);
    let patch: Vec<f32> = (0..16).map(|i| i as f32 * 0.1).collect();
    set(&mut vm, "w.patch.weight", &[0.0; 32], &[16, 2]);
    set(&mut vm, "w.patch.bias", &patch, &[16]);
    let out = f.forward(&[h], &mut ctx).unwrap();
    let want = Tensor::from_vec(patch, (1, 1, 4, 4), d)
        .unwrap()
        .repeat((2, 1, 1, 1))
        .unwrap();
    close(&out[0], &want, 1e-5, "write");
}

/// The same network with tanh activations (finite differences across a ReLU kink lie).
fn smooth(mut n: NetDef) -> NetDef {
    if let Arch::Conv { act, .. } = &mut n.arch {
        *act = Activation::Tanh;
    }
    n
}

/// Central finite differences of a scalar loss against candle's backward pass, for a few
/// entries of every parameter (f32: a loose tolerance, but a wrong formula is far off).
#[test]
fn gradients_match_finite_differences() {
    let nets = [
        deconv_net(&[1, 5, 4], &[2], 4, &[3]),
        deconv_net(&[2, 7, 7], &[3, 2], 4, &[]),
        smooth(conv_net()),
        smooth(net(
            "c2",
            &[("img", real(&[2, 6, 7]))],
            &[("y", real(&[4]))],
            Arch::Conv {
                channels: vec![2],
                kernel: 4,
                stride: 1,
                act: Activation::Tanh,
                hidden: vec![],
            },
        )),
        gru_net(),
        lstm_net(),
        read_net(),
        write_net(),
        deepsets_net(Pool::Max),
        mlp_net(Activation::Gelu, Norm::Layer),
    ];
    for n in nets {
        let (vm, f) = built(&n);
        let mut rng = Rng::seed(21);
        let x = inputs_for(&n, 3, &mut rng);
        // A fixed random projection of every output, so no symmetry hides an error.
        let proj: Vec<Tensor> = {
            let mut r0 = Rng::seed(5);
            let mut ctx = NetCtx {
                train: false,
                rng: &mut r0,
                prune: None,
            };
            f.forward(&x, &mut ctx)
                .unwrap()
                .iter()
                .map(|o| rng.normal(o.dims(), &Device::Cpu).unwrap())
                .collect()
        };
        let loss = || -> Tensor {
            let mut r0 = Rng::seed(5);
            let mut ctx = NetCtx {
                train: false,
                rng: &mut r0,
                prune: None,
            };
            f.forward(&x, &mut ctx)
                .unwrap()
                .iter()
                .zip(&proj)
                .map(|(o, p)| (o * p).unwrap().sum_all().unwrap())
                .reduce(|a, b| (a + b).unwrap())
                .unwrap()
        };
        let grads = loss().backward().unwrap();
        let vars: Vec<(String, candle_core::Var)> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in vars {
            let g: Vec<f32> = grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let orig: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let eps = 1e-2f32;
            for i in (0..orig.len()).step_by(orig.len().div_ceil(4)) {
                let at = |d: f32| -> f64 {
                    let mut w = orig.clone();
                    w[i] += d;
                    v.set(&Tensor::from_vec(w, v.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    loss().to_scalar::<f32>().unwrap() as f64
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                v.set(&Tensor::from_vec(orig.clone(), v.shape(), &Device::Cpu).unwrap())
                    .unwrap();
                let an = g[i] as f64;
                assert!(
                    (fd - an).abs() <= 2e-2 * (1.0 + an.abs()),
                    "{k}[{i}]: finite differences {fd}, backward {an}"
                );
            }
        }
    }
}

#[test]
fn bayes_convolution_moments_match_the_closed_form() {
    // One 3x3 kernel, stride 2, padding 1, on a 4x4 image: out[oy, ox] =
    // Σ x[2oy − 1 + ky, 2ox − 1 + kx] w[ky, kx] + b (zero outside), and under local
    // reparameterization Var = Σ x² σ_w² + σ_b².
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let spec = layers::LinearSpec {
        op: layers::Op::Conv {
            stride: 2,
            padding: 1,
        },
        w_shape: vec![1, 1, 3, 3],
        bias: true,
        bound: 0.3,
        weight_name: "weight",
        bias_name: "bias",
    };
    let mut rng = Rng::seed(0);
    let conv = layers::Linear::new(
        &spec,
        &Weights::Bayes { prior_scale: 1.0 },
        None,
        &vb,
        &mut rng,
    )
    .unwrap();
    let mut vm = vm;
    let w: Vec<f32> = (0..9).map(|i| (i as f32 - 4.0) * 0.2).collect();
    let lv: Vec<f32> = (0..9).map(|i| -1.0 - 0.2 * i as f32).collect();
    set(&mut vm, "weight_mu", &w, &[1, 1, 3, 3]);
    set(&mut vm, "weight_logvar", &lv, &[1, 1, 3, 3]);
    set(&mut vm, "bias_mu", &[0.3], &[1]);
    set(&mut vm, "bias_logvar", &[-2.0], &[1]);
    let img: Vec<f32> = (0..16).map(|i| ((i * 7) % 5) as f32 * 0.5 - 1.0).collect();
    let r = 30_000;
    let x = Tensor::from_vec(img.clone(), (1, 1, 4, 4), &Device::Cpu)
        .unwrap()
        .repeat((r, 1, 1, 1))
        .unwrap();
    let mut ctx = NetCtx {
        train: true,
        rng: &mut rng,
        prune: None,
    };
    let y = conv.forward(&x, &mut ctx).unwrap(); // [R, 1, 2, 2]
    let y = y.reshape((r, 4)).unwrap();
    for (j, (m, v)) in moments(&y).into_iter().enumerate() {
        let (oy, ox) = (j / 2, j % 2);
        let (mut want_m, mut want_v) = (0.3f64, (-2.0f64).exp());
        for ky in 0..3 {
            for kx in 0..3 {
                let (iy, ix) = (2 * oy + ky, 2 * ox + kx);
                if iy == 0 || ix == 0 || iy > 4 || ix > 4 {
                    continue; // padding
                }
                let xv = img[(iy - 1) * 4 + (ix - 1)] as f64;
                want_m += xv * w[ky * 3 + kx] as f64;
                want_v += xv * xv * (lv[ky * 3 + kx] as f64).exp();
            }
        }
        let se = (want_v / r as f64).sqrt();
        assert!((m - want_m).abs() < 5.0 * se, "mean {j}: {m} vs {want_m}");
        assert!(
            (v - want_v).abs() < 0.05 * want_v,
            "var {j}: {v} vs {want_v}"
        );
    }
}

#[test]
fn sparse_vdrop_drops_weights_past_log_alpha_three_from_the_mean() {
    let theta = [0.5f32, -1.0, 0.25, 2.0, 0.1, -0.3];
    // Entry 3 (θ = 2) has log α = 5: pruned in the training mean and when evaluating
    // with pruning; its noise stays in training.
    let la = [-6.0f32, -6.0, -6.0, 5.0, -6.0, -6.0];
    let (mut vm, f, _) = bayes_linear(Weights::Vdrop {
        kind: VdropKind::B,
        kl: crate::ir::VdropKl::Molchanov,
    });
    set(&mut vm, "b.layer0.weight", &theta, &[2, 3]);
    let ls2: Vec<f32> = la
        .iter()
        .zip(&theta)
        .map(|(l, t)| l + (t * t).ln())
        .collect();
    set(&mut vm, "b.layer0.weight_log_sigma2", &ls2, &[2, 3]);
    set(&mut vm, "b.layer0.bias", &[0.0, 0.0], &[2]);
    let x = Tensor::from_vec(X.to_vec(), (1, 3), &Device::Cpu).unwrap();
    let out = |train: bool, prune: Option<f64>, rows: usize| {
        let mut rng = Rng::seed(3);
        let y = f
            .forward(
                &[x.repeat((rows, 1)).unwrap()],
                &mut NetCtx {
                    train,
                    rng: &mut rng,
                    prune,
                },
            )
            .unwrap();
        moments(&y[0])
    };
    let full: f64 = (0..3).map(|i| X[i] as f64 * theta[3 + i] as f64).sum();
    let pruned = full - X[0] as f64 * theta[3] as f64;
    assert!((out(false, None, 1)[1].0 - full).abs() < 1e-5);
    assert!((out(false, Some(3.0), 1)[1].0 - pruned).abs() < 1e-5);
    let (m, v) = out(true, None, 40_000)[1];
    let var: f64 = (0..3)
        .map(|i| (X[i] as f64).powi(2) * (la[3 + i] as f64).exp() * (theta[3 + i] as f64).powi(2))
        .sum();
    assert!(
        (m - pruned).abs() < 5.0 * (var / 40_000.0).sqrt(),
        "{m} vs {pruned}"
    );
    assert!((v - var).abs() < 0.05 * var, "{v} vs {var}");
}

/// A network called at `rows` rows with some inputs at fewer rows (the data under an
/// enumerated latent) gives what it gives on the lifted inputs, values and every
/// parameter's gradient: for every fused activation and gelu, with a norm (the lifted
/// path), for a one-layer `linear`, and with the short inputs first, last and between.
#[test]
fn forward_rows_equals_forward_on_lifted_inputs() {
    use crate::lower::eval::lift;
    let mut rng = crate::rng::Rng::seed(21);
    let three = |arch: Arch| {
        net(
            "m",
            &[("x", real(&[6])), ("c", real(&[3])), ("w", real(&[2]))],
            &[("a", real(&[2])), ("s", ty(Domain::Positive, &[3]))],
            arch,
        )
    };
    let mut cases = Vec::new();
    for act in [
        Activation::Relu,
        Activation::Softplus,
        Activation::Tanh,
        Activation::Gelu,
    ] {
        cases.push(three(mlp(&[7, 5], act, Norm::None)));
    }
    cases.push(three(mlp(&[7], Activation::Relu, Norm::Layer)));
    cases.push(three(Arch::Linear { bias: true }));
    let (b, rows) = (3, 12);
    for def in &cases {
        // Which inputs come at b rows (the rest at all rows).
        for short in [
            [true, false, false],
            [false, false, true],
            [true, false, true],
        ] {
            let (vm, n) = built(def);
            let inputs: Vec<Tensor> = [6, 3, 2]
                .iter()
                .zip(short)
                .map(|(&w, s)| {
                    rng.normal(&[if s { b } else { rows }, w], &Device::Cpu)
                        .unwrap()
                })
                .collect();
            let lifted: Vec<Tensor> = inputs.iter().map(|x| lift(x, rows).unwrap()).collect();
            let weights = rng.normal(&[rows, 5], &Device::Cpu).unwrap();
            let run = |split: bool| {
                let mut r = crate::rng::Rng::seed(0);
                let mut ctx = NetCtx {
                    train: true,
                    rng: &mut r,
                    prune: None,
                };
                let out = if split {
                    n.forward_rows(&inputs, rows, &mut ctx).unwrap()
                } else {
                    n.forward(&lifted, &mut ctx).unwrap()
                };
                let y = Tensor::cat(&out, 1).unwrap();
                let g = (&y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let data = vm.data().lock().unwrap();
                let grads: BTreeMap<String, Tensor> = data
                    .iter()
                    .map(|(k, v)| (k.clone(), g.get(v.as_tensor()).unwrap().clone()))
                    .collect();
                (y, grads)
            };
            let (y1, g1) = run(true);
            let (y2, g2) = run(false);
            let what = format!("{:?} short {short:?}", def.arch);
            close(&y1, &y2, 1e-5, &format!("{what}: output"));
            assert_eq!(g1.len(), g2.len());
            for (k, a) in &g1 {
                close(a, &g2[k], 1e-4, &format!("{what}: gradient of {k}"));
            }
        }
    }
}
