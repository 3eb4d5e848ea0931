//! Training: one generic loop over any lowered model — its batches, the objective, the
//! optimizer step, the `joint` / `alternate` schedules, metrics, atomic checkpoints and
//! `--resume`. No model family has a loop of its own.
//!
//! The loop does no I/O itself: checkpoints go through a [`RunStore`], progress to an
//! [`Observer`], and the clock is a function the caller passes.

pub mod batches;
pub mod fpu;
pub mod optim;

use crate::data::meta::Which;
use crate::data::{self, DataSet, Split};
use crate::ir::{DataId, Objective, Program, Schedule};
use crate::lower::objective::{Batch, Settings};
use crate::lower::params::ParamStore;
use crate::lower::LoweredModel;
use crate::rng::Rng;
use candle_core::{Device, Tensor};
use optim::{OptimError, Optimizer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Where a run's files go (a run directory, or memory in tests).
pub trait RunStore {
    /// Replace the checkpoint with these files, all or nothing: after a crash at any
    /// point, `load_checkpoint` returns either the old set or the new one.
    fn save_checkpoint(&mut self, files: Vec<(String, Vec<u8>)>) -> Result<(), String>;
    /// The last complete checkpoint, if any.
    fn load_checkpoint(&self) -> Result<Option<HashMap<String, Vec<u8>>>, String>;
    /// Write one file of the run directory atomically.
    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), String>;
}

/// Progress reports (a progress bar in the CLI).
pub trait Observer {
    fn start(&mut self, _total_steps: u64, _first_step: u64) {}
    fn step(&mut self, _info: &StepInfo) {}
    fn epoch(&mut self, _row: &MetricsRow) {}
    fn note(&mut self, _message: &str) {}
}

/// What one optimizer step did.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub epoch: usize,
    pub step: u64,
    pub examples: usize,
    pub loss: f64,
    pub terms: Vec<(String, f64)>,
}

/// One row of metrics.csv: one per epoch, and under `schedule = alternate(...)` also one
/// every [`log_interval`] steps within an epoch (the EM picture needs several points per
/// phase). The training means are over the steps since the previous row.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MetricsRow {
    pub epoch: usize,
    pub step: u64,
    /// Mean training loss over the steps since the previous row.
    pub train_loss: f64,
    /// Mean training bound (ELBO or IWAE) over the steps since the previous row.
    pub train_bound: f64,
    /// Test-split ELBO at this step (with the training ELBO's sample count; one sample
    /// under an IWAE objective).
    pub test_elbo: f64,
    /// Test-split exact log p(x) at this step, for a linear-Gaussian model.
    #[serde(default)]
    pub test_log_px: Option<f64>,
    /// Under `alternate`: the phase of the last step before the row, "E" (guide
    /// parameters) or "M" (model parameters).
    #[serde(default)]
    pub phase: Option<String>,
    /// Mean of each named term over the steps since the previous row.
    pub terms: Vec<(String, f64)>,
    pub examples_per_second: f64,
    pub seconds: f64,
}

/// What the trainer keeps between epochs for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainState {
    /// Epochs completed.
    epoch: usize,
    step: u64,
    rng: Rng,
    metrics: Vec<MetricsRow>,
    /// A fingerprint of the IR, so a checkpoint is not resumed under another spec.
    ir_hash: u64,
    /// What the batcher carries across epochs (the labelled cycle of `partial` data).
    #[serde(default, flatten)]
    batcher: batches::BatcherState,
}

/// Why training stopped early.
#[derive(Debug)]
pub enum TrainError {
    /// A loss term or gradient became NaN or infinite.
    NonFinite {
        epoch: usize,
        step: u64,
        what: String,
        /// Epochs completed in the checkpoint that was kept.
        kept_epoch: usize,
    },
    /// `--resume` found a checkpoint that does not fit.
    Resume(String),
    Store(String),
    Compute(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::NonFinite {
                epoch,
                step,
                what,
                kept_epoch: 0,
            } => write!(
                f,
                "training stopped at epoch {epoch}, step {step}: {what} is not finite, before any \
                 checkpoint was written; lower the learning rate (`--set train.lr=...`) or add \
                 `clip = 10` to `train`, and train again"
            ),
            TrainError::NonFinite {
                epoch,
                step,
                what,
                kept_epoch,
            } => write!(
                f,
                "training stopped at epoch {epoch}, step {step}: {what} is not finite; the last \
                 good checkpoint (after epoch {kept_epoch}) is kept; lower the learning rate \
                 (`--set train.lr=...`) and continue with `--resume`, or add `clip = 10` to \
                 `train` and train again"
            ),
            TrainError::Resume(m) => write!(f, "cannot resume: {m}"),
            TrainError::Store(m) => write!(f, "cannot write the run directory: {m}"),
            TrainError::Compute(m) => write!(f, "{m}"),
        }
    }
}

