//! `vic probe`: how linearly a trained guide's posterior means separate the dataset's
//! classes, the protocol of MetaVAE's `PredictorAgent` (Wu, Choi, Goodman & Ermon 2020,
//! mhw32/meta-inference-public). With the guide frozen, each held-out member's training
//! and test examples are embedded as the posterior means of every per-example latent
//! (each with a context set drawn from the same member and split, as training drew
//! them); a multinomial logistic regression is fitted on the training embeddings and
//! scored on the test embeddings. A run without `meta` is probed on its own splits as one
//! member, so a plain VAE compares with a MetaVAE.
//!
//! The regression is linfa's: the objective of scikit-learn's `LogisticRegression()`
//! (multinomial, L2 weight `1 / C` with C = 1 on the summed loss, intercept not
//! penalized), minimized by L-BFGS for at most 100 iterations as scikit-learn's default.

use crate::data::meta::Which;
use crate::data::DataSet;
use crate::lower::LoweredModel;
use crate::rng::Rng;
use crate::train::{self, TrainError};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};

/// scikit-learn's `LogisticRegression` defaults.
pub const C: f64 = 1.0;
pub const MAX_ITERATIONS: u64 = 100;

/// One member's probe.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberProbe {
    /// The member's index, `None` for a run without `meta`.
    pub member: Option<usize>,
    pub name: String,
    pub train_examples: usize,
    pub test_examples: usize,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
}

/// Fit the multinomial logistic regression on `(x, y)` (rows of features, class labels)
/// and return the accuracies on the training and test sets.
pub fn fit_and_score(
    train_x: &[Vec<f64>],
    train_y: &[usize],
    test_x: &[Vec<f64>],
    test_y: &[usize],
) -> Result<(f64, f64), String> {
    let classes: std::collections::BTreeSet<usize> = train_y.iter().copied().collect();
    if classes.len() < 2 {
        return Err(format!(
            "the probe's training examples hold {} class(es): a classifier needs at least 2",
            classes.len()
        ));
    }
    let matrix = |rows: &[Vec<f64>]| -> Result<Array2<f64>, String> {
        let width = rows.first().map_or(0, Vec::len);
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Array2::from_shape_vec((rows.len(), width), flat).map_err(|e| e.to_string())
    };
    let data = Dataset::new(matrix(train_x)?, Array1::from(train_y.to_vec()));
    let model = MultiLogisticRegression::default()
        .alpha(1.0 / C)
        .max_iterations(MAX_ITERATIONS)
        .fit(&data)
        .map_err(|e| format!("the logistic regression failed: {e}"))?;
    let accuracy = |x: &[Vec<f64>], y: &[usize]| -> Result<f64, String> {
        if y.is_empty() {
            return Ok(f64::NAN);
        }
        let pred = model.predict(&matrix(x)?);
        let right = pred.iter().zip(y).filter(|(p, t)| *p == *t).count();
        Ok(right as f64 / y.len() as f64)
    };
    Ok((accuracy(train_x, train_y)?, accuracy(test_x, test_y)?))
}

/// The posterior means of every per-example latent, flattened and concatenated, of the
/// examples `idx` of member `member` (or of the plain split), with their labels.
fn embed(
    model: &LoweredModel,
    data: &DataSet,
    which: Which,
    member: Option<usize>,
    idx: &[usize],
    rng: &mut Rng,
) -> Result<(Vec<Vec<f64>>, Vec<usize>), TrainError> {
    let split = match which {
        Which::Train => &data.train,
        Which::Test => &data.test,
    };
    let Some(labels) = &split.labels else {
        return Err(TrainError::Compute(
            "`vic probe` predicts the dataset's labels, and this dataset has none".into(),
        ));
    };
    let mut x = Vec::with_capacity(idx.len());
    let mut y = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(500) {
        let batch = match member {
            Some(k) => {
                train::member_batch(&model.program, data, which, k, chunk, model.device(), rng)?
            }
            None => train::make_batch(&model.program, split, chunk, model.device(), rng)?,
        };
        let means = model.posterior_means(&batch, rng)?;
        let mut rows = vec![Vec::new(); chunk.len()];
        for (_, t) in &means {
            let t = t.flatten_from(1)?.to_dtype(candle_core::DType::F64)?;
            for (row, values) in rows.iter_mut().zip(t.to_vec2::<f64>()?) {
                row.extend(values);
            }
        }
        x.extend(rows);
        y.extend(chunk.iter().map(|&i| labels[i] as usize));
    }
    Ok((x, y))
}

/// Probe each held-out member of `data`'s `meta` family (its training members when none
/// is held out), or the run's own splits without `meta`: at most `train_examples`
/// training examples per member (its first ones) and its whole test split.
pub fn probe(
    model: &LoweredModel,
    data: &DataSet,
    train_examples: usize,
    rng: &mut Rng,
) -> Result<Vec<MemberProbe>, TrainError> {
    // (member, name, training examples, test examples)
    type Target = (Option<usize>, String, Vec<usize>, Vec<usize>);
    let mut targets: Vec<Target> = Vec::new();
    match &data.meta {
        Some(meta) => {
            let members = if meta.test_members.is_empty() {
                &meta.train_members
            } else {
                &meta.test_members
            };
            for &k in members {
                let m = &meta.members[k];
                let tr = m.train[..train_examples.min(m.train.len())].to_vec();
                targets.push((Some(k), m.name.clone(), tr, m.test.clone()));
            }
        }
        None => targets.push((
            None,
            "test split".into(),
            (0..train_examples.min(data.train.n)).collect(),
            (0..data.test.n).collect(),
        )),
    }
    let mut out = Vec::new();
    for (member, name, tr, te) in targets {
        let (xtr, ytr) = embed(model, data, Which::Train, member, &tr, rng)?;
        let (xte, yte) = embed(model, data, Which::Test, member, &te, rng)?;
        if xtr.first().is_none_or(|r| r.is_empty()) {
            return Err(TrainError::Compute(
                "`vic probe` embeds examples by their posterior means, and this model has no per-example latent".into(),
            ));
        }
        let (train_accuracy, test_accuracy) =
            fit_and_score(&xtr, &ytr, &xte, &yte).map_err(TrainError::Compute)?;
        out.push(MemberProbe {
            member,
            name,
            train_examples: xtr.len(),
            test_examples: xte.len(),
            train_accuracy,
            test_accuracy,
        });
    }
    Ok(out)
}
