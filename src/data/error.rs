//! Everything that can go wrong between a `train.dataset` value and validated arrays:
//! one variant per failure, each naming the file and, where it applies, the data
//! variable and the first bad example.

use crate::ir::Domain;
use std::fmt;

/// A failure to find, read, parse, bind or validate a dataset. `file` is always the file
/// (or directory) as the user would recognise it; `var` a data variable of the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum DataError {
    /// A file could not be read (missing, permissions, ...).
    Unreadable { file: String, reason: String },
    /// `"fashion-mnist"` was asked for but Debian's package is not installed.
    FashionMnistMissing { dir: String, missing: String },
    /// `"mnist"` was asked for but `VIC_DATA` is not set.
    MnistNotConfigured,
    /// `"mnist"`: a file is missing from the `VIC_DATA` directory.
    MnistMissing { dir: String, missing: String },
    /// A built-in name this version does not know.
    UnknownBuiltin { name: String },
    /// A dataset path whose extension names no format vic reads.
    UnsupportedExtension { file: String },
    /// The file does not start with its format's magic bytes.
    BadMagic { file: String, format: &'static str },
    /// The file ends before the data its header announces.
    Truncated {
        file: String,
        format: &'static str,
        needed: u64,
        have: u64,
    },
    /// Any other malformation (a bad zip, an unparsable header, bad gzip data, ...).
    Corrupt {
        file: String,
        format: &'static str,
        detail: String,
    },
    /// An element type vic cannot read (complex numbers, strings, ...).
    UnsupportedDtype {
        file: String,
        array: String,
        dtype: String,
    },
    /// A CSV cell that is not a number (after the optional header row).
    CsvNotNumeric {
        file: String,
        line: usize,
        column: usize,
        text: String,
    },
    /// A CSV row with a different number of cells from the first data row.
    CsvRagged {
        file: String,
        line: usize,
        expected: usize,
        found: usize,
    },
    /// The spec declares no data variable to bind the dataset to.
    NoDataVariables { file: String },
    /// A `.npz` / `.safetensors` file has no array named after a data variable.
    MissingArray {
        var: String,
        file: String,
        present: Vec<String>,
    },
    /// A single-array file (`.npy`, `.idx`, `.csv`) and more than one variable to fill.
    SingleArrayAmbiguous {
        file: String,
        candidates: Vec<String>,
    },
    /// A single-array file cannot also provide `given` data.
    SingleArrayUnbound { file: String, vars: Vec<String> },
    /// A built-in dataset found no data variable for its images or labels.
    NoCandidate {
        file: String,
        what: String,
        vars: Vec<String>,
        /// A declaration that would fit, for the hint.
        suggestion: String,
    },
    /// A built-in dataset found several data variables for its images or labels.
    AmbiguousBinding {
        file: String,
        what: String,
        candidates: Vec<String>,
    },
    /// A data variable a built-in dataset cannot provide.
    UnboundVariable {
        var: String,
        file: String,
        provides: String,
    },
    /// The array's per-example shape matches neither the declared shape nor its size.
    ShapeMismatch {
        var: String,
        file: String,
        declared: Vec<usize>,
        found: Vec<usize>,
    },
    /// An array with no example axis (a 0-d array) or no examples.
    NoExamples { var: String, file: String },
    /// Variables (or a variable and its test array) with different example counts.
    ExampleCounts {
        file: String,
        first: (String, usize),
        other: (String, usize),
    },
    /// Some variables have a `NAME_test` array and others do not.
    PartialTestSplit {
        file: String,
        with: Vec<String>,
        without: Vec<String>,
    },
    /// NaN or infinity.
    NonFinite {
        var: String,
        file: String,
        example: usize,
        value: f32,
    },
    /// A value outside the variable's declared domain.
    OutOfDomain {
        var: String,
        file: String,
        example: usize,
        domain: Domain,
        value: f32,
    },
    /// A `classes()` family on a dataset without labels.
    MetaNoLabels,
    /// A family this release does not build.
    MetaUnsupported { what: String },
    /// `train` / `test` names a member the family does not have (or `train` none).
    MetaNoMember {
        which: String,
        member: usize,
        members: usize,
    },
    /// An image transform family and no image-shaped data variable.
    MetaNotImage { family: String },
    /// A context set whose type matches no single data variable.
    MetaSetUnbound {
        set: String,
        ty: String,
        candidates: Vec<String>,
    },
    /// A member with too few examples for its context sets.
    MetaSmallMember {
        member: String,
        split: String,
        have: usize,
        need: usize,
    },
    /// A `Simplex` row that does not sum to 1.
    SimplexSum {
        var: String,
        file: String,
        example: usize,
        sum: f32,
    },
    /// Too few examples to hold out a test split.
    TooFewExamples { file: String, n: usize, split: f64 },
}

