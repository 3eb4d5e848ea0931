//! Tests of the distributions against independent truth: scipy / mpmath reference values
//! (tests/fixtures/dist_fixtures.py, its output committed as dist_fixtures.json),
//! numerical integrals for the KLs, central finite differences for every gradient, and
//! Monte Carlo moments for the samplers.

use super::special::{digamma, lgamma, lgamma_f64, softplus};
use super::{kl, DistValue};
use crate::ir::{has_analytic_kl, DistKind, DistParam};
use crate::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var};
use serde_json::Value;

const FIXTURES: &str = include_str!("../../../tests/fixtures/dist_fixtures.json");

/// The CPU, and the GPU when vic is built with `--features cuda` on a machine with one:
/// the reference-value tests run on each.
fn devices() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if let Ok(d) = Device::cuda_if_available(0) {
        if d.is_cuda() {
            v.push(d);
        }
    }
    v
}

fn fixtures() -> Value {
    serde_json::from_str(FIXTURES).unwrap()
}

fn kind_of(name: &str) -> DistKind {
    use DistKind::*;
    match name {
        "Normal" => Normal,
        "LogNormal" => LogNormal,
        "Laplace" => Laplace,
        "StudentT" => StudentT,
        "Uniform" => Uniform,
        "Exponential" => Exponential,
        "Gamma" => Gamma,
        "Beta" => Beta,
        "Bernoulli" => Bernoulli,
        "ContinuousBernoulli" => ContinuousBernoulli,
        "Categorical" => Categorical,
        "Poisson" => Poisson,
        "Dirichlet" => Dirichlet,
        "Mixture" => Mixture,
        other => panic!("unknown family {other}"),
    }
}

fn param_of(name: &str) -> DistParam {
    use DistParam::*;
    match name {
        "loc" => Loc,
        "scale" => Scale,
        "df" => Df,
        "low" => Low,
        "high" => High,
        "rate" => Rate,
        "concentration" => Concentration,
        "a" => A,
        "b" => B,
        "probs" => Probs,
        "logits" => Logits,
        other => panic!("unknown parameter {other}"),
    }
}

/// A JSON number or nested list as a tensor (rows first).
fn json_tensor(v: &Value, dtype: DType, dev: &Device) -> Tensor {
    fn flat(v: &Value, out: &mut Vec<f64>, shape: &mut Vec<usize>, depth: usize) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for it in items {
                    flat(it, out, shape, depth + 1);
                }
            }
            other => out.push(other.as_f64().unwrap()),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    flat(v, &mut out, &mut shape, 0);
    Tensor::from_vec(out, shape.as_slice(), dev)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// A reference list: numbers, with `null` for the infinity of `sign`.
fn json_refs(v: &Value, sign: f64) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(sign * f64::INFINITY))
        .collect()
}

fn json_params(v: &Value, dtype: DType, dev: &Device) -> Vec<(DistParam, Tensor)> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (param_of(k), json_tensor(t, dtype, dev)))
        .collect()
}

fn vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn scalar(x: f64) -> Tensor {
    Tensor::new(x, &Device::Cpu).unwrap()
}

fn t1(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= abs + rel * want.abs()
}

fn assert_all_close(what: &str, got: &[f64], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, rel, abs),
            "{what}[{i}]: got {g}, want {w} (rel {rel}, abs {abs})"
        );
    }
}

/// A distribution from a fixture entry (scalar events; Dirichlet `[K]`; Mixture of a
/// scalar component).
fn fixture_dist(case: &Value, dtype: DType, dev: &Device) -> DistValue {
    let kind = kind_of(case["dist"].as_str().unwrap());
    let params = json_params(&case["params"], dtype, dev);
    match kind {
        DistKind::Mixture => {
            let logits = params[0].1.clone();
            let comp = &case["component"];
            DistValue::mixture(
                logits,
                kind_of(comp["dist"].as_str().unwrap()),
                json_params(&comp["params"], dtype, dev),
                &[],
            )
            .unwrap()
        }
        DistKind::Dirichlet => {
            let k = params[0].1.dims()[1];
            DistValue::new(kind, params, None, &[k]).unwrap()
        }
        _ => DistValue::new(kind, params, None, &[]).unwrap(),
    }
}

// ---------------------------------------------------------------- special functions

#[test]
fn lgamma_and_digamma_match_scipy_in_f64_and_f32() {
    let fx = fixtures();
    for (name, f, rel64, rel32) in [
        (
            "lgamma",
            lgamma as fn(&Tensor) -> Result<Tensor>,
            1e-9,
            2e-6,
        ),
        (
            "digamma",
            digamma as fn(&Tensor) -> Result<Tensor>,
            1e-9,
            2e-6,
        ),
    ] {
        let pairs = fx[name].as_array().unwrap();
        let xs: Vec<f64> = pairs.iter().map(|p| p[0].as_f64().unwrap()).collect();
        let want: Vec<f64> = pairs.iter().map(|p| p[1].as_f64().unwrap()).collect();
        let got = vec1(&f(&t1(&xs)).unwrap());
        assert_all_close(name, &got, &want, rel64, 1e-10);
        let got32 = vec1(&f(&t1(&xs).to_dtype(DType::F32).unwrap()).unwrap());
        // f32: absolute error of a few ulps of the shifted terms (log(x..x+5) ~ 7).
        assert_all_close(name, &got32, &want, rel32, 5e-6);
    }
    // The values the brief names, written out.
    let got = vec1(&lgamma(&t1(&[0.5, 1.0, 10.0])).unwrap());
    assert_all_close(
        "lgamma named",
        &got,
        &[0.5723649429247001, 0.0, 12.801827480081469],
        1e-10,
        1e-10,
    );
    let got = vec1(&digamma(&t1(&[1.0])).unwrap());
    assert_all_close("digamma(1)", &got, &[-0.5772156649015329], 1e-10, 1e-10);
    for x in [0.3, 1.0, 7.5, 1234.5] {
        let t = vec1(&lgamma(&t1(&[x])).unwrap())[0];
        assert!((lgamma_f64(x) - t).abs() < 1e-12, "host lgamma at {x}");
    }
}