impl From<OptimError> for TrainError {
    fn from(e: OptimError) -> TrainError {
        TrainError::Compute(e.to_string())
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> TrainError {
        TrainError::Compute(e.to_string())
    }
}

/// The seed of an evaluation's noise (dynamic binarization, draws): the same for the
/// metrics of every epoch and for `vic eval`.
pub fn eval_seed(program: &Program) -> u64 {
    program.train.seed ^ 0xe7a1
}

/// Examples of each training member's test split that the metrics' test ELBO averages
/// over, with a `meta` family (`vic eval` takes them all).
pub const META_METRIC_EXAMPLES: usize = 1000;

/// The least time between two checkpoints (the last epoch always writes one).
pub const CHECKPOINT_SECONDS: f64 = 2.0;

/// Options beyond the spec's `train` block.
pub struct TrainOptions {
    pub device: Device,
    pub resume: bool,
    /// Seconds since some fixed point (the caller's clock).
    pub clock: Box<dyn Fn() -> f64>,
    /// After this epoch, write a checkpoint and wait [`HOLD_SECONDS`] before going on
    /// (`VIC_HOLD_AFTER_EPOCH`): a kill at a known point, whatever the machine's speed,
    /// for testing `--resume`.
    pub hold_after_epoch: Option<usize>,
}

/// How long `hold_after_epoch` waits.
pub const HOLD_SECONDS: u64 = 600;

/// The result of a finished run.
pub struct Trained {
    pub model: LoweredModel,
    pub metrics: Vec<MetricsRow>,
}

/// A fingerprint of everything that determines the trajectory of a run except the
/// number of epochs (so a finished run can be continued for more).
fn ir_hash(program: &Program) -> u64 {
    // FNV-1a over the IR's RON text: stable across runs and platforms. The learning
    // rate may change too (the advice after a NaN is to lower it and resume), and spans
    // (where things are written) do not change what trains.
    let mut program = program.clone();
    program.train.epochs = 0;
    match &mut program.train.optimizer {
        crate::ir::Optimizer::Adam { lr, .. }
        | crate::ir::Optimizer::Adamax { lr, .. }
        | crate::ir::Optimizer::Sgd { lr, .. } => *lr = 0.0,
    }
    let text = ron::to_string(&program).unwrap_or_default();
    without_spans(&text)
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        })
}

