//! End-to-end training through the CLI and the library: one generic path for the VAE
//! and the CVAE, exact `--resume` after SIGKILL, a non-finite loss that stops training
//! without touching the last checkpoint, and the run-directory commands.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_ok, scratch, vic};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const VAE: &str = r#"
const D = 64
const Z = 4
const H = 32
data x : Binary[D]
latent z : Real[Z]
net encoder(x: Binary[D]) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H], act = relu)
net decoder(z: Real[Z]) -> Real[D] = mlp(hidden = [H], act = relu)
model {
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = decoder(z))
}
guide {
  let (loc, scale) = encoder(x)
  z ~ Normal(loc, scale)
}
train {
  dataset = "digits"
  batch = 64
  epochs = EPOCHS
  eval = iwae(samples = 20)
}
"#;

const CVAE: &str = r#"
const D = 64
const Z = 4
const H = 32
data x : Binary[D]
data y : Cat(10) given
latent z : Real[Z]
net prior(y: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = linear()
net encoder(x: Binary[D], y: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decoder(z: Real[Z], y: Cat(10)) -> Real[D] = mlp(hidden = [H])
model {
  let (pm, ps) = prior(y)
  z ~ Normal(pm, ps)
  x ~ Bernoulli(logits = decoder(z, y))
}
guide {
  let (loc, scale) = encoder(x, y)
  z ~ Normal(loc, scale)
}
train {
  dataset = "digits"
  batch = 64
  epochs = 2
}
"#;

/// M2 on the 8x8 digits with 100 labels; `y` by @reinforce (so a baseline is trained).
const M2: &str = r#"
const D = 64
const Z = 4
const H = 32
data x : Binary[D]
data y : Cat(10) partial
latent z : Real[Z]
net classify(x: Binary[D]) -> Real[10] = mlp(hidden = [H], act = softplus)
net encode(x: Binary[D], y: Cat(10)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H])
net decode(z: Real[Z], y: Cat(10)) -> Real[D] = mlp(hidden = [H])
model {
  y ~ Categorical(logits = zeros(10))
  z ~ Normal(0, 1)
  x ~ Bernoulli(logits = decode(z, y))
}
guide {
  y ~ Categorical(logits = classify(x)) @reinforce
  let (m, s) = encode(x, y)
  z ~ Normal(m, s)
}
train {
  dataset = "digits"
  labels = 100
  batch = 64
  epochs = EPOCHS
  eval = iwae(samples = 4)
}
"#;

fn write_spec(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The metrics of a run without the timing columns (which differ between runs).
fn metrics_without_timing(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            cols[..cols.len() - 2].join(",")
        })
        .collect()
}

fn checkpoint_epoch(run: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(run.join("checkpoint").join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["epoch"].as_u64()
}

#[test]
fn resume_after_sigkill_reaches_the_same_parameters() {
    resume_after_sigkill("resume", &VAE.replace("EPOCHS", "12"));
}

/// The same with `partial` labels: the labelled examples' cycle (state.json) and a
/// `@reinforce` baseline (model.safetensors) carry over too.
#[test]
fn resume_after_sigkill_with_partial_labels() {
    resume_after_sigkill("resume-partial", &M2.replace("EPOCHS", "12"));
}

fn resume_after_sigkill(name: &str, text: &str) {
    let dir = scratch("train", name);
    let spec = write_spec(&dir, "spec.vi", text);
    let whole = dir.join("whole");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&whole));

    // The same run, killed with SIGKILL once a checkpoint exists, then resumed. It holds
    // after epoch 2's checkpoint (`VIC_HOLD_AFTER_EPOCH`), so the kill lands there on a
    // machine of any speed.
    let cut = dir.join("cut");
    let mut child = vic()
        .env("VIC_HOLD_AFTER_EPOCH", "2")
        .arg("train")
        .arg(&spec)
        .arg("--out")
        .arg(&cut)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut killed_at = None;
    while started.elapsed() < Duration::from_secs(300) {
        if let Some(e) = checkpoint_epoch(&cut) {
            if e >= 2 {
                if child.try_wait().unwrap().is_none() {
                    child.kill().unwrap(); // SIGKILL on Unix
                    killed_at = Some(e);
                }
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.wait();
    let killed_at = killed_at.expect("the run finished before it could be killed");
    assert_eq!(killed_at, 2, "killed after epoch {killed_at}");
    // Without --resume the run directory is protected.
    let refused = vic()
        .arg("train")
        .arg(&spec)
        .arg("--out")
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));

    run_ok(
        vic()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(&cut)
            .arg("--resume"),
    );
    let a = std::fs::read(whole.join("model.safetensors")).unwrap();
    let b = std::fs::read(cut.join("model.safetensors")).unwrap();
    assert!(
        a == b,
        "resumed parameters differ from the uninterrupted run's"
    );
    assert_eq!(metrics_without_timing(&whole), metrics_without_timing(&cut));
    assert_eq!(metrics_without_timing(&whole).len(), 13);
}

