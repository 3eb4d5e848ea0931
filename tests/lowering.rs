//! The lowering harness: every spec in `specs/` and every complete example of the user
//! documentation (`docs/**/*.md`, the ```vi blocks with a `model`) is lowered onto a tiny
//! synthetic batch made from its data declarations, and runs end to end: the training
//! objective and its backward pass (every parameter gets a finite gradient), the
//! evaluation bounds, the posterior means and a draw from the model. A spec this release
//! cannot train must instead be refused before any data is read, with its message; the
//! snapshot lists which specs run and which are refused, and why.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};
use vic::ir::{DataRole, Domain, Objective, Program};
use vic::lower::objective::{Batch, Settings};
use vic::lower::params::ParamStore;
use vic::lower::LoweredModel;
use vic::rng::Rng;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The repository's root: `CARGO_MANIFEST_DIR` at run time where it is set (cargo sets
/// it; bench/gpu_check.sh sets it where the test binary was built elsewhere), else where
/// the tests were compiled.
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(ROOT), PathBuf::from)
}

/// Examples per synthetic batch.
const B: usize = 3;

/// Every spec file, and every complete example of the docs (a ```vi block with a
/// `model`), as `(name, source)`.
fn sources() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let root = root();
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root.join("specs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "vi"))
        .collect();
    specs.sort();
    for p in specs {
        let name = format!("specs/{}", p.file_name().unwrap().to_string_lossy());
        out.push((name, std::fs::read_to_string(&p).unwrap()));
    }
    let mut docs = Vec::new();
    collect_md(&root.join("docs"), &mut docs);
    docs.sort();
    for p in docs {
        let text = std::fs::read_to_string(&p).unwrap();
        let rel = p.strip_prefix(&root).unwrap().display().to_string();
        for (i, block) in vi_blocks(&text).into_iter().enumerate() {
            if block.contains("model {") && !block.starts_with("# fragment") {
                out.push((format!("{rel} example {}", i + 1), block));
            }
        }
    }
    out
}

fn collect_md(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_md(&p, out);
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
}

/// The contents of the ```vi fenced blocks of a markdown text.
fn vi_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_start() == "```vi" => current = Some(String::new()),
            Some(_) if line.trim_start() == "```" => out.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

/// One example's value of a `ty` variable in lowering's conventions (`Cat(K)` one-hot on
/// a trailing axis), as a flat vector with its shape (without the example axis).
fn synthetic_value(domain: Domain, shape: &[usize], rng: &mut Rng) -> (Vec<f32>, Vec<usize>) {
    let n: usize = shape.iter().product();
    let u = rng.uniform_vec(n);
    let z = rng.normal_vec(n);
    let mut dims = shape.to_vec();
    let v: Vec<f32> = match domain {
        Domain::Real | Domain::Unknown => z,
        Domain::Positive => z.iter().map(|z| 0.2 + (0.5 * z).exp()).collect(),
        Domain::Unit => u.iter().map(|u| 0.05 + 0.9 * u).collect(),
        Domain::Binary => u.iter().map(|u| f32::from(*u < 0.4)).collect(),
        Domain::Count => u.iter().map(|u| (u * 5.0).floor()).collect(),
        Domain::Simplex => {
            let k = shape.last().copied().unwrap_or(1).max(1);
            let e: Vec<f32> = z.iter().map(|z| z.exp()).collect();
            e.chunks(k)
                .flat_map(|c| {
                    let s: f32 = c.iter().sum();
                    c.iter().map(move |x| x / s).collect::<Vec<_>>()
                })
                .collect()
        }
        Domain::Cat(k) => {
            dims.push(k);
            u.iter()
                .flat_map(|u| {
                    let c = ((u * k as f32) as usize).min(k - 1);
                    (0..k).map(move |j| f32::from(j == c))
                })
                .collect()
        }
    };
    (v, dims)
}

/// A batch of `B` examples of every data variable; a `partial` variable is observed in
/// the first and last example only (a hidden value is stored as class 0, as the data
/// loader does).
fn synthetic_batch(program: &Program, rng: &mut Rng) -> Batch {
    synthetic_batch_on(program, rng, &Device::Cpu)
}

