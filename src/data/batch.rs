//! Minibatches: rows of a split gathered into tensors in lowering's value conventions.

use super::Split;
use crate::ir::{Binarize, DataId, Domain, Program};
use crate::rng::Rng;
use candle_core::{Device, Error, Result, Tensor};

/// The examples `indices` of `split`, one tensor per data variable, example axis first:
/// `Real[D]` data is `[B, D]`, a scalar `[B]`; `Cat(K)` data is one-hot `[B, ..., K]`;
/// `Binary` data is binarized per `binarize` (`Dynamic`: each pixel is 1 with the pixel
/// value as probability, drawn from `rng`; `Threshold(t)`: `x > t`; `None`: as stored).
/// Hidden values of `partial` variables arrive as class 0 (see [`batch_observed`]).
pub fn batch(
    split: &Split,
    indices: &[usize],
    program: &Program,
    device: &Device,
    binarize: &Binarize,
    rng: &mut Rng,
) -> Result<Vec<(DataId, Tensor)>> {
    batch_with(split, indices, program, device, binarize, rng, &|_, _| {})
}

/// [`batch`] with `transform(id, row)` applied to every example's values of every
/// variable before binarization (a `meta` member's image transform).
pub fn batch_with(
    split: &Split,
    indices: &[usize],
    program: &Program,
    device: &Device,
    binarize: &Binarize,
    rng: &mut Rng,
    transform: &dyn Fn(DataId, &mut Vec<f32>),
) -> Result<Vec<(DataId, Tensor)>> {
    let mut out = Vec::with_capacity(split.vars.len());
    for (id, _) in &split.vars {
        let t = var_tensor(
            split,
            *id,
            indices,
            &[],
            program,
            device,
            binarize,
            rng,
            transform,
        )?;
        out.push((*id, t));
    }
    Ok(out)
}

/// The examples `indices` of data variable `id` as one tensor `[indices.len(), ...outer,
/// ...value]` (`outer` splits the first axis, for context sets `[B, N]`), each example's
/// values passed through `transform` before binarization.
#[allow(clippy::too_many_arguments)]
pub fn var_tensor(
    split: &Split,
    id: DataId,
    indices: &[usize],
    outer: &[usize],
    program: &Program,
    device: &Device,
    binarize: &Binarize,
    rng: &mut Rng,
    transform: &dyn Fn(DataId, &mut Vec<f32>),
) -> Result<Tensor> {
    let def = program
        .data
        .get(id)
        .ok_or_else(|| Error::Msg(format!("internal: no data variable {id}")))?;
    let array = split
        .vars
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, a)| a)
        .ok_or_else(|| {
            Error::Msg(format!(
                "internal: the split has no variable `{}`",
                def.name
            ))
        })?;
    let w = array.row_len();
    let mut values = Vec::with_capacity(indices.len() * w);
    let mut row = Vec::with_capacity(w);
    for &i in indices {
        if i >= split.n {
            return Err(Error::Msg(format!(
                "internal: example {i} of a split of {}",
                split.n
            )));
        }
        row.clear();
        row.extend_from_slice(array.row(i));
        transform(id, &mut row);
        values.extend_from_slice(&row);
    }
    let mut shape = if outer.is_empty() {
        vec![indices.len()]
    } else {
        outer.to_vec()
    };
    shape.extend_from_slice(&def.ty.shape);
    Ok(match def.ty.domain {
        Domain::Cat(k) => {
            let mut hot = vec![0f32; values.len() * k];
            for (j, &c) in values.iter().enumerate() {
                let c = c as usize;
                if c < k {
                    hot[j * k + c] = 1.0;
                }
            }
            shape.push(k);
            Tensor::from_vec(hot, shape, device)?
        }
        Domain::Binary => {
            match binarize {
                Binarize::Dynamic => {
                    let u = rng.uniform_vec(values.len());
                    for (v, u) in values.iter_mut().zip(u) {
                        *v = if u < *v { 1.0 } else { 0.0 };
                    }
                }
                Binarize::Threshold(t) => {
                    for v in values.iter_mut() {
                        *v = if (*v as f64) > *t { 1.0 } else { 0.0 };
                    }
                }
                Binarize::None => {}
            }
            Tensor::from_vec(values, shape, device)?
        }
        _ => Tensor::from_vec(values, shape, device)?,
    })
}

/// For each `partial` variable, a `[B]` f32 mask of the examples `indices`: 1 where the
/// value is observed, 0 where it is hidden (and must be inferred).
pub fn batch_observed(
    split: &Split,
    indices: &[usize],
    device: &Device,
) -> Result<Vec<(DataId, Tensor)>> {
    split
        .observed
        .iter()
        .map(|(id, mask)| {
            let m: Vec<f32> = indices
                .iter()
                .map(|&i| match mask.get(i) {
                    Some(true) => 1.0,
                    _ => 0.0,
                })
                .collect();
            Ok((*id, Tensor::from_vec(m, indices.len(), device)?))
        })
        .collect()
}