/// `vic eval` reports the accuracy of q(y | x) on the test split for `partial` labels,
/// for the enumerated default as for the other estimators.
#[test]
fn eval_reports_the_accuracy_of_partial_labels() {
    let dir = scratch("train", "accuracy");
    for (i, strategy) in ["@reinforce", "", "@relax(temperature = 0.5)"]
        .iter()
        .enumerate()
    {
        let spec = write_spec(
            &dir,
            &format!("m2-{i}.vi"),
            &M2.replace("EPOCHS", "2").replace("@reinforce", strategy),
        );
        let run = dir.join(format!("run-{i}"));
        run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
        let text = run_ok(vic().arg("eval").arg(&run).arg("--json"));
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let acc = &v["accuracy"][0];
        assert_eq!(acc["variable"], "y", "{text}");
        assert_eq!(acc["examples"], 180, "{text}");
        let a = acc["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&a), "{text}");
        let human = run_ok(vic().arg("eval").arg(&run));
        assert!(human.contains("accuracy of q(y)"), "{human}");
        // The labelled-term column is in the metrics.
        let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
        assert!(metrics.contains("-log q(y) labelled"), "{metrics}");
    }
}

#[test]
fn a_different_seed_gives_different_parameters() {
    let dir = scratch("train", "seed");
    let spec = write_spec(&dir, "vae.vi", &VAE.replace("EPOCHS", "1"));
    run_ok(
        vic()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(dir.join("a")),
    );
    run_ok(
        vic()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(dir.join("b"))
            .args(["--set", "train.seed=7"]),
    );
    let a = std::fs::read(dir.join("a/model.safetensors")).unwrap();
    let b = std::fs::read(dir.join("b/model.safetensors")).unwrap();
    assert!(a != b);
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_checkpoint() {
    let dir = scratch("train", "nan");
    let spec = write_spec(&dir, "vae.vi", &VAE.replace("EPOCHS", "1"));
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));

    // Poison the decoder's last bias in the checkpoint, then ask for one more epoch.
    let ckpt = run.join("checkpoint").join("model.safetensors");
    let dev = candle_core::Device::Cpu;
    let mut tensors = candle_core::safetensors::load(&ckpt, &dev).unwrap();
    let key = "decoder.layer1.bias".to_string();
    let bias = tensors.get(&key).expect("decoder.layer1.bias");
    let poisoned = (bias * f64::NAN).unwrap();
    tensors.insert(key, poisoned);
    candle_core::safetensors::save(&tensors, &ckpt).unwrap();
    let before: Vec<(String, Vec<u8>)> =
        ["model.safetensors", "optimizer.safetensors", "state.json"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    std::fs::read(run.join("checkpoint").join(f)).unwrap(),
                )
            })
            .collect();

    let spec2 = write_spec(&dir, "vae.vi", &VAE.replace("EPOCHS", "2"));
    let out = vic()
        .arg("train")
        .arg(&spec2)
        .arg("--out")
        .arg(&run)
        .arg("--resume")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("epoch 2, step 27"), "{err}");
    assert!(
        err.contains("log p(x | z)") && err.contains("not finite"),
        "{err}"
    );
    assert!(err.contains("after epoch 1"), "{err}");
    for (f, bytes) in before {
        assert!(
            std::fs::read(run.join("checkpoint").join(&f)).unwrap() == bytes,
            "{f} changed"
        );
    }
}

