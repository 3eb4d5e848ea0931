//! The CLI side of `vic train`, `eval`, `sample` and `encode`: files, the environment,
//! the clock and the progress bar around the library's trainer.
#![allow(clippy::disallowed_methods)]

use crate::{report, Format, FAILED, OK, USAGE};
use candle_core::{Device, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use vic::check::CheckOptions;
use vic::data::meta::Which;
use vic::data::{self, DataEnv, DataSet};
use vic::io::{self, RunDir};
use vic::ir::{self, Dataset, Objective, Program};
use vic::lower::objective::{Batch, Settings};
use vic::lower::LoweredModel;
use vic::rng::Rng;
use vic::train::{self, MetricsRow, Observer, RunStore, StepInfo, TrainOptions};

/// How a run was made, beside its IR (run.json in the run directory).
#[derive(Serialize, Deserialize)]
struct RunInfo {
    /// The directory relative dataset paths are resolved against.
    spec_dir: PathBuf,
    spec: PathBuf,
    overrides: Vec<String>,
    dataset: String,
}

const BUILTINS: [&str; 3] = ["digits", "fashion-mnist", "mnist"];

/// A `--dataset` value: a built-in name, or a path, relative to the current directory
/// (as `--out` is; the spec's own `train.dataset` is relative to the spec's folder).
fn dataset_arg(s: &str) -> Dataset {
    if BUILTINS.contains(&s) {
        return Dataset::Builtin(s.to_string());
    }
    let path = Path::new(s);
    if path.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            return Dataset::Path(cwd.join(path).display().to_string());
        }
    }
    Dataset::Path(s.to_string())
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let n = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| format!("unknown device `{s}`: use cpu, cuda or cuda:N"))?,
                None => return Err(format!("unknown device `{s}`: use cpu, cuda or cuda:N")),
            };
            Device::new_cuda(n).map_err(|e| {
                let hint = if cfg!(feature = "cuda") {
                    ""
                } else {
                    " (vic must be built with `--features cuda`)"
                };
                format!("cannot open {s}: {e}{hint}")
            })
        }
    }
}

fn ir_device(d: ir::Device) -> Result<Device, String> {
    match d {
        ir::Device::Cpu => Ok(Device::Cpu),
        ir::Device::Cuda(n) => parse_device(&format!("cuda:{n}")),
    }
}

fn load_data(program: &Program, dataset: &Dataset, spec_dir: &Path) -> Result<DataSet, String> {
    let env = DataEnv {
        spec_dir: spec_dir.to_path_buf(),
        vic_data: std::env::var_os("VIC_DATA").map(PathBuf::from),
    };
    data::load(program, dataset, &env, &io::RealFs, program.train.seed).map_err(|e| {
        let mut report = e.report();
        // A path that is no file but looks like a built-in name: say which.
        if let (Dataset::Path(p), data::DataError::UnsupportedExtension { .. }) = (dataset, &e) {
            let stem = Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .replace('_', "-")
                .to_ascii_lowercase();
            let close = if BUILTINS.contains(&stem.as_str()) {
                Some(stem)
            } else {
                vic::check::consts::suggest(&stem, BUILTINS)
            };
            if let Some(b) = close {
                report.push_str(&format!(
                    "\n  hint: did you mean the built-in dataset \"{b}\"?"
                ));
            }
        }
        report
    })
}

fn dataset_name(d: &Dataset) -> String {
    match d {
        Dataset::Builtin(s) | Dataset::Path(s) => s.clone(),
    }
}

/// The progress bar and per-epoch lines.
struct Progress {
    bar: ProgressBar,
    since: Instant,
    examples: usize,
}

impl Observer for Progress {
    fn start(&mut self, total: u64, first: u64) {
        self.bar.set_length(total);
        self.bar.set_position(first);
        self.since = Instant::now();
    }

    fn step(&mut self, info: &StepInfo) {
        self.examples += info.examples;
        self.bar.set_position(info.step);
        if info.step.is_multiple_of(10) {
            let rate = self.examples as f64 / self.since.elapsed().as_secs_f64().max(1e-9);
            let terms: Vec<String> = info
                .terms
                .iter()
                .map(|(n, v)| format!("{n} {v:.2}"))
                .collect();
            self.bar.set_message(format!(
                "epoch {}  loss {:.3}  {}  {:.0} ex/s",
                info.epoch,
                info.loss,
                terms.join("  "),
                rate
            ));
        }
    }

    fn epoch(&mut self, row: &MetricsRow) {
        self.say(format!(
            "epoch {:>3}  train loss {:.4}  train bound {:.4}  test ELBO {:.4}  {:.0} ex/s",
            row.epoch, row.train_loss, row.train_bound, row.test_elbo, row.examples_per_second
        ));
    }

    fn note(&mut self, message: &str) {
        self.say(format!("vic: {message}"));
    }
}

