//! Tests of the data module: formats, binding, validation, splits and batches, on the
//! real built-in data and on synthetic files written by candle's and numpy's writers.
#![allow(clippy::disallowed_methods)]

use super::formats::{gunzip, parse_csv, parse_idx, parse_npy, parse_npz, parse_safetensors};
use super::*;
use crate::ir::{Binarize, Body, DataDef, Domain, Guide, TrainConfig, Type};
use crate::span::Span;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Write;

// ---------------------------------------------------------------------------------
// Helpers

#[derive(Default)]
struct MemFs(HashMap<PathBuf, Vec<u8>>);

impl MemFs {
    fn with(mut self, path: &str, bytes: Vec<u8>) -> MemFs {
        self.0.insert(PathBuf::from(path), bytes);
        self
    }
}

impl Fs for MemFs {
    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| "No such file or directory".to_string())
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }
}

fn var(name: &str, domain: Domain, shape: &[usize], role: DataRole) -> DataDef {
    DataDef {
        name: name.into(),
        ty: Type::new(domain, shape.to_vec()),
        role,
        span: Span::Artificial,
    }
}

fn obs(name: &str, domain: Domain, shape: &[usize]) -> DataDef {
    var(name, domain, shape, DataRole::Observed)
}

fn program(data: Vec<DataDef>) -> Program {
    let body = Body {
        stmts: vec![],
        locals: vec![],
        loops: vec![],
        span: Span::Artificial,
    };
    Program {
        consts: vec![],
        data,
        latents: vec![],
        params: vec![],
        nets: vec![],
        sets: vec![],
        model: body,
        guide: Guide::None,
        train: TrainConfig::default(),
        meta: None,
    }
}

fn env() -> DataEnv {
    DataEnv {
        spec_dir: PathBuf::from("/spec"),
        vic_data: None,
    }
}

fn builtin(name: &str) -> Dataset {
    Dataset::Builtin(name.into())
}

fn path(p: &str) -> Dataset {
    Dataset::Path(p.into())
}

