//! Binding a dataset's arrays to the spec's data variables (LANGUAGE.md section 10), and
//! validating every value against its variable's declared shape and domain.

use super::builtin::ImageSet;
use super::error::DataError;
use super::formats::RawArray;
use super::HostArray;
use crate::ir::{DataDef, DataId, DataRole, Domain};

/// One variable's values from one file (or array of a file), not yet validated.
pub struct Bound {
    pub var: DataId,
    pub array: RawArray,
    /// The file (and array) the values came from, for error messages.
    pub file: String,
}

/// All variables bound, for the training part of the data and its own test part if any.
pub struct Binding {
    pub train: Vec<Bound>,
    pub test: Option<Vec<Bound>>,
    pub labels_train: Option<Vec<f32>>,
    pub labels_test: Option<Vec<f32>>,
}

fn var_names(data: &[DataDef]) -> Vec<String> {
    data.iter().map(|d| d.name.clone()).collect()
}

/// A built-in image dataset: images to the one variable of the image's size, labels to
/// the one `Cat(10)` variable if any; every other variable is an error.
pub fn bind_images(data: &[DataDef], set: ImageSet) -> Result<Binding, DataError> {
    let file = set.source.clone();
    if data.is_empty() {
        return Err(DataError::NoDataVariables { file });
    }
    let image_vars: Vec<DataId> = (0..data.len())
        .filter(|&i| {
            !matches!(data[i].ty.domain, Domain::Cat(_)) && data[i].ty.numel() == set.pixels
        })
        .collect();
    let label_vars: Vec<DataId> = (0..data.len())
        .filter(|&i| data[i].ty.domain == Domain::Cat(10))
        .collect();
    let what_images = format!("images of {} pixels", set.pixels);
    let image_var = match image_vars.as_slice() {
        [v] => *v,
        [] => {
            let side = (set.pixels as f64).sqrt() as usize;
            let shape = if side * side == set.pixels {
                format!("{side}, {side}")
            } else {
                set.pixels.to_string()
            };
            return Err(DataError::NoCandidate {
                file,
                what: what_images,
                vars: var_names(data),
                suggestion: format!("data x : Binary[{shape}]"),
            });
        }
        _ => {
            return Err(DataError::AmbiguousBinding {
                file,
                what: what_images,
                candidates: image_vars.iter().map(|&i| data[i].name.clone()).collect(),
            })
        }
    };
    let label_var = match label_vars.as_slice() {
        [] => None,
        [v] => Some(*v),
        _ => {
            return Err(DataError::AmbiguousBinding {
                file,
                what: "labels 0..9".into(),
                candidates: label_vars.iter().map(|&i| data[i].name.clone()).collect(),
            })
        }
    };
    if let Some(other) = (0..data.len()).find(|&i| i != image_var && Some(i) != label_var) {
        return Err(DataError::UnboundVariable {
            var: data[other].name.clone(),
            file,
            provides: format!(
                "images (to a variable of {} values) and labels (to a Cat(10) variable)",
                set.pixels
            ),
        });
    }
    let split = |s: super::builtin::ImageSplit| {
        let n = s.labels.len();
        let mut bound = vec![Bound {
            var: image_var,
            array: s.images,
            file: s.images_file,
        }];
        if let Some(v) = label_var {
            bound.push(Bound {
                var: v,
                array: RawArray {
                    shape: vec![n],
                    data: s.labels.clone(),
                },
                file: s.labels_file,
            });
        }
        (bound, s.labels)
    };
    let (train, labels_train) = split(set.train);
    let (test, labels_test) = match set.test.map(split) {
        Some((b, l)) => (Some(b), Some(l)),
        None => (None, None),
    };
    Ok(Binding {
        train,
        test,
        labels_train: Some(labels_train),
        labels_test,
    })
}

/// A `.npz` / `.safetensors` file: one array per variable, named after it; `NAME_test`
/// arrays, for all variables or none, form the test split. An array named `labels`
/// (with `labels_test`) that no variable claims is kept as evaluation labels.
pub fn bind_named(
    data: &[DataDef],
    file: &str,
    mut arrays: Vec<(String, RawArray)>,
) -> Result<Binding, DataError> {
    if data.is_empty() {
        return Err(DataError::NoDataVariables { file: file.into() });
    }
    let present: Vec<String> = arrays.iter().map(|(n, _)| n.clone()).collect();
    let mut take = |name: &str| -> Option<RawArray> {
        let at = arrays.iter().position(|(n, _)| n == name)?;
        Some(arrays.swap_remove(at).1)
    };
    let mut train = Vec::new();
    let mut test = Vec::new();
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for (id, d) in data.iter().enumerate() {
        let Some(array) = take(&d.name) else {
            return Err(DataError::MissingArray {
                var: d.name.clone(),
                file: file.into(),
                present,
            });
        };
        train.push(Bound {
            var: id,
            array,
            file: file.into(),
        });
        match take(&format!("{}_test", d.name)) {
            Some(array) => {
                with.push(d.name.clone());
                test.push(Bound {
                    var: id,
                    array,
                    file: format!("{file} (array \"{}_test\")", d.name),
                });
            }
            None => without.push(d.name.clone()),
        }
    }
    if !with.is_empty() && !without.is_empty() {
        return Err(DataError::PartialTestSplit {
            file: file.into(),
            with,
            without,
        });
    }
    let labels_train = take("labels").map(|a| a.data);
    let labels_test = take("labels_test").map(|a| a.data);
    Ok(Binding {
        train,
        test: if with.is_empty() { None } else { Some(test) },
        labels_train,
        labels_test,
    })
}