#[test]
fn lgamma_gradient_is_digamma_and_digamma_gradient_is_trigamma() {
    let fx = fixtures();
    let xs: Vec<f64> = fx["digamma"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    let psi: Vec<f64> = json_refs(
        &Value::Array(
            fx["digamma"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[1].clone())
                .collect(),
        ),
        1.0,
    );
    let tri: Vec<f64> = fx["trigamma"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect();
    let x = Var::from_tensor(&t1(&xs)).unwrap();
    let g = lgamma(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_all_close("d lgamma", &vec1(g.get(&x).unwrap()), &psi, 1e-8, 1e-9);
    let g = digamma(x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_all_close("d digamma", &vec1(g.get(&x).unwrap()), &tri, 1e-7, 1e-9);
}

#[test]
fn softplus_is_stable_and_its_gradient_is_the_sigmoid_even_at_zero() {
    let xs = [-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0];
    let x = Var::from_tensor(&t1(&xs)).unwrap();
    let y = softplus(x.as_tensor()).unwrap();
    let want: Vec<f64> = xs
        .iter()
        .map(|&v: &f64| v.max(0.0) + (-v.abs()).exp().ln_1p())
        .collect();
    // Absolute accuracy: log(1 + e^-|x|) has no log1p, so tiny outputs (x << 0) carry an
    // absolute, not a relative, error of an ulp of 1.
    assert_all_close("softplus", &vec1(&y), &want, 1e-14, 1e-15);
    let g = y.sum_all().unwrap().backward().unwrap();
    let sig: Vec<f64> = xs.iter().map(|&v: &f64| 1.0 / (1.0 + (-v).exp())).collect();
    assert_all_close("softplus'", &vec1(g.get(&x).unwrap()), &sig, 1e-12, 1e-300);
}

// ---------------------------------------------------------------- log-densities and means

#[test]
fn log_prob_matches_scipy_for_every_family() {
    let fx = fixtures();
    let mut seen = std::collections::BTreeSet::new();
    for case in fx["log_prob"].as_array().unwrap() {
        let name = case["dist"].as_str().unwrap();
        seen.insert(name.to_string());
        let want = json_refs(&case["log_prob"], -1.0);
        // f64: the lgamma series is accurate to ~1e-10 absolute.
        for ((dtype, rel, abs), dev) in [(DType::F64, 1e-9, 2e-10), (DType::F32, 2e-5, 2e-5)]
            .into_iter()
            .flat_map(|t| devices().into_iter().map(move |d| (t, d)))
        {
            let d = fixture_dist(case, dtype, &dev);
            let value = json_tensor(&case["value"], dtype, &dev);
            let got = d.log_prob(&value).unwrap();
            assert_eq!(got.dims(), &[want.len()], "{name}: log_prob is [R]");
            assert_eq!(got.dtype(), dtype);
            assert_all_close(&format!("{name} {dtype:?}"), &vec1(&got), &want, rel, abs);
        }
    }
    assert_eq!(
        seen.len(),
        14,
        "every family has reference log-densities: {seen:?}"
    );
}

#[test]
fn means_match_scipy() {
    let fx = fixtures();
    for case in fx["mean"].as_array().unwrap() {
        let name = case["dist"].as_str().unwrap();
        let d = fixture_dist(case, DType::F64, &Device::Cpu);
        let got = vec1(&d.mean().unwrap());
        // null: no mean (StudentT with df <= 1): NaN.
        for (i, (g, w)) in got.iter().zip(case["mean"].as_array().unwrap()).enumerate() {
            match w.as_f64() {
                Some(w) => assert!(close(*g, w, 1e-9, 1e-12), "{name} mean[{i}]: {g} vs {w}"),
                None => assert!(g.is_nan(), "{name} mean[{i}] should be NaN, got {g}"),
            }
        }
        let got32 = vec1(&fixture_dist(case, DType::F32, &Device::Cpu).mean().unwrap());
        for (g, w) in got32.iter().zip(case["mean"].as_array().unwrap()) {
            if let Some(w) = w.as_f64() {
                assert!(close(*g, w, 1e-5, 1e-6), "{name} f32 mean: {g} vs {w}");
            }
        }
    }
    // Categorical / Dirichlet / Bernoulli / Mixture means, by hand.
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(
            DistParam::Probs,
            Tensor::new(&[[0.2f64, 0.3, 0.5]], &Device::Cpu).unwrap(),
        )],
        None,
        &[],
    )
    .unwrap();
    assert_all_close(
        "cat mean",
        &vec1(&c.mean().unwrap()),
        &[0.2, 0.3, 0.5],
        1e-12,
        1e-15,
    );
    let m = DistValue::mixture(
        Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap(),
        DistKind::Normal,
        vec![
            (
                DistParam::Loc,
                Tensor::new(&[[-2.0f64, 2.0]], &Device::Cpu).unwrap(),
            ),
            (DistParam::Scale, scalar(1.0)),
        ],
        &[],
    )
    .unwrap();
    // weights 1/4, 3/4
    assert_all_close(
        "mixture mean",
        &vec1(&m.mean().unwrap()),
        &[1.0],
        1e-12,
        1e-12,
    );
}

#[test]
fn event_axes_are_summed_and_parameters_broadcast() {
    // Five Normal reference points as one row with event shape [5], scale a [1, 5] tensor,
    // against the sum of the per-point references.
    let fx = fixtures();
    let case = &fx["log_prob"].as_array().unwrap()[0];
    assert_eq!(case["dist"], "Normal");
    let loc = json_tensor(&case["params"]["loc"], DType::F64, &Device::Cpu)
        .reshape((1, 5))
        .unwrap();
    let scale = json_tensor(&case["params"]["scale"], DType::F64, &Device::Cpu)
        .reshape((1, 5))
        .unwrap();
    let x = json_tensor(&case["value"], DType::F64, &Device::Cpu)
        .reshape((1, 5))
        .unwrap();
    let want: f64 = json_refs(&case["log_prob"], -1.0).iter().sum();
    let d = DistValue::new(
        DistKind::Normal,
        vec![(DistParam::Loc, loc), (DistParam::Scale, scale)],
        None,
        &[5],
    )
    .unwrap();
    assert_eq!(d.rows(), 1);
    assert_all_close(
        "sum",
        &vec1(&d.log_prob(&x).unwrap()),
        &[want],
        1e-12,
        1e-12,
    );
    // The same distribution broadcasts against three rows of values.
    let x3 = Tensor::cat(&[&x, &x, &x], 0).unwrap();
    assert_all_close(
        "rows",
        &vec1(&d.log_prob(&x3).unwrap()),
        &[want; 3],
        1e-12,
        1e-12,
    );

    // Normal(0, 1) from scalars on a [R, 2, 3] value: a sum of 6 standard-normal terms.
    let std = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[2, 3],
    )
    .unwrap();
    let v = Tensor::zeros((4, 2, 3), DType::F64, &Device::Cpu).unwrap();
    let lp = vec1(&std.log_prob(&v).unwrap());
    assert_all_close(
        "std normal",
        &lp,
        &[-6.0 * 0.9189385332046727; 4],
        1e-12,
        1e-12,
    );

    // `[1]`-shaped constants broadcast everywhere: one row.
    let c = DistValue::new(
        DistKind::Normal,
        vec![(DistParam::Loc, t1(&[0.0])), (DistParam::Scale, t1(&[1.0]))],
        None,
        &[2, 3],
    )
    .unwrap();
    assert_eq!((c.rows(), c.value_shape()), (1, vec![1, 2, 3]));
    let lp = vec1(&c.log_prob(&v).unwrap());
    assert_all_close(
        "[1] constants",
        &lp,
        &[-6.0 * 0.9189385332046727; 4],
        1e-12,
        1e-12,
    );

    // A [R] parameter for an event [D] is one value per row, not a [D] vector.
    let scale_rows = t1(&[1.0, 2.0]); // R = 2, D = 2 (the ambiguous case)
    let d = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scale_rows),
        ],
        None,
        &[2],
    )
    .unwrap();
    assert_eq!(d.rows(), 2);
    let lp = vec1(
        &d.log_prob(&Tensor::zeros((2, 2), DType::F64, &Device::Cpu).unwrap())
            .unwrap(),
    );
    let n0 = -0.9189385332046727;
    assert_all_close(
        "per-row scale",
        &lp,
        &[2.0 * n0, 2.0 * (n0 - 2f64.ln())],
        1e-12,
        1e-12,
    );

    // Categorical with event shape [2]: [R, 2, K] one-hots, summed over the 2 positions.
    let logits = Tensor::new(&[[[0.0f64, 1.0, 2.0], [2.0, 0.0, -1.0]]], &Device::Cpu).unwrap();
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(DistParam::Logits, logits)],
        None,
        &[2],
    )
    .unwrap();
    let v = Tensor::new(&[[[0.0f64, 0.0, 1.0], [1.0, 0.0, 0.0]]], &Device::Cpu).unwrap();
    let lse = |a: &[f64]| a.iter().map(|x| x.exp()).sum::<f64>().ln();
    let want = (2.0 - lse(&[0.0, 1.0, 2.0])) + (2.0 - lse(&[2.0, 0.0, -1.0]));
    assert_all_close(
        "cat event",
        &vec1(&c.log_prob(&v).unwrap()),
        &[want],
        1e-12,
        1e-12,
    );
}