impl Progress {
    /// A line above the bar, or on stderr when there is no bar (not a terminal).
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{bar:25}] {pos}/{len} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub fn train(
    file: &Path,
    dataset: Option<String>,
    out: Option<PathBuf>,
    sets: &[String],
    device: Option<String>,
    resume: bool,
) -> u8 {
    let src = match io::read_source(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let opts = match CheckOptions::from_sets(sets) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let front = vic::driver::front_end(&src, &opts);
    if !front.diagnostics.is_empty() {
        report(file, &src, &front.diagnostics, Format::Human);
    }
    let Some(mut program) = front.program else {
        return FAILED;
    };
    if let Some(why) = vic::lower::refusal(&program) {
        eprintln!("vic: {why}");
        return FAILED;
    }
    if let Some(d) = &dataset {
        program.train.dataset = dataset_arg(d);
    }
    let device = match device
        .as_deref()
        .map(parse_device)
        .unwrap_or_else(|| ir_device(program.train.device))
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let out = out.unwrap_or_else(|| {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("run");
        PathBuf::from("runs").join(stem)
    });
    // A run directory this command made is removed again if it fails before training.
    let existed = out.exists();
    let discard = |run: RunDir| {
        let path = run.path.clone();
        drop(run);
        if !existed {
            let _ = std::fs::remove_dir_all(&path);
        }
    };
    let mut run = match RunDir::create(&out) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    if !resume && matches!(run.load_checkpoint(), Ok(Some(_))) {
        eprintln!(
            "vic: {} already holds a run; pass --resume to continue it, or --out DIR to start another",
            out.display()
        );
        return USAGE;
    }
    // A resume that cannot continue must leave the run directory as it is.
    if resume {
        if let Err(e) = train::can_resume(&program, &run) {
            eprintln!("vic: {e}");
            if e.to_string().contains("different spec") {
                if let Some(why) = resume_difference(&run, &program) {
                    eprintln!("vic: {why}");
                }
            }
            return FAILED;
        }
    }
    let spec_dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let spec_dir = std::fs::canonicalize(&spec_dir).unwrap_or(spec_dir);
    let info = RunInfo {
        spec_dir: spec_dir.clone(),
        spec: file.to_path_buf(),
        overrides: sets.to_vec(),
        dataset: dataset_name(&program.train.dataset),
    };
    let data = match load_data(&program, &program.train.dataset, &spec_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vic: {e}");
            discard(run);
            return FAILED;
        }
    };
    let pretty = ron::ser::PrettyConfig::new().struct_names(true);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("spec.vi", src.clone().into_bytes()),
        (
            "ir.ron",
            ron::ser::to_string_pretty(&program, pretty.clone())
                .unwrap_or_default()
                .into_bytes(),
        ),
        (
            "config.ron",
            ron::ser::to_string_pretty(&program.train, pretty)
                .unwrap_or_default()
                .into_bytes(),
        ),
        (
            "run.json",
            serde_json::to_vec_pretty(&info).unwrap_or_default(),
        ),
    ];
    for (name, bytes) in files {
        if let Err(e) = run.write(name, &bytes) {
            eprintln!("vic: {e}");
            return USAGE;
        }
    }
    eprintln!(
        "vic: training {} on {} ({} train / {} test examples) into {}",
        file.display(),
        data.source,
        data.train.n,
        data.test.n,
        out.display()
    );
    vic::train::fpu::flush_denormals_everywhere();
    // Interrupted (Ctrl-C, SIGTERM): the checkpoints are written whole or not at all, so
    // say how to go on from the last one.
    let again = format!(
        "vic: interrupted; continue from the last checkpoint with `vic train {} --out {} --resume`",
        file.display(),
        out.display()
    );
    let _ = ctrlc::set_handler(move || {
        eprintln!("\n{again}");
        std::process::exit(130);
    });
    let clock_start = Instant::now();
    let opts = TrainOptions {
        device: device.clone(),
        resume,
        clock: Box::new(move || clock_start.elapsed().as_secs_f64()),
        hold_after_epoch: std::env::var("VIC_HOLD_AFTER_EPOCH")
            .ok()
            .and_then(|v| v.trim().parse().ok()),
    };
    let mut progress = Progress {
        bar: progress_bar(),
        since: Instant::now(),
        examples: 0,
    };
    let trained = train::train(program, &data, opts, &mut run, &mut progress);
    progress.bar.finish_and_clear();
    let trained = match trained {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vic: {e}");
            return FAILED;
        }
    };
    if let Some(last) = trained.metrics.last() {
        let over = if data.meta.is_some() {
            format!(
                " (over the first {} test examples of each training member; `vic eval` takes them all)",
                train::META_METRIC_EXAMPLES
            )
        } else {
            String::new()
        };
        eprintln!(
            "vic: done: test ELBO {:.4}{over} after {} epochs; run directory {}",
            last.test_elbo,
            last.epoch,
            out.display()
        );
    }
    // samples.png for image data.
    match sample_images(&trained.model, 64, Some(&data), &SampleFrom::default()) {
        Ok(Some((bytes, _))) => {
            if let Err(e) = run.write("samples.png", &bytes) {
                eprintln!("vic: {e}");
                return USAGE;
            }
        }
        Ok(None) => {}
        Err(e) => eprintln!("vic: warning: no samples.png: {e}"),
    }
    OK
}

/// Why a run cannot be resumed under `program`, in words: the `train` settings that
/// differ from the run's (`ir.ron`), or that the model itself does.
fn resume_difference(run: &RunDir, program: &Program) -> Option<String> {
    let text = String::from_utf8(run.read("ir.ron").ok()?).ok()?;
    let old = vic::driver::read_ir(&text).ok()?;
    let (a, b) = (
        serde_json::to_value(&old.train).ok()?,
        serde_json::to_value(&program.train).ok()?,
    );
    let (Some(mut a), Some(mut b)) = (a.as_object().cloned(), b.as_object().cloned()) else {
        return None;
    };
    // The learning rate may change: compare the optimizers without it.
    for m in [&mut a, &mut b] {
        if let Some(o) = m.get_mut("optimizer").and_then(|o| o.as_object_mut()) {
            for inner in o.values_mut() {
                if let Some(inner) = inner.as_object_mut() {
                    inner.remove("lr");
                }
            }
        }
    }
    // Epochs and the learning rate may change on resume (see `train::ir_hash`).
    let diffs: Vec<String> = a
        .iter()
        .filter(|(k, v)| *k != "epochs" && *k != "span" && b.get(*k) != Some(*v))
        .map(|(k, v)| {
            let now = b.get(k).map(|x| x.to_string()).unwrap_or_default();
            format!("`{k}` was {v}, now {now}")
        })
        .collect();
    Some(if diffs.is_empty() {
        "the spec's model (its data, latents, networks or blocks) differs from the one the run was trained from; train it into a new --out directory".into()
    } else {
        format!(
            "train settings differ from the run's: {}; only `epochs` and the learning rate may change on --resume",
            diffs.join("; ")
        )
    })
}