fn shape_str(s: &[usize]) -> String {
    let d: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", d.join(", "))
}

fn names(v: &[String]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn domain_rule(d: Domain) -> String {
    match d {
        Domain::Binary | Domain::Unit => "values in [0, 1]".into(),
        Domain::Positive => "values > 0".into(),
        Domain::Count => "non-negative whole numbers".into(),
        Domain::Cat(k) => format!(
            "class indices, whole numbers from 0 to {}",
            k.saturating_sub(1)
        ),
        Domain::Simplex => "non-negative values whose last axis sums to 1".into(),
        Domain::Real | Domain::Unknown => "finite values".into(),
    }
}

impl DataError {
    /// A short title, as the first line of a diagnostic.
    pub fn title(&self) -> &'static str {
        match self {
            DataError::Unreadable { .. } => "cannot read dataset file",
            DataError::FashionMnistMissing { .. } => "fashion-mnist is not installed",
            DataError::MnistNotConfigured => "mnist needs VIC_DATA",
            DataError::MnistMissing { .. } => "mnist file missing",
            DataError::UnknownBuiltin { .. } => "unknown built-in dataset",
            DataError::UnsupportedExtension { .. } => "unsupported dataset format",
            DataError::BadMagic { .. } => "not a valid file of its format",
            DataError::Truncated { .. } => "truncated dataset file",
            DataError::Corrupt { .. } => "corrupt dataset file",
            DataError::UnsupportedDtype { .. } => "unsupported element type",
            DataError::CsvNotNumeric { .. } => "non-numeric CSV cell",
            DataError::CsvRagged { .. } => "ragged CSV row",
            DataError::NoDataVariables { .. } => "no data variable to bind",
            DataError::MissingArray { .. } => "missing array",
            DataError::SingleArrayAmbiguous { .. } => "ambiguous single-array file",
            DataError::SingleArrayUnbound { .. } => "given data not in a single-array file",
            DataError::NoCandidate { .. } => "no data variable to bind",
            DataError::AmbiguousBinding { .. } => "ambiguous data binding",
            DataError::UnboundVariable { .. } => "data variable without data",
            DataError::ShapeMismatch { .. } => "data shape mismatch",
            DataError::NoExamples { .. } => "no examples",
            DataError::ExampleCounts { .. } => "example counts differ",
            DataError::PartialTestSplit { .. } => "incomplete test split",
            DataError::NonFinite { .. } => "non-finite data value",
            DataError::OutOfDomain { .. } => "data value outside its domain",
            DataError::SimplexSum { .. } => "simplex row does not sum to 1",
            DataError::TooFewExamples { .. } => "too few examples to split",
            DataError::MetaNoLabels => "`classes()` needs labels",
            DataError::MetaUnsupported { .. } => "meta family not supported",
            DataError::MetaNoMember { .. } => "no such member",
            DataError::MetaNotImage { .. } => "no image to transform",
            DataError::MetaSetUnbound { .. } => "context set without data",
            DataError::MetaSmallMember { .. } => "member too small for its sets",
        }
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            DataError::FashionMnistMissing { .. } => {
                "install it with `apt-get install dataset-fashion-mnist`, or use `dataset = \"digits\"`".into()
            }
            DataError::MnistNotConfigured => "set VIC_DATA to a directory holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz".into(),
            DataError::MnistMissing { .. } => "the four MNIST IDX files (gzipped or not) must sit directly in the VIC_DATA directory".into(),
            DataError::UnknownBuiltin { .. } => "built-in datasets are \"digits\", \"fashion-mnist\" and \"mnist\"".into(),
            DataError::UnsupportedExtension { .. } => "use a .npz, .npy, .csv, .idx, .idx.gz or .safetensors file".into(),
            DataError::UnsupportedDtype { .. } => "save the array as float32, float64 or an integer type".into(),
            DataError::CsvNotNumeric { .. } => "only the first row may be a header; every other cell must be a number".into(),
            DataError::MissingArray { var, .. } => format!("save the values of `{var}` under the name \"{var}\" (example axis first)"),
            DataError::SingleArrayAmbiguous { .. } => "use a .npz or .safetensors file with one array per data variable".into(),
            DataError::SingleArrayUnbound { .. } => "use a .npz or .safetensors file with one array per data variable".into(),
            DataError::NoCandidate { suggestion, .. } => format!("declare one, e.g. `{suggestion}`"),
            DataError::AmbiguousBinding { .. } => "keep one such variable, or use a .npz file whose arrays are named after the variables".into(),
            DataError::UnboundVariable { .. } => "use a .npz or .safetensors file that holds an array for this variable".into(),
            DataError::ShapeMismatch { var, declared, .. } => format!(
                "each example of `{var}` needs {} values (shape {})",
                declared.iter().product::<usize>(),
                shape_str(declared)
            ),
            DataError::PartialTestSplit { .. } => "give every variable a NAME_test array, or none (then `train.split` holds out a fraction)".into(),
            DataError::OutOfDomain { domain: Domain::Binary | Domain::Unit, .. } => {
                "scale the data to [0, 1], or declare the variable `Real`".into()
            }
            DataError::OutOfDomain { domain: Domain::Cat(k), .. } => format!(
                "store class indices 0..{} (or one-hot rows of {k}), or declare more classes",
                k.saturating_sub(1)
            ),
            DataError::OutOfDomain { .. } => "fix the data, or declare a wider domain".into(),
            DataError::TooFewExamples { .. } => "provide NAME_test arrays, or more examples".into(),
            DataError::MetaNoLabels => "use a dataset with labels (the built-in image sets have them; a .npz file needs arrays \"labels\" and \"labels_test\"), or another family".into(),
            DataError::MetaNoMember { members, .. } => format!("members are numbered 0..{}", members.saturating_sub(1)),
            DataError::MetaNotImage { .. } => "declare the image variable with its image shape (`Binary[1, 28, 28]`) or a square size (`Binary[784]`)".into(),
            DataError::MetaSetUnbound { ty, candidates, .. } if candidates.is_empty() => format!("declare a data variable of type {ty}: a set's examples are that variable's"),
            DataError::MetaSetUnbound { .. } => "give the set a type that exactly one data variable has".into(),
            DataError::MetaSmallMember { .. } => "use smaller sets, or a family whose members have more examples".into(),
            _ => return None,
        })
    }
}

