//! vic's optimizers against PyTorch trajectories (tests/fixtures/optim_fixtures.json, made
//! by optim_fixtures.py with torch.optim), against hand computations for clipping, and
//! against themselves only where the claim is identity (fast vs generic path, resume).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;
use vic::ir;
use vic::train::optim::{OptimError, Optimizer, StateProblem};

fn var(data: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(data, shape, &Device::Cpu).unwrap()).unwrap()
}

fn values(v: &Var) -> Vec<f32> {
    v.as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn config_of(spec: &Value) -> ir::Optimizer {
    let f = |k: &str| spec[k].as_f64().unwrap();
    let betas = || {
        let b = spec["betas"].as_array().unwrap();
        [b[0].as_f64().unwrap(), b[1].as_f64().unwrap()]
    };
    match spec["kind"].as_str().unwrap() {
        "adam" => ir::Optimizer::Adam {
            lr: f("lr"),
            betas: betas(),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
        },
        "adamax" => ir::Optimizer::Adamax {
            lr: f("lr"),
            betas: betas(),
            eps: f("eps"),
        },
        "sgd" => ir::Optimizer::Sgd {
            lr: f("lr"),
            momentum: f("momentum"),
        },
        k => panic!("unknown optimizer {k}"),
    }
}

fn adam() -> ir::Optimizer {
    ir::Optimizer::Adam {
        lr: 1e-3,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// Replays one fixture case; returns the parameter values after every step.
fn replay(case: &Value, generic: bool) -> Vec<Vec<Vec<f32>>> {
    let vars: Vec<(String, Var)> = case["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let shape: Vec<usize> = p["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (
                p["name"].as_str().unwrap().to_string(),
                var(&f32s(&p["init"]), &shape),
            )
        })
        .collect();
    let mut opt = Optimizer::new(
        &config_of(&case["optimizer"]),
        case["clip"].as_f64(),
        vars.clone(),
    )
    .unwrap();
    if generic {
        opt = opt.with_generic_path().unwrap();
    }
    let mut out = Vec::new();
    for step in case["steps"].as_array().unwrap() {
        let mut grads = GradStore::default();
        for ((_, v), g) in vars.iter().zip(step["grads"].as_array().unwrap()) {
            if !g.is_null() {
                let t = Tensor::from_slice(&f32s(g), v.shape(), &Device::Cpu).unwrap();
                grads.insert(v.as_tensor(), t);
            }
        }
        let stats = opt.step(&grads, None).unwrap();
        if let Some(norm) = step["grad_norm"].as_f64() {
            assert!(
                (stats.grad_norm - norm).abs() <= 1e-6 * norm,
                "{}: grad norm {} vs torch {norm}",
                case["name"],
                stats.grad_norm
            );
        }
        out.push(vars.iter().map(|(_, v)| values(v)).collect());
    }
    out
}

#[test]
fn matches_torch_optim_trajectories() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optim_fixtures.json"
    ))
    .unwrap();
    let fixtures: Value = serde_json::from_str(&text).unwrap();
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let fast = replay(case, false);
        let generic = replay(case, true);
        assert_eq!(fast, generic, "{name}: fast and generic paths differ");
        // Relative to the larger of the parameter before and after the step: the last
        // operation is `p + update`, whose rounding is relative to its operands (torch's
        // fused multiply-adds round once where we round twice), and a parameter that
        // crosses zero would make a relative error to the result alone meaningless.
        let mut worst = 0.0f64;
        let mut before: Vec<Vec<f32>> = case["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| f32s(&p["init"]))
            .collect();
        for (s, (ours, step)) in fast
            .iter()
            .zip(case["steps"].as_array().unwrap())
            .enumerate()
        {
            let theirs: Vec<Vec<f32>> = step["params_after"]
                .as_array()
                .unwrap()
                .iter()
                .map(f32s)
                .collect();
            for (p, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                for ((x, &y), &y0) in a.iter().zip(b).zip(&before[p]) {
                    let scale = (y as f64).abs().max((y0 as f64).abs()).max(1e-6);
                    let rel = ((*x as f64) - (y as f64)).abs() / scale;
                    worst = worst.max(rel);
                    assert!(
                        rel <= 1e-6,
                        "{name}: step {s} param {p}: {x} vs torch {y} (relative {rel:e})"
                    );
                }
            }
            before = theirs;
        }
        // Each case must move its parameters, or the comparison proves nothing.
        let init = f32s(&case["params"][0]["init"]);
        assert_ne!(
            fast[fast.len() - 1][0],
            init,
            "{name}: parameters did not move"
        );
        eprintln!("{name}: worst relative difference to torch {worst:e}");
    }
}