#[test]
fn log_densities_stay_finite_at_extreme_parameters() {
    // Bernoulli and ContinuousBernoulli logits far out, Categorical logits huge, in f32.
    let l = t1(&[-200.0, -50.0, 0.0, 1e-7, 50.0, 200.0])
        .to_dtype(DType::F32)
        .unwrap();
    for kind in [DistKind::Bernoulli, DistKind::ContinuousBernoulli] {
        let d = DistValue::new(kind, vec![(DistParam::Logits, l.clone())], None, &[]).unwrap();
        for x in [0.0, 1.0, 0.5] {
            let v = (l.ones_like().unwrap() * x).unwrap();
            let lp = vec1(&d.log_prob(&v).unwrap());
            assert!(lp.iter().all(|v| v.is_finite()), "{kind:?} at {x}: {lp:?}");
        }
    }
    // x * l - softplus(l) at l = ±200 is exactly -200 for the wrong class.
    let d = DistValue::new(
        DistKind::Bernoulli,
        vec![(DistParam::Logits, l.clone())],
        None,
        &[],
    )
    .unwrap();
    let lp = vec1(&d.log_prob(&l.zeros_like().unwrap()).unwrap());
    assert!((lp[5] + 200.0).abs() < 1e-3 && lp[0].abs() < 1e-6, "{lp:?}");
    // Bernoulli probs at 0 and 1 are clamped: finite.
    let p = t1(&[0.0, 1.0]).to_dtype(DType::F32).unwrap();
    let d = DistValue::new(DistKind::Bernoulli, vec![(DistParam::Probs, p)], None, &[]).unwrap();
    let lp = vec1(&d.log_prob(&t1(&[1.0, 0.0])).unwrap());
    assert!(lp.iter().all(|v| v.is_finite()), "{lp:?}");
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(
            DistParam::Logits,
            Tensor::new(&[[1e4f32, -1e4, 0.0]], &Device::Cpu).unwrap(),
        )],
        None,
        &[],
    )
    .unwrap();
    let lp = vec1(
        &c.log_prob(&Tensor::new(&[[0f32, 1.0, 0.0]], &Device::Cpu).unwrap())
            .unwrap(),
    );
    assert!((lp[0] + 2e4).abs() < 1.0, "{lp:?}");
    // Outside the support: -inf, not NaN.
    let g = DistValue::new(
        DistKind::Gamma,
        vec![
            (DistParam::Concentration, scalar(2.0)),
            (DistParam::Rate, scalar(1.0)),
        ],
        None,
        &[],
    )
    .unwrap();
    let lp = vec1(&g.log_prob(&t1(&[-1.0, 0.0])).unwrap());
    assert_eq!(lp, vec![f64::NEG_INFINITY; 2]);
}

#[test]
fn continuous_bernoulli_is_stable_through_zero_logits() {
    // f32 log_prob (with the normalizer) at logits near 0 against the mpmath references,
    // and gradients at exactly 0 finite and equal to the derivative there:
    // d/dl [x l - softplus(l) + log C(l)] at 0 = x - 1/2 (log C is even).
    let fx = fixtures();
    let case = fx["log_prob"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dist"] == "ContinuousBernoulli")
        .unwrap()
        .clone();
    let d = fixture_dist(&case, DType::F32, &Device::Cpu);
    let got = vec1(
        &d.log_prob(&json_tensor(&case["value"], DType::F32, &Device::Cpu))
            .unwrap(),
    );
    assert_all_close(
        "cb f32",
        &got,
        &json_refs(&case["log_prob"], -1.0),
        1e-5,
        2e-6,
    );

    let l = Var::from_tensor(&t1(&[0.0, 0.0])).unwrap();
    let d = DistValue::new(
        DistKind::ContinuousBernoulli,
        vec![(DistParam::Logits, l.as_tensor().clone())],
        None,
        &[],
    )
    .unwrap();
    let g = d
        .log_prob(&t1(&[0.2, 0.9]))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_all_close(
        "cb grad at 0",
        &vec1(g.get(&l).unwrap()),
        &[-0.3, 0.4],
        1e-12,
        1e-12,
    );
}

// ---------------------------------------------------------------- KL

#[test]
fn kl_matches_numerical_integrals_and_sums() {
    let fx = fixtures();
    let mut seen = std::collections::BTreeSet::new();
    for case in fx["kl"].as_array().unwrap() {
        let name = case["dist"].as_str().unwrap();
        seen.insert(name.to_string());
        let kind = kind_of(name);
        let want = json_refs(&case["kl"], 1.0);
        for ((dtype, rel, abs), dev) in [(DType::F64, 1e-7, 1e-9), (DType::F32, 1e-4, 2e-5)]
            .into_iter()
            .flat_map(|t| devices().into_iter().map(move |d| (t, d)))
        {
            let event: Vec<usize> = if kind == DistKind::Dirichlet {
                vec![3]
            } else {
                vec![]
            };
            let q =
                DistValue::new(kind, json_params(&case["q"], dtype, &dev), None, &event).unwrap();
            let p =
                DistValue::new(kind, json_params(&case["p"], dtype, &dev), None, &event).unwrap();
            let got = kl(&q, &p).unwrap();
            assert_eq!(got.dims(), &[want.len()]);
            assert_all_close(
                &format!("KL {name} {dtype:?}"),
                &vec1(&got),
                &want,
                rel,
                abs,
            );
        }
    }
    let pairs: Vec<DistKind> = ALL
        .iter()
        .copied()
        .filter(|k| has_analytic_kl(*k, *k))
        .collect();
    assert_eq!(
        seen.len(),
        pairs.len(),
        "every analytic pair has references: {seen:?}"
    );
}

const ALL: [DistKind; 14] = [
    DistKind::Normal,
    DistKind::LogNormal,
    DistKind::Laplace,
    DistKind::StudentT,
    DistKind::Uniform,
    DistKind::Exponential,
    DistKind::Gamma,
    DistKind::Beta,
    DistKind::Bernoulli,
    DistKind::ContinuousBernoulli,
    DistKind::Categorical,
    DistKind::Poisson,
    DistKind::Dirichlet,
    DistKind::Mixture,
];

/// One (q, p) pair per analytic family, one row each, with event shapes.
fn kl_pairs() -> Vec<(DistValue, DistValue)> {
    use DistParam::*;
    let dev = &Device::Cpu;
    let mk = |kind, ps: Vec<(DistParam, Tensor)>, ev: &[usize]| {
        DistValue::new(kind, ps, None, ev).unwrap()
    };
    let r = |v: &[f64]| Tensor::new(v, dev).unwrap().unsqueeze(0).unwrap(); // [1, n]
    vec![
        (
            mk(
                DistKind::Normal,
                vec![(Loc, r(&[0.5, -1.0])), (Scale, r(&[0.8, 2.0]))],
                &[2],
            ),
            mk(
                DistKind::Normal,
                vec![(Loc, scalar(0.0)), (Scale, scalar(1.0))],
                &[2],
            ),
        ),
        (
            mk(
                DistKind::LogNormal,
                vec![(Loc, r(&[0.3])), (Scale, r(&[0.6]))],
                &[1],
            ),
            mk(
                DistKind::LogNormal,
                vec![(Loc, r(&[-0.2])), (Scale, r(&[0.9]))],
                &[1],
            ),
        ),
        (
            mk(
                DistKind::Laplace,
                vec![(Loc, r(&[1.0])), (Scale, r(&[0.5]))],
                &[1],
            ),
            mk(
                DistKind::Laplace,
                vec![(Loc, r(&[0.0])), (Scale, r(&[2.0]))],
                &[1],
            ),
        ),
        (
            mk(DistKind::Exponential, vec![(Rate, r(&[3.0]))], &[1]),
            mk(DistKind::Exponential, vec![(Rate, r(&[0.5]))], &[1]),
        ),
        (
            mk(
                DistKind::Gamma,
                vec![(Concentration, r(&[2.0])), (Rate, r(&[3.0]))],
                &[1],
            ),
            mk(
                DistKind::Gamma,
                vec![(Concentration, r(&[1.5])), (Rate, r(&[1.0]))],
                &[1],
            ),
        ),
        (
            mk(DistKind::Beta, vec![(A, r(&[2.0])), (B, r(&[3.0]))], &[1]),
            mk(DistKind::Beta, vec![(A, r(&[1.2])), (B, r(&[1.5]))], &[1]),
        ),
        (
            mk(DistKind::Bernoulli, vec![(Logits, r(&[0.3, -2.0]))], &[2]),
            mk(DistKind::Bernoulli, vec![(Logits, r(&[-1.0, 0.5]))], &[2]),
        ),
        (
            mk(
                DistKind::Categorical,
                vec![(Logits, r(&[0.0, 1.0, 2.0]))],
                &[],
            ),
            mk(
                DistKind::Categorical,
                vec![(Logits, r(&[1.0, 0.0, -0.5]))],
                &[],
            ),
        ),
        (
            mk(DistKind::Poisson, vec![(Rate, r(&[5.0]))], &[1]),
            mk(DistKind::Poisson, vec![(Rate, r(&[3.0]))], &[1]),
        ),
        (
            mk(
                DistKind::Dirichlet,
                vec![(Concentration, r(&[2.0, 3.0, 1.5]))],
                &[3],
            ),
            mk(
                DistKind::Dirichlet,
                vec![(Concentration, r(&[1.0, 1.0, 2.0]))],
                &[3],
            ),
        ),
        (
            mk(
                DistKind::Uniform,
                vec![(Low, r(&[0.2])), (High, r(&[0.5]))],
                &[1],
            ),
            mk(
                DistKind::Uniform,
                vec![(Low, r(&[0.0])), (High, r(&[1.0]))],
                &[1],
            ),
        ),
    ]
}

#[test]
fn kl_matches_monte_carlo_from_the_samplers() {
    // E_q[log q(z) - log p(z)] over many draws of vic's own sampler, within 5 standard
    // errors of the analytic KL: checks the sampler, log_prob and kl against each other.
    let n = 40_000;
    let mut rng = Rng::seed(11);
    let pairs = kl_pairs();
    assert_eq!(pairs.len(), 11);
    for (q, p) in pairs {
        let exact = vec1(&kl(&q, &p).unwrap())[0];
        let qn = q.with_rows(n).unwrap();
        let z = qn.sample(&mut rng).unwrap();
        let diff = vec1(&(qn.log_prob(&z).unwrap() - p.log_prob(&z).unwrap()).unwrap());
        let mean = diff.iter().sum::<f64>() / n as f64;
        let var = diff.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        assert!(
            (mean - exact).abs() <= 5.0 * se + 1e-6,
            "{:?}: MC {mean} ± {se}, analytic {exact}",
            q.kind()
        );
    }
}

#[test]
fn kl_handles_infinity_broadcasting_and_refuses_other_pairs() {
    // Uniform: q's support outside p's gives +inf.
    let u = |lo: f64, hi: f64| {
        DistValue::new(
            DistKind::Uniform,
            vec![(DistParam::Low, scalar(lo)), (DistParam::High, scalar(hi))],
            None,
            &[],
        )
        .unwrap()
    };
    assert_eq!(
        vec1(&kl(&u(0.0, 2.0), &u(0.0, 1.0)).unwrap()),
        vec![f64::INFINITY]
    );
    // A Normal(0, 1) prior of one row against a guide of three rows.
    let q = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, t1(&[0.0, 1.0, -1.0])),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[],
    )
    .unwrap();
    let p = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[],
    )
    .unwrap();
    assert_all_close(
        "bcast",
        &vec1(&kl(&q, &p).unwrap()),
        &[0.0, 0.5, 0.5],
        1e-12,
        1e-12,
    );
    // Pairs outside has_analytic_kl are errors, not panics.
    let l = DistValue::new(
        DistKind::Laplace,
        vec![
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[],
    )
    .unwrap();
    assert!(kl(&q, &l).is_err());
    let t = DistValue::new(
        DistKind::StudentT,
        vec![
            (DistParam::Df, scalar(3.0)),
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[],
    )
    .unwrap();
    assert!(kl(&t, &t).is_err());
    // Different event shapes.
    let p2 = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, scalar(0.0)),
            (DistParam::Scale, scalar(1.0)),
        ],
        None,
        &[2],
    )
    .unwrap();
    assert!(kl(&q, &p2).is_err());
}

