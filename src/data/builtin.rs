//! The built-in image datasets: `"digits"` (embedded in the binary), `"fashion-mnist"`
//! (Debian's `dataset-fashion-mnist` package) and `"mnist"` (IDX files under `VIC_DATA`).

use super::error::DataError;
use super::formats::{gunzip, parse_csv, parse_idx, RawArray};
use super::{DataEnv, Fs};
use std::path::{Path, PathBuf};

/// The 8x8 digits (UCI, via scikit-learn; see data/README.md): 1797 lines of 64 pixels
/// in 0..16 and a label.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Where Debian's `dataset-fashion-mnist` package installs its files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// One split of an image dataset: `[n, pixels]` images scaled to [0, 1] and `n` labels.
#[derive(Clone, Debug)]
pub struct ImageSplit {
    pub images: RawArray,
    pub labels: Vec<f32>,
    /// The files these came from, for error messages.
    pub images_file: String,
    pub labels_file: String,
}

/// A built-in dataset, read and scaled, before binding to the spec's variables.
#[derive(Clone, Debug)]
pub struct ImageSet {
    /// A human description: `digits (embedded)`, `fashion-mnist (/usr/share/...)`.
    pub source: String,
    /// Pixels per image (64 or 784).
    pub pixels: usize,
    pub train: ImageSplit,
    /// `None` when the dataset has no test split of its own (digits).
    pub test: Option<ImageSplit>,
}

/// Read a built-in dataset by name.
pub fn load_builtin(name: &str, env: &DataEnv, fs: &dyn Fs) -> Result<ImageSet, DataError> {
    match name {
        "digits" => digits(),
        "fashion-mnist" => {
            let dir = Path::new(FASHION_MNIST_DIR);
            let missing = |f: &str| DataError::FashionMnistMissing {
                dir: FASHION_MNIST_DIR.into(),
                missing: f.into(),
            };
            idx_set("fashion-mnist", dir, fs, &missing)
        }
        "mnist" => {
            let Some(dir) = &env.vic_data else {
                return Err(DataError::MnistNotConfigured);
            };
            let missing = |f: &str| DataError::MnistMissing {
                dir: dir.display().to_string(),
                missing: f.into(),
            };
            idx_set("mnist", dir, fs, &missing)
        }
        _ => Err(DataError::UnknownBuiltin { name: name.into() }),
    }
}

fn digits() -> Result<ImageSet, DataError> {
    let file = "digits (embedded)";
    let table = parse_csv(&gunzip(DIGITS_CSV_GZ, file)?, file)?;
    let (n, cols) = (table.shape[0], table.shape[1]);
    if cols != 65 {
        return Err(DataError::Corrupt {
            file: file.into(),
            format: "CSV",
            detail: format!("{cols} columns where 65 were expected"),
        });
    }
    let mut images = Vec::with_capacity(n * 64);
    let mut labels = Vec::with_capacity(n);
    for row in table.data.chunks_exact(65) {
        images.extend(row[..64].iter().map(|&p| p / 16.0));
        labels.push(row[64]);
    }
    Ok(ImageSet {
        source: file.into(),
        pixels: 64,
        train: ImageSplit {
            images: RawArray {
                shape: vec![n, 64],
                data: images,
            },
            labels,
            images_file: file.into(),
            labels_file: file.into(),
        },
        test: None,
    })
}

/// Find `stem` in `dir`, gzipped or not (and the `train-images.idx3-ubyte` spelling).
fn find(dir: &Path, stem: &str, fs: &dyn Fs) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        format!("{stem}.gz"),
        stem.to_string(),
        format!("{dotted}.gz"),
        dotted,
    ]
    .into_iter()
    .map(|f| dir.join(f))
    .find(|p| fs.exists(p))
}

/// Read one IDX file through `fs`, gunzipping `.gz` files.
pub fn read_idx(path: &Path, fs: &dyn Fs) -> Result<RawArray, DataError> {
    let file = path.display().to_string();
    let bytes = fs.read(path).map_err(|reason| DataError::Unreadable {
        file: file.clone(),
        reason,
    })?;
    let bytes = if file.to_ascii_lowercase().ends_with(".gz") {
        gunzip(&bytes, &file)?
    } else {
        bytes
    };
    parse_idx(&bytes, &file)
}

fn idx_split(
    dir: &Path,
    prefix: &str,
    fs: &dyn Fs,
    missing: &dyn Fn(&str) -> DataError,
) -> Result<ImageSplit, DataError> {
    let images_stem = format!("{prefix}-images-idx3-ubyte");
    let labels_stem = format!("{prefix}-labels-idx1-ubyte");
    let images_path =
        find(dir, &images_stem, fs).ok_or_else(|| missing(&format!("{images_stem}.gz")))?;
    let labels_path =
        find(dir, &labels_stem, fs).ok_or_else(|| missing(&format!("{labels_stem}.gz")))?;
    let images_file = images_path.display().to_string();
    let labels_file = labels_path.display().to_string();
    let raw = read_idx(&images_path, fs)?;
    let labels = read_idx(&labels_path, fs)?;
    let n = raw.shape[0];
    if raw.shape.len() < 2 {
        return Err(DataError::Corrupt {
            file: images_file,
            format: "IDX",
            detail: "an image file needs at least two dimensions".into(),
        });
    }
    if labels.shape.len() != 1 {
        return Err(DataError::Corrupt {
            file: labels_file,
            format: "IDX",
            detail: format!("a label file has one dimension, not {}", labels.shape.len()),
        });
    }
    if labels.shape[0] != n {
        return Err(DataError::ExampleCounts {
            file: dir.display().to_string(),
            first: (images_file, n),
            other: (labels_file, labels.shape[0]),
        });
    }
    let pixels: usize = raw.shape[1..].iter().product();
    let mut data = raw.data;
    for p in &mut data {
        *p /= 255.0;
    }
    Ok(ImageSplit {
        images: RawArray {
            shape: vec![n, pixels],
            data,
        },
        labels: labels.data,
        images_file,
        labels_file,
    })
}

fn idx_set(
    name: &str,
    dir: &Path,
    fs: &dyn Fs,
    missing: &dyn Fn(&str) -> DataError,
) -> Result<ImageSet, DataError> {
    let train = idx_split(dir, "train", fs, missing)?;
    let test = idx_split(dir, "t10k", fs, missing)?;
    let pixels = train.images.shape[1];
    if test.images.shape[1] != pixels {
        return Err(DataError::Corrupt {
            file: test.images_file,
            format: "IDX",
            detail: format!(
                "its images have {} pixels, the training images {pixels}",
                test.images.shape[1]
            ),
        });
    }
    Ok(ImageSet {
        source: format!("{name} ({})", dir.display()),
        pixels,
        train,
        test: Some(test),
    })
}
