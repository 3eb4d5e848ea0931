//! `meta` families against truth: the image transforms against scipy.ndimage
//! (fixtures), `vic probe`'s regression against scikit-learn's LogisticRegression
//! (fixtures); members, context sets and batches as documented; bad input refused before
//! training; a MetaVAE trained, evaluated per member, probed and sampled through the CLI.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::needless_range_loop
)]

mod common;

use common::{json_of, run_ok, scratch, vic};
use vic::data::meta::{transform_image, Transform, Which};
use vic::train::batches::{Batcher, Members};

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Rotations, scalings and shears with bilinear resampling and zeros outside, as
/// scipy.ndimage computes them (tests/fixtures/transform_fixtures.py).
#[test]
fn the_transforms_match_scipy() {
    let cases = fixture("transform_fixtures.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let (h, w) = (
            c["h"].as_u64().unwrap() as usize,
            c["w"].as_u64().unwrap() as usize,
        );
        let p = c["param"].as_f64().unwrap();
        let t = match c["kind"].as_str().unwrap() {
            "rotate" => Transform::Rotate(p),
            "scale" => Transform::Scale(p),
            _ => Transform::Shear(p),
        };
        let img: Vec<f32> = floats(&c["image"]).iter().map(|&v| v as f32).collect();
        let want = floats(&c["expected"]);
        let got = transform_image(t, &img, [1, h, w]);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "{t:?} on {h}x{w}: off by {worst}");
    }
}

/// `vic probe`'s logistic regression predicts the test classes scikit-learn's
/// LogisticRegression() predicts on the same data (tests/fixtures/probe_fixtures.py), and
/// reaches its accuracies.
#[test]
fn the_probe_regression_matches_scikit_learn() {
    let f = fixture("probe_fixtures.json");
    let rows = |v: &serde_json::Value| -> Vec<Vec<f64>> {
        v.as_array().unwrap().iter().map(floats).collect()
    };
    let labels = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let (xtr, ytr) = (rows(&f["train_x"]), labels(&f["train_y"]));
    let (xte, yte) = (rows(&f["test_x"]), labels(&f["test_y"]));
    let sk_pred = labels(&f["test_pred"]);
    let (train_acc, test_acc) = vic::probe::fit_and_score(&xtr, &ytr, &xte, &yte).unwrap();
    assert!(
        (train_acc - f["train_accuracy"].as_f64().unwrap()).abs() <= 0.0051,
        "training accuracy {train_acc}"
    );
    assert!(
        (test_acc - f["test_accuracy"].as_f64().unwrap()).abs() <= 0.0101,
        "test accuracy {test_acc}"
    );
    // The same predictions, not only the same counts: score each of scikit-learn's
    // predicted classes as a one-example test set.
    let mut agree = 0;
    for (x, &p) in xte.iter().zip(&sk_pred) {
        let (_, a) = vic::probe::fit_and_score(&xtr, &ytr, std::slice::from_ref(x), &[p]).unwrap();
        agree += (a == 1.0) as usize;
    }
    assert!(
        agree >= sk_pred.len() - 2,
        "{agree} of {} agree",
        sk_pred.len()
    );
    // One class is no classification problem: an error, not a panic.
    assert!(vic::probe::fit_and_score(&xtr, &vec![1; xtr.len()], &xte, &yte).is_err());
}

/// A MetaVAE on the 8x8 digits (specs/metavae.vi with small sizes): rotations by 0, 90,
/// 180 and 270 degrees, the even ones trained.
const META: &str = r#"
data x : Binary[64]
latent z : Real[4]
set S : Binary[64] size 5
net summary(S: Set[Binary[64]]) -> Real[16] = deepsets(phi = [16], pool = mean, act = relu)
net enc(x: Binary[64], s: Real[16]) -> (loc: Real[4], scale: Positive[4]) = mlp(hidden = [32], act = relu)
@per_member net dec(z: Real[4]) -> Real[64] = mlp(hidden = [32], act = relu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  let (m, s) = enc(x, summary(S))
  z ~ Normal(m, s)
}
meta { family = rotate(0:270:90); train = even; test = odd }
train { dataset = "digits"; epochs = 2; batch = 32 }
"#;

fn load(src: &str) -> (vic::ir::Program, vic::data::DataSet) {
    let front = vic::driver::front_end(src, &Default::default());
    let program = front
        .program
        .unwrap_or_else(|| panic!("{:?}", front.diagnostics));
    let data = vic::data::load(
        &program,
        &program.train.dataset,
        &vic::data::DataEnv::default(),
        &vic::io::RealFs,
        program.train.seed,
    )
    .unwrap();
    (program, data)
}