/// Open a run directory: its IR, the model, and the data it was trained on.
fn open_run(
    dir: &Path,
    dataset: Option<String>,
) -> Result<(RunDir, LoweredModel, DataSet), String> {
    let run = RunDir::open(dir)?;
    let ir_text = String::from_utf8(run.read("ir.ron")?).map_err(|e| e.to_string())?;
    let mut program = vic::driver::read_ir(&ir_text).map_err(|e| format!("ir.ron: {e}"))?;
    let info: RunInfo =
        serde_json::from_slice(&run.read("run.json")?).map_err(|e| format!("run.json: {e}"))?;
    if let Some(d) = dataset {
        program.train.dataset = dataset_arg(&d);
    }
    let data = load_data(&program, &program.train.dataset, &info.spec_dir)?;
    let device = ir_device(program.train.device)?;
    let bytes = run.read("model.safetensors")?;
    let model = train::load_model(program, &bytes, &device).map_err(|e| e.to_string())?;
    Ok((run, model, data))
}

#[derive(Default, Serialize)]
struct EvalReport {
    examples: usize,
    elbo: f64,
    iwae: f64,
    iwae_samples: usize,
    reconstruction: f64,
    /// The exact log p(x) of a linear-Gaussian model, or of any `guide exact` model
    /// (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    log_px: Option<f64>,
    /// Clustering accuracy of each `Cat` latent against the dataset's labels.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    clustering_accuracy: std::collections::BTreeMap<String, f64>,
    /// Accuracy of the guide's q(y | x) per `partial` `Cat` variable (test split).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    accuracy: Vec<AccuracyReport>,
    /// A classifier's test accuracy and negative log-likelihood per observed `Cat`
    /// variable predicted from `given` data (a model with no latents).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    classification: Vec<ClassReport>,
    /// With `vdrop` weights: the same with every weight of log α > 3 pruned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pruned_classification: Vec<ClassReport>,
    /// Per `vdrop` weight parameter: the fraction of log α above 3 (pruned).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sparsity: Vec<SparsityReport>,
    /// `--refine K`: the amortization gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    refinement: Option<RefineReport>,
    /// A `@random_function` guide: the GP's predictive variance per test example.
    #[serde(skip_serializing_if = "Option::is_none")]
    random_function: Option<UncertaintyReport>,
    /// A `meta` family: the bounds on each member's test split (the training members,
    /// and the held-out ones when no `@per_member` network needs a copy for them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberReport>,
}

#[derive(Serialize)]
struct MemberReport {
    member: usize,
    name: String,
    held_out: bool,
    examples: usize,
    elbo: f64,
    iwae: f64,
}

/// The ELBO and IWAE bound of each member of a `meta` family on its test split.
fn member_reports(
    model: &LoweredModel,
    data: &DataSet,
    k: usize,
    n: usize,
    rows: usize,
    rng: &mut Rng,
) -> Result<Vec<MemberReport>, train::TrainError> {
    let Some(meta) = &data.meta else {
        return Ok(Vec::new());
    };
    let per_member = model.program.nets.iter().any(|d| d.per_member);
    let mut held: Vec<usize> = Vec::new();
    if !per_member {
        held = meta.test_members.clone();
    }
    let mut out = Vec::new();
    for &m in meta.train_members.iter().chain(&held) {
        let one = [m];
        let ex = train::Examples::Members {
            data,
            which: Which::Test,
            members: &one,
            limit: None,
        };
        let elbo = train::means(
            model,
            &ex,
            &Settings::evaluation(1, false, n),
            rows.min(1000),
            rng,
        )?;
        let iwae = train::means(
            model,
            &ex,
            &Settings::evaluation(k.max(1), true, n),
            (rows / k.max(1)).max(1),
            rng,
        )?;
        out.push(MemberReport {
            member: m,
            name: meta.members[m].name.clone(),
            held_out: !meta.train_members.contains(&m),
            examples: elbo.examples,
            elbo: elbo.bound,
            iwae: iwae.bound,
        });
    }
    Ok(out)
}

#[derive(Serialize)]
struct UncertaintyReport {
    /// The mean over test examples of the GP error's predictive variance (averaged over
    /// the site's loc and log-scale functions).
    mean_variance: f64,
    /// Per test example, in the split's order.
    per_example_variance: Vec<f64>,
}

#[derive(Serialize)]
struct RefineReport {
    steps: usize,
    /// The test ELBO at the encoder's output and after the refinement steps (the same
    /// noise for both).
    elbo_start: f64,
    elbo_refined: f64,
    /// `elbo_refined − elbo_start`.
    gap: f64,
    /// Per test example, in the split's order.
    per_example_gap: Vec<f64>,
}

#[derive(Serialize)]
struct ClassReport {
    variable: String,
    accuracy: f64,
    nll: f64,
    examples: usize,
}

#[derive(Serialize)]
struct SparsityReport {
    weight: String,
    entries: usize,
    pruned: usize,
    pruned_fraction: f64,
}

/// The log α above which a `vdrop` weight is pruned (Molchanov et al. 2017).
const PRUNE_LOG_ALPHA: f64 = 3.0;

#[derive(Serialize)]
struct AccuracyReport {
    variable: String,
    accuracy: f64,
    examples: usize,
}