#[test]
fn the_cvae_trains_through_the_same_path_and_the_run_commands_work() {
    let dir = scratch("train", "cvae");
    let spec = write_spec(&dir, "cvae.vi", CVAE);
    let run = dir.join("run");
    let log = run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    assert!(log.contains("epoch   2"), "{log}");
    for f in [
        "spec.vi",
        "ir.ron",
        "config.ron",
        "model.safetensors",
        "metrics.csv",
        "samples.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    // The model's parameters are named after the spec.
    let tensors =
        candle_core::safetensors::load(run.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    for key in [
        "prior.layer0.weight",
        "encoder.layer0.weight",
        "decoder.layer1.bias",
    ] {
        assert!(tensors.contains_key(key), "missing {key}");
    }

    let json = run_ok(
        vic()
            .arg("eval")
            .arg(&run)
            .args(["--samples", "50", "--json"]),
    );
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    let (elbo, iwae) = (v["elbo"].as_f64().unwrap(), v["iwae"].as_f64().unwrap());
    assert_eq!(v["examples"], 180);
    assert!(
        elbo < 0.0 && elbo > -64.0 * std::f64::consts::LN_2 * 2.0,
        "{v}"
    );
    // The IWAE bound is at least the ELBO up to Monte Carlo noise.
    assert!(iwae > elbo - 0.5, "{v}");

    let npy = dir.join("z.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&npy));
    let z = candle_core::Tensor::read_npy(&npy).unwrap();
    assert_eq!(z.dims(), &[1797, 4]);

    let png = dir.join("grid.png");
    run_ok(
        vic()
            .arg("sample")
            .arg(&run)
            .args(["-n", "20", "-o"])
            .arg(&png),
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
}

#[test]
fn analytic_and_monte_carlo_kl_give_the_same_elbo_in_expectation() {
    use vic::lower::objective::Settings;
    let src = VAE.replace("EPOCHS", "1");
    let program = vic::driver::front_end(&src, &Default::default())
        .program
        .unwrap();
    let env = vic::data::DataEnv {
        spec_dir: ".".into(),
        vic_data: None,
    };
    let data =
        vic::data::load(&program, &program.train.dataset, &env, &vic::io::RealFs, 0).unwrap();
    let dev = candle_core::Device::Cpu;
    let model = vic::lower::LoweredModel::new(
        program.clone(),
        vic::lower::params::ParamStore::seeded(3, &dev),
    )
    .unwrap();
    let mut rng = vic::rng::Rng::seed(5);
    let idx: Vec<usize> = (0..32).collect();
    let batch = vic::train::make_batch(&program, &data.train, &idx, &dev, &mut rng).unwrap();
    let mean_bound = |settings: &Settings, rng: &mut vic::rng::Rng| -> f64 {
        let out = model.objective(&batch, settings, rng).unwrap();
        out.bound.mean_all().unwrap().to_scalar::<f32>().unwrap() as f64
    };
    let analytic = Settings {
        samples: 2000,
        iwae: false,
        train: false,
        kl_weight: 1.0,
        free_bits: 0.0,
        dataset_size: data.train.n,
    };
    // IWAE with one sample is the Monte Carlo ELBO: log p(x|z) + log p(z) - log q(z).
    let mc = Settings {
        iwae: true,
        samples: 1,
        ..analytic
    };
    let a = mean_bound(&analytic, &mut rng);
    let m: f64 = (0..2000).map(|_| mean_bound(&mc, &mut rng)).sum::<f64>() / 2000.0;
    assert!(
        (a - m).abs() < 0.05 * a.abs().max(1.0),
        "analytic {a} vs Monte Carlo {m}"
    );
    // And the IWAE bound with many samples lies above the ELBO.
    let iw = mean_bound(
        &Settings {
            iwae: true,
            samples: 200,
            ..analytic
        },
        &mut rng,
    );
    assert!(iw > a, "IWAE {iw} should exceed the ELBO {a}");
}

#[test]
fn constructs_not_lowered_yet_are_refused_plainly_before_training() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let dir = scratch("train", "refuse");
    // A `datasets(...)` family: each member a dataset of its own.
    let src = std::fs::read_to_string(root.join("metavae.vi"))
        .unwrap()
        .replace(
            "rotate(-180:160:20)",
            "datasets(\"digits\", \"fashion-mnist\")",
        )
        .replace("train = even", "train = [0]")
        .replace("test = odd", "test = [1]");
    let spec = dir.join("datasets.vi");
    std::fs::write(&spec, src).unwrap();
    let out = vic()
        .arg("train")
        .arg(&spec)
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`datasets(...)` family") && err.contains("not lowered"),
        "{err}"
    );
}

/// A small GMVAE (an enumerated `Cat(10)` cluster, a Normal `z` given it) on the digits,
/// 20 epochs: after 10 its clustering still depends on the seed (0.19 to 0.31 over seeds
/// 0-3), after 20 it is 0.34 to 0.44 over seeds 0-4.
const GMVAE: &str = r#"
const D = 64
const K = 10
const Z = 4
const H = 32
data x : Binary[D]
latent c : Cat(K)
latent z : Real[Z]
net prior_z(c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = linear()
net q_c(x: Binary[D]) -> Real[K] = mlp(hidden = [H], act = relu)
net q_z(x: Binary[D], c: Cat(K)) -> (loc: Real[Z], scale: Positive[Z]) = mlp(hidden = [H], act = relu)
net dec(z: Real[Z]) -> Real[D] = mlp(hidden = [H], act = relu)
model {
  c ~ Categorical(logits = zeros(K))
  let (m, s) = prior_z(c)
  z ~ Normal(m, s)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  c ~ Categorical(logits = q_c(x)) @enumerate
  let (m, s) = q_z(x, c)
  z ~ Normal(m, s)
}
train {
  dataset = "digits"
  batch = 64
  epochs = 20
  eval = iwae(samples = 10)
}
"#;

/// The test split's cluster assignments (arg-max of q(c | x)) and labels of a trained run.
fn test_clusters(run: &Path) -> (Vec<usize>, Vec<u32>) {
    let ir = std::fs::read_to_string(run.join("ir.ron")).unwrap();
    let program = vic::driver::read_ir(&ir).unwrap();
    let env = vic::data::DataEnv::default();
    let seed = program.train.seed;
    let data = vic::data::load(
        &program,
        &program.train.dataset,
        &env,
        &vic::io::RealFs,
        seed,
    )
    .unwrap();
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let model = vic::train::load_model(program, &bytes, &candle_core::Device::Cpu).unwrap();
    let idx: Vec<usize> = (0..data.test.n).collect();
    let mut rng = vic::rng::Rng::seed(0);
    let b =
        vic::train::make_batch(&model.program, &data.test, &idx, model.device(), &mut rng).unwrap();
    let means = model.posterior_means(&b, &mut rng).unwrap();
    let (_, probs) = means.iter().find(|(id, _)| *id == 0).unwrap();
    let clusters = probs
        .argmax(candle_core::D::Minus1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap()
        .into_iter()
        .map(|c| c as usize)
        .collect();
    (clusters, data.test.labels.unwrap())
}

#[test]
fn an_enumerated_cluster_trains_and_eval_reports_its_clustering_accuracy() {
    let dir = scratch("train", "gmvae");
    let spec = write_spec(&dir, "gmvae.vi", GMVAE);
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    let header = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(
        header.contains("KL(c)") && header.contains("KL(z)"),
        "{header}"
    );
    let out = vic().arg("eval").arg(&run).arg("--json").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (elbo, iwae) = (v["elbo"].as_f64().unwrap(), v["iwae"].as_f64().unwrap());
    assert!(elbo.is_finite() && elbo < 0.0 && iwae >= elbo - 0.5, "{v}");
    let acc = v["clustering_accuracy"]["c"].as_f64().unwrap();
    // Held against what a clustering without information scores under the same matching:
    // the same cluster sizes given to the examples at random (the best one-to-one matching
    // already gives a collapsed clustering the largest class's share).
    // (The images are binarized afresh for each pass, so the assignments here and
    // eval's differ slightly.)
    let (clusters, labels) = test_clusters(&run);
    let here = vic::cluster::clustering_accuracy(&clusters, &labels).unwrap();
    assert!((here - acc).abs() < 0.05, "eval {acc} vs {here}");
    let acc = here;
    let mut rng = vic::rng::Rng::seed(3);
    let shuffled: Vec<f64> = (0..20)
        .map(|_| {
            let perm = rng.permutation(clusters.len());
            let c: Vec<usize> = perm.iter().map(|&i| clusters[i]).collect();
            vic::cluster::clustering_accuracy(&c, &labels).unwrap()
        })
        .collect();
    let chance = shuffled.iter().sum::<f64>() / shuffled.len() as f64;
    let largest_share = (0..10)
        .map(|k| labels.iter().filter(|&&l| l == k).count())
        .max()
        .unwrap() as f64
        / labels.len() as f64;
    assert!(
        acc > chance + 0.06 && acc > 1.5 * largest_share,
        "clustering accuracy {acc}: chance with these cluster sizes {chance:.3}, largest class {largest_share:.3}"
    );
    let text = run_ok(vic().arg("eval").arg(&run));
    assert!(text.contains("clustering accuracy of c"), "{text}");
    // `vic encode` gives q(c | x) (rows summing to 1) then E_q[z | x].
    let npy = dir.join("codes.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&npy));
    assert!(std::fs::metadata(&npy).unwrap().len() > 1797 * 14 * 4);
}

#[test]
fn guide_exact_fits_the_mixture_and_eval_reports_the_exact_log_likelihood() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = scratch("train", "gmm").join("run");
    run_ok(
        vic()
            .arg("train")
            .arg(root.join("specs/gmm.vi"))
            .arg("--out")
            .arg(&run)
            .args(["--set", "train.epochs=300"]),
    );
    let out = vic().arg("eval").arg(&run).arg("--json").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["log_px"], v["elbo"], "{v}");
    assert_eq!(v["elbo"], v["iwae"], "{v}");
    // The data's own mixture scores about -3.06 nats per test point; 300 full-batch
    // steps get close, and the components are found.
    let ll = v["elbo"].as_f64().unwrap();
    assert!(ll > -3.3 && ll < -2.9, "{v}");
    assert!(v["clustering_accuracy"]["c"].as_f64().unwrap() > 0.9, "{v}");
    let text = run_ok(vic().arg("eval").arg(&run));
    assert!(text.contains("log p(x) (exact)"), "{text}");
}

#[test]
fn a_refused_resume_leaves_the_run_directory_as_it_was() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = scratch("train", "refused-resume");
    let run = dir.join("run");
    let spec = root.join("specs/bayes_regression.vi");
    run_ok(
        vic()
            .arg("train")
            .arg(&spec)
            .arg("--out")
            .arg(&run)
            .args(["--set", "train.epochs=3"]),
    );
    let before: Vec<Vec<u8>> = ["spec.vi", "ir.ron", "config.ron", "run.json"]
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    // Another seed is another trajectory: the checkpoint cannot continue it.
    let out = vic()
        .arg("train")
        .arg(&spec)
        .arg("--out")
        .arg(&run)
        .args(["--resume", "--set", "train.seed=5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot resume"), "{err}");
    for (f, b) in ["spec.vi", "ir.ron", "config.ron", "run.json"]
        .iter()
        .zip(&before)
    {
        assert_eq!(&std::fs::read(run.join(f)).unwrap(), b, "{f} was rewritten");
    }
    // `vic sample` on a model with real-valued `given` data takes it from the test split.
    let npy = dir.join("y.npy");
    run_ok(
        vic()
            .arg("sample")
            .arg(&run)
            .arg("-n")
            .arg("7")
            .arg("-o")
            .arg(&npy),
    );
    assert!(std::fs::metadata(&npy).unwrap().len() > 7 * 4);
}
