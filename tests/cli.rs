//! The command line a new user meets: `--set train.*` checked by the spec's rules,
//! dataset paths relative to the current directory, runs that are locked, resumable with
//! a new learning rate, refused with the setting that differs, and never half made;
//! `vic sample`, `eval`, `encode`, `fmt -`, completions and the manual page.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_ok, scratch, vic};
use std::path::{Path, PathBuf};

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs/vae_digits.vi")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `--set train.KEY=V` is checked as the spec's own entry would be (E012, the option
/// named), by `check` and `compile` too; `train.lr` sets the optimizer's rate.
#[test]
fn train_overrides_are_checked_by_the_spec_rules() {
    let dir = scratch("cli", "overrides");
    for (set, want) in [
        ("train.epochs=0", "`epochs` must be an integer >= 1"),
        ("train.lr=-1", "`lr` must be a number > 0"),
        ("train.split=1", "strictly between 0 and 1"),
        ("train.batch_size=8", "did you mean `batch`?"),
    ] {
        let out = vic()
            .args(["train", "--set", set, "--out"])
            .arg(dir.join("run"))
            .arg(spec())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{set}: {err}");
        assert!(
            err.contains("E012") && err.contains(&format!("`--set {set}`")),
            "{set}: {err}"
        );
        assert!(err.contains(want), "{set}: {err}");
        assert!(!dir.join("run").exists(), "{set} made a run directory");
    }
    let out = vic()
        .args(["check", "--set", "train.optimizer=adam(lr = -1)"])
        .arg(spec())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`lr` is `-1`"));
    let ir = run_ok(
        vic()
            .args([
                "compile",
                "--emit",
                "ir",
                "--set",
                "train.lr=5e-4",
                "--set",
                "train.epochs=3",
            ])
            .arg(spec()),
    );
    assert!(
        ir.contains("lr: 0.0005") && ir.contains("epochs: 3"),
        "{ir}"
    );
}

/// A run: refused while another writes it, resumed with a new learning rate (saying
/// from where), refused with the setting that differs, refused (changing nothing) with a
/// truncated checkpoint; `vic sample` leaves samples.png alone, validates -n and -o.
#[test]
fn runs_are_locked_resumable_and_left_as_they_were_on_refusal() {
    let dir = scratch("cli", "runs");
    let run = dir.join("run");
    run_ok(
        vic()
            .args(["train", "--set", "train.epochs=1", "--out"])
            .arg(&run)
            .arg(spec()),
    );
    // Held by another process: a second `vic train` into the directory is refused.
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .open(run.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = vic()
        .args(["train", "--resume", "--set", "train.epochs=2", "--out"])
        .arg(&run)
        .arg(spec())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("another `vic train` is writing"));
    lock.unlock().unwrap();
    // Resumed with another learning rate.
    let out = vic()
        .args([
            "train",
            "--resume",
            "--set",
            "train.epochs=2",
            "--set",
            "train.lr=5e-4",
            "--out",
        ])
        .arg(&run)
        .arg(spec())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("resuming after epoch 1"),
        "{}",
        stderr(&out)
    );
    // Another batch size: refused, naming it.
    let out = vic()
        .args([
            "train",
            "--resume",
            "--set",
            "train.epochs=3",
            "--set",
            "train.batch=16",
            "--out",
        ])
        .arg(&run)
        .arg(spec())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`batch` was 64, now 16"),
        "{}",
        stderr(&out)
    );
    // A truncated checkpoint: a clear error, and the run as it was.
    let ckpt = run.join("checkpoint/model.safetensors");
    let bytes = std::fs::read(&ckpt).unwrap();
    std::fs::write(&ckpt, &bytes[..100]).unwrap();
    let ir = std::fs::read(run.join("ir.ron")).unwrap();
    let out = vic()
        .args(["train", "--resume", "--set", "train.epochs=3", "--out"])
        .arg(&run)
        .arg(spec())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("model.safetensors"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(run.join("ir.ron")).unwrap(), ir);
    // `vic sample`: its own file by default; bad -n and -o refused.
    let png = std::fs::read(run.join("samples.png")).unwrap();
    run_ok(vic().args(["sample", "-n", "4"]).arg(&run));
    assert!(run.join("sample.png").exists());
    assert_eq!(std::fs::read(run.join("samples.png")).unwrap(), png);
    for args in [vec!["-n", "0"], vec!["-o", "x.jpg"]] {
        let out = vic().arg("sample").args(&args).arg(&run).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = vic()
        .args(["eval", "--samples", "0"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A dataset that cannot be read leaves no run directory behind; `--dataset` paths are
/// the current directory's, and a near-miss of a built-in name gets a hint.
#[test]
fn a_failed_data_load_leaves_nothing_and_paths_are_the_callers() {
    let dir = scratch("cli", "data");
    let out = vic()
        .current_dir(&dir)
        .args(["train", "--dataset", "fashion_mnist", "--out", "run"])
        .arg(spec())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&dir.join("fashion_mnist").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("did you mean the built-in dataset \"fashion-mnist\""),
        "{err}"
    );
    assert!(!dir.join("run").exists());
}

/// `vic encode` writes the same means twice (no binarization draws), with each row's
/// index, split and label in a .npz.
#[test]
fn encode_is_deterministic_and_says_where_each_row_comes_from() {
    let dir = scratch("cli", "encode");
    let run = dir.join("run");
    run_ok(
        vic()
            .args(["train", "--set", "train.epochs=1", "--out"])
            .arg(&run)
            .arg(spec()),
    );
    let (a, b) = (dir.join("a.npz"), dir.join("b.npz"));
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&a));
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&b));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let arrays = candle_core::npy::NpzTensors::new(&a).unwrap();
    let names: Vec<String> = arrays.names().into_iter().cloned().collect();
    for n in ["means", "index", "split", "labels"] {
        assert!(names.iter().any(|x| x == n), "{names:?}");
    }
    let split = arrays.get("split").unwrap().unwrap();
    let split: Vec<u32> = split.to_vec1().unwrap();
    assert_eq!(split.iter().filter(|&&s| s == 1).count(), 180);
    assert_eq!(split.len(), 1797);
}

/// `vic fmt -` formats standard input; completions and the manual page are printed.
#[test]
fn fmt_reads_standard_input_and_completions_and_man_are_printed() {
    use std::io::Write;
    let mut child = vic()
        .args(["fmt", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"data x : Real[2]\nmodel {   x ~ Normal(0,1) }\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "data x : Real[2]\n\nmodel {\n  x ~ Normal(0, 1)\n}\n"
    );
    let bash = run_ok(vic().args(["completions", "bash"]));
    assert!(bash.contains("vic") && bash.contains("probe"));
    let man = run_ok(vic().arg("man"));
    assert!(man.contains(".TH vic"));
}