fn sgd(lr: f64, momentum: f64) -> ir::Optimizer {
    ir::Optimizer::Sgd { lr, momentum }
}

#[test]
fn clipping_matches_a_hand_computation() {
    // Gradients [3, 4] and [12]: global norm 13. clip = 6.5 scales them by
    // 6.5 / (13 + 1e-6); plain SGD with lr = 1 from 0 makes p = -scale * g.
    for generic in [false, true] {
        let a = var(&[0.0, 0.0], &[2]);
        let b = var(&[0.0], &[1]);
        let mut opt = Optimizer::new(
            &sgd(1.0, 0.0),
            Some(6.5),
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        )
        .unwrap();
        if generic {
            opt = opt.with_generic_path().unwrap();
        }
        let mut grads = GradStore::default();
        grads.insert(
            a.as_tensor(),
            Tensor::new(&[3f32, 4.], &Device::Cpu).unwrap(),
        );
        grads.insert(b.as_tensor(), Tensor::new(&[12f32], &Device::Cpu).unwrap());
        let stats = opt.step(&grads, None).unwrap();
        assert_eq!(stats.grad_norm, 13.0);
        let scale = (6.5 / (13.0 + 1e-6)) as f32;
        assert_eq!(stats.clip_scale, scale);
        assert!((scale - 0.5).abs() < 1e-7);
        assert_eq!(values(&a), vec![-(3.0 * scale), -(4.0 * scale)]);
        assert_eq!(values(&b), vec![-(12.0 * scale)]);

        // Only the group's gradients count: `a` alone has norm 5 < 6.5, no clipping.
        let stats = opt.step(&grads, Some(&[0])).unwrap();
        assert_eq!(stats.grad_norm, 5.0);
        assert_eq!(stats.clip_scale, 1.0);
        assert_eq!(values(&a), vec![-(3.0 * scale) - 3.0, -(4.0 * scale) - 4.0]);
        assert_eq!(values(&b), vec![-(12.0 * scale)], "b is not in the group");
        assert_eq!(opt.param_steps(0), Some(2));
        assert_eq!(opt.param_steps(1), Some(1));
    }
}

#[test]
fn non_finite_gradients_are_named_and_change_nothing() {
    let init_a = [0.5f32, -1.0, 2.0];
    let a = var(&init_a, &[3]);
    let b = var(&[1.0, 1.0], &[2]);
    let c = var(&[3.0], &[1]);
    let params = vec![
        ("enc.w".to_string(), a.clone()),
        ("enc.b".to_string(), b.clone()),
        ("dec.w".to_string(), c.clone()),
    ];
    let mut opt = Optimizer::new(&adam(), Some(1.0), params).unwrap();
    let mut grads = GradStore::default();
    grads.insert(
        a.as_tensor(),
        Tensor::new(&[0.1f32, 0.2, 0.3], &Device::Cpu).unwrap(),
    );
    grads.insert(
        b.as_tensor(),
        Tensor::new(&[f32::NAN, 0.0], &Device::Cpu).unwrap(),
    );
    grads.insert(
        c.as_tensor(),
        Tensor::new(&[f32::INFINITY], &Device::Cpu).unwrap(),
    );
    let err = opt.step(&grads, None).unwrap_err();
    match &err {
        OptimError::NonFiniteGradient { params } => {
            assert_eq!(params, &vec!["enc.b".to_string(), "dec.w".to_string()])
        }
        e => panic!("unexpected error {e}"),
    }
    assert!(err.to_string().contains("`enc.b`"));
    assert_eq!(values(&a), init_a.to_vec());
    assert_eq!(values(&b), vec![1.0, 1.0]);
    assert_eq!(opt.param_steps(0), Some(0));

    // Moments untouched too: the next good step equals a fresh optimizer's first step.
    let mut good = GradStore::default();
    good.insert(
        a.as_tensor(),
        Tensor::new(&[0.1f32, 0.2, 0.3], &Device::Cpu).unwrap(),
    );
    opt.step(&good, None).unwrap();
    let fresh = var(&init_a, &[3]);
    let mut fresh_opt =
        Optimizer::new(&adam(), Some(1.0), vec![("enc.w".into(), fresh.clone())]).unwrap();
    let mut g = GradStore::default();
    g.insert(
        fresh.as_tensor(),
        Tensor::new(&[0.1f32, 0.2, 0.3], &Device::Cpu).unwrap(),
    );
    fresh_opt.step(&g, None).unwrap();
    assert_eq!(values(&a), values(&fresh));
    assert_ne!(values(&a), init_a.to_vec());

    // A huge but finite gradient is not "non-finite" (its square overflows f32, not f64).
    let mut huge = GradStore::default();
    huge.insert(
        a.as_tensor(),
        Tensor::new(&[1e30f32, 0.0, 0.0], &Device::Cpu).unwrap(),
    );
    let stats = opt.step(&huge, None).unwrap();
    assert_eq!(stats.grad_norm, 1e30f32 as f64);
}