pub fn eval(
    dir: &Path,
    dataset: Option<String>,
    samples: Option<usize>,
    examples: Option<usize>,
    refine: Option<usize>,
    json: bool,
) -> u8 {
    let (_, model, mut data) = match open_run(dir, dataset) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    if let Some(n) = examples {
        data.test = data.test.head(n);
        if let Some(meta) = &mut data.meta {
            for m in &mut meta.members {
                m.test.retain(|&i| i < n);
            }
        }
    }
    if refine.is_some() && data.meta.is_some() {
        eprintln!("vic: --refine measures the amortization gap on a plain test split; this run has a `meta` family");
        return USAGE;
    }
    vic::train::fpu::flush_denormals_everywhere();
    let k = samples.unwrap_or(match model.program.train.eval {
        Objective::Iwae { samples } | Objective::Elbo { samples } => samples,
    });
    let mut rng = Rng::seed(train::eval_seed(&model.program));
    let n = data.train.n.max(1);
    let result = (|| -> Result<EvalReport, train::TrainError> {
        // ELBO and reconstruction in one pass, then the IWAE bound, in chunks of as many
        // rows as the plan's memory estimate allows.
        let rows = train::eval_rows(&model);
        // With a `meta` family: the test splits of its training members.
        let test = train::Examples::test_of(&data, None);
        let elbo = train::means(
            &model,
            &test,
            &Settings::evaluation(1, false, n),
            rows.min(1000),
            &mut rng,
        )?;
        // `guide exact` by enumeration: the bound is already the exact log p(x).
        let discrete_exact = matches!(
            model.program.guide,
            ir::Guide::Exact {
                posterior: ir::ExactPosterior::Enumerate,
                ..
            }
        );
        let iwae = if discrete_exact {
            elbo.bound
        } else {
            let batch = (rows / k.max(1)).max(1);
            let iwae_settings = Settings::evaluation(k.max(1), true, n);
            train::means(&model, &test, &iwae_settings, batch, &mut rng)?.bound
        };
        let members = member_reports(&model, &data, k, n, rows, &mut rng)?;
        if data.meta.is_some() {
            // The other reports read the plain test split, which a member's context sets
            // and transforms are not part of.
            return Ok(EvalReport {
                examples: elbo.examples,
                elbo: elbo.bound,
                iwae,
                iwae_samples: k,
                reconstruction: elbo.loglik,
                members,
                ..EvalReport::default()
            });
        }
        let log_px = if discrete_exact {
            Some(elbo.bound)
        } else {
            train::split_log_px(&model, &data.test, 1000, &mut rng)?
        };
        let clustering =
            vic::cluster::split_clustering_accuracy(&model, &data.test, 1000, &mut rng)?;
        let accuracy = train::partial_accuracy(&model, &data.test, 1000, &mut rng)?
            .into_iter()
            .map(|(variable, accuracy, examples)| AccuracyReport {
                variable,
                accuracy,
                examples,
            })
            .collect();
        let class =
            |prune: Option<f64>, rng: &mut Rng| -> Result<Vec<ClassReport>, train::TrainError> {
                Ok(train::class_metrics(&model, &data.test, 1000, prune, rng)?
                    .into_iter()
                    .map(|m| ClassReport {
                        variable: m.name,
                        accuracy: m.accuracy,
                        nll: m.nll,
                        examples: m.examples,
                    })
                    .collect())
            };
        let classification = class(None, &mut rng)?;
        let sparsity: Vec<SparsityReport> = train::vdrop_sparsity(&model, PRUNE_LOG_ALPHA)?
            .into_iter()
            .map(|(weight, entries, pruned)| SparsityReport {
                weight,
                entries,
                pruned,
                pruned_fraction: pruned as f64 / entries.max(1) as f64,
            })
            .collect();
        let pruned_classification = if sparsity.is_empty() {
            Vec::new()
        } else {
            class(Some(PRUNE_LOG_ALPHA), &mut rng)?
        };
        let refinement = match refine {
            None => None,
            Some(steps) => {
                let cfg = vic::lower::refine::RefineConfig {
                    steps,
                    lr: 1.0,
                    momentum: ir::default_refine_momentum(),
                    clip: ir::default_refine_clip(),
                    through: false,
                };
                let (mut start, mut refined) = (Vec::new(), Vec::new());
                let idx: Vec<usize> = (0..data.test.n).collect();
                // Training-sized chunks (the refinement steps as training does in any chunk).
                for chunk in idx.chunks(model.program.train.batch.max(1)) {
                    let b = train::make_batch(
                        &model.program,
                        &data.test,
                        chunk,
                        model.device(),
                        &mut rng,
                    )?;
                    let (b0, bk) = model.amortization_gap(&b, cfg, n, &mut rng)?;
                    start.extend(b0.to_vec1::<f32>()?.into_iter().map(f64::from));
                    refined.extend(bk.to_vec1::<f32>()?.into_iter().map(f64::from));
                }
                let n = start.len().max(1) as f64;
                let (s0, sk) = (
                    start.iter().sum::<f64>() / n,
                    refined.iter().sum::<f64>() / n,
                );
                Some(RefineReport {
                    steps,
                    elbo_start: s0,
                    elbo_refined: sk,
                    gap: sk - s0,
                    per_example_gap: refined.iter().zip(&start).map(|(k, s)| k - s).collect(),
                })
            }
        };
        let random_function = {
            let mut per_example = Vec::new();
            let idx: Vec<usize> = (0..data.test.n).collect();
            for chunk in idx.chunks(1000) {
                let b =
                    train::make_batch(&model.program, &data.test, chunk, model.device(), &mut rng)?;
                match model.guide_uncertainty(&b, &mut rng)? {
                    Some(u) => per_example.extend(u.to_vec1::<f32>()?.into_iter().map(f64::from)),
                    None => break,
                }
            }
            (!per_example.is_empty()).then(|| UncertaintyReport {
                mean_variance: per_example.iter().sum::<f64>() / per_example.len() as f64,
                per_example_variance: per_example,
            })
        };
        Ok(EvalReport {
            members,
            random_function,
            refinement,
            accuracy,
            classification,
            pruned_classification,
            sparsity,
            examples: elbo.examples,
            elbo: elbo.bound,
            iwae,
            iwae_samples: k,
            reconstruction: elbo.loglik,
            log_px,
            clustering_accuracy: clustering.into_iter().collect(),
        })
    })();
    match result {
        Ok(r) if json => {
            println!("{}", serde_json::to_string(&r).unwrap_or_default());
            OK
        }
        Ok(r) => {
            println!("test examples      {}", r.examples);
            if let Some(v) = r.log_px {
                println!("log p(x) (exact)   {v:.4} nats");
            }
            let accuracy = || {
                for (name, acc) in &r.clustering_accuracy {
                    println!(
                        "clustering accuracy of {name}: {acc:.4} (best one-to-one matching to the labels)"
                    );
                }
            };
            if matches!(model.program.guide, ir::Guide::Exact { .. }) {
                // The bounds are the exact log p(x): no sampling, no reconstruction term.
                accuracy();
                return OK;
            }
            println!("ELBO               {:.4} nats", r.elbo);
            println!("IWAE bound (K={})  {:.4} nats", r.iwae_samples, r.iwae);
            println!(
                "reconstruction     {:.4} nats (E_q log p(x | z))",
                r.reconstruction
            );
            for m in &r.members {
                println!(
                    "member {:>3} {:<16} ELBO {:.4}  IWAE {:.4}{}",
                    m.member,
                    m.name,
                    m.elbo,
                    m.iwae,
                    if m.held_out { "  (held out)" } else { "" }
                );
            }
            accuracy();
            for a in &r.accuracy {
                println!(
                    "accuracy of q({})  {:.4} ({} labelled test examples)",
                    a.variable, a.accuracy, a.examples
                );
            }
            for c in &r.classification {
                println!(
                    "accuracy of p({} | given)  {:.4} (test error {:.2}%), negative log-likelihood {:.4} nats",
                    c.variable,
                    c.accuracy,
                    100.0 * (1.0 - c.accuracy),
                    c.nll
                );
            }
            for s in &r.sparsity {
                println!(
                    "vdrop {}: {:.1}% of {} with log alpha > {PRUNE_LOG_ALPHA}",
                    s.weight,
                    100.0 * s.pruned_fraction,
                    s.entries
                );
            }
            if let Some(g) = &r.refinement {
                let raised = g.per_example_gap.iter().filter(|d| **d >= 0.0).count();
                println!(
                    "amortization gap   {:.4} nats after {} refinement steps (ELBO {:.4} at the encoder's output, {:.4} refined; raised on {:.1}% of examples)",
                    g.gap,
                    g.steps,
                    g.elbo_start,
                    g.elbo_refined,
                    100.0 * raised as f64 / g.per_example_gap.len().max(1) as f64
                );
            }
            if let Some(u) = &r.random_function {
                println!(
                    "GP error variance  {:.4} (predictive, mean over test examples; per example with --json)",
                    u.mean_variance
                );
            }
            for c in &r.pruned_classification {
                println!(
                    "accuracy of p({} | given), pruned  {:.4} (test error {:.2}%)",
                    c.variable,
                    c.accuracy,
                    100.0 * (1.0 - c.accuracy)
                );
            }
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            FAILED
        }
    }
}