// ---------------------------------------------------------------- gradients

/// Autodiff gradients of `sum(f(params))` against central finite differences, f64.
fn check_grads(what: &str, params: &[Vec<f64>], f: &dyn Fn(&[Tensor]) -> Result<Tensor>) {
    let vars: Vec<Var> = params
        .iter()
        .map(|p| Var::from_tensor(&t1(p)).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let grads = f(&ts).unwrap().sum_all().unwrap().backward().unwrap();
    let eval = |ps: &[Vec<f64>]| -> f64 {
        let ts: Vec<Tensor> = ps.iter().map(|p| t1(p)).collect();
        f(&ts)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    for (i, p) in params.iter().enumerate() {
        let g = grads
            .get(&vars[i])
            .map(vec1)
            .unwrap_or_else(|| vec![0.0; p.len()]);
        for j in 0..p.len() {
            let h = 1e-6 * p[j].abs().max(1.0);
            let mut plus = params.to_vec();
            plus[i][j] += h;
            let mut minus = params.to_vec();
            minus[i][j] -= h;
            let fd = (eval(&plus) - eval(&minus)) / (2.0 * h);
            assert!(
                close(g[j], fd, 1e-6, 1e-7),
                "{what}: d/dparam{i}[{j}] autodiff {} vs finite difference {fd}",
                g[j]
            );
        }
    }
}

/// A family, its parameter names, their values per row, and the value per row.
type GradCase = (DistKind, Vec<DistParam>, Vec<Vec<f64>>, Vec<f64>);

/// Parameter points (two rows, scalar events) and values for each family.
fn grad_cases() -> Vec<GradCase> {
    use DistParam::*;
    vec![
        (
            DistKind::Normal,
            vec![Loc, Scale],
            vec![vec![0.3, -1.2], vec![0.7, 2.0]],
            vec![0.1, 0.5],
        ),
        (
            DistKind::LogNormal,
            vec![Loc, Scale],
            vec![vec![0.3, -1.2], vec![0.7, 2.0]],
            vec![0.4, 2.5],
        ),
        (
            DistKind::Laplace,
            vec![Loc, Scale],
            vec![vec![0.3, -1.2], vec![0.7, 2.0]],
            vec![0.1, 0.5],
        ),
        (
            DistKind::StudentT,
            vec![Df, Loc, Scale],
            vec![vec![2.5, 7.0], vec![0.3, -1.2], vec![0.7, 2.0]],
            vec![0.1, 0.5],
        ),
        (
            DistKind::Uniform,
            vec![Low, High],
            vec![vec![-1.0, 0.2], vec![1.5, 3.0]],
            vec![0.1, 0.5],
        ),
        (
            DistKind::Exponential,
            vec![Rate],
            vec![vec![0.7, 2.0]],
            vec![0.1, 1.5],
        ),
        (
            DistKind::Gamma,
            vec![Concentration, Rate],
            vec![vec![0.6, 3.0], vec![0.7, 2.0]],
            vec![0.1, 1.5],
        ),
        (
            DistKind::Beta,
            vec![A, B],
            vec![vec![0.6, 3.0], vec![0.7, 2.0]],
            vec![0.1, 0.8],
        ),
        (
            DistKind::Bernoulli,
            vec![Logits],
            vec![vec![0.0, -3.0]],
            vec![1.0, 0.0],
        ),
        (
            DistKind::Bernoulli,
            vec![Probs],
            vec![vec![0.3, 0.9]],
            vec![1.0, 0.0],
        ),
        (
            DistKind::ContinuousBernoulli,
            vec![Logits],
            vec![vec![0.1, -3.0]],
            vec![0.3, 0.8],
        ),
        (
            DistKind::ContinuousBernoulli,
            vec![Logits],
            vec![vec![0.299, 0.301]],
            vec![0.3, 0.8],
        ),
        (
            DistKind::Poisson,
            vec![Rate],
            vec![vec![0.7, 12.0]],
            vec![2.0, 9.0],
        ),
    ]
}

#[test]
fn log_prob_gradients_match_finite_differences() {
    for (kind, names, params, value) in grad_cases() {
        let f = |ts: &[Tensor]| {
            let ps = names.iter().copied().zip(ts.iter().cloned()).collect();
            DistValue::new(kind, ps, None, &[])?.log_prob(&t1(&value))
        };
        check_grads(&format!("log_prob {kind:?}"), &params, &f);
        // ... and d/dvalue for the continuous families (the reparameterization path).
        if !matches!(
            kind,
            DistKind::Bernoulli | DistKind::Poisson | DistKind::Uniform
        ) {
            let g = |ts: &[Tensor]| {
                let ps = names
                    .iter()
                    .copied()
                    .zip(params.iter().map(|p| t1(p)))
                    .collect();
                DistValue::new(kind, ps, None, &[])?.log_prob(&ts[0])
            };
            check_grads(
                &format!("d/dx log_prob {kind:?}"),
                std::slice::from_ref(&value),
                &g,
            );
        }
    }
    // Categorical, Dirichlet and Mixture with [1, K] parameters.
    let dev = &Device::Cpu;
    let row = |ts: &Tensor| ts.unsqueeze(0);
    check_grads("log_prob Categorical", &[vec![0.5, -1.0, 2.0]], &|ts| {
        DistValue::new(
            DistKind::Categorical,
            vec![(DistParam::Logits, row(&ts[0])?)],
            None,
            &[],
        )?
        .log_prob(&Tensor::new(&[[0.2f64, 0.5, 0.3]], dev)?)
    });
    check_grads(
        "log_prob Dirichlet",
        &[vec![0.5, 2.0, 3.0], vec![0.2, 0.3, 0.5]],
        &|ts| {
            DistValue::new(
                DistKind::Dirichlet,
                vec![(DistParam::Concentration, row(&ts[0])?)],
                None,
                &[3],
            )?
            .log_prob(&row(&ts[1])?)
        },
    );
    check_grads(
        "log_prob Mixture",
        &[vec![0.3, -0.4], vec![-1.0, 2.0], vec![0.5, 1.5], vec![0.7]],
        &|ts| {
            DistValue::mixture(
                row(&ts[0])?,
                DistKind::Normal,
                vec![
                    (DistParam::Loc, row(&ts[1])?),
                    (DistParam::Scale, row(&ts[2])?),
                ],
                &[],
            )?
            .log_prob(&ts[3])
        },
    );
}

#[test]
fn kl_gradients_match_finite_differences() {
    // Every analytic pair, differentiated in both q's and p's parameters.
    for (q, p) in kl_pairs() {
        let kind = q.kind();
        let names: Vec<DistParam> = q.params().iter().map(|(n, _)| *n).collect();
        let flat =
            |d: &DistValue| -> Vec<Vec<f64>> { d.params().iter().map(|(_, t)| vec1(t)).collect() };
        let mut params = flat(&q);
        params.extend(flat(&p.with_rows(1).unwrap()));
        let ev = q.event_shape().to_vec();
        let nq = names.len();
        let f = |ts: &[Tensor]| {
            let mk = |ts: &[Tensor]| {
                let ps = names
                    .iter()
                    .copied()
                    .zip(ts.iter().map(|t| t.unsqueeze(0).unwrap()))
                    .collect();
                DistValue::new(kind, ps, None, &ev)
            };
            kl(&mk(&ts[..nq])?, &mk(&ts[nq..])?)
        };
        check_grads(&format!("KL {kind:?}"), &params, &f);
    }
}

// ---------------------------------------------------------------- samplers

fn moments(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (
        m,
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0),
    )
}

/// Mean and variance of `n` draws against the truth, within 5 standard errors (the
/// variance's error from the fourth moment estimate).
fn check_moments(what: &str, x: &[f64], mean: f64, var: f64) {
    let n = x.len() as f64;
    let (m, v) = moments(x);
    let m4 = x.iter().map(|xi| (xi - m).powi(4)).sum::<f64>() / n;
    assert!(
        (m - mean).abs() <= 5.0 * (var / n).sqrt() + 1e-9,
        "{what}: mean {m} vs {mean}"
    );
    let se_v = ((m4 - v * v).max(0.0) / n).sqrt();
    assert!(
        (v - var).abs() <= 5.0 * se_v + 1e-9,
        "{what}: variance {v} vs {var} (se {se_v})"
    );
}

fn one(kind: DistKind, ps: Vec<(DistParam, f64)>, rows: usize) -> DistValue {
    let ps = ps
        .into_iter()
        .map(|(n, v)| (n, t1(&vec![v; rows])))
        .collect();
    DistValue::new(kind, ps, None, &[]).unwrap()
}

#[test]
fn samplers_have_the_right_moments() {
    use DistParam::*;
    let n = 100_000;
    let mut rng = Rng::seed(3);
    let ln_var = |m: f64, s: f64| ((s * s).exp() - 1.0) * (2.0 * m + s * s).exp();
    let cases: Vec<(DistValue, f64, f64)> = vec![
        (
            one(DistKind::Normal, vec![(Loc, 1.5), (Scale, 0.5)], n),
            1.5,
            0.25,
        ),
        (
            one(DistKind::LogNormal, vec![(Loc, 0.2), (Scale, 0.4)], n),
            (0.2f64 + 0.08).exp(),
            ln_var(0.2, 0.4),
        ),
        (
            one(DistKind::Laplace, vec![(Loc, -1.0), (Scale, 2.0)], n),
            -1.0,
            8.0,
        ),
        (
            one(
                DistKind::StudentT,
                vec![(Df, 10.0), (Loc, 1.0), (Scale, 2.0)],
                n,
            ),
            1.0,
            4.0 * 10.0 / 8.0,
        ),
        (
            one(DistKind::Uniform, vec![(Low, -1.0), (High, 3.0)], n),
            1.0,
            16.0 / 12.0,
        ),
        (one(DistKind::Exponential, vec![(Rate, 2.5)], n), 0.4, 0.16),
        (
            one(DistKind::Gamma, vec![(Concentration, 3.0), (Rate, 2.0)], n),
            1.5,
            0.75,
        ),
        (
            one(DistKind::Gamma, vec![(Concentration, 0.3), (Rate, 0.5)], n),
            0.6,
            1.2,
        ),
        (
            one(DistKind::Beta, vec![(A, 2.0), (B, 5.0)], n),
            2.0 / 7.0,
            10.0 / (49.0 * 8.0),
        ),
        (
            one(DistKind::Beta, vec![(A, 0.2), (B, 0.3)], n),
            0.4,
            0.06 / (0.25 * 1.5),
        ),
        (one(DistKind::Poisson, vec![(Rate, 3.0)], n), 3.0, 3.0),
        (one(DistKind::Poisson, vec![(Rate, 40.0)], n), 40.0, 40.0),
        (
            one(DistKind::Bernoulli, vec![(Logits, 0.4f64)], n),
            1.0 / (1.0 + (-0.4f64).exp()),
            {
                let p = 1.0 / (1.0 + (-0.4f64).exp());
                p * (1.0 - p)
            },
        ),
    ];
    for (d, mean, var) in cases {
        let x = vec1(&d.sample(&mut rng).unwrap());
        check_moments(&format!("{:?}", d.kind()), &x, mean, var);
        if d.kind() == DistKind::Poisson {
            assert!(x.iter().all(|v| *v >= 0.0 && v.fract() == 0.0));
        }
        if matches!(d.kind(), DistKind::Gamma | DistKind::Beta) {
            // Draws stay inside the open support even in f32.
            let lp = vec1(
                &d.log_prob(&Tensor::new(x.as_slice(), &Device::Cpu).unwrap())
                    .unwrap(),
            );
            assert!(lp.iter().all(|v| v.is_finite()), "{:?}", d.kind());
        }
    }
    // The Normal's reparameterized noise drawn in f32 (the training dtype): its moments,
    // and the share beyond 3σ against the normal's 0.27%.
    let f32d = DistValue::new(
        DistKind::Normal,
        vec![
            (Loc, Tensor::full(1.5f32, n, &Device::Cpu).unwrap()),
            (Scale, Tensor::full(0.5f32, n, &Device::Cpu).unwrap()),
        ],
        None,
        &[],
    )
    .unwrap();
    let draw = f32d.rsample(&mut rng).unwrap();
    assert_eq!(draw.dtype(), DType::F32);
    let x = vec1(&draw);
    check_moments("Normal (f32)", &x, 1.5, 0.25);
    let tail = x.iter().filter(|v| (*v - 1.5).abs() > 1.5).count() as f64 / n as f64;
    let p3 = 0.0026998;
    assert!(
        (tail - p3).abs() < 5.0 * (p3 * (1.0 - p3) / n as f64).sqrt(),
        "share beyond 3σ {tail} vs {p3}"
    );
    // ContinuousBernoulli: the mean of the inverse-CDF draws against the mpmath mean.
    let fx = fixtures();
    let case = fx["mean"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["dist"] == "ContinuousBernoulli")
        .unwrap()
        .clone();
    for (l, m) in json_refs(&case["params"]["logits"], 1.0)
        .iter()
        .zip(json_refs(&case["mean"], 1.0))
    {
        let d = one(DistKind::ContinuousBernoulli, vec![(Logits, *l)], n);
        let x = vec1(&d.rsample(&mut rng).unwrap());
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        let (xm, xv) = moments(&x);
        assert!(
            (xm - m).abs() < 5.0 * (xv / n as f64).sqrt(),
            "CB({l}) mean {xm} vs {m}"
        );
    }
    // Dirichlet: mean α / Σα, var α_i (α0 - α_i) / (α0² (α0 + 1)).
    let alpha = [0.5, 2.0, 3.5];
    let a0: f64 = alpha.iter().sum();
    let d = DistValue::new(
        DistKind::Dirichlet,
        vec![(
            DistParam::Concentration,
            Tensor::new(&[alpha], &Device::Cpu).unwrap(),
        )],
        None,
        &[3],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    let x = d.sample(&mut rng).unwrap();
    assert_eq!(x.dims(), &[n, 3]);
    let rows_sum = vec1(&x.sum(1).unwrap());
    assert!(rows_sum.iter().all(|s| (s - 1.0).abs() < 1e-12));
    for (i, a) in alpha.iter().enumerate() {
        let xi = vec1(&x.narrow(1, i, 1).unwrap());
        check_moments(
            "Dirichlet",
            &xi,
            a / a0,
            a * (a0 - a) / (a0 * a0 * (a0 + 1.0)),
        );
    }
}

#[test]
fn categorical_and_mixture_samples_follow_their_weights() {
    let n = 60_000;
    let mut rng = Rng::seed(5);
    let probs = [0.1, 0.6, 0.3];
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(
            DistParam::Probs,
            Tensor::new(&[probs], &Device::Cpu).unwrap(),
        )],
        None,
        &[],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    let x = c.sample(&mut rng).unwrap();
    assert_eq!(vec1(&x.sum(1).unwrap()), vec![1.0; n], "one-hot rows");
    for (k, p) in probs.iter().enumerate() {
        let xk = vec1(&x.narrow(1, k, 1).unwrap());
        check_moments("Categorical", &xk, *p, p * (1.0 - p));
    }
    // Gumbel-softmax: rows on the simplex, and the arg-max has the class probabilities.
    let y = c.relaxed_sample(0.5, &mut rng).unwrap();
    assert!(vec1(&y.sum(1).unwrap())
        .iter()
        .all(|s| (s - 1.0).abs() < 1e-12));
    let hard = y.argmax(1).unwrap().to_dtype(DType::F64).unwrap();
    for (k, p) in probs.iter().enumerate() {
        let is_k: Vec<f64> = vec1(&hard)
            .iter()
            .map(|h| f64::from(*h as usize == k))
            .collect();
        check_moments("Gumbel-softmax argmax", &is_k, *p, p * (1.0 - p));
    }
    // Binary Concrete: P(y > 1/2) = sigmoid(logit).
    let b = one(DistKind::Bernoulli, vec![(DistParam::Logits, -0.7)], n);
    let y = vec1(&b.relaxed_sample(0.3, &mut rng).unwrap());
    assert!(y.iter().all(|v| *v > 0.0 && *v < 1.0));
    let p = 1.0 / (1.0 + 0.7f64.exp());
    let above: Vec<f64> = y.iter().map(|v| f64::from(*v > 0.5)).collect();
    check_moments("binary Concrete", &above, p, p * (1.0 - p));
    // Mixture of Normals: mean and variance of the draws.
    let m = DistValue::mixture(
        Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap(),
        DistKind::Normal,
        vec![
            (
                DistParam::Loc,
                Tensor::new(&[[-2.0f64, 2.0]], &Device::Cpu).unwrap(),
            ),
            (
                DistParam::Scale,
                Tensor::new(&[[0.5f64, 1.0]], &Device::Cpu).unwrap(),
            ),
        ],
        &[],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    let x = vec1(&m.sample(&mut rng).unwrap());
    // E = 1/4 (-2) + 3/4 (2) = 1; E[x²] = 1/4 (4.25) + 3/4 (5) = 4.8125
    check_moments("Mixture", &x, 1.0, 4.8125 - 1.0);
}

#[test]
fn reparameterized_gradients_are_unbiased() {
    // d/dθ E[f(z)] by autodiff through rsample, averaged over many draws, against the
    // derivative of the closed-form expectation.
    let n = 200_000;
    let mut rng = Rng::seed(9);
    let (mu, sigma) = (0.7, 1.3);
    let loc = Var::from_tensor(&t1(&[mu])).unwrap();
    let scale = Var::from_tensor(&t1(&[sigma])).unwrap();
    let d = DistValue::new(
        DistKind::Normal,
        vec![
            (DistParam::Loc, loc.as_tensor().clone()),
            (DistParam::Scale, scale.as_tensor().clone()),
        ],
        None,
        &[],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    // E[z²] = μ² + σ²
    let z = d.rsample(&mut rng).unwrap();
    let g = z.sqr().unwrap().mean_all().unwrap().backward().unwrap();
    let gl = vec1(g.get(&loc).unwrap())[0];
    let gs = vec1(g.get(&scale).unwrap())[0];
    assert!((gl - 2.0 * mu).abs() < 0.03, "d/dloc {gl}");
    assert!((gs - 2.0 * sigma).abs() < 0.03, "d/dscale {gs}");

    // Exponential: E[z] = 1/λ, d/dλ = -1/λ².
    let rate = Var::from_tensor(&t1(&[2.0])).unwrap();
    let d = DistValue::new(
        DistKind::Exponential,
        vec![(DistParam::Rate, rate.as_tensor().clone())],
        None,
        &[],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    let g = d
        .rsample(&mut rng)
        .unwrap()
        .mean_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!((vec1(g.get(&rate).unwrap())[0] + 0.25).abs() < 0.005);

    // Uniform: E[z²] = (l² + lh + h²) / 3: d/dl = (2l + h)/3, d/dh = (l + 2h)/3.
    let lo = Var::from_tensor(&t1(&[-1.0])).unwrap();
    let hi = Var::from_tensor(&t1(&[2.0])).unwrap();
    let d = DistValue::new(
        DistKind::Uniform,
        vec![
            (DistParam::Low, lo.as_tensor().clone()),
            (DistParam::High, hi.as_tensor().clone()),
        ],
        None,
        &[],
    )
    .unwrap()
    .with_rows(n)
    .unwrap();
    let g = d
        .rsample(&mut rng)
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!((vec1(g.get(&lo).unwrap())[0] - 0.0).abs() < 0.02);
    assert!((vec1(g.get(&hi).unwrap())[0] - 1.0).abs() < 0.02);

    // ContinuousBernoulli: d/dl E[x] against a finite difference of the tested mean, at
    // logits inside and outside the series region.
    for l0 in [0.05, 0.3, 1.5] {
        let l = Var::from_tensor(&t1(&[l0])).unwrap();
        let d = DistValue::new(
            DistKind::ContinuousBernoulli,
            vec![(DistParam::Logits, l.as_tensor().clone())],
            None,
            &[],
        )
        .unwrap()
        .with_rows(n)
        .unwrap();
        let g = d
            .rsample(&mut rng)
            .unwrap()
            .mean_all()
            .unwrap()
            .backward()
            .unwrap();
        let mean_at = |x: f64| {
            let d = DistValue::new(
                DistKind::ContinuousBernoulli,
                vec![(DistParam::Logits, t1(&[x]))],
                None,
                &[],
            )
            .unwrap();
            vec1(&d.mean().unwrap())[0]
        };
        let fd = (mean_at(l0 + 1e-5) - mean_at(l0 - 1e-5)) / 2e-5;
        let got = vec1(g.get(&l).unwrap())[0];
        assert!((got - fd).abs() < 2e-3, "CB({l0}) d/dl E[x]: {got} vs {fd}");
    }

    // Relaxed samples carry gradient to the logits.
    let logits =
        Var::from_tensor(&Tensor::new(&[[0.1f64, 0.2, -0.3]], &Device::Cpu).unwrap()).unwrap();
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(DistParam::Logits, logits.as_tensor().clone())],
        None,
        &[],
    )
    .unwrap();
    let y = c.relaxed_sample(0.7, &mut rng).unwrap();
    let w = Tensor::new(&[[1.0f64, 2.0, 3.0]], &Device::Cpu).unwrap();
    let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(vec1(g.get(&logits).unwrap()).iter().any(|v| v.abs() > 1e-6));
}

#[test]
fn rsample_shapes_and_the_families_without_it() {
    // On every device: sampling, log_prob, mean and rsample of every family.
    let mut rng = Rng::seed(1);
    for (kind, dev) in ALL
        .into_iter()
        .flat_map(|k| devices().into_iter().map(move |d| (k, d)))
    {
        let d = match kind {
            DistKind::Categorical => DistValue::new(
                kind,
                vec![(
                    DistParam::Logits,
                    Tensor::zeros((4, 2, 3), DType::F32, &dev).unwrap(),
                )],
                None,
                &[2],
            ),
            DistKind::Dirichlet => DistValue::new(
                kind,
                vec![(
                    DistParam::Concentration,
                    Tensor::ones((4, 2, 3), DType::F32, &dev).unwrap(),
                )],
                None,
                &[2, 3],
            ),
            DistKind::Mixture => DistValue::mixture(
                Tensor::zeros((4, 2), DType::F32, &dev).unwrap(),
                DistKind::Normal,
                vec![
                    (
                        DistParam::Loc,
                        Tensor::zeros((4, 2, 1, 2), DType::F32, &dev).unwrap(),
                    ),
                    (DistParam::Scale, Tensor::new(1f32, &dev).unwrap()),
                ],
                &[2, 2],
            ),
            _ => {
                let names: Vec<DistParam> = match kind {
                    DistKind::Normal | DistKind::LogNormal | DistKind::Laplace => {
                        vec![DistParam::Loc, DistParam::Scale]
                    }
                    DistKind::StudentT => vec![DistParam::Df, DistParam::Loc, DistParam::Scale],
                    DistKind::Uniform => vec![DistParam::Low, DistParam::High],
                    DistKind::Exponential | DistKind::Poisson => vec![DistParam::Rate],
                    DistKind::Gamma => vec![DistParam::Concentration, DistParam::Rate],
                    DistKind::Beta => vec![DistParam::A, DistParam::B],
                    _ => vec![DistParam::Logits],
                };
                let ps = names
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let v = if n == DistParam::High {
                            3.0f32
                        } else {
                            1.0 + i as f32
                        };
                        (n, Tensor::full(v, (4, 2, 2), &dev).unwrap())
                    })
                    .collect();
                DistValue::new(kind, ps, None, &[2, 2])
            }
        }
        .unwrap();
        let s = d.sample(&mut rng).unwrap();
        assert!(s.device().same_device(&dev), "{kind:?} sample device");
        assert_eq!(
            s.dims(),
            d.value_shape().as_slice(),
            "{kind:?} sample shape"
        );
        assert_eq!(s.dtype(), DType::F32);
        let lp = d.log_prob(&s).unwrap();
        assert_eq!(lp.dims(), &[4], "{kind:?}");
        assert!(
            vec1(&lp).iter().all(|v| v.is_finite()),
            "{kind:?} log_prob of its own draw"
        );
        assert_eq!(d.mean().unwrap().dims(), d.value_shape().as_slice());
        match d.rsample(&mut rng) {
            Ok(r) => {
                assert!(kind.has_rsample(), "{kind:?}");
                assert_eq!(r.dims(), d.value_shape().as_slice());
            }
            Err(e) => {
                assert!(!kind.has_rsample(), "{kind:?}: {e}");
                assert!(e.to_string().contains(kind.name()), "{e}");
            }
        }
    }
}