/// RON text with every `Src(start, end)` span written `Src`.
fn without_spans(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("Src(") {
        out.push_str(&rest[..i + 3]);
        let after = &rest[i + 4..];
        match after.find(')') {
            Some(j)
                if after[..j]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                rest = &after[j + 1..];
            }
            _ => {
                out.push('(');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn tensors_to_bytes(tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>, TrainError> {
    let map: HashMap<String, Tensor> = tensors.into_iter().collect();
    safetensors::tensor::serialize(&map, None).map_err(|e| TrainError::Store(e.to_string()))
}

fn bytes_to_tensors(bytes: &[u8], device: &Device) -> Result<HashMap<String, Tensor>, TrainError> {
    candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| TrainError::Resume(format!("a checkpoint file is unreadable: {e}")))
}

/// The prefix of a constrained `param`'s unconstrained tensor in model.safetensors.
pub const RAW_PREFIX: &str = "@raw.";

/// The model's parameters as safetensors bytes (the run directory's model.safetensors,
/// and the checkpoint's), readable without vic:
/// - a `param` in its declared space under its name (a `Positive` noise of 0.5 is 0.5),
///   and, for a constrained one, the unconstrained tensor vic trains as `@raw.NAME`;
/// - networks' tensors under the spec's names (`enc.layer0.weight`, `[out, in]` as
///   `torch.nn.Linear`);
/// - the metadata (`__metadata__`, one entry `vic`, a JSON object) says how to run them:
///   per network (`nets.NAME`) its architecture, activation, inputs (flattened and
///   concatenated in order, their widths), layers, and the rows of the fused output each
///   head takes with the head's activation; per constrained param (`params.NAME`), its
///   domain, raw tensor and map.
pub fn model_bytes(model: &LoweredModel) -> Result<Vec<u8>, TrainError> {
    let mut tensors: HashMap<String, Tensor> = model
        .store
        .named()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    // One metadata entry, a JSON object with sorted keys: safetensors writes its
    // metadata map in hash order, and the file must be the same bytes every time.
    let mut params = serde_json::Map::new();
    for (id, def) in model.program.params.iter().enumerate() {
        let map = match def.ty.domain {
            crate::ir::Domain::Positive => "softplus",
            crate::ir::Domain::Unit => "sigmoid",
            crate::ir::Domain::Simplex => "softmax over the last axis",
            _ => continue,
        };
        if let Some(raw) = tensors.remove(&def.name) {
            tensors.insert(format!("{RAW_PREFIX}{}", def.name), raw);
            tensors.insert(def.name.clone(), model.param_value(id)?);
            params.insert(
                def.name.clone(),
                serde_json::json!({
                    "domain": def.ty.display(),
                    "raw": format!("{RAW_PREFIX}{}", def.name),
                    "map": map,
                }),
            );
        }
    }
    let names: Vec<String> = tensors.keys().cloned().collect();
    let nets: serde_json::Map<String, serde_json::Value> = model
        .program
        .nets
        .iter()
        .map(|def| (def.name.clone(), net_layout(def, &names)))
        .collect();
    let layout = serde_json::json!({
        "format": format!("vic {}", env!("CARGO_PKG_VERSION")),
        "convention": "dense layers as torch.nn.Linear (y = x @ weight.T + bias); a network's inputs flattened and concatenated in order, a Cat(K) input one-hot; its output split into heads by their rows",
        "nets": nets,
        "params": params,
    });
    let meta: HashMap<String, String> = [("vic".to_string(), layout.to_string())].into();
    safetensors::tensor::serialize(&tensors, Some(meta))
        .map_err(|e| TrainError::Store(e.to_string()))
}

/// A network's layout for model.safetensors' metadata (see [`model_bytes`]).
fn net_layout(def: &crate::ir::NetDef, tensors: &[String]) -> serde_json::Value {
    use crate::ir::{Arch, HeadActivation};
    let act = match &def.arch {
        Arch::Mlp { act, .. }
        | Arch::Conv { act, .. }
        | Arch::Deconv { act, .. }
        | Arch::Made { act, .. }
        | Arch::DeepSets { act, .. } => Some(format!("{act:?}").to_lowercase()),
        _ => None,
    };
    let prefix = format!("{}.", def.name);
    let mut layers: Vec<String> = tensors
        .iter()
        .filter(|t| t.starts_with(&prefix))
        .filter_map(|t| t.rsplit_once('.').map(|(l, _)| l.to_string()))
        .collect();
    layers.sort_by_key(|l| {
        // layer0, layer1, ..., layer10 in numeric order.
        let digits: String = l.chars().filter(|c| c.is_ascii_digit()).collect();
        (digits.parse::<usize>().unwrap_or(0), l.clone())
    });
    layers.dedup();
    let mut start = 0;
    let heads: Vec<serde_json::Value> = def
        .heads
        .iter()
        .map(|h| {
            let n = h.ty.numel();
            let activation = match h.activation {
                HeadActivation::None => "identity".to_string(),
                HeadActivation::Softplus => format!(
                    "softplus(x) + {}",
                    crate::lower::nets::layers::POSITIVE_FLOOR
                ),
                HeadActivation::Sigmoid => "sigmoid".into(),
                HeadActivation::Softmax => "softmax over the last axis".into(),
            };
            let v = serde_json::json!({
                "name": h.name, "rows": [start, start + n], "shape": h.ty.shape,
                "activation": activation,
            });
            start += n;
            v
        })
        .collect();
    let inputs: Vec<serde_json::Value> = def
        .inputs
        .iter()
        .map(|i| {
            serde_json::json!({
                "name": i.name, "type": i.ty.display(), "width": i.ty.dense_width(), "set": i.set,
            })
        })
        .collect();
    serde_json::json!({
        "arch": def.arch.name(), "activation": act, "inputs": inputs, "layers": layers,
        "heads": heads,
    })
}

/// Load a trained model from model.safetensors bytes.
pub fn load_model(
    program: Program,
    bytes: &[u8],
    device: &Device,
) -> Result<LoweredModel, TrainError> {
    let mut tensors = bytes_to_tensors(bytes, device)?;
    // A constrained param trains unconstrained: its `@raw.` tensor is the one to load.
    let raws: Vec<String> = tensors
        .keys()
        .filter(|k| k.starts_with(RAW_PREFIX))
        .cloned()
        .collect();
    for raw in raws {
        if let Some(t) = tensors.remove(&raw) {
            tensors.insert(raw[RAW_PREFIX.len()..].to_string(), t);
        }
    }
    let store = ParamStore::loaded(tensors, device);
    let model = LoweredModel::new(program, store)?;
    let unused = model.store.unused_loaded();
    if !unused.is_empty() {
        return Err(TrainError::Resume(format!(
            "the checkpoint has parameters the spec does not: {}",
            unused.join(", ")
        )));
    }
    Ok(model)
}

/// A batch of `split` rows `indices` as the objective wants it.
pub fn make_batch(
    program: &Program,
    split: &Split,
    indices: &[usize],
    device: &Device,
    rng: &mut Rng,
) -> Result<Batch, TrainError> {
    let tensors = data::batch(
        split,
        indices,
        program,
        device,
        &program.train.binarize,
        rng,
    )?;
    let mut data: Vec<Option<Tensor>> = vec![None; program.data.len()];
    for (id, t) in tensors {
        if let Some(slot) = data.get_mut(id) {
            *slot = Some(t);
        }
    }
    let mut observed: Vec<Option<Tensor>> = vec![None; program.data.len()];
    for (id, m) in data::batch_observed(split, indices, device)? {
        if let Some(slot) = observed.get_mut(id) {
            *slot = Some(m);
        }
    }
    Ok(Batch {
        data,
        rows: indices.len(),
        observed,
        weights: None,
        member: None,
        sets: Vec::new(),
    })
}

/// One training step's objective, possibly from two passes (labelled and unlabelled).
struct Step {
    loss: Tensor,
    /// The bound's (weighted) mean per example.
    bound_mean: f64,
    /// Named terms: (name, Σ share · value, Σ share) over the parts that have it, so a
    /// term of every part is the shares' weighted mean and a term of one part (the
    /// supervised term of the labelled part) keeps its value.
    terms: Vec<(String, f64, f64)>,
    estimator_targets: Vec<(crate::ir::SiteVar, f64)>,
}

impl Step {
    fn of(
        out: crate::lower::objective::Outcome,
        weights: Option<&Tensor>,
        share: f64,
    ) -> Result<Step, TrainError> {
        let bound_mean = match weights {
            Some(w) => (&out.bound * w)?.sum_all()?.to_scalar::<f32>()? as f64 / share,
            None => out.bound.mean_all()?.to_scalar::<f32>()? as f64,
        } * share;
        let mut terms = Vec::with_capacity(out.terms.len());
        for t in &out.terms {
            terms.push((
                t.name.clone(),
                share * t.value.to_scalar::<f32>()? as f64,
                share,
            ));
        }
        Ok(Step {
            loss: out.loss,
            bound_mean,
            terms,
            estimator_targets: out.estimator_targets,
        })
    }

    /// Parts whose shares sum to 1: losses, bounds and terms add up. A term only one
    /// part has (the supervised term of the labelled part) keeps that part's share.
    fn combine(parts: Vec<Step>) -> Result<Step, TrainError> {
        let mut it = parts.into_iter();
        let Some(mut acc) = it.next() else {
            return Err(TrainError::Compute("internal error: an empty step".into()));
        };
        for p in it {
            acc.loss = (acc.loss + p.loss)?;
            acc.bound_mean += p.bound_mean;
            for (name, v, w) in p.terms {
                match acc.terms.iter_mut().find(|(n, _, _)| *n == name) {
                    Some((_, s, t)) => {
                        *s += v;
                        *t += w;
                    }
                    None => acc.terms.push((name, v, w)),
                }
            }
            acc.estimator_targets.extend(p.estimator_targets);
        }
        Ok(acc)
    }
}

/// The rows (examples times samples) an evaluation pass may hold at once: about
/// [`EVAL_ACTIVATION_BYTES`] of the activations the plan estimates per example, with room
/// for the elementwise temporaries the estimate leaves out (a factor of 4), and at most
/// 20,000. candle keeps every intermediate of a pass that starts from the parameters, so
/// a DRAW's IWAE pass over 20,000 rows would need tens of gigabytes.
pub fn eval_rows(model: &LoweredModel) -> usize {
    let per_row = model.plan.cost.bytes_per_example.max(1).saturating_mul(4);
    ((EVAL_ACTIVATION_BYTES / per_row) as usize).clamp(1, 20_000)
}

/// The activation memory an evaluation pass aims at (see [`eval_rows`]).
pub const EVAL_ACTIVATION_BYTES: u64 = 2_000_000_000;

/// Means per example over a whole split.
#[derive(Clone, Copy, Debug)]
pub struct SplitMeans {
    /// The bound (ELBO or IWAE, as the settings say).
    pub bound: f64,
    /// `log p(x | ...)`, the reconstruction term.
    pub loglik: f64,
    pub examples: usize,
}

/// Examples to evaluate on: a whole split, or members of a `meta` family (each its own
/// minibatches, with its transform and context sets).
#[derive(Clone, Copy)]
pub enum Examples<'a> {
    Split(&'a Split),
    Members {
        data: &'a DataSet,
        which: Which,
        members: &'a [usize],
        /// At most this many examples of each member (its first ones).
        limit: Option<usize>,
    },
}

impl<'a> Examples<'a> {
    /// What the metrics and `vic eval` report on: the test split, or with a `meta`
    /// family the test splits of its training members (`limit` examples of each).
    pub fn test_of(data: &'a DataSet, limit: Option<usize>) -> Examples<'a> {
        match &data.meta {
            Some(m) => Examples::Members {
                data,
                which: Which::Test,
                members: &m.train_members,
                limit,
            },
            None => Examples::Split(&data.test),
        }
    }

    /// Each minibatch of at most `batch_size` examples, built and handed to `f` with its
    /// example count.
    pub fn for_each_batch(
        &self,
        model: &LoweredModel,
        batch_size: usize,
        rng: &mut Rng,
        mut f: impl FnMut(&Batch, &mut Rng) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let batch_size = batch_size.max(1);
        match *self {
            Examples::Split(split) => {
                let idx: Vec<usize> = (0..split.n).collect();
                for chunk in idx.chunks(batch_size) {
                    let batch = make_batch(&model.program, split, chunk, model.device(), rng)?;
                    f(&batch, rng)?;
                }
            }
            Examples::Members {
                data,
                which,
                members,
                limit,
            } => {
                let Some(meta) = &data.meta else {
                    return Err(TrainError::Compute(
                        "internal error: member examples without a `meta` family".into(),
                    ));
                };
                for &k in members {
                    let all = meta.members[k].examples(which);
                    let idx = &all[..limit.unwrap_or(all.len()).min(all.len())];
                    for chunk in idx.chunks(batch_size) {
                        let batch = member_batch(
                            &model.program,
                            data,
                            which,
                            k,
                            chunk,
                            model.device(),
                            rng,
                        )?;
                        f(&batch, rng)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// A minibatch of member `k`'s examples `indices` (of the `which` split of `data`): the
/// member's image transform applied before binarization, and each example's context
/// sets drawn from the same member and split.
pub fn member_batch(
    program: &Program,
    data: &DataSet,
    which: Which,
    k: usize,
    indices: &[usize],
    device: &Device,
    rng: &mut Rng,
) -> Result<Batch, TrainError> {
    let Some(meta) = &data.meta else {
        return Err(TrainError::Compute(
            "internal error: a member batch without a `meta` family".into(),
        ));
    };
    let Some(member) = meta.members.get(k) else {
        return Err(TrainError::Compute(format!(
            "internal error: no member {k}"
        )));
    };
    let split = match which {
        Which::Train => &data.train,
        Which::Test => &data.test,
    };
    // One resampling plan per image variable of the member.
    let plans: Vec<Option<data::meta::Resampler>> = (0..program.data.len())
        .map(|id| match (member.transform, meta.image_of(id)) {
            (Some(t), Some(shape)) => Some(data::meta::Resampler::new(t, shape)),
            _ => None,
        })
        .collect();
    let transform = |id: DataId, row: &mut Vec<f32>| {
        if let Some(Some(plan)) = plans.get(id) {
            *row = plan.apply(row);
        }
    };
    let binarize = &program.train.binarize;
    let mut batch = Batch::new(vec![None; program.data.len()], indices.len());
    for (id, t) in data::batch_with(split, indices, program, device, binarize, rng, &transform)? {
        if let Some(slot) = batch.data.get_mut(id) {
            *slot = Some(t);
        }
    }
    for (id, m) in data::batch_observed(split, indices, device)? {
        batch.observed.resize(program.data.len(), None);
        if let Some(slot) = batch.observed.get_mut(id) {
            *slot = Some(m);
        }
    }
    for &(var, size) in &meta.sets {
        let set = meta.draw_set(k, which, indices, size, rng);
        let outer = [indices.len(), size];
        let t = data::var_tensor(
            split, var, &set, &outer, program, device, binarize, rng, &transform,
        )?;
        batch.sets.push(Some(t));
    }
    batch.member = Some(k);
    Ok(batch)
}

/// The minibatch of one part of a training step: its examples (a member's, with its
/// transform and context sets), each weighted `share / len` when the part is weighted.
pub fn part_batch(
    program: &Program,
    data: &DataSet,
    part: &batches::Part,
    device: &Device,
    rng: &mut Rng,
) -> Result<Batch, TrainError> {
    let idx = &part.indices;
    let mut b = match part.member {
        Some(k) => member_batch(program, data, Which::Train, k, idx, device, rng)?,
        None => make_batch(program, &data.train, idx, device, rng)?,
    };
    if part.weighted {
        let w = (part.share / idx.len().max(1) as f64) as f32;
        b.weights = Some(Tensor::from_vec(vec![w; idx.len()], idx.len(), device)?);
    }
    Ok(b)
}

/// The bound and the log-likelihood, averaged over a whole split (evaluation mode).
pub fn split_means(
    model: &LoweredModel,
    split: &Split,
    settings: &Settings,
    batch_size: usize,
    rng: &mut Rng,
) -> Result<SplitMeans, TrainError> {
    means(model, &Examples::Split(split), settings, batch_size, rng)
}

/// The bound and the log-likelihood, averaged over examples (evaluation mode).
pub fn means(
    model: &LoweredModel,
    examples: &Examples<'_>,
    settings: &Settings,
    batch_size: usize,
    rng: &mut Rng,
) -> Result<SplitMeans, TrainError> {
    let (mut bound, mut loglik) = (0.0, 0.0);
    let mut count = 0usize;
    examples.for_each_batch(model, batch_size, rng, |batch, rng| {
        let out = model.objective(batch, settings, rng)?;
        bound += out.bound.sum_all()?.to_scalar::<f32>()? as f64;
        loglik += out.loglik.sum_all()?.to_scalar::<f32>()? as f64;
        count += batch.rows;
        Ok(())
    })?;
    let mean = |total: f64| {
        if count == 0 {
            f64::NAN
        } else {
            total / count as f64
        }
    };
    Ok(SplitMeans {
        bound: mean(bound),
        loglik: mean(loglik),
        examples: count,
    })
}

/// The exact log p(x) averaged over a whole split, for a model whose log p(x) has a
/// closed form (`None` otherwise).
pub fn split_log_px(
    model: &LoweredModel,
    split: &Split,
    batch_size: usize,
    rng: &mut Rng,
) -> Result<Option<f64>, TrainError> {
    if !model.has_exact_log_px() {
        return Ok(None);
    }
    let (mut total, mut count) = (0.0, 0usize);
    let idx: Vec<usize> = (0..split.n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = make_batch(&model.program, split, chunk, model.device(), rng)?;
        let exact = model.exact_gaussian(&batch, rng)?;
        total += exact.log_px.sum_all()?.to_scalar::<f32>()? as f64;
        count += chunk.len();
    }
    Ok(Some(if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }))
}

/// Under `alternate(e_steps, m_steps)`, a metrics row every this many steps (twenty per
/// shorter phase), besides the one at each epoch's end.
pub fn log_interval(schedule: &Schedule) -> Option<u64> {
    match schedule {
        Schedule::Joint => None,
        Schedule::Alternate { e_steps, m_steps } => {
            Some(((*e_steps).min(*m_steps) as u64 / 20).max(1))
        }
    }
}

/// The running sums of the training terms between two metrics rows.
#[derive(Default)]
struct Running {
    loss: f64,
    bound: f64,
    seen: usize,
    terms: Vec<(String, f64)>,
    started: f64,
}

/// How a classifier does on a split, per observed `Cat` variable predicted from `given`
/// data (a model with no latents).
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMetrics {
    pub name: String,
    /// The fraction of examples whose most probable class is their label.
    pub accuracy: f64,
    /// The mean negative log-likelihood of the labels, nats.
    pub nll: f64,
    pub examples: usize,
}

/// [`ClassMetrics`] of `model` on `split`, `vdrop` weights of log α above `prune` set to 0
/// when given.
pub fn class_metrics(
    model: &LoweredModel,
    split: &Split,
    batch_size: usize,
    prune: Option<f64>,
    rng: &mut Rng,
) -> Result<Vec<ClassMetrics>, TrainError> {
    // (id, right, Σ -log p, count)
    let mut tally: Vec<(usize, usize, f64, usize)> = Vec::new();
    let idx: Vec<usize> = (0..split.n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = make_batch(&model.program, split, chunk, model.device(), rng)?;
        for (id, probs) in model.class_probs(&batch, prune, rng)? {
            let Some(Some(labels)) = batch.data.get(id) else {
                continue;
            };
            let truth = labels.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
            let guess = probs.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?;
            let p: Vec<f32> = (&probs * labels)?.sum(candle_core::D::Minus1)?.to_vec1()?;
            let right = guess.iter().zip(&truth).filter(|(g, t)| g == t).count();
            let nll: f64 = p.iter().map(|p| -(f64::from(*p).max(1e-30)).ln()).sum();
            match tally.iter_mut().find(|e| e.0 == id) {
                Some(e) => {
                    e.1 += right;
                    e.2 += nll;
                    e.3 += truth.len();
                }
                None => tally.push((id, right, nll, truth.len())),
            }
        }
    }
    Ok(tally
        .into_iter()
        .map(|(id, right, nll, n)| ClassMetrics {
            name: model.program.data[id].name.clone(),
            accuracy: right as f64 / n.max(1) as f64,
            nll: nll / n.max(1) as f64,
            examples: n,
        })
        .collect())
}

/// Per `vdrop` weight (`clf.layer0.weight`, from its `_log_alpha`, or from its
/// `_log_sigma2` as log σ² − log θ²): its log α entries, and how many are above
/// `threshold` (the weights pruning removes).
pub fn vdrop_sparsity(
    model: &LoweredModel,
    threshold: f64,
) -> Result<Vec<(String, usize, usize)>, TrainError> {
    let named = model.store.named();
    let mut out = Vec::new();
    for (name, var) in &named {
        let (weight, la): (&str, Vec<f32>) = if let Some(weight) = name.strip_suffix("_log_alpha") {
            (weight, var.as_tensor().flatten_all()?.to_vec1()?)
        } else if let Some(weight) = name.strip_suffix("_log_sigma2") {
            let Some((_, theta)) = named.iter().find(|(n, _)| n == weight) else {
                continue;
            };
            let log_theta2 = (theta.as_tensor().sqr()? + 1e-16)?.log()?;
            let la = (var.as_tensor() - log_theta2)?;
            (weight, la.flatten_all()?.to_vec1()?)
        } else {
            continue;
        };
        let above = la.iter().filter(|&&v| f64::from(v) > threshold).count();
        out.push((weight.to_string(), la.len(), above));
    }
    Ok(out)
}

/// The accuracy of the guide's `q(y | ...)` on every `partial` `Cat(K)` variable of
/// `split`: the fraction of examples whose most probable class is their label, over the
/// examples whose label is observed. `(name, accuracy, examples)` per variable.
pub fn partial_accuracy(
    model: &LoweredModel,
    split: &Split,
    batch_size: usize,
    rng: &mut Rng,
) -> Result<Vec<(String, f64, usize)>, TrainError> {
    let mut tally: Vec<(usize, usize, usize)> = Vec::new(); // (id, right, seen)
    let idx: Vec<usize> = (0..split.n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let batch = make_batch(&model.program, split, chunk, model.device(), rng)?;
        for (id, probs) in model.partial_probs(&batch, rng)? {
            let (Some(Some(labels)), Some(Some(seen))) =
                (batch.data.get(id), batch.observed.get(id))
            else {
                continue;
            };
            let guess: Vec<u32> = probs.argmax(candle_core::D::Minus1)?.to_vec1()?;
            let truth: Vec<u32> = labels.argmax(candle_core::D::Minus1)?.to_vec1()?;
            let seen: Vec<f32> = seen.to_vec1()?;
            let (mut right, mut count) = (0, 0);
            for ((g, t), s) in guess.iter().zip(&truth).zip(&seen) {
                if *s > 0.5 {
                    count += 1;
                    right += usize::from(g == t);
                }
            }
            match tally.iter_mut().find(|(i, _, _)| *i == id) {
                Some(e) => {
                    e.1 += right;
                    e.2 += count;
                }
                None => tally.push((id, right, count)),
            }
        }
    }
    Ok(tally
        .into_iter()
        .map(|(id, right, seen)| {
            let name = model.program.data[id].name.clone();
            let acc = if seen == 0 {
                f64::NAN
            } else {
                right as f64 / seen as f64
            };
            (name, acc, seen)
        })
        .collect())
}

/// Whether `--resume` can continue the checkpoint of `store` with `program`: `Ok(true)`
/// when there is a checkpoint trained from the same spec and `--set` values (the epochs
/// aside), `Ok(false)` when there is none, an error when it does not fit. The CLI asks
/// before it rewrites the run directory's spec and IR, so a refused resume changes
/// nothing.
pub fn can_resume(program: &Program, store: &dyn RunStore) -> Result<bool, TrainError> {
    let Some(files) = store.load_checkpoint().map_err(TrainError::Resume)? else {
        return Ok(false);
    };
    let Some(bytes) = files.get("state.json") else {
        return Err(TrainError::Resume("the checkpoint lacks state.json".into()));
    };
    let state: TrainState = serde_json::from_slice(bytes)
        .map_err(|e| TrainError::Resume(format!("state.json is unreadable: {e}")))?;
    if state.ir_hash != ir_hash(program) {
        return Err(TrainError::Resume(
            "the checkpoint was trained from a different spec or --set values".into(),
        ));
    }
    // Every file must read back, and the parameters fit the spec, before anything in the
    // run directory is rewritten.
    let get = |name: &str| {
        files
            .get(name)
            .ok_or_else(|| TrainError::Resume(format!("the checkpoint lacks {name}")))
    };
    let within = |file: &'static str| {
        move |e: TrainError| match e {
            TrainError::Resume(m) => TrainError::Resume(format!("{file}: {m}")),
            other => TrainError::Resume(format!("{file}: {other}")),
        }
    };
    load_model(program.clone(), get("model.safetensors")?, &Device::Cpu)
        .map_err(within("model.safetensors"))?;
    bytes_to_tensors(get("optimizer.safetensors")?, &Device::Cpu)
        .map_err(within("optimizer.safetensors"))?;
    Ok(true)
}

/// Train `program` on `data`.
pub fn train(
    program: Program,
    data: &DataSet,
    opts: TrainOptions,
    store: &mut dyn RunStore,
    observer: &mut dyn Observer,
) -> Result<Trained, TrainError> {
    let cfg = program.train.clone();
    let device = opts.device.clone();
    let hash = ir_hash(&program);

    // Where to start: a fresh model, or the last checkpoint.
    let checkpoint = if opts.resume {
        store.load_checkpoint().map_err(TrainError::Resume)?
    } else {
        None
    };
    if opts.resume && checkpoint.is_none() {
        observer.note("no checkpoint to resume from: starting from the beginning");
    }
    let (model, mut state, optim_state) = match checkpoint {
        Some(files) => {
            let get = |name: &str| {
                files
                    .get(name)
                    .ok_or_else(|| TrainError::Resume(format!("the checkpoint lacks {name}")))
            };
            let state: TrainState = serde_json::from_slice(get("state.json")?)
                .map_err(|e| TrainError::Resume(format!("state.json is unreadable: {e}")))?;
            if state.ir_hash != hash {
                return Err(TrainError::Resume(
                    "the checkpoint was trained from a different spec or --set values".into(),
                ));
            }
            let model = load_model(program, get("model.safetensors")?, &device)?;
            let optim = bytes_to_tensors(get("optimizer.safetensors")?, &device)?;
            observer.note(&format!(
                "resuming after epoch {} (step {}) of {}",
                state.epoch, state.step, cfg.epochs
            ));
            (model, state, Some(optim))
        }
        None => {
            let store = ParamStore::seeded(cfg.seed, &device);
            let model = LoweredModel::new(program, store)?;
            let state = TrainState {
                epoch: 0,
                step: 0,
                // The training stream is independent of the initialization stream.
                rng: Rng::seed(cfg.seed.wrapping_add(0x9e37_79b9_7f4a_7c15)),
                metrics: Vec::new(),
                ir_hash: hash,
                batcher: batches::BatcherState::default(),
            };
            (model, state, None)
        }
    };

    let named = model.store.named();
    let guide_prefixes = model.guide_parameter_prefixes();
    let is_guide = |name: &str| LoweredModel::is_guide_parameter(&guide_prefixes, name);
    let guide_group: Vec<usize> = (0..named.len())
        .filter(|&i| is_guide(&named[i].0))
        .collect();
    let model_group: Vec<usize> = (0..named.len())
        .filter(|&i| !is_guide(&named[i].0))
        .collect();
    let mut optimizer = Optimizer::new(&cfg.optimizer, cfg.clip, named)?;
    if let Some(t) = optim_state {
        optimizer
            .load_state(t)
            .map_err(|e| TrainError::Resume(e.to_string()))?;
    }

    let n = data.train.n;
    let mut batcher = batches::for_data(data, cfg.batch);
    batcher.restore(state.batcher.clone());
    let steps_per_epoch = batcher.steps_per_epoch();
    let (samples, iwae) = match cfg.objective {
        Objective::Elbo { samples } => (samples, false),
        Objective::Iwae { samples } => (samples, true),
    };
    observer.start(steps_per_epoch * cfg.epochs as u64, state.step);

    let interval = log_interval(&cfg.schedule);
    // The metrics row at `step`: the training means since the last row and the test-split
    // ELBO (and exact log p(x) where there is one).
    let row_at = |model: &LoweredModel,
                  state: &mut TrainState,
                  epoch: usize,
                  run: &Running,
                  phase: Option<String>|
     -> Result<MetricsRow, TrainError> {
        let seconds = (opts.clock)() - run.started;
        // The evaluation's own noise, seeded as `vic eval` seeds it: the last row's test
        // ELBO is the one `vic eval` reports for the run.
        let mut eval_rng = Rng::seed(eval_seed(&model.program));
        // The ELBO with the training objective's sample count (an IWAE objective: one).
        let elbo_samples = if iwae { 1 } else { samples.max(1) };
        let eval_settings = Settings::evaluation(elbo_samples, false, n);
        let chunk = (eval_rows(model).min(1000) / elbo_samples).max(1);
        // A `meta` family: its training members' test splits, their first
        // META_METRIC_EXAMPLES each.
        let test = Examples::test_of(data, Some(META_METRIC_EXAMPLES));
        let test_elbo = means(model, &test, &eval_settings, chunk, &mut eval_rng)?.bound;
        let test_log_px = split_log_px(model, &data.test, 1000, &mut eval_rng)?;
        let denom = run.seen.max(1) as f64;
        Ok(MetricsRow {
            epoch,
            step: state.step,
            train_loss: run.loss / denom,
            train_bound: run.bound / denom,
            test_elbo,
            test_log_px,
            phase,
            terms: run
                .terms
                .iter()
                .map(|(n, s)| (n.clone(), s / denom))
                .collect(),
            examples_per_second: run.seen as f64 / seconds.max(1e-9),
            seconds,
        })
    };

    // The epoch of the newest checkpoint, and when it was written.
    let mut kept_epoch = state.epoch;
    let mut saved_at = (opts.clock)();
    while state.epoch < cfg.epochs {
        let epoch = state.epoch + 1;
        batcher.start_epoch(&mut state.rng);
        let mut running = Running {
            started: (opts.clock)(),
            ..Running::default()
        };
        let mut phase: Option<String> = None;
        while let Some(parts) = batcher.next_step(&mut state.rng) {
            let progress = state.step as f64 / (steps_per_epoch.max(1) as f64);
            optimizer.set_lr_factor(cfg.decay.factor(progress, cfg.epochs as f64));
            let anneal = match cfg.anneal {
                Some(a) if a.epochs > 0 => (progress / a.epochs as f64).min(1.0),
                _ => 1.0,
            };
            let settings = Settings {
                samples,
                iwae,
                train: true,
                kl_weight: cfg.beta * anneal,
                free_bits: cfg.free_bits,
                dataset_size: n,
            };
            // One loss from every part of the step (the labelled part of `partial` data is
            // never enumerated: its values are observed).
            let mut steps = Vec::with_capacity(parts.len());
            let mut rows = 0;
            for part in &parts {
                let b = part_batch(&model.program, data, part, &device, &mut state.rng)?;
                let out = model.objective(&b, &settings, &mut state.rng)?;
                steps.push(Step::of(out, b.weights.as_ref(), part.share)?);
                if part.counted {
                    rows += part.indices.len();
                }
            }
            let out = Step::combine(steps)?;
            let loss = out.loss.to_scalar::<f32>()? as f64;
            let terms: Vec<(String, f64)> = out
                .terms
                .iter()
                .map(|(n, v, w)| (n.clone(), if *w > 0.0 { v / w } else { *v }))
                .collect();
            if !loss.is_finite() {
                let what = terms
                    .iter()
                    .find(|(_, v)| !v.is_finite())
                    .map(|(n, _)| format!("the term {n}"))
                    .unwrap_or_else(|| "the loss".into());
                return Err(TrainError::NonFinite {
                    epoch,
                    step: state.step + 1,
                    what,
                    kept_epoch,
                });
            }
            let grads = out.loss.backward()?;
            let group = match cfg.schedule {
                Schedule::Joint => None,
                Schedule::Alternate { e_steps, m_steps } => {
                    let cycle = (e_steps + m_steps).max(1) as u64;
                    if state.step % cycle < e_steps as u64 {
                        phase = Some("E".into());
                        Some(guide_group.as_slice())
                    } else {
                        phase = Some("M".into());
                        Some(model_group.as_slice())
                    }
                }
            };
            match optimizer.step(&grads, group) {
                Ok(_) => {}
                Err(OptimError::NonFiniteGradient { params }) => {
                    return Err(TrainError::NonFinite {
                        epoch,
                        step: state.step + 1,
                        what: format!("the gradient of `{}`", params.join("`, `")),
                        kept_epoch,
                    })
                }
                Err(e) => return Err(e.into()),
            }
            model.after_step(&out.estimator_targets)?;
            state.step += 1;
            running.seen += rows;
            running.loss += loss * rows as f64;
            running.bound += out.bound_mean * rows as f64;
            for (name, v) in &terms {
                match running.terms.iter_mut().find(|(n, _)| n == name) {
                    Some((_, s)) => *s += v * rows as f64,
                    None => running.terms.push((name.clone(), v * rows as f64)),
                }
            }
            observer.step(&StepInfo {
                epoch,
                step: state.step,
                examples: rows,
                loss,
                terms,
            });
            let last_of_epoch = batcher.epoch_done();
            if !last_of_epoch && interval.is_some_and(|k| state.step % k == 0) {
                let row = row_at(&model, &mut state, epoch, &running, phase.clone())?;
                state.metrics.push(row);
                running = Running {
                    started: (opts.clock)(),
                    ..Running::default()
                };
            }
        }
        let row = row_at(&model, &mut state, epoch, &running, phase)?;
        state.epoch = epoch;
        state.batcher = batcher.state();
        state.metrics.push(row.clone());
        // Epochs of a few milliseconds (a small dataset) would spend their time writing
        // checkpoints: keep one every CHECKPOINT_SECONDS at most, and the last epoch's.
        let hold = opts.hold_after_epoch == Some(epoch);
        if epoch == cfg.epochs || hold || (opts.clock)() - saved_at >= CHECKPOINT_SECONDS {
            save_checkpoint(&model, &optimizer, &state, store)?;
            saved_at = (opts.clock)();
            kept_epoch = epoch;
        }
        if hold {
            std::thread::sleep(std::time::Duration::from_secs(HOLD_SECONDS));
        }
        observer.epoch(&row);
    }
    // The user-facing copies once more: a run killed after its last checkpoint but before
    // these were rewritten has nothing left to train when resumed, and must still end
    // with them up to date.
    write_model_and_metrics(&model_bytes(&model)?, &state, store)?;
    Ok(Trained {
        model,
        metrics: state.metrics,
    })
}

fn save_checkpoint(
    model: &LoweredModel,
    optimizer: &Optimizer,
    state: &TrainState,
    store: &mut dyn RunStore,
) -> Result<(), TrainError> {
    let model_file = model_bytes(model)?;
    let optim_file = tensors_to_bytes(optimizer.state_tensors()?)?;
    let state_file =
        serde_json::to_vec_pretty(state).map_err(|e| TrainError::Store(e.to_string()))?;
    store
        .save_checkpoint(vec![
            ("model.safetensors".into(), model_file.clone()),
            ("optimizer.safetensors".into(), optim_file),
            ("state.json".into(), state_file),
        ])
        .map_err(TrainError::Store)?;
    // The user-facing copies: written after the checkpoint, so a crash in between
    // leaves them one epoch behind at worst, never ahead of what resumes.
    write_model_and_metrics(&model_file, state, store)
}

fn write_model_and_metrics(
    model_file: &[u8],
    state: &TrainState,
    store: &mut dyn RunStore,
) -> Result<(), TrainError> {
    store
        .write("model.safetensors", model_file)
        .map_err(TrainError::Store)?;
    store
        .write("metrics.csv", metrics_csv(&state.metrics).as_bytes())
        .map_err(TrainError::Store)
}

/// metrics.csv: one line per row, the named terms as extra columns; `test_log_px` (the
/// exact log p(x)) and `phase` (of `alternate`) follow `test_elbo` when any row has them.
pub fn metrics_csv(rows: &[MetricsRow]) -> String {
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        for (n, _) in &r.terms {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let with_log_px = rows.iter().any(|r| r.test_log_px.is_some());
    let with_phase = rows.iter().any(|r| r.phase.is_some());
    let mut out = String::from("epoch,step,train_loss,train_bound,test_elbo");
    if with_log_px {
        out.push_str(",test_log_px");
    }
    if with_phase {
        out.push_str(",phase");
    }
    for n in &names {
        out.push(',');
        out.push_str(&format!("\"{}\"", n.replace('"', "'")));
    }
    out.push_str(",examples_per_second,seconds\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6}",
            r.epoch, r.step, r.train_loss, r.train_bound, r.test_elbo
        ));
        if with_log_px {
            match r.test_log_px {
                Some(v) => out.push_str(&format!(",{v:.6}")),
                None => out.push(','),
            }
        }
        if with_phase {
            out.push(',');
            out.push_str(r.phase.as_deref().unwrap_or(""));
        }
        for n in &names {
            let v = r.terms.iter().find(|(m, _)| m == n).map(|(_, v)| *v);
            match v {
                Some(v) => out.push_str(&format!(",{v:.6}")),
                None => out.push(','),
            }
        }
        out.push_str(&format!(",{:.1},{:.3}\n", r.examples_per_second, r.seconds));
    }
    out
}