/// A single-array file (`.npy`, `.idx`, `.csv`): its array goes to the one non-`given`
/// variable, and there may be no `given` variable to fill.
pub fn bind_single(data: &[DataDef], file: &str, array: RawArray) -> Result<Binding, DataError> {
    let candidates: Vec<DataId> = (0..data.len())
        .filter(|&i| data[i].role != DataRole::Given)
        .collect();
    let given: Vec<String> = data
        .iter()
        .filter(|d| d.role == DataRole::Given)
        .map(|d| d.name.clone())
        .collect();
    let var = match candidates.as_slice() {
        [v] => *v,
        [] if given.is_empty() => return Err(DataError::NoDataVariables { file: file.into() }),
        [] => {
            return Err(DataError::SingleArrayUnbound {
                file: file.into(),
                vars: given,
            })
        }
        _ => {
            return Err(DataError::SingleArrayAmbiguous {
                file: file.into(),
                candidates: candidates.iter().map(|&i| data[i].name.clone()).collect(),
            })
        }
    };
    if !given.is_empty() {
        return Err(DataError::SingleArrayUnbound {
            file: file.into(),
            vars: given,
        });
    }
    Ok(Binding {
        train: vec![Bound {
            var,
            array,
            file: file.into(),
        }],
        test: None,
        labels_train: None,
        labels_test: None,
    })
}

/// Check one variable's array against its declaration and turn it into a host array of
/// the declared shape (example axis first). `Cat(K)` values become class indices; an
/// array of one-hot rows is accepted for them too.
pub fn validate(def: &DataDef, b: Bound) -> Result<HostArray, DataError> {
    let Bound { array, file, .. } = b;
    let var = &def.name;
    let Some((&n, rest)) = array.shape.split_first() else {
        return Err(DataError::NoExamples {
            var: var.clone(),
            file,
        });
    };
    let per = def.ty.numel();
    let found: usize = rest.iter().product();
    let mismatch = || DataError::ShapeMismatch {
        var: var.clone(),
        file: file.clone(),
        declared: def.ty.shape.clone(),
        found: rest.to_vec(),
    };
    let mut values = array.data;
    if found != per {
        match def.ty.domain {
            // One-hot rows for a Cat(K) variable: turned into class indices below.
            Domain::Cat(k) if k > 1 && found == per * k => {
                values =
                    one_hot_to_index(&values, k).map_err(|(at, v)| DataError::OutOfDomain {
                        var: var.clone(),
                        file: file.clone(),
                        example: at / found,
                        domain: def.ty.domain,
                        value: v,
                    })?;
            }
            _ => return Err(mismatch()),
        }
    }
    check_values(def, &file, &values, per)?;
    let mut shape = vec![n];
    shape.extend_from_slice(&def.ty.shape);
    Ok(HostArray {
        shape,
        data: values,
    })
}

/// One-hot groups of `k` to indices; the first bad value's position and value otherwise.
fn one_hot_to_index(values: &[f32], k: usize) -> Result<Vec<f32>, (usize, f32)> {
    let mut out = Vec::with_capacity(values.len() / k);
    for (g, group) in values.chunks_exact(k).enumerate() {
        let mut hot = None;
        for (j, &v) in group.iter().enumerate() {
            if v == 1.0 && hot.is_none() {
                hot = Some(j);
            } else if v != 0.0 {
                return Err((g * k + j, v));
            }
        }
        match hot {
            Some(j) => out.push(j as f32),
            None => return Err((g * k, 0.0)),
        }
    }
    Ok(out)
}

/// Every value finite and inside the declared domain; `per` values per example.
fn check_values(def: &DataDef, file: &str, values: &[f32], per: usize) -> Result<(), DataError> {
    let per = per.max(1);
    let domain = def.ty.domain;
    for (i, &v) in values.iter().enumerate() {
        if !v.is_finite() {
            return Err(DataError::NonFinite {
                var: def.name.clone(),
                file: file.into(),
                example: i / per,
                value: v,
            });
        }
        let ok = match domain {
            Domain::Real | Domain::Unknown => true,
            Domain::Binary | Domain::Unit => (0.0..=1.0).contains(&v),
            Domain::Positive => v > 0.0,
            Domain::Count => v >= 0.0 && v.fract() == 0.0,
            Domain::Cat(k) => v >= 0.0 && v.fract() == 0.0 && (v as usize) < k,
            Domain::Simplex => v >= 0.0,
        };
        if !ok {
            return Err(DataError::OutOfDomain {
                var: def.name.clone(),
                file: file.into(),
                example: i / per,
                domain,
                value: v,
            });
        }
    }
    if domain == Domain::Simplex {
        let row = def.ty.shape.last().copied().unwrap_or(1).max(1);
        for (r, chunk) in values.chunks(row).enumerate() {
            let sum: f64 = chunk.iter().map(|&v| v as f64).sum();
            if (sum - 1.0).abs() > 1e-4 {
                return Err(DataError::SimplexSum {
                    var: def.name.clone(),
                    file: file.into(),
                    example: r * row / per,
                    sum: sum as f32,
                });
            }
        }
    }
    Ok(())
}

/// Evaluation labels: whole numbers, one per example.
pub fn check_labels(labels: &[f32], n: usize, file: &str) -> Result<Vec<u32>, DataError> {
    if labels.len() != n {
        return Err(DataError::ExampleCounts {
            file: file.into(),
            first: ("examples".into(), n),
            other: ("labels".into(), labels.len()),
        });
    }
    labels
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u32::MAX as f32 {
                Ok(v as u32)
            } else {
                Err(DataError::OutOfDomain {
                    var: "labels".into(),
                    file: file.into(),
                    example: i,
                    domain: Domain::Count,
                    value: v,
                })
            }
        })
        .collect()
}