#[test]
fn enumerate_support_lists_every_value_once() {
    let c = DistValue::new(
        DistKind::Categorical,
        vec![(
            DistParam::Logits,
            Tensor::new(&[[0.3f64, -1.0, 2.0], [0.0, 0.0, 5.0]], &Device::Cpu).unwrap(),
        )],
        None,
        &[],
    )
    .unwrap();
    let vals = c.enumerate_support().unwrap();
    assert_eq!(vals.len(), 3);
    let mut total = vec![0.0; 2];
    for (k, v) in vals.iter().enumerate() {
        assert_eq!(v.dims(), &[2, 3]);
        let row = vec1(&v.narrow(0, 1, 1).unwrap());
        assert_eq!(row, (0..3).map(|i| f64::from(i == k)).collect::<Vec<_>>());
        for (t, lp) in total.iter_mut().zip(vec1(&c.log_prob(v).unwrap())) {
            *t += lp.exp();
        }
    }
    assert_all_close("Σ p", &total, &[1.0, 1.0], 1e-12, 1e-12);
    let b = DistValue::new(
        DistKind::Bernoulli,
        vec![(DistParam::Logits, t1(&[0.4, -2.0]).unsqueeze(1).unwrap())],
        None,
        &[1],
    )
    .unwrap();
    let vals = b.enumerate_support().unwrap();
    assert_eq!(vals.len(), 2);
    let s: Vec<f64> = vec1(&b.log_prob(&vals[0]).unwrap().exp().unwrap())
        .iter()
        .zip(vec1(&b.log_prob(&vals[1]).unwrap().exp().unwrap()))
        .map(|(a, c)| a + c)
        .collect();
    assert_all_close("Bernoulli Σ p", &s, &[1.0, 1.0], 1e-12, 1e-12);
    // Several elements per row: every joint value once (2^3 and 3^2), their
    // probabilities summing to 1; continuous families: errors.
    let b2 = DistValue::new(
        DistKind::Bernoulli,
        vec![(
            DistParam::Logits,
            Tensor::new(&[[0.5f64, -1.0, 2.0]], &Device::Cpu).unwrap(),
        )],
        None,
        &[3],
    )
    .unwrap();
    let c2 = DistValue::new(
        DistKind::Categorical,
        vec![(
            DistParam::Logits,
            Tensor::new(&[[[0.1f64, 0.7, -0.4], [1.0, -2.0, 0.3]]], &Device::Cpu).unwrap(),
        )],
        None,
        &[2],
    )
    .unwrap();
    for (d, count) in [(&b2, 8), (&c2, 9)] {
        let vals = d.enumerate_support().unwrap();
        assert_eq!(vals.len(), count);
        let flat: Vec<Vec<f64>> = vals
            .iter()
            .map(|v| v.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .collect();
        for i in 0..flat.len() {
            for j in 0..i {
                assert_ne!(flat[i], flat[j], "values {i} and {j} repeat");
            }
        }
        let total: f64 = vals
            .iter()
            .map(|v| vec1(&d.log_prob(v).unwrap())[0].exp())
            .sum();
        assert_all_close("joint Σ p", &[total], &[1.0], 1e-12, 1e-12);
    }
    assert!(one(DistKind::Poisson, vec![(DistParam::Rate, 1.0)], 1)
        .enumerate_support()
        .is_err());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    use DistParam::*;
    let two = t1(&[1.0, 2.0]);
    let three = t1(&[1.0, 2.0, 3.0]);
    // Missing, extra and duplicated parameters.
    assert!(DistValue::new(DistKind::Normal, vec![(Loc, two.clone())], None, &[]).is_err());
    assert!(DistValue::new(
        DistKind::Normal,
        vec![
            (Loc, two.clone()),
            (Scale, two.clone()),
            (Rate, two.clone())
        ],
        None,
        &[]
    )
    .is_err());
    assert!(DistValue::new(
        DistKind::Bernoulli,
        vec![(Logits, two.clone()), (Probs, two.clone())],
        None,
        &[]
    )
    .is_err());
    assert!(DistValue::new(DistKind::Poisson, vec![], None, &[]).is_err());
    // Rows that disagree; trailing axes that do not broadcast; too many axes.
    assert!(DistValue::new(
        DistKind::Normal,
        vec![(Loc, two.clone()), (Scale, three.clone())],
        None,
        &[]
    )
    .is_err());
    let r_d = Tensor::zeros((2, 4), DType::F64, &Device::Cpu).unwrap();
    assert!(DistValue::new(
        DistKind::Normal,
        vec![(Loc, r_d.clone()), (Scale, scalar(1.0))],
        None,
        &[3]
    )
    .is_err());
    assert!(DistValue::new(
        DistKind::Normal,
        vec![(Loc, r_d), (Scale, scalar(1.0))],
        None,
        &[]
    )
    .is_err());
    // Categorical needs a K axis; Dirichlet a simplex axis; Mixture a component.
    assert!(DistValue::new(
        DistKind::Categorical,
        vec![(Logits, three.clone())],
        None,
        &[]
    )
    .is_err());
    assert!(DistValue::new(
        DistKind::Dirichlet,
        vec![(Concentration, three.clone())],
        None,
        &[]
    )
    .is_err());
    assert!(DistValue::new(DistKind::Mixture, vec![(Logits, three.clone())], None, &[]).is_err());
    let n = DistValue::new(
        DistKind::Normal,
        vec![(Loc, scalar(0.0)), (Scale, scalar(1.0))],
        None,
        &[],
    )
    .unwrap();
    assert!(DistValue::new(
        DistKind::Poisson,
        vec![(Rate, scalar(1.0))],
        Some(n.clone()),
        &[]
    )
    .is_err());
    // Values of the wrong shape or rows.
    let d = DistValue::new(
        DistKind::Normal,
        vec![(Loc, three.clone()), (Scale, scalar(1.0))],
        None,
        &[],
    )
    .unwrap();
    assert!(d.log_prob(&two).is_err());
    assert!(d
        .log_prob(&Tensor::zeros((3, 1), DType::F64, &Device::Cpu).unwrap())
        .is_err());
    // No relaxation of a continuous family; no non-positive temperature.
    let mut rng = Rng::seed(0);
    assert!(n.relaxed_sample(0.5, &mut rng).is_err());
    let b = DistValue::new(DistKind::Bernoulli, vec![(Logits, two)], None, &[]).unwrap();
    assert!(b.relaxed_sample(0.0, &mut rng).is_err());
    assert!(b.relaxed_sample(f64::NAN, &mut rng).is_err());
    // Invalid parameters give NaN draws, not a hang or a panic.
    let g = one(DistKind::Gamma, vec![(Concentration, -1.0), (Rate, 1.0)], 2);
    assert!(vec1(&g.sample(&mut rng).unwrap())
        .iter()
        .all(|v| v.is_nan()));
    let p = one(DistKind::Poisson, vec![(Rate, f64::INFINITY)], 2);
    assert!(vec1(&p.sample(&mut rng).unwrap())
        .iter()
        .all(|v| v.is_nan()));
}

#[test]
fn mixtures_sum_the_component_event_inside_the_logsumexp() {
    let dev = &Device::Cpu;
    let lse = |a: &[f64]| {
        let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + a.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let log_w = |w: &[f64]| {
        let z = lse(w);
        w.iter().map(|x| x - z).collect::<Vec<f64>>()
    };
    let n01 = |x: f64, m: f64| -0.5 * (x - m) * (x - m) - 0.9189385332046727;
    // Two Normal components over an event of shape [2]: the event is summed per component.
    let w = [0.4, -0.3];
    let mu = [[0.0, 1.0], [2.0, -1.0]];
    let x = [0.5, 0.2];
    let m = DistValue::mixture(
        Tensor::new(&[w], dev).unwrap(),
        DistKind::Normal,
        vec![
            (DistParam::Loc, Tensor::new(&[mu], dev).unwrap()),
            (DistParam::Scale, scalar(1.0)),
        ],
        &[2],
    )
    .unwrap();
    let lw = log_w(&w);
    let want = lse(&[
        lw[0] + n01(x[0], mu[0][0]) + n01(x[1], mu[0][1]),
        lw[1] + n01(x[0], mu[1][0]) + n01(x[1], mu[1][1]),
    ]);
    let got = vec1(&m.log_prob(&Tensor::new(&[x], dev).unwrap()).unwrap());
    assert_all_close("mixture event", &got, &[want], 1e-12, 1e-12);

    // A mixture of two Categoricals over K = 3 classes: values are one-hot [R, 3].
    let c = [[0.0, 1.0, 2.0], [3.0, 0.0, -1.0]];
    let m = DistValue::mixture(
        Tensor::new(&[w], dev).unwrap(),
        DistKind::Categorical,
        vec![(DistParam::Logits, Tensor::new(&[c], dev).unwrap())],
        &[],
    )
    .unwrap();
    assert_eq!(m.value_shape(), vec![1, 3]);
    let (l0, l1) = (log_w(&c[0]), log_w(&c[1]));
    for j in 0..3 {
        let v: Vec<f64> = (0..3).map(|i| f64::from(i == j)).collect();
        let got = vec1(
            &m.log_prob(
                &Tensor::new(v.as_slice(), dev)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
            )
            .unwrap(),
        );
        let want = lse(&[lw[0] + l0[j], lw[1] + l1[j]]);
        assert_all_close("mixture of categoricals", &got, &[want], 1e-12, 1e-12);
    }
    let mean = vec1(&m.mean().unwrap());
    let want: Vec<f64> = (0..3)
        .map(|j| lw[0].exp() * l0[j].exp() + lw[1].exp() * l1[j].exp())
        .collect();
    assert_all_close("mixture of categoricals mean", &mean, &want, 1e-12, 1e-12);
    let mut rng = Rng::seed(2);
    let s = m.with_rows(5).unwrap().sample(&mut rng).unwrap();
    assert_eq!(s.dims(), &[5, 3]);
    assert_eq!(vec1(&s.sum(1).unwrap()), vec![1.0; 5]);
}

#[test]
fn continuous_bernoulli_inverse_cdf_is_exact_on_both_sides_of_its_series() {
    // x = log1p(u expm1(l)) / l, computed on the host with log1p / expm1 (no cancellation),
    // at logits inside the series region (|l| < 0.2), at its edge, and far out.
    let ls: [f64; 10] = [0.0, 1e-6, 0.05, -0.15, 0.199, 0.201, -1.0, 3.0, -30.0, 80.0];
    let us: [f64; 6] = [1e-6, 0.1, 0.37, 0.5, 0.9, 1.0 - 1e-6];
    let exact = |l: f64, u: f64| {
        if l == 0.0 {
            u
        } else if l > 0.0 {
            // log(1 + u (e^l - 1)) = l + log1p((1 - u)(e^-l - 1)): no overflow at large l
            (l + ((1.0 - u) * (-l).exp_m1()).ln_1p()) / l
        } else {
            (u * l.exp_m1()).ln_1p() / l
        }
    };
    let (mut lv, mut uv) = (vec![], vec![]);
    for &l in &ls {
        for &u in &us {
            lv.push(l);
            uv.push(u);
        }
    }
    let want: Vec<f64> = lv.iter().zip(&uv).map(|(l, u)| exact(*l, *u)).collect();
    let got = vec1(&super::sample::cb_icdf(&t1(&lv), &t1(&uv)).unwrap());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() < 1e-9,
            "icdf(l = {}, u = {}): {g} vs {w}",
            lv[i],
            uv[i]
        );
    }
    // f32, against the exact inverse at the f32-rounded inputs: a few ulps.
    let (l32, u32) = (
        t1(&lv).to_dtype(DType::F32).unwrap(),
        t1(&uv).to_dtype(DType::F32).unwrap(),
    );
    let want: Vec<f64> = vec1(&l32)
        .iter()
        .zip(vec1(&u32))
        .map(|(l, u)| exact(*l, u))
        .collect();
    let got = vec1(&super::sample::cb_icdf(&l32, &u32).unwrap());
    assert_all_close("icdf f32", &got, &want, 0.0, 2e-6);
}