/// Deterministic pseudo-random values in [-scale, scale).
fn noise(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn configs() -> Vec<(ir::Optimizer, Option<f64>)> {
    vec![
        (
            ir::Optimizer::Adam {
                lr: 1e-2,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 1e-2,
            },
            Some(5.0),
        ),
        (adam(), None),
        (
            ir::Optimizer::Adamax {
                lr: 2e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
            },
            Some(50.0),
        ),
        (sgd(0.1, 0.9), None),
        (sgd(0.1, 0.0), Some(10.0)),
    ]
}

/// Two parameters, one big enough for the parallel chunks (3 x 12345 > 2 x 16384).
const SHAPES: [&[usize]; 2] = [&[3, 12345], &[7]];

fn fresh_params(seed: u64) -> Vec<(String, Var)> {
    SHAPES
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let n = s.iter().product();
            (format!("p{i}"), var(&noise(n, seed + i as u64, 1.0), s))
        })
        .collect()
}

fn grads_for(params: &[(String, Var)], step: u64) -> GradStore {
    let mut g = GradStore::default();
    for (i, (_, v)) in params.iter().enumerate() {
        let data = noise(v.elem_count(), 1000 + 10 * step + i as u64, 0.1);
        g.insert(
            v.as_tensor(),
            Tensor::from_slice(&data, v.shape(), &Device::Cpu).unwrap(),
        );
    }
    g
}

#[test]
fn fast_and_generic_paths_agree_bit_for_bit() {
    for (config, clip) in configs() {
        let run = |generic: bool| {
            let params = fresh_params(7);
            let mut opt = Optimizer::new(&config, clip, params.clone()).unwrap();
            if generic {
                opt = opt.with_generic_path().unwrap();
            }
            for step in 0..4 {
                opt.step(&grads_for(&params, step), None).unwrap();
            }
            params.iter().map(|(_, v)| values(v)).collect::<Vec<_>>()
        };
        let (fast, generic) = (run(false), run(true));
        assert_eq!(fast, generic, "{config:?}");
        assert_ne!(
            fast[0],
            values(&fresh_params(7)[0].1),
            "{config:?} did not move"
        );
    }
}

