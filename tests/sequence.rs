//! The sequence families end to end through the command line, shrunk to the 8x8 digits:
//! a VRNN with a GRU state and with an LSTM state, and DRAW with attention, each
//! trained, evaluated, sampled (DRAW also step by step) and encoded.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_ok, scratch, vic};
use std::path::PathBuf;

/// A spec file under `specs/` with its consts shrunk to the digits and two epochs.
fn shrunk(spec: &str, consts: &[(&str, &str)]) -> String {
    let path = format!("{}/specs/{spec}", env!("CARGO_MANIFEST_DIR"));
    let mut src = std::fs::read_to_string(path).unwrap();
    for (name, value) in consts {
        let line = src
            .lines()
            .find(|l| l.starts_with(&format!("const {name} ")))
            .unwrap()
            .to_string();
        src = src.replace(&line, &format!("const {name} = {value}"));
    }
    src.replace("\"fashion-mnist\"", "\"digits\"")
        .replace("epochs = 50", "epochs = 2")
        .replace("epochs = 20", "epochs = 2")
}

/// Train, evaluate, sample and encode; the run directory.
fn end_to_end(name: &str, src: &str) -> PathBuf {
    let dir = scratch("sequence", name);
    let spec = dir.join(format!("{name}.vi"));
    std::fs::write(&spec, src).unwrap();
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    assert!(
        run.join("samples.png").exists(),
        "training draws samples.png"
    );
    let out = vic()
        .args(["eval", "--samples", "20", "--json"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (elbo, iwae) = (
        report["elbo"].as_f64().unwrap(),
        report["iwae"].as_f64().unwrap(),
    );
    assert!(elbo.is_finite() && elbo < 0.0, "{report}");
    // The IWAE bound is tighter than the ELBO (up to Monte Carlo noise).
    assert!(iwae > elbo - 0.5, "{report}");
    let png = dir.join("again.png");
    run_ok(vic().arg("sample").arg(&run).arg("-o").arg(&png));
    assert!(std::fs::metadata(&png).unwrap().len() > 100);
    // Stepped latents are encoded step by step: [N, T * Z].
    let codes = dir.join("codes.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&codes));
    assert!(std::fs::metadata(&codes).unwrap().len() > 1797 * 4 * 4);
    run
}

#[test]
fn a_vrnn_with_a_gru_state_trains_samples_and_encodes() {
    let src = shrunk(
        "vrnn.vi",
        &[("T", "8"), ("W", "8"), ("Z", "4"), ("H", "32")],
    );
    end_to_end("vrnn", &src);
}

#[test]
fn a_vrnn_with_an_lstm_state_trains_samples_and_encodes() {
    let src = shrunk(
        "vrnn_lstm.vi",
        &[("T", "8"), ("W", "8"), ("Z", "4"), ("H", "32")],
    );
    end_to_end("vrnn_lstm", &src);
}

#[test]
fn draw_trains_and_draws_its_canvas_step_by_step() {
    let src = shrunk(
        "draw.vi",
        &[("T", "4"), ("Z", "4"), ("H", "32"), ("S", "8"), ("N", "3")],
    );
    let run = end_to_end("draw", &src);
    let text = run_ok(vic().args(["sample", "--steps", "-n", "5"]).arg(&run));
    assert!(text.contains("after each of 4 steps"), "{text}");
    // One row per sample, one column per step: 4 images of 28 (8 enlarged 3x) plus gaps.
    let png = std::fs::read(run.join("steps.png")).unwrap();
    let dec = png_size(&png);
    assert_eq!(dec, (4 * 25 + 1, 5 * 25 + 1), "width x height of steps.png");
}

#[test]
fn steps_are_refused_for_a_model_that_reads_no_sequence_at_a_fixed_step() {
    let src = shrunk(
        "vrnn.vi",
        &[("T", "8"), ("W", "8"), ("Z", "4"), ("H", "16")],
    )
    .replace("epochs = 2", "epochs = 1");
    let dir = scratch("sequence", "vrnn-steps");
    let spec = dir.join("v.vi");
    std::fs::write(&spec, src).unwrap();
    let run = dir.join("run");
    run_ok(vic().arg("train").arg(&spec).arg("--out").arg(&run));
    let out = vic()
        .args(["sample", "--steps"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no observation of this model reads a sequence"),
        "{err}"
    );
}

/// The (width, height) of a PNG, from its IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

/// The model pass's reuse of the guide's recurrent state changes nothing but the time:
/// the bound and every gradient are those of the model computing its own state.
#[test]
fn sharing_the_guides_state_keeps_the_bound_and_its_gradients() {
    use candle_core::{Device, Tensor};
    use vic::lower::objective::{Batch, Settings};
    use vic::rng::Rng;
    for (spec, consts) in [
        (
            "vrnn.vi",
            &[("T", "5"), ("W", "6"), ("Z", "3"), ("H", "8")][..],
        ),
        (
            "draw.vi",
            &[("T", "3"), ("Z", "3"), ("H", "8"), ("S", "6"), ("N", "2")][..],
        ),
    ] {
        let src = shrunk(spec, consts);
        let mut model = common::lower(&src, 3);
        assert!(!model.plan.shared.is_empty(), "{spec}: nothing shared");
        let def = &model.program.data[0];
        let n: usize = def.ty.numel() * 4;
        let bits: Vec<f32> = Rng::seed(2)
            .uniform_vec(n)
            .into_iter()
            .map(|u| f32::from(u < 0.3))
            .collect();
        let mut shape = vec![4];
        shape.extend(&def.ty.shape);
        let batch = Batch::new(
            vec![Some(Tensor::from_vec(bits, shape, &Device::Cpu).unwrap())],
            4,
        );
        let s = Settings::evaluation(2, false, 10);
        let run = |m: &vic::lower::LoweredModel| {
            let out = m.objective(&batch, &s, &mut Rng::seed(9)).unwrap();
            let grads = out.loss.backward().unwrap();
            let mut g: Vec<f64> = Vec::new();
            for (_, v) in m.store.named() {
                g.extend(common::to_f64(grads.get(v.as_tensor()).unwrap()));
            }
            (common::to_f64(&out.bound), g)
        };
        let (b1, g1) = run(&model);
        model.plan.shared.clear();
        let (b2, g2) = run(&model);
        assert_eq!(b1, b2, "{spec}: the bound");
        assert_eq!(g1.len(), g2.len());
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{spec}: gradient {i}: {a} vs {b}"
            );
        }
    }
}
