//! Datasets: finding the data a spec's `train.dataset` names (LANGUAGE.md section 10),
//! binding its arrays to the spec's data variables, validating every value against its
//! declared shape and domain, holding out a test split, and cutting minibatches.
//!
//! The module does no I/O: files are read through the [`Fs`] trait (`io::RealFs` for the
//! real file system, an in-memory map in tests) and the environment arrives in
//! [`DataEnv`]. The one embedded file, the 8x8 digits, is compiled in.
//!
//! ```text
//! load(program, dataset, env, fs, seed) -> DataSet { train: Split, test: Split, source }
//! batch(split, indices, program, device, binarize, rng) -> [(DataId, Tensor [B, ...])]
//! ```
//!
//! Host arrays keep `Cat(K)` values as class indices (f32); [`batch`] turns them one-hot
//! (`[B, ..., K]`) and binarizes `Binary` variables, matching lowering's value conventions.
//!
//! Decisions where LANGUAGE.md is silent:
//! - Built-in images are scaled to [0, 1] (digits by 1/16, the IDX sets by 1/255). An image
//!   variable is any non-`Cat` data variable with as many values as an image (64 or 784),
//!   whatever its shape; labels go to the one `Cat(10)` variable (any role). Any other
//!   data variable is an error: a built-in set provides nothing else.
//! - Without a test split of its own, `round(n * split)` examples (at least one) are held
//!   out, chosen by a permutation from `Rng::seed(seed)`; both parts keep file order.
//! - An array may have any per-example shape with the declared number of values (it is
//!   reshaped); a `Cat(K)` variable also accepts one-hot rows (`K` values per class).
//! - In a `.npz` / `.safetensors` file, arrays no variable claims are ignored, except
//!   `labels` / `labels_test`, which become [`Split::labels`] (evaluation only).
//! - Any dataset path ending in `.gz` is gunzipped first (`.idx.gz`, also `.csv.gz`, ...);
//!   IDX files may also be named `*-ubyte`.
//! - `train.labels = N` hides `partial` values in the training split only (the test
//!   split keeps all, for accuracy); hidden values are zeroed, so they cannot leak.
//!   The N kept are chosen from a permutation seeded by `train.seed`; for a `Cat(K)`
//!   variable they are class-balanced (N / K per class, as in Kingma et al. 2014).
//! - Validation stops at the first error: the example index it names is the position in
//!   the file's array (or the `NAME_test` array), before any split.

mod batch;
mod bind;
mod builtin;
mod error;
mod formats;
pub mod meta;
#[cfg(test)]
mod tests;

pub use batch::{batch, batch_observed, batch_with, var_tensor};
pub use builtin::FASHION_MNIST_DIR;
pub use error::DataError;
pub use formats::{parse_npy, RawArray};

use crate::ir::{DataId, DataRole, Dataset, Program};
use crate::rng::Rng;
use std::path::{Path, PathBuf};

/// Which `keep` examples of a `Cat(k)` variable stay labelled: class-balanced as in
/// Kingma et al. (2014), `keep / k` per class (the first `keep % k` classes one more),
/// each class's first examples in the seeded order `perm`; if a class has too few
/// examples, the rest are filled from the others in `perm` order. Exactly `keep` are
/// kept (`keep <= perm.len()`).
pub fn balanced_keep(
    perm: &[usize],
    keep: usize,
    k: usize,
    class_of: impl Fn(usize) -> usize,
) -> Vec<bool> {
    let k = k.max(1);
    let mut mask = vec![false; perm.len()];
    let mut quota: Vec<usize> = (0..k)
        .map(|c| keep / k + usize::from(c < keep % k))
        .collect();
    let mut kept = 0;
    for &i in perm {
        if let Some(q) = quota.get_mut(class_of(i)) {
            if *q > 0 && kept < keep {
                *q -= 1;
                mask[i] = true;
                kept += 1;
            }
        }
    }
    for &i in perm {
        if kept >= keep {
            break;
        }
        if !mask[i] {
            mask[i] = true;
            kept += 1;
        }
    }
    mask
}

/// Read access to files: the real file system in the CLI (`io::RealFs`), a map in tests.
pub trait Fs {
    /// The whole file, or a message saying why not.
    fn read(&self, path: &Path) -> Result<Vec<u8>, String>;
    fn exists(&self, path: &Path) -> bool;
}

/// What the data module needs from outside the spec.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataEnv {
    /// The directory of the spec file: relative dataset paths are resolved against it.
    pub spec_dir: PathBuf,
    /// The `VIC_DATA` environment variable (where `"mnist"` lives), read by the CLI.
    pub vic_data: Option<PathBuf>,
}

/// One variable's values for every example of a split.
#[derive(Clone, Debug, PartialEq)]
pub struct HostArray {
    /// The example axis first, then the declared shape (`[n]` for a scalar variable).
    pub shape: Vec<usize>,
    /// Row-major; `Cat(K)` values are class indices `0..K`.
    pub data: Vec<f32>,
}