/// [`synthetic_batch`] on a device (the same values: they are drawn on the host).
fn synthetic_batch_on(program: &Program, rng: &mut Rng, dev: &Device) -> Batch {
    let mut data = Vec::new();
    let mut observed = Vec::new();
    for def in &program.data {
        let mut flat = Vec::new();
        let mut dims = Vec::new();
        for i in 0..B {
            let (mut v, d) = synthetic_value(def.ty.domain, &def.ty.shape, rng);
            if def.role == DataRole::Partial && i == 1 {
                if let Domain::Cat(k) = def.ty.domain {
                    for (j, x) in v.iter_mut().enumerate() {
                        *x = f32::from(j % k == 0);
                    }
                }
            }
            flat.extend(v);
            dims = d;
        }
        let mut shape = vec![B];
        shape.extend(dims);
        data.push(Some(Tensor::from_vec(flat, shape, dev).unwrap()));
        observed.push(
            (def.role == DataRole::Partial)
                .then(|| Tensor::from_vec(vec![1f32, 0.0, 1.0], B, dev).unwrap()),
        );
    }
    let mut batch = Batch::new(data, B);
    batch.observed = observed;
    // Context sets `[B, N, ...]`, and the first training member of a `meta` family.
    for set in &program.sets {
        let mut flat = Vec::new();
        let mut dims = Vec::new();
        for _ in 0..B * set.size {
            let (v, d) = synthetic_value(set.ty.domain, &set.ty.shape, rng);
            flat.extend(v);
            dims = d;
        }
        let mut shape = vec![B, set.size];
        shape.extend(dims);
        batch
            .sets
            .push(Some(Tensor::from_vec(flat, shape, dev).unwrap()));
    }
    batch.member = vic::arch::training_members(program).and_then(|m| m.first().copied());
    batch
}