/// `given` data for `n` prior samples: a `Cat(K)` variable cycles through its classes,
/// anything else takes the test split's first rows.
fn given_values(model: &LoweredModel, n: usize, data: Option<&DataSet>) -> Vec<Option<Tensor>> {
    let mut out = vec![None; model.program.data.len()];
    for (id, def) in model.program.data.iter().enumerate() {
        if def.role != ir::DataRole::Given {
            continue;
        }
        let value = match def.ty.domain {
            ir::Domain::Cat(k) if def.ty.shape.is_empty() => {
                let classes: Vec<u32> = (0..n as u32).map(|i| i % k as u32).collect();
                Tensor::new(classes, model.device())
                    .and_then(|c| candle_nn::encoding::one_hot(c, k, 1f32, 0f32))
                    .ok()
            }
            _ => data.and_then(|d| {
                let rows: Vec<usize> = (0..n).map(|i| i % d.test.n.max(1)).collect();
                let mut rng = Rng::seed(0);
                train::make_batch(&model.program, &d.test, &rows, model.device(), &mut rng)
                    .ok()
                    .and_then(|b| b.data.get(id).cloned().flatten())
            }),
        };
        out[id] = value;
    }
    out
}

/// What `vic sample` conditions its draws on, beyond `given` data.
#[derive(Clone, Debug, Default)]
pub struct SampleFrom {
    /// `--member K`: the `meta` member whose `@per_member` copies draw, and whose test
    /// split gives the exemplars of a model that reads a context set.
    pub member: Option<usize>,
    /// `--given FILE`: exemplars (a .npy of `[E, ...]` or a .png of one) for a model that
    /// reads a context set of size 1.
    pub given: Option<PathBuf>,
}

/// Whether `model`'s own block reads a context set (one-shot conditioning on exemplars).
fn model_reads_sets(program: &ir::Program) -> bool {
    let mut found = false;
    ir::walk::for_each_expr(&program.model, |e| {
        found |= matches!(e.kind, ir::ExprKind::Ref(ir::Ref::Set(_)));
    });
    found
}

/// The member draws come from: `--member K` (checked), or the first held-out member of a
/// model without `@per_member` networks, or the first training member.
fn draw_member(
    model: &LoweredModel,
    data: Option<&DataSet>,
    asked: Option<usize>,
) -> Result<Option<usize>, String> {
    let Some(meta) = data.and_then(|d| d.meta.as_ref()) else {
        return match asked {
            Some(_) => {
                Err("--member picks a member of a `meta` family, and this run has none".into())
            }
            None => Ok(None),
        };
    };
    let per_member = model.program.nets.iter().any(|n| n.per_member);
    match asked {
        Some(k) if k >= meta.members.len() => Err(format!(
            "--member {k}: the `meta` family has {} members (0..{})",
            meta.members.len(),
            meta.members.len().saturating_sub(1)
        )),
        Some(k) if per_member && !meta.train_members.contains(&k) => Err(format!(
            "--member {k} ({}) was held out of training, so the `@per_member` networks have no copy for it; training members: {:?}",
            meta.members[k].name, meta.train_members
        )),
        Some(k) => Ok(Some(k)),
        None if !per_member && !meta.test_members.is_empty() => Ok(meta.test_members.first().copied()),
        None => Ok(meta.train_members.first().copied()),
    }
}