/// Members are the rotations of the whole dataset; each step holds a batch of every
/// training member weighted 1 / members; an epoch is as many examples as the data has,
/// spread over them; a member batch is the member's rotation of its examples, with sets of
/// other examples of the same member.
#[test]
fn members_sets_and_batches_are_as_documented() {
    let (program, data) = load(META);
    let meta = data.meta.as_ref().unwrap();
    assert_eq!(meta.members.len(), 4);
    assert_eq!(meta.train_members, vec![0, 2]);
    assert_eq!(meta.test_members, vec![1, 3]);
    assert_eq!(meta.members[1].name, "rotate(90)");
    assert_eq!(meta.members[3].train.len(), data.train.n);
    let mut b = Members::new(meta, 32);
    let mut rng = vic::rng::Rng::seed(1);
    b.start_epoch(&mut rng);
    assert_eq!(b.steps_per_epoch(), data.train.n.div_ceil(64) as u64);
    let parts = b.next_step(&mut rng).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].member, Some(0));
    assert_eq!(parts[1].member, Some(2));
    assert!(parts
        .iter()
        .all(|p| p.weighted && (p.share - 0.5).abs() < 1e-12));
    assert!(parts.iter().all(|p| p.indices.len() == 32));
    // Member 2 (180 degrees): its batch is the rotated images (threshold binarization
    // keeps the comparison exact), with sets of 5 other examples of the same split.
    let mut p = program.clone();
    p.train.binarize = vic::ir::Binarize::Threshold(0.5);
    let idx = [3usize, 7];
    let dev = candle_core::Device::Cpu;
    let batch = vic::train::member_batch(&p, &data, Which::Train, 2, &idx, &dev, &mut rng).unwrap();
    assert_eq!(batch.member, Some(2));
    let x = batch.data[0].as_ref().unwrap().to_vec2::<f32>().unwrap();
    for (r, &i) in idx.iter().enumerate() {
        let row = data.train.vars[0].1.row(i);
        for y in 0..8 {
            for c in 0..8 {
                let turned = row[(7 - y) * 8 + (7 - c)];
                assert_eq!(
                    x[r][y * 8 + c],
                    f32::from(turned > 0.5),
                    "example {i} ({y}, {c})"
                );
            }
        }
    }
    let set = batch.sets[0].as_ref().unwrap();
    assert_eq!(set.dims(), &[2, 5, 64]);
    let draws = meta.draw_set(2, Which::Train, &idx, 5, &mut rng);
    for (q, chunk) in idx.iter().zip(draws.chunks(5)) {
        assert!(!chunk.contains(q));
        let mut c = chunk.to_vec();
        c.sort();
        c.dedup();
        assert_eq!(c.len(), 5);
    }
}

/// Bad input is refused before training, each with what is wrong.
#[test]
fn bad_meta_input_is_refused_before_training() {
    let dir = scratch("meta", "refused");
    let cases = [
        // A class of the test split (about 18 digits) is smaller than its sets need.
        (
            META.replace("rotate(0:270:90)", "classes()")
                .replace("train = even; test = odd", "train = [0, 1, 2]; test = [3]")
                .replace("size 5", "size 30"),
            "context sets need at least 31",
        ),
        // Member 12 of the ten classes (the checker cannot count them: they are the
        // data's).
        (
            META.replace("rotate(0:270:90)", "classes()")
                .replace("train = even; test = odd", "train = [0, 1]; test = [12]"),
            "names member 12, but the `meta` family has 10 members",
        ),
        // `classes()` on data without labels.
        (
            META.replace("rotate(0:270:90)", "classes()")
                .replace("train = even; test = odd", "train = [0]; test = [1]")
                .replace("dataset = \"digits\"", "dataset = \"x.npz\""),
            "no labels",
        ),
    ];
    // x.npz: 40 examples of `x` and nothing else.
    let values: Vec<f32> = (0..40 * 64).map(|i| (i % 3) as f32 / 2.0).collect();
    let x = candle_core::Tensor::from_vec(values, (40, 64), &candle_core::Device::Cpu).unwrap();
    candle_core::Tensor::write_npz(&[("x", &x)], dir.join("x.npz")).unwrap();
    for (i, (src, want)) in cases.iter().enumerate() {
        let spec = dir.join(format!("bad{i}.vi"));
        std::fs::write(&spec, src).unwrap();
        let run = dir.join(format!("run{i}"));
        let out = vic()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(&run)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {err}");
        assert!(err.contains(want), "case {i}: {err}");
        assert!(!run.join("model.safetensors").exists(), "case {i} trained");
    }
}

/// Trained through the CLI: `vic eval` reports every training member; `vic probe` each
/// held-out member; `vic sample --member` draws through a training member's decoder and
/// refuses a held-out one (its decoder copy does not exist).
#[test]
fn a_metavae_trains_evaluates_probes_and_samples() {
    let dir = scratch("meta", "cli");
    let spec = dir.join("meta.vi");
    std::fs::write(&spec, META).unwrap();
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    assert!(run.join("samples.png").exists());
    let v = json_of(vic().args(["eval", "--samples", "2", "--json"]).arg(&run));
    let members = v["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rotate(0)", "rotate(180)"]);
    assert!(members.iter().all(|m| m["elbo"].as_f64().unwrap() < 0.0));
    let p = json_of(
        vic()
            .args(["probe", "--examples", "300", "--json"])
            .arg(&run),
    );
    let probed: Vec<u64> = p["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member"].as_u64().unwrap())
        .collect();
    assert_eq!(probed, [1, 3]);
    // Ten classes: chance is about 0.1; the embedding of two epochs does better.
    let mean = p["mean_accuracy"].as_f64().unwrap();
    assert!(mean > 0.2 && mean <= 1.0, "{mean}");
    let png = dir.join("m2.png");
    run_ok(
        vic()
            .args(["sample", "--member", "2", "-n", "4", "-o"])
            .arg(&png)
            .arg(&run),
    );
    assert!(png.exists());
    let out = vic()
        .args(["sample", "--member", "1"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("held out of training"));
}