impl DataError {
    /// The whole diagnostic as the CLI prints it: title, message, and hint if any.
    ///
    /// ```text
    /// error: missing array
    ///   data variable `y` has no array "y" in data/x.npz (arrays present: `x`)
    ///   hint: save the values of `y` under the name "y" (example axis first)
    /// ```
    pub fn report(&self) -> String {
        let mut s = format!("error: {}\n  {self}", self.title());
        if let Some(h) = self.hint() {
            s.push_str(&format!("\n  hint: {h}"));
        }
        s
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Unreadable { file, reason } => write!(f, "cannot read {file}: {reason}"),
            DataError::FashionMnistMissing { dir, missing } => write!(
                f,
                "the built-in dataset \"fashion-mnist\" is read from {dir}, but {missing} is not there"
            ),
            DataError::MnistNotConfigured => write!(
                f,
                "the built-in dataset \"mnist\" is read from the directory named by VIC_DATA, which is not set"
            ),
            DataError::MnistMissing { dir, missing } => write!(
                f,
                "the built-in dataset \"mnist\" needs {missing} in {dir} (VIC_DATA), and it is not there"
            ),
            DataError::UnknownBuiltin { name } => write!(f, "there is no built-in dataset \"{name}\""),
            DataError::UnsupportedExtension { file } => {
                write!(f, "{file}: vic cannot tell this file's format from its name")
            }
            DataError::BadMagic { file, format } => {
                write!(f, "{file} is not a {format} file (its first bytes are wrong)")
            }
            DataError::Truncated {
                file,
                format,
                needed,
                have,
            } => write!(
                f,
                "{file} is truncated: its {format} header announces {needed} bytes of data, but only {have} follow"
            ),
            DataError::Corrupt {
                file,
                format,
                detail,
            } => write!(f, "{file} is not a valid {format} file: {detail}"),
            DataError::UnsupportedDtype { file, array, dtype } => {
                write!(f, "array \"{array}\" in {file} has element type {dtype}, which vic cannot read")
            }
            DataError::CsvNotNumeric {
                file,
                line,
                column,
                text,
            } => write!(f, "{file}:{line}: column {column} is \"{text}\", not a number"),
            DataError::CsvRagged {
                file,
                line,
                expected,
                found,
            } => write!(f, "{file}:{line}: {found} columns, where the first data row has {expected}"),
            DataError::NoDataVariables { file } => {
                write!(f, "the spec declares no data variable for {file} to fill")
            }
            DataError::MissingArray { var, file, present } => write!(
                f,
                "data variable `{var}` has no array \"{var}\" in {file} (arrays present: {})",
                names(present)
            ),
            DataError::SingleArrayAmbiguous { file, candidates } => write!(
                f,
                "{file} holds a single array, and the spec has several data variables it could fill: {}",
                names(candidates)
            ),
            DataError::SingleArrayUnbound { file, vars } => write!(
                f,
                "{file} holds a single array, so `given` data variable(s) {} get no values",
                names(vars)
            ),
            DataError::NoCandidate {
                file, what, vars, ..
            } => write!(
                f,
                "{file} provides {what}, and no data variable fits (data variables: {})",
                names(vars)
            ),
            DataError::AmbiguousBinding {
                file,
                what,
                candidates,
            } => write!(
                f,
                "{file} provides {what}, and several data variables fit: {}",
                names(candidates)
            ),
            DataError::UnboundVariable { var, file, provides } => write!(
                f,
                "data variable `{var}` gets no values: {file} provides only {provides}"
            ),
            DataError::ShapeMismatch {
                var,
                file,
                declared,
                found,
            } => write!(
                f,
                "data variable `{var}` is declared with shape {} per example, but its array in {file} has shape {} per example",
                shape_str(declared),
                shape_str(found)
            ),
            DataError::NoExamples { var, file } => {
                write!(f, "the array for data variable `{var}` in {file} has no examples")
            }
            DataError::ExampleCounts { file, first, other } => write!(
                f,
                "in {file}, \"{}\" has {} examples but \"{}\" has {}",
                first.0, first.1, other.0, other.1
            ),
            DataError::PartialTestSplit { file, with, without } => write!(
                f,
                "in {file}, {} have a NAME_test array but {} do not",
                names(with),
                names(without)
            ),
            DataError::NonFinite {
                var,
                file,
                example,
                value,
            } => write!(
                f,
                "data variable `{var}` has the value {value} in example {example} of {file}"
            ),
            DataError::OutOfDomain {
                var,
                file,
                example,
                domain,
                value,
            } => write!(
                f,
                "data variable `{var}` is declared {}, which needs {}, but example {example} of {file} holds {value}",
                domain.name(),
                domain_rule(*domain)
            ),
            DataError::SimplexSum {
                var,
                file,
                example,
                sum,
            } => write!(
                f,
                "data variable `{var}` is declared Simplex, but a row of example {example} of {file} sums to {sum}, not 1"
            ),
            DataError::TooFewExamples { file, n, split } => write!(
                f,
                "{file} has {n} example(s): too few to hold out a fraction {split} as the test split"
            ),
            DataError::MetaNoLabels => write!(
                f,
                "the `meta` family `classes()` makes one member per label, but the dataset has no labels"
            ),
            DataError::MetaUnsupported { what } => {
                write!(f, "{what} is not built by this release of vic")
            }
            DataError::MetaNoMember { which, member, members } if *members == 0 => write!(
                f,
                "`{which}` selects no member of the `meta` family (member {member} and up do not exist)"
            ),
            DataError::MetaNoMember { which, member, members } => write!(
                f,
                "`{which}` names member {member}, but the `meta` family has {members} members on this dataset"
            ),
            DataError::MetaNotImage { family } => write!(
                f,
                "the `meta` family `{family}` transforms images, but no data variable has an image shape"
            ),
            DataError::MetaSetUnbound { set, ty, candidates } if candidates.is_empty() => write!(
                f,
                "context set `{set}` holds examples of type {ty}, but no data variable has that type"
            ),
            DataError::MetaSetUnbound { set, ty, candidates } => write!(
                f,
                "context set `{set}` holds examples of type {ty}, and several data variables have it: {}",
                names(candidates)
            ),
            DataError::MetaSmallMember { member, split, have, need } => write!(
                f,
                "member {member} has {have} {split} example(s), but its context sets need at least {need} (the set size plus the example itself)"
            ),
        }
    }
}

impl std::error::Error for DataError {}