/// The conditions of `n` draws from the model: `given` data and the member (a model that
/// reads a context set draws through [`exemplar_grid`] instead).
fn draw_conditions(
    model: &LoweredModel,
    n: usize,
    data: Option<&DataSet>,
    member: Option<usize>,
) -> Batch {
    let mut cond = Batch::new(given_values(model, n, data), n);
    cond.member = member;
    cond
}

/// Exemplars for a model that reads a context set: `E` sets, each `[1, N, ...]`, with the
/// image shown for each. From `--given FILE` (sets of size 1), or drawn from the member's
/// test split as training drew them.
fn exemplars(
    model: &LoweredModel,
    data: Option<&DataSet>,
    member: Option<usize>,
    given: Option<&Path>,
) -> Result<Vec<Vec<Tensor>>, String> {
    let program = &model.program;
    let dev = model.device();
    if let Some(path) = given {
        let mut per_set: Vec<Vec<Tensor>> = Vec::new();
        let values = io::read_exemplars(path)?;
        for set in &program.sets {
            if set.size != 1 {
                return Err(format!(
                    "--given supplies one exemplar per set, but the set `{}` holds {} examples; use --member K to draw its sets from a member",
                    set.name, set.size
                ));
            }
            let width = set.ty.numel().max(1);
            if values.is_empty() || values.len() % width != 0 {
                return Err(format!(
                    "{}: {} values, not a whole number of exemplars of `{}` ({} values each)",
                    path.display(),
                    values.len(),
                    set.name,
                    width
                ));
            }
            let binary = set.ty.domain == ir::Domain::Binary;
            let mut tensors = Vec::new();
            for chunk in values.chunks(width) {
                let v: Vec<f32> = chunk
                    .iter()
                    .map(|&x| if binary { f32::from(x > 0.5) } else { x })
                    .collect();
                let mut shape = vec![1, 1];
                shape.extend_from_slice(&set.ty.shape);
                tensors.push(Tensor::from_vec(v, shape, dev).map_err(|e| e.to_string())?);
            }
            per_set.push(tensors);
        }
        // Regroup: one entry per exemplar, each holding every set.
        let count = per_set.first().map_or(0, Vec::len);
        return Ok((0..count)
            .map(|e| per_set.iter().map(|s| s[e].clone()).collect())
            .collect());
    }
    let (Some(data), Some(k)) = (data, member) else {
        return Err(
            "this model reads a context set: give exemplars with --given FILE or --member K".into(),
        );
    };
    let Some(meta) = &data.meta else {
        return Err("this model reads a context set, and its run has no `meta` family".into());
    };
    let count = 8.min(meta.members[k].test.len());
    let queries = &meta.members[k].test[..count];
    let mut rng = Rng::seed(model.program.train.seed ^ 0x0e0e);
    let batch = train::member_batch(program, data, Which::Test, k, queries, dev, &mut rng)
        .map_err(|e| e.to_string())?;
    (0..count)
        .map(|e| {
            batch
                .sets
                .iter()
                .map(|t| match t {
                    Some(t) => t.narrow(0, e, 1).map_err(|e| e.to_string()),
                    None => Err("internal error: a set without a value".into()),
                })
                .collect()
        })
        .collect()
}

/// One exemplar's sets (`[1, N, ...]` each) repeated for `rows` draws.
fn repeated(sets: &[Tensor], rows: usize) -> candle_core::Result<Vec<Option<Tensor>>> {
    sets.iter()
        .map(|t| {
            let mut dims = t.dims().to_vec();
            dims[0] = rows;
            t.broadcast_as(dims).and_then(|b| b.contiguous()).map(Some)
        })
        .collect()
}

/// One row per exemplar: the exemplar (the first member of the first set), then `per`
/// draws of the model conditioned on it, as a PNG grid of the first image-shaped data
/// variable.
fn exemplar_grid(
    model: &LoweredModel,
    per: usize,
    data: Option<&DataSet>,
    member: Option<usize>,
    given: Option<&Path>,
) -> Result<(Vec<u8>, String, usize), String> {
    let sets = exemplars(model, data, member, given)?;
    let mut rng = Rng::seed(model.program.train.seed ^ 0x5a5a);
    let mut values: Vec<f32> = Vec::new();
    let mut layout = None;
    for ex in &sets {
        let mut cond = draw_conditions(model, per, data, member);
        cond.sets = repeated(ex, per).map_err(|e| e.to_string())?;
        let drawn = model
            .sample_prior(&cond, &mut rng)
            .map_err(|e| format!("drawing from the model failed: {e}"))?;
        let Some((id, t)) = drawn
            .into_iter()
            .find(|(id, _)| vic::image::image_layout(&model.program.data[*id].ty.shape).is_some())
        else {
            return Err("the model draws no image to show beside its exemplars".into());
        };
        let def = &model.program.data[id];
        let (c, h, w) = vic::image::image_layout(&def.ty.shape).unwrap_or((1, 1, 1));
        let exemplar = ex
            .first()
            .ok_or("the model reads no set")?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        values.extend_from_slice(&exemplar[..(c * h * w).min(exemplar.len())]);
        values.extend(
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| e.to_string())?,
        );
        layout = Some((c, h, w, def.name.clone()));
    }
    let Some((c, h, w, name)) = layout else {
        return Err("no exemplar to condition on".into());
    };
    let rows = sets.len();
    let png = vic::image::grid_png_cols(&values, rows * (per + 1), per + 1, c, h, w)?;
    Ok((png, name, rows))
}

