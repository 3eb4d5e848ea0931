//! The member distributions of a `meta` family (LANGUAGE.md section 9), built from a loaded
//! dataset before training, and the minibatches drawn from one member: its examples, with
//! the member's image transform applied before binarization, and for every example the
//! declared context sets, drawn from the same member's split.
//!
//! - `rotate(DEGREES)`, `scale(FACTORS)`, `shear(DEGREES)`: member k is the whole dataset
//!   with every image transformed by the k-th value (bilinear resampling, zero outside
//!   the image, about the image's centre): `rotate(a)` turns the image a degrees
//!   counter-clockwise as displayed; `scale(s)` shows the central `s·H × s·W` region of
//!   the image at the full size (s < 1 zooms in, as MetaVAE's resized crop does);
//!   `shear(a)` moves each row sideways by `tan(a)` times its distance from the centre
//!   row. The transformed variables are the image-shaped data variables (`[C, H, W]`,
//!   `[H, W]`, or `[D]` with D a square).
//! - `classes()`: member k is the examples whose label is k (the dataset's labels).
//!
//! A context set `set S : T size N` draws its N examples from the data variable of type
//! T, from the same member and split as the example, never the example itself, without
//! repetition within a set.

use super::{DataError, Split};
use crate::ir::{DataId, Domain, Family, Program, Type};
use crate::rng::Rng;

/// An image transform of a member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transform {
    Rotate(f64),
    Scale(f64),
    Shear(f64),
}

/// One member distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// For people: `rotate(-160)`, `class 3`.
    pub name: String,
    pub transform: Option<Transform>,
    /// Its examples, as indices of the dataset's training and test splits.
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// A dataset cut into the members of its `meta` family.
#[derive(Clone, Debug, PartialEq)]
pub struct MetaData {
    pub members: Vec<Member>,
    pub train_members: Vec<usize>,
    pub test_members: Vec<usize>,
    /// The data variables a transform applies to, with their image shape `[C, H, W]`.
    pub images: Vec<(DataId, [usize; 3])>,
    /// Per `SetId`: the data variable its examples come from, and its size.
    pub sets: Vec<(DataId, usize)>,
}

/// Which split of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Train,
    Test,
}

impl Member {
    pub fn examples(&self, which: Which) -> &[usize] {
        match which {
            Which::Train => &self.train,
            Which::Test => &self.test,
        }
    }
}

/// The image shape `[C, H, W]` of a data type, if it is image-shaped.
pub fn image_shape(ty: &Type) -> Option<[usize; 3]> {
    if matches!(ty.domain, Domain::Cat(_)) {
        return None;
    }
    match *ty.shape.as_slice() {
        [c, h, w] => Some([c, h, w]),
        [h, w] => Some([1, h, w]),
        [d] => {
            let s = (d as f64).sqrt().round() as usize;
            (s * s == d && s > 1).then_some([1, s, s])
        }
        _ => None,
    }
}