fn finite(t: &Tensor) -> bool {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

/// The spec's training settings on a synthetic batch: its objective with at most two
/// samples (three for IWAE), as if the dataset had 100 examples.
fn training_settings(cfg: &vic::ir::TrainConfig) -> Settings {
    let (samples, iwae) = match cfg.objective {
        Objective::Elbo { samples } => (samples.clamp(1, 2), false),
        Objective::Iwae { samples } => (samples.clamp(1, 3), true),
    };
    Settings {
        samples,
        iwae,
        train: true,
        kl_weight: cfg.beta,
        free_bits: cfg.free_bits,
        dataset_size: 100,
    }
}

/// `loss` (the first training member's, or the only one's) plus the loss of a synthetic
/// batch of every other training member: a `meta` family's training step holds a batch
/// of every training member, so that each member's copy of a `@per_member` network gets
/// its gradient.
fn with_other_members(
    model: &LoweredModel,
    mut loss: Tensor,
    train: &Settings,
    rng: &mut Rng,
) -> Result<Tensor, String> {
    for m in vic::arch::training_members(&model.program)
        .unwrap_or_default()
        .into_iter()
        .skip(1)
    {
        let mut other = synthetic_batch_on(&model.program, rng, model.device());
        other.member = Some(m);
        let o = model
            .objective(&other, train, rng)
            .map_err(|e| format!("objective of member {m}: {e}"))?;
        loss = (loss + o.loss).map_err(|e| e.to_string())?;
    }
    Ok(loss)
}

/// Run a lowered spec end to end on a synthetic batch; what it did, in one line.
fn exercise(program: Program) -> Result<String, String> {
    let mut rng = Rng::seed(7);
    let store = ParamStore::seeded(1, &Device::Cpu);
    let model = LoweredModel::new(program, store).map_err(|e| format!("lowering: {e}"))?;
    let batch = synthetic_batch(&model.program, &mut rng);
    let train = training_settings(&model.program.train);
    let out = model
        .objective(&batch, &train, &mut rng)
        .map_err(|e| format!("objective: {e}"))?;
    if !finite(&out.loss) || !finite(&out.bound) {
        return Err(format!(
            "the training objective is not finite: {:?}",
            out.terms
        ));
    }
    let loss = with_other_members(&model, out.loss.clone(), &train, &mut rng)?;
    let grads = loss.backward().map_err(|e| format!("backward: {e}"))?;
    let own = model.estimator_parameters();
    let mut params = 0;
    for (name, var) in model.store.named() {
        if vic::lower::nets::layers::is_buffer(&name) || own.contains(&name) {
            continue;
        }
        let Some(g) = grads.get(var.as_tensor()) else {
            return Err(format!("`{name}` gets no gradient"));
        };
        if !finite(g) {
            return Err(format!("the gradient of `{name}` is not finite"));
        }
        params += var.as_tensor().elem_count();
    }
    for iwae in [false, true] {
        let s = Settings::evaluation(3, iwae, 100);
        let out = model
            .objective(&batch, &s, &mut rng)
            .map_err(|e| format!("evaluation (iwae {iwae}): {e}"))?;
        if !finite(&out.bound) || out.bound.dims() != [B] {
            return Err(format!("evaluation bound {:?}", out.bound));
        }
    }
    let means = model
        .posterior_means(&batch, &mut rng)
        .map_err(|e| format!("posterior means: {e}"))?;
    for (id, m) in &means {
        if m.dim(0).ok() != Some(B) || !finite(m) {
            return Err(format!("posterior mean of latent {id}: {m:?}"));
        }
    }
    // A draw from the model, with the batch's `given` data.
    let given: Vec<Option<Tensor>> = model
        .program
        .data
        .iter()
        .zip(&batch.data)
        .map(|(d, t)| (d.role == DataRole::Given).then(|| t.clone()).flatten())
        .collect();
    let mut cond = Batch::new(given, B);
    cond.member = batch.member;
    cond.sets = batch.sets.clone();
    let drawn = model
        .sample_prior(&cond, &mut rng)
        .map_err(|e| format!("a draw from the model: {e}"))?;
    let observed = model
        .program
        .data
        .iter()
        .filter(|d| d.role != DataRole::Given)
        .count();
    if drawn.len() != observed {
        return Err(format!(
            "the model draws {} data variables of {observed}",
            drawn.len()
        ));
    }
    for (id, t) in &drawn {
        let def = &model.program.data[*id];
        let mut want = vec![B];
        want.extend(vic::lower::eval::value_shape(&def.ty));
        if t.dims() != want.as_slice() || !finite(t) {
            return Err(format!("the draw of `{}` is {:?}", def.name, t.dims()));
        }
    }
    let sites: Vec<String> = model
        .plan
        .sites
        .iter()
        .map(|s| format!("{} {}", s.name, s.estimator.name()))
        .collect();
    let sites = if sites.is_empty() {
        "no guide sites".to_string()
    } else {
        sites.join(", ")
    };
    Ok(format!(
        "runs: {sites} ({params} parameters with gradients), {} latent means, draws {}",
        means.len(),
        drawn
            .iter()
            .map(|(id, _)| model.program.data[*id].name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

#[test]
fn every_spec_and_documented_example_lowers_or_is_refused_before_the_data() {
    let mut report = String::new();
    let mut failures = Vec::new();
    for (name, src) in sources() {
        let front = vic::driver::front_end(&src, &Default::default());
        let Some(program) = front.program else {
            failures.push(format!("{name}: does not check: {:?}", front.diagnostics));
            continue;
        };
        let line = match vic::lower::refusal(&program) {
            Some(why) => format!("refused: {why}"),
            None => match exercise(program) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            },
        };
        report.push_str(&format!("{name}: {line}\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    insta::assert_snapshot!(report);
}

/// The training loss of a spec on a synthetic batch (every training member's, for a
/// `meta` family) and the gradient of every parameter, its graph built with the
/// hand-written CPU ops (`fused`) or from candle's own ops, as on a GPU.
fn loss_and_gradients(
    program: &Program,
    fused: bool,
) -> Result<(Tensor, Vec<(String, Tensor)>), String> {
    loss_and_gradients_on(program, fused, &Device::Cpu)
}

/// [`loss_and_gradients`] with the model and batch on `dev`.
fn loss_and_gradients_on(
    program: &Program,
    fused: bool,
    dev: &Device,
) -> Result<(Tensor, Vec<(String, Tensor)>), String> {
    let run = || -> Result<(Tensor, Vec<(String, Tensor)>), String> {
        let mut rng = Rng::seed(11);
        let store = ParamStore::seeded(3, dev);
        let model =
            LoweredModel::new(program.clone(), store).map_err(|e| format!("lowering: {e}"))?;
        let batch = synthetic_batch_on(&model.program, &mut rng, dev);
        let train = training_settings(&model.program.train);
        let loss = model
            .objective(&batch, &train, &mut rng)
            .map_err(|e| format!("objective: {e}"))?
            .loss;
        let loss = with_other_members(&model, loss, &train, &mut rng)?;
        let grads = loss.backward().map_err(|e| format!("backward: {e}"))?;
        let mut out = Vec::new();
        for (name, var) in model.store.named() {
            if let Some(g) = grads.get(var.as_tensor()) {
                out.push((name, g.clone()));
            }
        }
        Ok((loss, out))
    };
    if fused {
        run()
    } else {
        vic::lower::unfused(run)
    }
}

/// The largest absolute difference of two tensors of one shape, and the larger of their
/// largest magnitudes.
fn difference(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let f = |t: &Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (a, b) = (f(a), f(b));
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let m = a.iter().chain(&b).map(|x| x.abs()).fold(0f32, f32::max);
    (d, m)
}

/// Every spec and documented example that trains, its loss and gradients on one seed
/// computed two ways: how many were compared, and every disagreement (a loss beyond 1e-4
/// of its magnitude, a gradient beyond 1e-3 of its largest magnitude plus 1e-6).
fn agreement_on_every_spec(
    one: impl Fn(&Program) -> Result<(Tensor, Vec<(String, Tensor)>), String>,
    other: impl Fn(&Program) -> Result<(Tensor, Vec<(String, Tensor)>), String>,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, src) in sources() {
        let front = vic::driver::front_end(&src, &Default::default());
        let Some(program) = front.program else {
            continue;
        };
        if vic::lower::refusal(&program).is_some() {
            continue;
        }
        let (a, b) = match (one(&program), other(&program)) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                failures.push(format!("{name}: {:?} / {:?}", a.err(), b.err()));
                continue;
            }
        };
        let (d, m) = difference(&a.0, &b.0);
        if d > 1e-4 * m + 1e-6 {
            failures.push(format!("{name}: loss differs by {d} (of {m})"));
        }
        if a.1.len() != b.1.len() {
            failures.push(format!(
                "{name}: {} against {} gradients",
                a.1.len(),
                b.1.len()
            ));
        }
        for ((n, x), (n2, y)) in a.1.iter().zip(&b.1) {
            assert_eq!(n, n2);
            if x.dims() != y.dims() {
                failures.push(format!(
                    "{name}: `{n}`'s gradient {:?} against {:?}",
                    x.dims(),
                    y.dims()
                ));
                continue;
            }
            let (d, m) = difference(x, y);
            // A gradient near zero is a sum of cancelling terms, and below 1e-6 the two
            // paths' rounding decides it (the random function's log length scale: 2e-7).
            if d > 1e-3 * m + 1e-6 {
                failures.push(format!("{name}: `{n}`'s gradient differs by {d} (of {m})"));
            }
        }
        compared += 1;
    }
    (compared, failures)
}

/// The fused CPU ops (dense layers, activations, convolutions, GRU gates, DRAW's
/// attention, vdrop terms, the random-function guide's terms, the Bernoulli density) and
/// candle's compositions, which a GPU takes, give every spec and documented example the
/// same training loss and the same gradient of every parameter, from the same seed.
#[test]
fn the_fused_cpu_ops_and_the_candle_compositions_agree_on_every_spec() {
    let (compared, failures) = agreement_on_every_spec(
        |p| loss_and_gradients(p, true),
        |p| loss_and_gradients(p, false),
    );
    assert!(compared > 20, "only {compared} specs compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// On a GPU (candle's CUDA kernels and cuBLAS, the linear algebra moved to the host and
/// back), every spec and documented example gets the fused CPU path's training loss and
/// gradients from the same seed: the parameters' initial values and every noise draw come
/// from the host's generator, so the two runs differ only by rounding. Needs a CUDA
/// device: `cargo test --features cuda --release --test lowering -- --ignored gpu`, or
/// bench/gpu_check.sh on a machine with a GPU.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs a CUDA device (bench/gpu_check.sh)"]
fn the_gpu_and_the_fused_cpu_path_agree_on_every_spec() {
    let gpu = Device::new_cuda(0).expect("a CUDA device");
    let (compared, failures) = agreement_on_every_spec(
        |p| loss_and_gradients(p, true),
        |p| loss_and_gradients_on(p, true, &gpu),
    );
    assert!(compared > 20, "only {compared} specs compared");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