/// Prior samples of the first image-shaped data variable as a PNG grid, with the
/// variable's name; `Ok(None)` when the model draws no image. A model that reads a
/// context set draws variations of exemplars instead ([`exemplar_grid`]).
fn sample_images(
    model: &LoweredModel,
    n: usize,
    data: Option<&DataSet>,
    from: &SampleFrom,
) -> Result<Option<(Vec<u8>, String)>, String> {
    let member = draw_member(model, data, from.member)?;
    if model_reads_sets(&model.program) {
        let per = n.clamp(1, 16);
        let (png, name, _) = exemplar_grid(model, per, data, member, from.given.as_deref())?;
        return Ok(Some((png, name)));
    }
    if from.given.is_some() {
        return Err("--given supplies exemplars, and this model reads no context set".into());
    }
    let cond = draw_conditions(model, n, data, member);
    let mut rng = Rng::seed(model.program.train.seed ^ 0x5a5a);
    let drawn = model
        .sample_prior(&cond, &mut rng)
        .map_err(|e| format!("drawing from the model failed: {e}"))?;
    for (id, t) in drawn {
        let def = &model.program.data[id];
        if let Some((c, h, w)) = vic::image::image_layout(&def.ty.shape) {
            let values: Vec<f32> = t
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(|e| e.to_string())?;
            let png = vic::image::grid_png(&values, n, c, h, w)?;
            return Ok(Some((png, def.name.clone())));
        }
    }
    Ok(None)
}

/// A trained run's model, read from its directory (for `vic sample`).
fn open_model(dir: &Path) -> Result<LoweredModel, String> {
    let run = RunDir::open(dir)?;
    let ir_text = String::from_utf8(run.read("ir.ron")?).map_err(|e| e.to_string())?;
    let p = vic::driver::read_ir(&ir_text).map_err(|e| format!("ir.ron: {e}"))?;
    let device = ir_device(p.train.device)?;
    let bytes = run.read("model.safetensors")?;
    train::load_model(p, &bytes, &device).map_err(|e| e.to_string())
}

/// The run's dataset, when drawing needs it: `given` data other than a class (whose values
/// `vic sample` cycles through) comes from its test split, and a `meta` family's members
/// (and exemplars) from the data.
fn data_for_given(dir: &Path, model: &LoweredModel) -> Result<Option<DataSet>, String> {
    let needs = model.program.meta.is_some()
        || model.program.data.iter().any(|d| {
            d.role == ir::DataRole::Given
                && !(d.ty.shape.is_empty() && matches!(d.ty.domain, ir::Domain::Cat(_)))
        });
    if !needs {
        return Ok(None);
    }
    let run = RunDir::open(dir)?;
    let info: RunInfo =
        serde_json::from_slice(&run.read("run.json")?).map_err(|e| format!("run.json: {e}"))?;
    load_data(&model.program, &model.program.train.dataset, &info.spec_dir)
        .map(Some)
        .map_err(|e| format!("drawing from the model needs the run's dataset: {e}"))
}

/// `vic sample RUN --steps`: each sample's observation after every step of the sequence
/// it reads, one row per sample.
pub fn sample_steps(dir: &Path, n: usize, output: Option<PathBuf>, from: &SampleFrom) -> u8 {
    let model = match open_model(dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let data = match data_for_given(dir, &model) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vic: {e}");
            return FAILED;
        }
    };
    let member = match draw_member(&model, data.as_ref(), from.member) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let mut cond = draw_conditions(&model, n, data.as_ref(), member);
    if model_reads_sets(&model.program) {
        // Every row conditioned on the first exemplar.
        match exemplars(&model, data.as_ref(), member, from.given.as_deref()) {
            Ok(ex) => match ex.first() {
                Some(first) => match repeated(first, n) {
                    Ok(sets) => cond.sets = sets,
                    Err(e) => {
                        eprintln!("vic: {e}");
                        return FAILED;
                    }
                },
                None => {
                    eprintln!("vic: no exemplar to condition on");
                    return FAILED;
                }
            },
            Err(e) => {
                eprintln!("vic: {e}");
                return FAILED;
            }
        }
    }
    let mut rng = Rng::seed(model.program.train.seed ^ 0x5a5a);
    let drawn = match model.sample_steps(&cond, &mut rng) {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!(
                "vic: --steps draws how an observation builds up over a sequence (DRAW's \
                 `x ~ Bernoulli(logits = c[T])`), and no observation of this model reads a \
                 sequence at a fixed step; use `vic sample` without --steps"
            );
            return FAILED;
        }
        Err(e) => {
            eprintln!("vic: {e}");
            return FAILED;
        }
    };
    let (id, t) = drawn;
    let def = &model.program.data[id];
    let Some((c, h, w)) = vic::image::image_layout(&def.ty.shape) else {
        eprintln!(
            "vic: `{}` is not an image, so its steps cannot be drawn",
            def.name
        );
        return FAILED;
    };
    let steps = t.dim(1).unwrap_or(1);
    let png = t
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| e.to_string())
        .and_then(|v| vic::image::grid_png_cols(&v, n * steps, steps, c, h, w));
    let path = output.unwrap_or_else(|| dir.join("steps.png"));
    match png.and_then(|png| io::write_atomic(&path, &png)) {
        Ok(()) => {
            eprintln!(
                "vic: wrote {n} samples of `{}` after each of {steps} steps to {}",
                def.name,
                path.display()
            );
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            FAILED
        }
    }
}

pub fn sample(dir: &Path, n: usize, output: Option<PathBuf>, from: &SampleFrom) -> u8 {
    let model = match open_model(dir) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let data = match data_for_given(dir, &model) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vic: {e}");
            return FAILED;
        }
    };
    let wants_npy = output
        .as_ref()
        .and_then(|p| p.extension())
        .is_some_and(|e| e == "npy");
    if !wants_npy {
        let images = match sample_images(&model, n, data.as_ref(), from) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("vic: {e}");
                return FAILED;
            }
        };
        if let Some((png, name)) = images {
            // Not samples.png, which training wrote.
            let path = output.unwrap_or_else(|| dir.join("sample.png"));
            return match io::write_atomic(&path, &png) {
                Ok(()) => {
                    eprintln!("vic: wrote samples of `{name}` to {}", path.display());
                    OK
                }
                Err(e) => {
                    eprintln!("vic: {e}");
                    USAGE
                }
            };
        }
    }
    let member = match draw_member(&model, data.as_ref(), from.member) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    let cond = draw_conditions(&model, n, data.as_ref(), member);
    let mut rng = Rng::seed(model.program.train.seed ^ 0x5a5a);
    let drawn = match model.sample_prior(&cond, &mut rng) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("vic: {e}");
            return FAILED;
        }
    };
    let Some((id, t)) = drawn.into_iter().next() else {
        eprintln!("vic: the model draws no data to sample");
        return FAILED;
    };
    let path = output.unwrap_or_else(|| dir.join("sample.npy"));
    match io::write_npy(&path, &t) {
        Ok(()) => {
            eprintln!(
                "vic: wrote {n} samples of `{}` to {}",
                model.program.data[id].name,
                path.display()
            );
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            USAGE
        }
    }
}