/// The members of `program`'s `meta` family over `train` and `test`, checked: `None`
/// without a `meta` block.
pub fn build(
    program: &Program,
    train: &Split,
    test: &Split,
) -> Result<Option<MetaData>, DataError> {
    let Some(meta) = &program.meta else {
        return Ok(None);
    };
    let all_train: Vec<usize> = (0..train.n).collect();
    let all_test: Vec<usize> = (0..test.n).collect();
    let transformed = |name: String, t: Transform| Member {
        name,
        transform: Some(t),
        train: all_train.clone(),
        test: all_test.clone(),
    };
    let fmt = |v: f64| format!("{}", (v * 1e6).round() / 1e6);
    let members: Vec<Member> = match &meta.family {
        Family::Rotate(v) => v
            .iter()
            .map(|&a| transformed(format!("rotate({})", fmt(a)), Transform::Rotate(a)))
            .collect(),
        Family::Scale(v) => v
            .iter()
            .map(|&s| transformed(format!("scale({})", fmt(s)), Transform::Scale(s)))
            .collect(),
        Family::Shear(v) => v
            .iter()
            .map(|&a| transformed(format!("shear({})", fmt(a)), Transform::Shear(a)))
            .collect(),
        Family::Classes => {
            let (Some(ltr), Some(lte)) = (&train.labels, &test.labels) else {
                return Err(DataError::MetaNoLabels);
            };
            let k = ltr
                .iter()
                .chain(lte)
                .copied()
                .max()
                .map_or(0, |m| m as usize + 1);
            (0..k)
                .map(|c| Member {
                    name: format!("class {c}"),
                    transform: None,
                    train: (0..train.n).filter(|&i| ltr[i] as usize == c).collect(),
                    test: (0..test.n).filter(|&i| lte[i] as usize == c).collect(),
                })
                .collect()
        }
        Family::Datasets(_) => {
            return Err(DataError::MetaUnsupported {
                what: "a `datasets(...)` family".into(),
            })
        }
    };
    let n = members.len();
    let resolve = |m: &crate::ir::Members, which: &str| -> Result<Vec<usize>, DataError> {
        if let crate::ir::Members::List(v) = m {
            if let Some(&bad) = v.iter().find(|&&i| i >= n) {
                return Err(DataError::MetaNoMember {
                    which: which.into(),
                    member: bad,
                    members: n,
                });
            }
        }
        Ok(m.resolve(n))
    };
    let train_members = resolve(&meta.train, "train")?;
    let test_members = resolve(&meta.test, "test")?;
    if train_members.is_empty() {
        return Err(DataError::MetaNoMember {
            which: "train".into(),
            member: 0,
            members: 0,
        });
    }
    let mut images = Vec::new();
    if members.iter().any(|m| m.transform.is_some()) {
        for (id, def) in program.data.iter().enumerate() {
            if let Some(shape) = image_shape(&def.ty) {
                images.push((id, shape));
            }
        }
        if images.is_empty() {
            return Err(DataError::MetaNotImage {
                family: meta_family_name(&meta.family).into(),
            });
        }
    }
    let mut sets = Vec::new();
    for set in &program.sets {
        let same: Vec<DataId> = program
            .data
            .iter()
            .enumerate()
            .filter(|(_, d)| d.ty == set.ty)
            .map(|(i, _)| i)
            .collect();
        let [id] = same.as_slice() else {
            return Err(DataError::MetaSetUnbound {
                set: set.name.clone(),
                ty: format!("{:?}{:?}", set.ty.domain, set.ty.shape),
                candidates: same.iter().map(|&i| program.data[i].name.clone()).collect(),
            });
        };
        sets.push((*id, set.size));
    }
    // Every member in use needs more examples than a set holds, in both splits.
    let need = sets.iter().map(|s| s.1).max().unwrap_or(0) + 1;
    for &k in train_members.iter().chain(&test_members) {
        let m = &members[k];
        for (which, have) in [("training", m.train.len()), ("test", m.test.len())] {
            if have < need {
                return Err(DataError::MetaSmallMember {
                    member: m.name.clone(),
                    split: which.into(),
                    have,
                    need,
                });
            }
        }
    }
    Ok(Some(MetaData {
        members,
        train_members,
        test_members,
        images,
        sets,
    }))
}

fn meta_family_name(f: &Family) -> &'static str {
    match f {
        Family::Rotate(_) => "rotate",
        Family::Scale(_) => "scale",
        Family::Shear(_) => "shear",
        Family::Classes => "classes",
        Family::Datasets(_) => "datasets",
    }
}

impl MetaData {
    /// The image shape of data variable `id` when a transform applies to it.
    pub fn image_of(&self, id: DataId) -> Option<[usize; 3]> {
        self.images.iter().find(|(i, _)| *i == id).map(|(_, s)| *s)
    }

    /// For each of `queries` (examples of member `k`'s split), `size` other examples of
    /// the same member and split, without repetition: `queries.len() * size` indices.
    pub fn draw_set(
        &self,
        k: usize,
        which: Which,
        queries: &[usize],
        size: usize,
        rng: &mut Rng,
    ) -> Vec<usize> {
        let pool = self.members[k].examples(which);
        let mut out = Vec::with_capacity(queries.len() * size);
        if pool.is_empty() {
            return out;
        }
        // Too few examples for distinct sets (a split cut short by `--examples`): repeats
        // are allowed then.
        let distinct = pool.len() > size;
        for &q in queries {
            let start = out.len();
            // Rejection: sets are far smaller than members (`build` checks there are
            // enough), so this ends quickly.
            while out.len() - start < size {
                let u = rng.uniform_vec(1)[0] as f64;
                let i = pool[((u * pool.len() as f64) as usize).min(pool.len() - 1)];
                if !distinct || (i != q && !out[start..].contains(&i)) {
                    out.push(i);
                }
            }
        }
        out
    }
}