#[test]
fn resume_reproduces_an_uninterrupted_run() {
    let dir = std::env::temp_dir().join(format!("vic-optim-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (k, (config, clip)) in configs().into_iter().enumerate() {
        for generic in [false, true] {
            let build = |params: Vec<(String, Var)>| {
                let opt = Optimizer::new(&config, clip, params).unwrap();
                if generic {
                    opt.with_generic_path().unwrap()
                } else {
                    opt
                }
            };
            // Uninterrupted: 10 steps.
            let straight = fresh_params(3);
            let mut opt = build(straight.clone());
            for step in 0..10 {
                opt.step(&grads_for(&straight, step), None).unwrap();
            }

            // 5 steps, save parameters and state to a safetensors file, restore into new
            // variables and a new optimizer, 5 more steps.
            let first = fresh_params(3);
            let mut opt = build(first.clone());
            for step in 0..5 {
                opt.step(&grads_for(&first, step), None).unwrap();
            }
            let mut saved: std::collections::HashMap<String, Tensor> =
                opt.state_tensors().unwrap().into_iter().collect();
            for (name, v) in &first {
                saved.insert(format!("param.{name}"), v.as_tensor().clone());
            }
            let path = dir.join(format!("state-{k}-{generic}.safetensors"));
            candle_core::safetensors::save(&saved, &path).unwrap();
            let mut loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let resumed: Vec<(String, Var)> = first
                .iter()
                .map(|(name, _)| {
                    let t = loaded.remove(&format!("param.{name}")).unwrap();
                    (name.clone(), Var::from_tensor(&t).unwrap())
                })
                .collect();
            let mut opt = build(resumed.clone());
            opt.load_state(loaded).unwrap();
            for step in 5..10 {
                opt.step(&grads_for(&resumed, step), None).unwrap();
            }
            for ((_, a), (_, b)) in straight.iter().zip(&resumed) {
                assert_eq!(values(a), values(b), "{config:?} generic={generic}");
            }
            assert_eq!(opt.param_steps(0), Some(10));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_state_reports_every_mismatch_and_loads_nothing() {
    let params = fresh_params(1);
    let adam_state = Optimizer::new(&adam(), None, params.clone())
        .unwrap()
        .state_tensors()
        .unwrap();
    let mut opt = Optimizer::new(&sgd(0.1, 0.9), None, params.clone()).unwrap();
    let err = opt.load_state(adam_state.clone()).unwrap_err();
    let OptimError::StateMismatch(problems) = &err else {
        panic!("unexpected error {err}")
    };
    assert!(problems.contains(&StateProblem::Missing("p0.momentum_buffer".into())));
    assert!(problems.contains(&StateProblem::Unexpected("p0.exp_avg_sq".into())));
    assert!(err.to_string().contains("`p1.momentum_buffer` is missing"));

    // A shape and a dtype mismatch, by key.
    let mut opt = Optimizer::new(&adam(), None, params.clone()).unwrap();
    let bad: Vec<(String, Tensor)> = adam_state
        .iter()
        .map(|(k, t)| match k.as_str() {
            "p1.exp_avg" => (
                k.clone(),
                Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap(),
            ),
            "p1.exp_avg_sq" => (k.clone(), t.to_dtype(DType::F64).unwrap()),
            "p0.step" => (k.clone(), Tensor::new(&[-1i64], &Device::Cpu).unwrap()),
            _ => (k.clone(), t.clone()),
        })
        .collect();
    let OptimError::StateMismatch(problems) = opt.load_state(bad).unwrap_err() else {
        panic!()
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(matches!(&problems[0], StateProblem::BadStep { key, .. } if key == "p0.step"));
    assert!(matches!(&problems[1], StateProblem::Shape { key, .. } if key == "p1.exp_avg"));
    assert!(matches!(&problems[2], StateProblem::DType { key, .. } if key == "p1.exp_avg_sq"));
    assert_eq!(opt.param_steps(0), Some(0));
}

#[test]
fn group_indices_are_checked_and_missing_gradients_skip() {
    let params = fresh_params(2);
    let before: Vec<Vec<f32>> = params.iter().map(|(_, v)| values(v)).collect();
    let mut opt = Optimizer::new(&adam(), None, params.clone()).unwrap();
    let grads = grads_for(&params, 0);
    assert!(matches!(
        opt.step(&grads, Some(&[0, 2])),
        Err(OptimError::NoSuchParam { index: 2, count: 2 })
    ));
    assert_eq!(values(&params[0].1), before[0]);

    let mut only_first = GradStore::default();
    only_first.insert(
        params[0].1.as_tensor(),
        grads.get(params[0].1.as_tensor()).unwrap().clone(),
    );
    let stats = opt.step(&only_first, None).unwrap();
    assert_eq!((stats.updated, stats.without_grad), (1, 1));
    assert_ne!(values(&params[0].1), before[0]);
    assert_eq!(values(&params[1].1), before[1]);
    assert_eq!(opt.param_steps(1), Some(0));
}

#[test]
fn gradients_from_backprop_and_broadcast_gradients_work() {
    // loss = sum(w * x): the gradient of w is x, a broadcast (non-contiguous) tensor when
    // x is one broadcast value.
    let w = var(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let x = Tensor::new(0.5f32, &Device::Cpu)
        .unwrap()
        .broadcast_as((2, 2))
        .unwrap();
    let loss = (w.as_tensor() * &x).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let mut opt = Optimizer::new(&sgd(1.0, 0.0), None, vec![("w".into(), w.clone())]).unwrap();
    let stats = opt.step(&grads, None).unwrap();
    assert_eq!(stats.grad_norm, 1.0);
    assert_eq!(values(&w), vec![0.5, 1.5, 2.5, 3.5]);

    let mut broadcast = GradStore::default();
    broadcast.insert(w.as_tensor(), x.clone());
    opt.step(&broadcast, None).unwrap();
    assert_eq!(values(&w), vec![0.0, 1.0, 2.0, 3.0]);
}