pub fn encode(dir: &Path, dataset: Option<String>, output: &Path) -> u8 {
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "npy" && ext != "npz" {
        eprintln!(
            "vic: -o {}: `vic encode` writes a .npy of the means or a .npz with their indices, splits and labels",
            output.display()
        );
        return USAGE;
    }
    let (_, mut model, data) = match open_run(dir, dataset) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    if data.meta.is_some() {
        eprintln!(
            "vic: `vic encode` embeds a plain split; this run's examples belong to the members of a `meta` family, whose posterior means `vic probe RUN` uses"
        );
        return USAGE;
    }
    // The data as given: no binarization draws, so the same run encodes the same way.
    model.program.train.binarize = ir::Binarize::None;
    let mut rng = Rng::seed(model.program.train.seed ^ 0xe2c0);
    let result = (|| -> Result<Vec<(String, Tensor)>, train::TrainError> {
        let mut rows: Vec<Tensor> = Vec::new();
        let (mut index, mut split_of, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (s, split) in [&data.train, &data.test].into_iter().enumerate() {
            let idx: Vec<usize> = (0..split.n).collect();
            for chunk in idx.chunks(500) {
                let b = train::make_batch(&model.program, split, chunk, model.device(), &mut rng)?;
                let means = model.posterior_means(&b, &mut rng)?;
                let flat: Vec<Tensor> = means
                    .iter()
                    .map(|(_, t)| t.flatten_from(1))
                    .collect::<candle_core::Result<_>>()?;
                if flat.is_empty() {
                    return Err(train::TrainError::Compute(
                        "the model has no per-example latents to encode".into(),
                    ));
                }
                rows.push(Tensor::cat(&flat, 1)?);
            }
            index.extend(idx.iter().map(|&i| i as u32));
            split_of.extend(std::iter::repeat_n(s as u32, split.n));
            if let Some(l) = &split.labels {
                labels.extend(l.iter().copied());
            }
        }
        let dev = candle_core::Device::Cpu;
        let n = index.len();
        let mut out = vec![("means".to_string(), Tensor::cat(&rows, 0)?)];
        out.push(("index".into(), Tensor::from_vec(index, n, &dev)?));
        out.push(("split".into(), Tensor::from_vec(split_of, n, &dev)?));
        if labels.len() == n {
            out.push(("labels".into(), Tensor::from_vec(labels, n, &dev)?));
        }
        Ok(out)
    })();
    let written = result.map_err(|e| e.to_string()).and_then(|arrays| {
        let dims = arrays[0].1.dims().to_vec();
        if ext == "npy" {
            io::write_npy(output, &arrays[0].1)?;
        } else {
            io::write_npz(output, &arrays)?;
        }
        Ok(dims)
    });
    match written {
        Ok(dims) => {
            eprintln!(
                "vic: wrote posterior means {dims:?} (training split, then test split) to {}",
                output.display()
            );
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            FAILED
        }
    }
}

/// `vic plot RUN [-o FILE.png]`.
pub fn plot(dir: &Path, output: Option<PathBuf>) -> u8 {
    let made = (|| -> Result<(Vec<u8>, PathBuf), String> {
        let run = RunDir::open(dir)?;
        let text = String::from_utf8(run.read("metrics.csv")?).map_err(|e| e.to_string())?;
        let curves = vic::plot::curves(&text)?;
        // The schedule, for the phase bands; a run without a readable IR is drawn without.
        let schedule = run
            .read("ir.ron")
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| vic::driver::read_ir(&t).ok())
            .map(|p| p.train.schedule)
            .unwrap_or(ir::Schedule::Joint);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let png = vic::plot::metrics_png(&curves, &schedule, &name, 960, 540)?;
        Ok((png, output.unwrap_or_else(|| dir.join("metrics.png"))))
    })();
    match made.and_then(|(png, path)| io::write_atomic(&path, &png).map(|()| path)) {
        Ok(path) => {
            eprintln!("vic: wrote {}", path.display());
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            USAGE
        }
    }
}

/// `vic probe RUN`: linear-probe accuracy of the guide's posterior means on each held-out
/// member (see `vic::probe`).
pub fn probe(dir: &Path, dataset: Option<String>, examples: usize, json: bool) -> u8 {
    let (_, model, data) = match open_run(dir, dataset) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vic: {e}");
            return USAGE;
        }
    };
    vic::train::fpu::flush_denormals_everywhere();
    let mut rng = Rng::seed(model.program.train.seed ^ 0x9b0e);
    let result = vic::probe::probe(&model, &data, examples, &mut rng);
    match result {
        Ok(members) => {
            let mean =
                members.iter().map(|m| m.test_accuracy).sum::<f64>() / members.len().max(1) as f64;
            if json {
                #[derive(Serialize)]
                struct Report<'a> {
                    mean_accuracy: f64,
                    members: &'a [vic::probe::MemberProbe],
                }
                let r = Report {
                    mean_accuracy: mean,
                    members: &members,
                };
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                for m in &members {
                    println!(
                        "{:<20} test accuracy {:.4} ({} test, {} training examples; training accuracy {:.4})",
                        m.name, m.test_accuracy, m.test_examples, m.train_examples, m.train_accuracy
                    );
                }
                println!("mean test accuracy   {mean:.4}");
            }
            OK
        }
        Err(e) => {
            eprintln!("vic: {e}");
            FAILED
        }
    }
}