fn load_mem(p: &Program, file: &str, bytes: Vec<u8>) -> Result<DataSet, DataError> {
    let fs = MemFs::default().with(&format!("/spec/{file}"), bytes);
    load(p, &path(file), &env(), &fs, 0)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX file, written by hand from the format's definition.
fn idx_u8(shape: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, shape.len() as u8];
    for d in shape {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn idx_f32(shape: &[u32], data: &[f32]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x0D, shape.len() as u8];
    for d in shape {
        b.extend_from_slice(&d.to_be_bytes());
    }
    for v in data {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// A fresh temporary directory for files written by candle's writers.
fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vic-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn npz_bytes(name: &str, arrays: &[(&str, Tensor)]) -> Vec<u8> {
    let d = tmp_dir(name);
    let f = d.join("a.npz");
    Tensor::write_npz(arrays, &f).unwrap();
    let b = std::fs::read(&f).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    b
}

fn npy_bytes(name: &str, t: &Tensor) -> Vec<u8> {
    let d = tmp_dir(name);
    let f = d.join("a.npy");
    t.write_npy(&f).unwrap();
    let b = std::fs::read(&f).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    b
}

fn t2(data: &[f32], rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(data.to_vec(), (rows, cols), &Device::Cpu).unwrap()
}

fn t1(data: &[f32]) -> Tensor {
    Tensor::from_vec(data.to_vec(), data.len(), &Device::Cpu).unwrap()
}

fn err_of(r: Result<DataSet, DataError>) -> DataError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// The error's message names the variable and the file.
fn names_both(e: &DataError, var: &str, file: &str) {
    let m = e.to_string();
    assert!(m.contains(&format!("`{var}`")), "no `{var}` in: {m}");
    assert!(m.contains(file), "no {file} in: {m}");
}

// ---------------------------------------------------------------------------------
// digits

/// Independent reading of the embedded file: plain string splitting.
fn digits_reference() -> Vec<Vec<f32>> {
    let text = String::from_utf8(gunzip(include_bytes!("../../data/digits.csv.gz"), "d").unwrap())
        .unwrap();
    text.lines()
        .map(|l| {
            l.split(',')
                .map(|c| c.trim().parse::<f32>().unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn digits_loads_with_the_default_split() {
    let p = program(vec![obs("x", Domain::Unit, &[8, 8])]);
    let d = load(&p, &builtin("digits"), &env(), &MemFs::default(), 0).unwrap();
    assert_eq!(d.source, "digits (embedded)");
    assert_eq!((d.train.n, d.test.n), (1617, 180));
    let x = d.train.var(0).unwrap();
    assert_eq!(x.shape, vec![1617, 8, 8]);
    assert_eq!(d.test.var(0).unwrap().shape, vec![180, 8, 8]);
    let (lo, hi) = x
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
    // Against an independent parse: the same multiset of examples, scaled by 1/16.
    let reference = digits_reference();
    assert_eq!(reference.len(), 1797);
    let total: f64 = reference
        .iter()
        .flat_map(|r| r[..64].iter())
        .map(|&v| v as f64 / 16.0)
        .sum();
    let ours: f64 = x
        .data
        .iter()
        .chain(&d.test.var(0).unwrap().data)
        .map(|&v| v as f64)
        .sum();
    assert!((total - ours).abs() < 1e-3, "{total} {ours}");
    let mut labels: Vec<u32> = d.train.labels.clone().unwrap();
    labels.extend(d.test.labels.clone().unwrap());
    let mut want: Vec<u32> = reference.iter().map(|r| r[64] as u32).collect();
    labels.sort_unstable();
    want.sort_unstable();
    assert_eq!(labels, want);
    // Each training row is some reference row, with its own label.
    let row0: Vec<f32> = x.row(0).to_vec();
    let lab0 = d.train.labels.as_ref().unwrap()[0];
    assert!(reference
        .iter()
        .any(|r| r[64] as u32 == lab0 && r[..64].iter().zip(&row0).all(|(a, b)| a / 16.0 == *b)));
}

#[test]
fn digits_split_is_deterministic_per_seed() {
    let p = program(vec![obs("x", Domain::Real, &[64])]);
    let fs = MemFs::default();
    let a = load(&p, &builtin("digits"), &env(), &fs, 3).unwrap();
    let b = load(&p, &builtin("digits"), &env(), &fs, 3).unwrap();
    let c = load(&p, &builtin("digits"), &env(), &fs, 4).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.test, c.test);
    let mut q = p.clone();
    q.train.split = 0.25;
    let e = load(&q, &builtin("digits"), &env(), &fs, 3).unwrap();
    assert_eq!((e.train.n, e.test.n), (1348, 449));
}

#[test]
fn digits_binds_labels_to_the_one_cat10_variable() {
    let p = program(vec![
        obs("x", Domain::Binary, &[64]),
        var("y", Domain::Cat(10), &[], DataRole::Given),
    ]);
    let d = load(&p, &builtin("digits"), &env(), &MemFs::default(), 0).unwrap();
    let y = d.train.var(1).unwrap();
    assert_eq!(y.shape, vec![1617]);
    let labels: Vec<f32> = d
        .train
        .labels
        .as_ref()
        .unwrap()
        .iter()
        .map(|&l| l as f32)
        .collect();
    assert_eq!(y.data, labels);
}

#[test]
fn builtin_binding_errors() {
    let fs = MemFs::default();
    let go = |data: Vec<DataDef>| err_of(load(&program(data), &builtin("digits"), &env(), &fs, 0));
    let e = go(vec![obs("x", Domain::Real, &[10])]);
    assert!(matches!(e, DataError::NoCandidate { .. }), "{e}");
    assert!(
        e.to_string().contains("`x`") && e.to_string().contains("64 pixels"),
        "{e}"
    );
    let e = go(vec![
        obs("a", Domain::Real, &[64]),
        obs("b", Domain::Unit, &[8, 8]),
    ]);
    assert!(matches!(e, DataError::AmbiguousBinding { .. }), "{e}");
    assert!(e.to_string().contains("`a`, `b`"), "{e}");
    let e = go(vec![
        obs("x", Domain::Real, &[64]),
        obs("y", Domain::Cat(10), &[]),
        obs("c", Domain::Cat(10), &[]),
    ]);
    assert!(matches!(e, DataError::AmbiguousBinding { .. }), "{e}");
    let e = go(vec![
        obs("x", Domain::Real, &[64]),
        obs("w", Domain::Real, &[3]),
    ]);
    assert!(matches!(e, DataError::UnboundVariable { .. }), "{e}");
    names_both(&e, "w", "digits (embedded)");
    let e = go(vec![]);
    assert!(matches!(e, DataError::NoDataVariables { .. }), "{e}");
    // Pixels of 1/16 are no counts: validation runs on built-in data too.
    let e = go(vec![obs("x", Domain::Count, &[64])]);
    assert!(matches!(e, DataError::OutOfDomain { .. }), "{e}");
    names_both(&e, "x", "digits (embedded)");
    let e = err_of(load(&program(vec![]), &builtin("cifar"), &env(), &fs, 0));
    assert!(matches!(e, DataError::UnknownBuiltin { .. }));
}

// ---------------------------------------------------------------------------------
// fashion-mnist and mnist

#[test]
fn fashion_mnist_from_the_debian_package() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").exists() {
        println!("note: {FASHION_MNIST_DIR} is missing (apt-get install dataset-fashion-mnist); test skipped");
        return;
    }
    let p = program(vec![
        obs("x", Domain::Binary, &[1, 28, 28]),
        obs("y", Domain::Cat(10), &[]),
    ]);
    let d = load(&p, &builtin("fashion-mnist"), &env(), &crate::io::RealFs, 0).unwrap();
    assert_eq!((d.train.n, d.test.n), (60000, 10000));
    assert_eq!(d.source, format!("fashion-mnist ({FASHION_MNIST_DIR})"));
    let x = d.train.var(0).unwrap();
    assert_eq!(x.shape, vec![60000, 1, 28, 28]);
    assert!(x.data.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(x.data.contains(&1.0));
    // Balanced classes: 6000 of each in train, 1000 in test.
    for (split, each) in [(&d.train, 6000), (&d.test, 1000)] {
        let mut count = [0usize; 10];
        for &l in split.labels.as_ref().unwrap() {
            count[l as usize] += 1;
        }
        assert_eq!(count, [each; 10]);
    }
    assert_eq!(
        d.train.var(1).unwrap().data[..5]
            .iter()
            .map(|&v| v as u32)
            .collect::<Vec<_>>(),
        d.train.labels.as_ref().unwrap()[..5].to_vec()
    );
}

#[test]
fn fashion_mnist_missing_says_how_to_install_it() {
    let p = program(vec![obs("x", Domain::Binary, &[784])]);
    let e = err_of(load(
        &p,
        &builtin("fashion-mnist"),
        &env(),
        &MemFs::default(),
        0,
    ));
    assert!(matches!(e, DataError::FashionMnistMissing { .. }), "{e}");
    assert!(e
        .hint()
        .unwrap()
        .contains("apt-get install dataset-fashion-mnist"));
    assert!(e.to_string().contains(FASHION_MNIST_DIR));
}

fn tiny_mnist(dir: &str, gzipped: bool) -> MemFs {
    let pix = |n: usize, seed: u8| -> Vec<u8> {
        (0..n * 784).map(|i| (i as u8).wrapping_mul(seed)).collect()
    };
    let f = |name: &str, bytes: Vec<u8>| {
        if gzipped {
            (format!("{dir}/{name}.gz"), gz(&bytes))
        } else {
            (format!("{dir}/{name}"), bytes)
        }
    };
    let files = [
        f("train-images-idx3-ubyte", idx_u8(&[5, 28, 28], &pix(5, 3))),
        f("train-labels-idx1-ubyte", idx_u8(&[5], &[3, 1, 4, 1, 5])),
        f("t10k-images-idx3-ubyte", idx_u8(&[2, 28, 28], &pix(2, 7))),
        f("t10k-labels-idx1-ubyte", idx_u8(&[2], &[9, 2])),
    ];
    files
        .into_iter()
        .fold(MemFs::default(), |fs, (p, b)| fs.with(&p, b))
}

#[test]
fn mnist_reads_vic_data_gzipped_or_not() {
    let p = program(vec![
        obs("x", Domain::Unit, &[28, 28]),
        obs("y", Domain::Cat(10), &[]),
    ]);
    for gzipped in [false, true] {
        let fs = tiny_mnist("/data/mnist", gzipped);
        let env = DataEnv {
            spec_dir: "/spec".into(),
            vic_data: Some("/data/mnist".into()),
        };
        let d = load(&p, &builtin("mnist"), &env, &fs, 0).unwrap();
        assert_eq!((d.train.n, d.test.n), (5, 2));
        assert_eq!(d.train.var(1).unwrap().data, vec![3.0, 1.0, 4.0, 1.0, 5.0]);
        assert_eq!(d.test.labels, Some(vec![9, 2]));
        let x = d.train.var(0).unwrap();
        assert_eq!(x.shape, vec![5, 28, 28]);
        assert_eq!(x.data[1], 3.0 / 255.0);
        assert_eq!(d.source, "mnist (/data/mnist)");
    }
    let e = err_of(load(&p, &builtin("mnist"), &env(), &MemFs::default(), 0));
    assert_eq!(e, DataError::MnistNotConfigured);
    assert!(e.hint().unwrap().contains("VIC_DATA"));
    let env = DataEnv {
        spec_dir: "/spec".into(),
        vic_data: Some("/nowhere".into()),
    };
    let e = err_of(load(&p, &builtin("mnist"), &env, &MemFs::default(), 0));
    assert!(matches!(e, DataError::MnistMissing { .. }), "{e}");
    assert!(e.to_string().contains("/nowhere"));
}

#[test]
fn mnist_with_mismatched_label_count_names_both_files() {
    let env = DataEnv {
        spec_dir: "/spec".into(),
        vic_data: Some("/m".into()),
    };
    let fs =
        tiny_mnist("/m", false).with("/m/train-labels-idx1-ubyte", idx_u8(&[4], &[1, 2, 3, 4]));
    let p = program(vec![obs("x", Domain::Unit, &[784])]);
    let e = err_of(load(&p, &builtin("mnist"), &env, &fs, 0));
    assert!(matches!(e, DataError::ExampleCounts { .. }), "{e}");
    assert!(e.to_string().contains("train-labels-idx1-ubyte"), "{e}");
    // A corrupt image file is reported with its path.
    let fs = tiny_mnist("/m", false).with("/m/train-images-idx3-ubyte", vec![0, 0, 8, 3, 0]);
    let e = err_of(load(&p, &builtin("mnist"), &env, &fs, 0));
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("/m/train-images-idx3-ubyte"), "{e}");
}

// ---------------------------------------------------------------------------------
// File formats: round trips

#[test]
fn npz_round_trip_with_and_without_test_arrays() {
    let p = program(vec![
        obs("x", Domain::Real, &[2, 2]),
        obs("y", Domain::Cat(3), &[]),
    ]);
    let xs: Vec<f32> = (0..40).map(|i| i as f32 * 0.5 - 3.0).collect();
    let ys: Vec<f32> = (0..10).map(|i| (i % 3) as f32).collect();
    let bytes = npz_bytes("npz1", &[("x", t2(&xs, 10, 4)), ("y", t1(&ys))]);
    let d = load_mem(&p, "d/a.npz", bytes).unwrap();
    assert_eq!(d.source, "/spec/d/a.npz");
    assert_eq!((d.train.n, d.test.n), (9, 1));
    let all: Vec<f32> = d
        .train
        .var(0)
        .unwrap()
        .data
        .iter()
        .chain(&d.test.var(0).unwrap().data)
        .copied()
        .collect();
    let mut sorted = all.clone();
    sorted.sort_by(f32::total_cmp);
    assert_eq!(sorted, xs);
    assert_eq!(d.train.var(0).unwrap().shape, vec![9, 2, 2]);
    // Rows stay together: x's first value determines y.
    for s in [&d.train, &d.test] {
        for i in 0..s.n {
            let k = ((s.var(0).unwrap().row(i)[0] + 3.0) / 2.0) as usize;
            assert_eq!(s.var(1).unwrap().data[i], ys[k]);
        }
    }
    // NAME_test arrays form the test split (an int64 label array, an f64 image array).
    let bytes = npz_bytes(
        "npz2",
        &[
            (
                "x",
                t2(&xs, 10, 4).to_dtype(candle_core::DType::F64).unwrap(),
            ),
            ("y", t1(&ys).to_dtype(candle_core::DType::I64).unwrap()),
            ("x_test", t2(&xs[..8], 2, 4)),
            ("y_test", t1(&[2.0, 0.0])),
            ("unused", t1(&[1.0])),
        ],
    );
    let d = load_mem(&p, "a.npz", bytes).unwrap();
    assert_eq!((d.train.n, d.test.n), (10, 2));
    assert_eq!(d.train.var(0).unwrap().data, xs);
    assert_eq!(d.test.var(1).unwrap().data, vec![2.0, 0.0]);
}

#[test]
fn npz_compressed_by_numpy() {
    // tests/data/make_fixtures.py: np.savez_compressed, float64 x and int64 y.
    let bytes = include_bytes!("../../tests/data/savez_compressed.npz").to_vec();
    let arrays = parse_npz(&bytes, "f.npz").unwrap();
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x", "y", "x_test", "y_test"]);
    let p = program(vec![
        obs("x", Domain::Unit, &[3]),
        obs("y", Domain::Cat(3), &[]),
    ]);
    let d = load_mem(&p, "c.npz", bytes).unwrap();
    assert_eq!((d.train.n, d.test.n), (4, 2));
    let want: Vec<f32> = (0..12).map(|i| (i as f64 / 11.0) as f32).collect();
    assert_eq!(d.train.var(0).unwrap().data, want);
    assert_eq!(d.train.var(1).unwrap().data, vec![0.0, 2.0, 1.0, 2.0]);
    assert_eq!(
        d.test.var(0).unwrap().data,
        vec![0.5, 0.25, 1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn npy_round_trips_and_numpy_layouts() {
    let p = program(vec![
        obs("x", Domain::Real, &[3]),
        var("c", Domain::Real, &[], DataRole::Partial),
    ]);
    // `partial` data is non-given too: two candidates.
    let bytes = npy_bytes("npy0", &t2(&[0.0; 6], 2, 3));
    let e = err_of(load_mem(&p, "a.npy", bytes.clone()));
    assert!(matches!(e, DataError::SingleArrayAmbiguous { .. }), "{e}");
    let p = program(vec![obs("x", Domain::Real, &[3])]);
    let xs: Vec<f32> = (0..30).map(|i| i as f32).collect();
    let d = load_mem(&p, "a.npy", npy_bytes("npy1", &t2(&xs, 10, 3))).unwrap();
    assert_eq!(d.train.n + d.test.n, 10);
    let u8s = Tensor::from_vec((0u8..30).collect::<Vec<_>>(), (10, 3), &Device::Cpu).unwrap();
    let a = parse_npy(&npy_bytes("npy2", &u8s), "u.npy", "x").unwrap();
    assert_eq!((a.shape, a.data), (vec![10, 3], xs.clone()));
    let i64s = t2(&xs, 10, 3).to_dtype(candle_core::DType::I64).unwrap();
    assert_eq!(
        parse_npy(&npy_bytes("npy3", &i64s), "i.npy", "x")
            .unwrap()
            .data,
        xs
    );
    let f = parse_npy(
        include_bytes!("../../tests/data/fortran_f8.npy"),
        "f.npy",
        "x",
    )
    .unwrap();
    assert_eq!(
        (f.shape, f.data),
        (vec![2, 3], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
    let b = parse_npy(
        include_bytes!("../../tests/data/bigendian_i4.npy"),
        "b.npy",
        "x",
    )
    .unwrap();
    assert_eq!(
        (b.shape, b.data),
        (vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
}

#[test]
fn safetensors_round_trip() {
    let p = program(vec![
        obs("x", Domain::Positive, &[2]),
        var("c", Domain::Cat(4), &[], DataRole::Given),
    ]);
    let d = tmp_dir("st");
    let f = d.join("a.safetensors");
    let xs: Vec<f32> = (1..=12).map(|i| i as f32).collect();
    let mut m = HashMap::new();
    m.insert("x", t2(&xs, 6, 2));
    m.insert(
        "c",
        t1(&[0.0, 1.0, 2.0, 3.0, 0.0, 1.0])
            .to_dtype(candle_core::DType::U32)
            .unwrap(),
    );
    m.insert(
        "x_test",
        t2(&[1.0, 2.0], 1, 2)
            .to_dtype(candle_core::DType::F16)
            .unwrap(),
    );
    m.insert(
        "c_test",
        t1(&[3.0]).to_dtype(candle_core::DType::I64).unwrap(),
    );
    candle_core::safetensors::save(&m, &f).unwrap();
    let bytes = std::fs::read(&f).unwrap();
    // Through the real file system too, with a relative path.
    let env = DataEnv {
        spec_dir: d.clone(),
        vic_data: None,
    };
    let ds = load(&p, &path("a.safetensors"), &env, &crate::io::RealFs, 0).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    assert_eq!((ds.train.n, ds.test.n), (6, 1));
    assert_eq!(ds.train.var(0).unwrap().data, xs);
    assert_eq!(
        ds.train.var(1).unwrap().data,
        vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0]
    );
    assert_eq!(ds.test.var(0).unwrap().data, vec![1.0, 2.0]);
    assert_eq!(ds.test.var(1).unwrap().data, vec![3.0]);
    let names: Vec<String> = parse_safetensors(&bytes, "a")
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["c", "c_test", "x", "x_test"]);
}

#[test]
fn csv_with_and_without_header() {
    let p = program(vec![obs("x", Domain::Count, &[3])]);
    let with = b"a,b,c\n1,2,3\n4, 5 ,6\n\n7,8,9\n10,11,12\n".to_vec();
    let without = b"1,2,3\n4,5,6\n7,8,9\n10,11,12".to_vec();
    for bytes in [with, without] {
        let a = parse_csv(&bytes, "t.csv").unwrap();
        assert_eq!(a.shape, vec![4, 3]);
        assert_eq!(a.data, (1..=12).map(|i| i as f32).collect::<Vec<_>>());
        let d = load_mem(&p, "t.csv", bytes).unwrap();
        assert_eq!((d.train.n, d.test.n), (3, 1));
    }
    let e = err_of(load_mem(&p, "t.csv", b"1,2,3\n4,x,6\n".to_vec()));
    assert_eq!(
        e,
        DataError::CsvNotNumeric {
            file: "/spec/t.csv".into(),
            line: 2,
            column: 2,
            text: "x".into()
        }
    );
    assert!(e.to_string().starts_with("/spec/t.csv:2: column 2"), "{e}");
    let e = err_of(load_mem(&p, "t.csv", b"1,2,3\n4,6\n".to_vec()));
    assert!(
        matches!(
            e,
            DataError::CsvRagged {
                line: 2,
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{e}"
    );
    // A table whose width is not the variable's size.
    let e = err_of(load_mem(&p, "t.csv", b"1,2\n4,6\n".to_vec()));
    assert!(matches!(e, DataError::ShapeMismatch { .. }), "{e}");
    names_both(&e, "x", "/spec/t.csv");
}

#[test]
fn idx_round_trip_plain_and_gzipped() {
    let p = program(vec![
        obs("x", Domain::Real, &[2, 2]),
        var("c", Domain::Cat(2), &[], DataRole::Given),
    ]);
    let e = err_of(load_mem(&p, "a.idx", idx_u8(&[3, 2, 2], &[0; 12])));
    assert!(matches!(e, DataError::SingleArrayUnbound { .. }), "{e}");
    assert!(e.to_string().contains("`c`"));
    let p = program(vec![obs("x", Domain::Real, &[4])]);
    let vals: Vec<f32> = (0..12).map(|i| i as f32 * -1.5).collect();
    let plain = idx_f32(&[3, 2, 2], &vals);
    let a = parse_idx(&plain, "a.idx").unwrap();
    assert_eq!(
        (a.shape.clone(), a.data.clone()),
        (vec![3, 2, 2], vals.clone())
    );
    let d = load_mem(&p, "a.idx.gz", gz(&plain)).unwrap();
    assert_eq!(d.train.n + d.test.n, 3);
    assert_eq!(d.train.var(0).unwrap().shape[1..], [4]);
    let d = load_mem(&p, "train-images-idx3-ubyte", idx_u8(&[3, 2, 2], &[7; 12])).unwrap();
    assert_eq!(d.train.var(0).unwrap().data[0], 7.0);
}

// ---------------------------------------------------------------------------------
// Validation errors

#[test]
fn every_validation_error_names_variable_and_file() {
    let npz = |arrays: &[(&str, Tensor)]| npz_bytes("val", arrays);
    let check = |p: &Program, bytes: Vec<u8>, var: &str| -> DataError {
        let e = err_of(load_mem(p, "v.npz", bytes));
        names_both(&e, var, "v.npz");
        e
    };
    // Missing array, listing those present.
    let p = program(vec![
        obs("x", Domain::Real, &[2]),
        obs("y", Domain::Real, &[]),
    ]);
    let e = check(
        &p,
        npz(&[("x", t2(&[0.0; 4], 2, 2)), ("z", t1(&[0.0, 1.0]))]),
        "y",
    );
    assert!(matches!(e, DataError::MissingArray { .. }), "{e}");
    assert!(e.to_string().contains("arrays present: `x`, `z`"), "{e}");
    // Wrong shape (declared vs found); a matching size is reshaped instead.
    let e = check(
        &p,
        npz(&[("x", t2(&[0.0; 6], 2, 3)), ("y", t1(&[0.0, 1.0]))]),
        "x",
    );
    assert!(
        e.to_string().contains("[2]") && e.to_string().contains("[3]"),
        "{e}"
    );
    let q = program(vec![obs("x", Domain::Real, &[2, 2])]);
    let d = load_mem(
        &q,
        "v.npz",
        npz(&[("x", t2(&[0.5; 12], 3, 4)), ("x_test", t2(&[0.5; 4], 1, 4))]),
    )
    .unwrap();
    assert_eq!(d.train.var(0).unwrap().shape, vec![3, 2, 2]);
    // Example counts differ.
    let e = err_of(load_mem(
        &p,
        "v.npz",
        npz(&[("x", t2(&[0.0; 4], 2, 2)), ("y", t1(&[0.0, 1.0, 2.0]))]),
    ));
    assert!(matches!(e, DataError::ExampleCounts { .. }), "{e}");
    assert!(
        e.to_string().contains("\"x\" has 2") && e.to_string().contains("\"y\" has 3"),
        "{e}"
    );
    // A test array whose count differs from another test array.
    let e = err_of(load_mem(
        &p,
        "v.npz",
        npz(&[
            ("x", t2(&[0.0; 4], 2, 2)),
            ("y", t1(&[0.0, 1.0])),
            ("x_test", t2(&[0.0; 2], 1, 2)),
            ("y_test", t1(&[0.0, 1.0])),
        ]),
    ));
    assert!(matches!(e, DataError::ExampleCounts { .. }), "{e}");
    // Only some variables have a test array.
    let e = err_of(load_mem(
        &p,
        "v.npz",
        npz(&[
            ("x", t2(&[0.0; 4], 2, 2)),
            ("y", t1(&[0.0, 1.0])),
            ("x_test", t2(&[0.0; 2], 1, 2)),
        ]),
    ));
    assert!(matches!(e, DataError::PartialTestSplit { .. }), "{e}");
    // NaN and infinity, with the index of the first bad example.
    let p1 = |d: Domain, shape: &[usize]| program(vec![obs("v", d, shape)]);
    let bad = |vals: &[f32], cols: usize| npz(&[("v", t2(vals, vals.len() / cols, cols))]);
    let e = check(
        &p1(Domain::Real, &[2]),
        bad(&[0.0, 1.0, 2.0, f32::NAN, 0.0, 0.0], 2),
        "v",
    );
    assert!(matches!(e, DataError::NonFinite { example: 1, .. }), "{e}");
    assert!(e.to_string().contains("example 1"), "{e}");
    let e = check(
        &p1(Domain::Real, &[1]),
        bad(&[0.0, 0.0, f32::INFINITY], 1),
        "v",
    );
    assert!(matches!(e, DataError::NonFinite { example: 2, .. }), "{e}");
    // Domains.
    let cases: Vec<(Domain, Vec<f32>, usize)> = vec![
        (Domain::Unit, vec![0.0, 1.0, 1.5, 0.0], 2),
        (Domain::Binary, vec![0.0, -0.1, 1.0, 0.0], 1),
        (Domain::Positive, vec![1.0, 1.0, 0.0, 1.0], 2),
        (Domain::Count, vec![0.0, 3.0, 2.5, 1.0], 2),
        (Domain::Count, vec![0.0, 3.0, 1.0, -1.0], 3),
        (Domain::Cat(3), vec![0.0, 2.0, 3.0, 1.0], 2),
        (Domain::Cat(3), vec![0.0, 0.5, 1.0, 1.0], 1),
        (Domain::Simplex, vec![0.5, 0.5, -0.5, 1.5], 1),
    ];
    for (domain, vals, first_bad) in cases {
        // first_bad: the index of the first bad example.
        let shape: &[usize] = if domain == Domain::Simplex { &[2] } else { &[] };
        let cols = if domain == Domain::Simplex { 2 } else { 1 };
        let e = check(&p1(domain, shape), bad(&vals, cols), "v");
        let example = match &e {
            DataError::OutOfDomain { example, .. } => *example,
            other => panic!("{domain:?}: {other}"),
        };
        assert_eq!(example, first_bad, "{domain:?}: {e}");
        assert!(e.to_string().contains(&domain.name()), "{e}");
        assert!(e.hint().is_some());
    }
    let e = check(
        &p1(Domain::Simplex, &[2]),
        bad(&[0.5, 0.5, 0.2, 0.7], 2),
        "v",
    );
    assert!(matches!(e, DataError::SimplexSum { example: 1, .. }), "{e}");
    // Within tolerance is fine.
    assert!(load_mem(
        &p1(Domain::Simplex, &[2]),
        "v.npz",
        bad(&[0.5, 0.50005, 0.25, 0.75], 2)
    )
    .is_ok());
    // A Cat variable accepts one-hot rows, and rejects rows that are not one-hot.
    let onehot = bad(&[0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0], 3);
    let d = load_mem(&p1(Domain::Cat(3), &[]), "v.npz", onehot).unwrap();
    let mut all = d.train.var(0).unwrap().data.clone();
    all.extend(&d.test.var(0).unwrap().data);
    all.sort_by(f32::total_cmp);
    assert_eq!(all, vec![0.0, 1.0, 2.0]);
    let e = check(
        &p1(Domain::Cat(3), &[]),
        bad(&[0.0, 1.0, 0.0, 1.0, 1.0, 0.0], 3),
        "v",
    );
    assert!(
        matches!(e, DataError::OutOfDomain { example: 1, .. }),
        "{e}"
    );
    // A 0-d array has no example axis.
    let scalar = Tensor::new(1f32, &Device::Cpu).unwrap();
    let e = check(&p1(Domain::Real, &[]), npz(&[("v", scalar)]), "v");
    assert!(matches!(e, DataError::NoExamples { .. }), "{e}");
    // Too few examples for the split.
    let e = err_of(load_mem(
        &p1(Domain::Real, &[]),
        "v.npz",
        npz(&[("v", t1(&[1.0]))]),
    ));
    assert!(matches!(e, DataError::TooFewExamples { n: 1, .. }), "{e}");
}

#[test]
fn file_level_errors() {
    let p = program(vec![obs("x", Domain::Real, &[])]);
    let e = err_of(load_mem(&p, "a.txt", vec![]));
    assert!(matches!(e, DataError::UnsupportedExtension { .. }), "{e}");
    assert!(e.hint().unwrap().contains(".npz"));
    let e = err_of(load(&p, &path("gone.npz"), &env(), &MemFs::default(), 0));
    assert!(matches!(e, DataError::Unreadable { .. }), "{e}");
    assert!(e.to_string().contains("/spec/gone.npz"));
    let e = err_of(load_mem(&p, "a.npz", b"not a zip at all".to_vec()));
    assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
    let e = err_of(load_mem(
        &p,
        "a.npz",
        b"PK\x03\x04 but then nothing".to_vec(),
    ));
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    let e = err_of(load_mem(&p, "a.idx.gz", b"plain bytes".to_vec()));
    assert!(
        matches!(e, DataError::BadMagic { format: "gzip", .. }),
        "{e}"
    );
    let mut short = idx_u8(&[4], &[1, 2, 3, 4]);
    short.pop();
    let e = err_of(load_mem(&p, "a.idx", short));
    assert_eq!(
        e,
        DataError::Truncated {
            file: "/spec/a.idx".into(),
            format: "IDX",
            needed: 4,
            have: 3
        }
    );
    let e = err_of(load_mem(
        &p,
        "a.npy",
        b"\x93NUMPY\x01\x00\x10\x00{'descr': '<c8'}".to_vec(),
    ));
    assert!(
        matches!(
            e,
            DataError::UnsupportedDtype { .. } | DataError::Corrupt { .. }
        ),
        "{e}"
    );
    let q = program(vec![
        obs("x", Domain::Real, &[]),
        var("g", Domain::Real, &[], DataRole::Given),
    ]);
    let e = err_of(load_mem(&q, "a.npy", npy_bytes("fl", &t1(&[1.0, 2.0]))));
    assert!(matches!(e, DataError::SingleArrayUnbound { .. }), "{e}");
}

// ---------------------------------------------------------------------------------
// Robustness: no bytes make a parser panic

fn garbage_inputs(valid: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    // Every prefix of a valid file (up to 400 of them, spread out).
    let step = (valid.len() / 400).max(1);
    for n in (0..valid.len()).step_by(step) {
        out.push(valid[..n].to_vec());
    }
    // Single-byte corruptions of the header region.
    let mut rng = crate::rng::Rng::seed(11);
    for i in 0..valid.len().min(160) {
        for v in [0u8, 0xff, b'9', b','] {
            let mut b = valid.to_vec();
            b[i] = v;
            out.push(b);
        }
    }
    for _ in 0..200 {
        let n = rng.below(300);
        out.push((0..n).map(|_| rng.next_u64() as u8).collect());
    }
    out
}

#[test]
fn garbage_bytes_never_panic() {
    let xs: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let npy = npy_bytes("g1", &t2(&xs, 6, 4));
    let npz = npz_bytes("g2", &[("x", t2(&xs, 6, 4)), ("y", t1(&xs[..6]))]);
    let numpy_npz = include_bytes!("../../tests/data/savez_compressed.npz").to_vec();
    let idx = idx_f32(&[6, 4], &xs);
    let d = tmp_dir("g3");
    let mut m = HashMap::new();
    m.insert("x", t2(&xs, 6, 4));
    candle_core::safetensors::save(&m, d.join("a.safetensors")).unwrap();
    let st = std::fs::read(d.join("a.safetensors")).unwrap();
    let _ = std::fs::remove_dir_all(&d);
    let csv = b"a,b\n1,2\n3,4\n".to_vec();
    for b in garbage_inputs(&npy) {
        let _ = parse_npy(&b, "f", "x");
    }
    for b in garbage_inputs(&npz)
        .into_iter()
        .chain(garbage_inputs(&numpy_npz))
    {
        let _ = parse_npz(&b, "f");
    }
    for b in garbage_inputs(&idx) {
        let _ = parse_idx(&b, "f");
    }
    for b in garbage_inputs(&gz(&idx)) {
        let _ = gunzip(&b, "f");
    }
    for b in garbage_inputs(&st) {
        let _ = parse_safetensors(&b, "f");
    }
    for b in garbage_inputs(&csv) {
        let _ = parse_csv(&b, "f");
    }
    // And whole loads, through binding and validation.
    let p = program(vec![obs("x", Domain::Cat(5), &[4])]);
    for (ext, valid) in [
        ("npy", &npy),
        ("npz", &npz),
        ("idx", &idx),
        ("safetensors", &st),
    ] {
        for b in garbage_inputs(valid).into_iter().take(300) {
            let _ = load_mem(&p, &format!("a.{ext}"), b);
        }
    }
    // Headers that announce absurd sizes are refused before allocating.
    let huge = [
        0u8, 0, 0x0D, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ];
    assert!(parse_idx(&huge, "f").is_err());
    let mut npy_huge = b"\x93NUMPY\x01\x00".to_vec();
    let h = b"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999), }\n";
    npy_huge.extend_from_slice(&(h.len() as u16).to_le_bytes());
    npy_huge.extend_from_slice(h);
    assert!(parse_npy(&npy_huge, "f", "x").is_err());
}

// ---------------------------------------------------------------------------------
// Batches

#[test]
fn batch_one_hot_and_binarize() {
    let p = program(vec![
        obs("x", Domain::Binary, &[64]),
        obs("y", Domain::Cat(10), &[]),
    ]);
    let d = load(&p, &builtin("digits"), &env(), &MemFs::default(), 0).unwrap();
    let idx: Vec<usize> = (0..d.train.n).collect();
    let x = d.train.var(0).unwrap();
    let pixel_mean = x.data.iter().map(|&v| v as f64).sum::<f64>() / x.data.len() as f64;
    let mut rng = Rng::seed(5);
    let dev = Device::Cpu;
    let b = batch(&d.train, &idx, &p, &dev, &Binarize::Dynamic, &mut rng).unwrap();
    assert_eq!(b[0].1.dims(), &[1617, 64]);
    let xb: Vec<f32> = b[0].1.flatten_all().unwrap().to_vec1().unwrap();
    assert!(xb.iter().all(|&v| v == 0.0 || v == 1.0));
    let mean = xb.iter().map(|&v| v as f64).sum::<f64>() / xb.len() as f64;
    // 103488 Bernoulli draws: the standard error is below 0.0016.
    assert!((mean - pixel_mean).abs() < 0.008, "{mean} vs {pixel_mean}");
    // Pixels that are 0 or 1 stay so; the others are drawn per call.
    for (v, p) in xb.iter().zip(&x.data) {
        if *p == 0.0 || *p == 1.0 {
            assert_eq!(v, p);
        }
    }
    let again = batch(&d.train, &idx, &p, &dev, &Binarize::Dynamic, &mut rng).unwrap();
    assert_ne!(
        xb,
        again[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // Threshold and none.
    let t = batch(
        &d.train,
        &idx[..3],
        &p,
        &dev,
        &Binarize::Threshold(0.5),
        &mut rng,
    )
    .unwrap();
    let tv: Vec<f32> = t[0].1.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f32> = x.data[..192]
        .iter()
        .map(|&v| if v > 0.5 { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(tv, want);
    let n = batch(&d.train, &idx[..3], &p, &dev, &Binarize::None, &mut rng).unwrap();
    assert_eq!(
        n[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        x.data[..192].to_vec()
    );
    // One-hot labels, [B, 10], in the order of `indices`.
    let pick = [5usize, 2, 9];
    let y = &batch(&d.train, &pick, &p, &dev, &Binarize::None, &mut rng).unwrap()[1].1;
    assert_eq!(y.dims(), &[3, 10]);
    let rows: Vec<Vec<f32>> = y.to_vec2().unwrap();
    for (r, &i) in rows.iter().zip(&pick) {
        let label = d.train.labels.as_ref().unwrap()[i] as usize;
        assert_eq!(r.iter().sum::<f32>(), 1.0);
        assert_eq!(r[label], 1.0);
    }
    // Out-of-range indices are errors, not panics.
    assert!(batch(&d.train, &[d.train.n], &p, &dev, &Binarize::None, &mut rng).is_err());
}

#[test]
fn batch_shapes_follow_the_declarations() {
    let p = program(vec![
        obs("s", Domain::Real, &[]),
        obs("c", Domain::Cat(3), &[2]),
    ]);
    let bytes = npz_bytes(
        "bs",
        &[
            ("s", t1(&[1.0, 2.0, 3.0])),
            ("c", t2(&[0.0, 1.0, 2.0, 0.0, 1.0, 1.0], 3, 2)),
            ("s_test", t1(&[4.0])),
            ("c_test", t2(&[2.0, 2.0], 1, 2)),
        ],
    );
    let d = load_mem(&p, "b.npz", bytes).unwrap();
    let mut rng = Rng::seed(0);
    let b = batch(
        &d.train,
        &[2, 0],
        &p,
        &Device::Cpu,
        &Binarize::Dynamic,
        &mut rng,
    )
    .unwrap();
    assert_eq!(b[0].1.to_vec1::<f32>().unwrap(), vec![3.0, 1.0]);
    assert_eq!(b[1].1.dims(), &[2, 2, 3]);
    assert_eq!(
        b[1].1.to_vec3::<f32>().unwrap(),
        vec![
            vec![vec![0., 1., 0.], vec![0., 1., 0.]],
            vec![vec![1., 0., 0.], vec![0., 1., 0.]]
        ]
    );
}

#[test]
fn partial_labels_keep_a_seeded_subset() {
    let mut p = program(vec![
        obs("x", Domain::Unit, &[64]),
        var("y", Domain::Cat(10), &[], DataRole::Partial),
    ]);
    p.train.labels = Some(100);
    let fs = MemFs::default();
    let d = load(&p, &builtin("digits"), &env(), &fs, 1).unwrap();
    let mask = d.train.observed(1).unwrap();
    assert_eq!(mask.len(), 1617);
    assert_eq!(mask.iter().filter(|&&m| m).count(), 100);
    let y = d.train.var(1).unwrap();
    let truth = d.train.labels.as_ref().unwrap();
    for i in 0..d.train.n {
        if mask[i] {
            assert_eq!(y.data[i] as u32, truth[i]);
        } else {
            assert_eq!(y.data[i], 0.0, "a hidden label is stored as 0");
        }
    }
    // Class-balanced: 10 kept per class.
    for c in 0..10u32 {
        let kept = (0..d.train.n).filter(|&i| mask[i] && truth[i] == c).count();
        assert_eq!(kept, 10, "class {c}");
    }
    // Hidden labels really are hidden: some nonzero true labels were zeroed.
    assert!((0..d.train.n).any(|i| !mask[i] && truth[i] != 0));
    // The test split keeps every label.
    assert!(d.test.observed(1).unwrap().iter().all(|&m| m));
    assert_eq!(
        d.test
            .var(1)
            .unwrap()
            .data
            .iter()
            .map(|&v| v as u32)
            .collect::<Vec<_>>(),
        *d.test.labels.as_ref().unwrap()
    );
    // Deterministic per seed, different across seeds.
    assert_eq!(load(&p, &builtin("digits"), &env(), &fs, 1).unwrap(), d);
    let other = load(&p, &builtin("digits"), &env(), &fs, 2).unwrap();
    assert_ne!(other.train.observed(1), d.train.observed(1));
    let m = batch_observed(&d.train, &[0, 1, 2], &Device::Cpu).unwrap();
    assert_eq!(m[0].0, 1);
    let want: Vec<f32> = mask[..3]
        .iter()
        .map(|&b| if b { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(m[0].1.to_vec1::<f32>().unwrap(), want);
    // Without `labels`, every example is observed.
    p.train.labels = None;
    let d = load(&p, &builtin("digits"), &env(), &fs, 1).unwrap();
    assert!(d.train.observed(1).unwrap().iter().all(|&m| m));
    // No mask for variables that are not partial.
    assert!(d.train.observed(0).is_none());
}

#[test]
fn balanced_keep_takes_exactly_n_and_fills_from_other_classes() {
    use super::balanced_keep;
    // Classes of 8 examples: 0 0 0 0 0 0 1 2, order reversed.
    let class = [0, 0, 0, 0, 0, 0, 1, 2];
    let perm: Vec<usize> = (0..8).rev().collect();
    let m = balanced_keep(&perm, 3, 3, |i| class[i]);
    assert_eq!(m, vec![false, false, false, false, false, true, true, true]);
    // Class 1 and 2 have one example each: the other two come from class 0, in order.
    let m = balanced_keep(&perm, 5, 3, |i| class[i]);
    assert_eq!(m.iter().filter(|&&b| b).count(), 5);
    assert_eq!(m, vec![false, false, false, true, true, true, true, true]);
    assert!(balanced_keep(&perm, 0, 3, |i| class[i]).iter().all(|&b| !b));
}

#[test]
fn report_reads_like_a_diagnostic() {
    let e = DataError::MissingArray {
        var: "y".into(),
        file: "data/x.npz".into(),
        present: vec!["x".into()],
    };
    assert_eq!(
        e.report(),
        "error: missing array\n  data variable `y` has no array \"y\" in data/x.npz (arrays present: `x`)\n  hint: save the values of `y` under the name \"y\" (example axis first)"
    );
}