impl HostArray {
    /// Values per example.
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values of example `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.row_len();
        self.data.get(i * w..(i + 1) * w).unwrap_or(&[])
    }

    /// The examples `indices`, in that order.
    fn gather(&self, indices: &[usize]) -> HostArray {
        let mut shape = self.shape.clone();
        if let Some(n) = shape.first_mut() {
            *n = indices.len();
        }
        let data = indices
            .iter()
            .flat_map(|&i| self.row(i).iter().copied())
            .collect();
        HostArray { shape, data }
    }
}

/// The training or test part of a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Number of examples.
    pub n: usize,
    /// One array per data variable of the spec, in `DataId` order.
    pub vars: Vec<(DataId, HostArray)>,
    /// For each `partial` variable: which examples keep their value. A hidden example's
    /// value is stored as 0 and must never be read as a label.
    pub observed: Vec<(DataId, Vec<bool>)>,
    /// The dataset's class labels (0..9 for the built-in image sets), for evaluation only
    /// (clustering accuracy), whether or not a `Cat(10)` variable binds them. Training
    /// must not read them: they include the values `train.labels` hides.
    pub labels: Option<Vec<u32>>,
}

impl Split {
    /// The values of data variable `id`.
    pub fn var(&self, id: DataId) -> Option<&HostArray> {
        self.vars.iter().find(|(v, _)| *v == id).map(|(_, a)| a)
    }

    /// The observed mask of `partial` variable `id` (`None` for other variables).
    pub fn observed(&self, id: DataId) -> Option<&[bool]> {
        self.observed
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, m)| m.as_slice())
    }

    /// The first `n` examples (all of them when there are fewer), labels and `partial`
    /// masks included: a quicker evaluation on part of a split.
    pub fn head(&self, n: usize) -> Split {
        let idx: Vec<usize> = (0..n.min(self.n)).collect();
        let mut out = self.gather(&idx);
        out.observed = self
            .observed
            .iter()
            .map(|(id, m)| (*id, m.iter().take(idx.len()).copied().collect()))
            .collect();
        out
    }

    fn gather(&self, indices: &[usize]) -> Split {
        Split {
            n: indices.len(),
            vars: self
                .vars
                .iter()
                .map(|(id, a)| (*id, a.gather(indices)))
                .collect(),
            observed: Vec::new(),
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().filter_map(|&i| l.get(i).copied()).collect()),
        }
    }
}

/// A loaded, validated dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSet {
    pub train: Split,
    pub test: Split,
    /// Where it came from, for people: `digits (embedded)`,
    /// `fashion-mnist (/usr/share/datasets/fashion-mnist)`, `data/x.npz`.
    pub source: String,
    /// The members of the spec's `meta` family, when it has one.
    pub meta: Option<meta::MetaData>,
}

/// Load `dataset` (the spec's `train.dataset` or a `--dataset` override) for `program`:
/// read it, bind its arrays to the data variables, validate them, hold out
/// `train.split` of the examples as the test split when the data has none (a shuffle
/// seeded with `seed`), and hide all but `train.labels` values of `partial` variables in
/// the training split (another seeded draw).
pub fn load(
    program: &Program,
    dataset: &Dataset,
    env: &DataEnv,
    fs: &dyn Fs,
    seed: u64,
) -> Result<DataSet, DataError> {
    let (binding, source) = match dataset {
        Dataset::Builtin(name) => {
            let set = builtin::load_builtin(name, env, fs)?;
            let source = set.source.clone();
            (bind::bind_images(&program.data, set)?, source)
        }
        Dataset::Path(p) => {
            let path = Path::new(p);
            let path = if path.is_absolute() {
                path.to_path_buf()
            } else {
                env.spec_dir.join(path)
            };
            let file = path.display().to_string();
            (read_file(program, &path, &file, fs)?, file)
        }
    };
    assemble(program, binding, source, seed)
}

/// Read and parse a dataset file, choosing the format by its extension.
fn read_file(
    program: &Program,
    path: &Path,
    file: &str,
    fs: &dyn Fs,
) -> Result<bind::Binding, DataError> {
    let lower = file.to_ascii_lowercase();
    let (kind, gz) = match lower.strip_suffix(".gz") {
        Some(stem) => (stem.to_string(), true),
        None => (lower.clone(), false),
    };
    let known = [".npz", ".safetensors", ".npy", ".csv", ".idx", "-ubyte"];
    if !known.iter().any(|ext| kind.ends_with(ext)) {
        return Err(DataError::UnsupportedExtension { file: file.into() });
    }
    let bytes = fs.read(path).map_err(|reason| DataError::Unreadable {
        file: file.into(),
        reason,
    })?;
    let bytes = if gz {
        formats::gunzip(&bytes, file)?
    } else {
        bytes
    };
    let data = &program.data;
    if kind.ends_with(".npz") {
        bind::bind_named(data, file, formats::parse_npz(&bytes, file)?)
    } else if kind.ends_with(".safetensors") {
        bind::bind_named(data, file, formats::parse_safetensors(&bytes, file)?)
    } else if kind.ends_with(".npy") {
        // The array gets its name only in errors, after binding.
        let array = formats::parse_npy(&bytes, file, "(the array)")?;
        bind::bind_single(data, file, array)
    } else if kind.ends_with(".csv") {
        bind::bind_single(data, file, formats::parse_csv(&bytes, file)?)
    } else {
        bind::bind_single(data, file, formats::parse_idx(&bytes, file)?)
    }
}

/// Validate every bound array, check the example counts agree.
fn validate_all(
    program: &Program,
    bound: Vec<bind::Bound>,
) -> Result<(usize, Vec<(DataId, HostArray)>), DataError> {
    let mut out: Vec<(DataId, HostArray, String)> = Vec::new();
    for b in bound {
        let Some(def) = program.data.get(b.var) else {
            continue;
        };
        let id = b.var;
        let file = b.file.clone();
        let host = bind::validate(def, b)?;
        if let Some((first, a, _)) = out.first() {
            let (n0, n1) = (a.shape[0], host.shape[0]);
            if n0 != n1 {
                return Err(DataError::ExampleCounts {
                    file,
                    first: (program.data[*first].name.clone(), n0),
                    other: (def.name.clone(), n1),
                });
            }
        }
        out.push((id, host, file));
    }
    out.sort_by_key(|(id, _, _)| *id);
    let n = out.first().map(|(_, a, _)| a.shape[0]).unwrap_or(0);
    Ok((n, out.into_iter().map(|(id, a, _)| (id, a)).collect()))
}

fn assemble(
    program: &Program,
    binding: bind::Binding,
    source: String,
    seed: u64,
) -> Result<DataSet, DataError> {
    let mut rng = Rng::seed(seed);
    let first_file = binding
        .train
        .first()
        .map(|b| b.file.clone())
        .unwrap_or_else(|| source.clone());
    let (n, vars) = validate_all(program, binding.train)?;
    if n == 0 {
        let var = vars
            .first()
            .and_then(|(id, _)| program.data.get(*id))
            .map(|d| d.name.clone())
            .unwrap_or_default();
        return Err(DataError::NoExamples {
            var,
            file: first_file,
        });
    }
    let labels = match &binding.labels_train {
        Some(l) => Some(bind::check_labels(l, n, &source)?),
        None => None,
    };
    let all = Split {
        n,
        vars,
        observed: Vec::new(),
        labels,
    };
    let (mut train, test) = match binding.test {
        Some(test_bound) => {
            let (n_test, test_vars) = validate_all(program, test_bound)?;
            // Train and test must agree on the variables' per-example shapes (validated
            // against the same declarations, so they do).
            let labels = match &binding.labels_test {
                Some(l) => Some(bind::check_labels(l, n_test, &source)?),
                None => None,
            };
            let test = Split {
                n: n_test,
                vars: test_vars,
                observed: Vec::new(),
                labels,
            };
            (all, test)
        }
        None => {
            let split = program.train.split;
            let mut n_test = (n as f64 * split).round() as usize;
            if split > 0.0 && n_test == 0 {
                n_test = 1;
            }
            if n_test >= n {
                return Err(DataError::TooFewExamples {
                    file: source,
                    n,
                    split,
                });
            }
            let perm = rng.permutation(n);
            let mut test_idx = perm[..n_test].to_vec();
            let mut train_idx = perm[n_test..].to_vec();
            test_idx.sort_unstable();
            train_idx.sort_unstable();
            (all.gather(&train_idx), all.gather(&test_idx))
        }
    };
    let mut test = test;
    // `partial` variables: all of the test split observed, `train.labels` of the
    // training split (the first of a seeded permutation), the rest hidden and zeroed.
    for (id, def) in program.data.iter().enumerate() {
        if def.role != DataRole::Partial {
            continue;
        }
        let mut mask = vec![true; train.n];
        if let Some(keep) = program.train.labels {
            if keep < train.n {
                let perm = rng.permutation(train.n);
                let classes = match def.ty.domain {
                    crate::ir::Domain::Cat(k) if def.ty.shape.is_empty() => train
                        .vars
                        .iter()
                        .find(|(v, _)| *v == id)
                        .map(|(_, arr)| (k, arr)),
                    _ => None,
                };
                mask = match classes {
                    Some((k, arr)) => balanced_keep(&perm, keep, k, |i| arr.row(i)[0] as usize),
                    None => {
                        let mut m = vec![false; train.n];
                        for &i in &perm[..keep] {
                            m[i] = true;
                        }
                        m
                    }
                };
            }
        }
        if let Some((_, arr)) = train.vars.iter_mut().find(|(v, _)| *v == id) {
            let w = arr.row_len();
            for (i, &seen) in mask.iter().enumerate() {
                if !seen {
                    if let Some(row) = arr.data.get_mut(i * w..(i + 1) * w) {
                        row.fill(0.0);
                    }
                }
            }
        }
        train.observed.push((id, mask));
        test.observed.push((id, vec![true; test.n]));
    }
    let meta = meta::build(program, &train, &test)?;
    Ok(DataSet {
        train,
        test,
        source,
        meta,
    })
}