/// `img` (`[C, H, W]` values, row-major) under `t`: each output pixel reads the input by
/// bilinear interpolation at the point the transform maps it from, with zeros outside
/// the image.
pub fn transform_image(t: Transform, img: &[f32], shape: [usize; 3]) -> Vec<f32> {
    Resampler::new(t, shape).apply(img)
}

/// [`transform_image`]'s plan for one transform and image shape: per output pixel, the
/// fractions of its source point and the input offsets of its four neighbours (`None`
/// outside the image). Built once per member batch, so that the trigonometry and the
/// bounds are not redone for every pixel of every image.
pub struct Resampler {
    shape: [usize; 3],
    /// Per output pixel `y · W + x`: `(fy, fx, [top-left, top-right, bottom-left,
    /// bottom-right] offsets within a channel)`.
    plan: Vec<(f64, f64, [Option<usize>; 4])>,
}

impl Resampler {
    pub fn new(t: Transform, shape: [usize; 3]) -> Resampler {
        let [_, h, w] = shape;
        let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
        let (s, co) = match t {
            Transform::Rotate(deg) => deg.to_radians().sin_cos(),
            _ => (0.0, 1.0),
        };
        let shear = match t {
            Transform::Shear(deg) => deg.to_radians().tan(),
            _ => 0.0,
        };
        // The source point of output pixel (y, x).
        let source = |y: f64, x: f64| -> (f64, f64) {
            let (dy, dx) = (y - cy, x - cx);
            match t {
                Transform::Rotate(_) => (cy + s * dx + co * dy, cx + co * dx - s * dy),
                Transform::Scale(f) => (cy + dy * f, cx + dx * f),
                Transform::Shear(_) => (y, x - shear * dy),
            }
        };
        let at = |yy: f64, xx: f64| -> Option<usize> {
            if yy < 0.0 || xx < 0.0 || yy > (h - 1) as f64 || xx > (w - 1) as f64 {
                None
            } else {
                Some(yy as usize * w + xx as usize)
            }
        };
        let mut plan = Vec::with_capacity(h * w);
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = source(y as f64, x as f64);
                let (y0, x0) = (sy.floor(), sx.floor());
                let corners = [
                    at(y0, x0),
                    at(y0, x0 + 1.0),
                    at(y0 + 1.0, x0),
                    at(y0 + 1.0, x0 + 1.0),
                ];
                plan.push((sy - y0, sx - x0, corners));
            }
        }
        Resampler { shape, plan }
    }

    /// The transformed image.
    pub fn apply(&self, img: &[f32]) -> Vec<f32> {
        let [c, h, w] = self.shape;
        let mut out = vec![0f32; c * h * w];
        for ch in 0..c {
            let plane = &img[ch * h * w..(ch + 1) * h * w];
            let px = |i: Option<usize>| i.map_or(0.0, |i| plane[i] as f64);
            for (o, &(fy, fx, [a, b, cc, d])) in
                out[ch * h * w..(ch + 1) * h * w].iter_mut().zip(&self.plan)
            {
                let v = (1.0 - fy) * ((1.0 - fx) * px(a) + fx * px(b))
                    + fy * ((1.0 - fx) * px(cc) + fx * px(d));
                *o = v as f32;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A quarter turn moves the pixel below the centre to its right (counter-clockwise
    /// as displayed); a full turn, scale 1 and shear 0 change nothing.
    #[test]
    fn the_transforms_move_pixels_as_documented() {
        let mut img = vec![0f32; 25];
        img[4 * 5 + 2] = 1.0;
        let r = transform_image(Transform::Rotate(90.0), &img, [1, 5, 5]);
        assert!((r[2 * 5 + 4] - 1.0).abs() < 1e-6, "{r:?}");
        for t in [
            Transform::Rotate(360.0),
            Transform::Scale(1.0),
            Transform::Shear(0.0),
        ] {
            let same = transform_image(t, &img, [1, 5, 5]);
            assert!(same.iter().zip(&img).all(|(a, b)| (a - b).abs() < 1e-6));
        }
    }
}
