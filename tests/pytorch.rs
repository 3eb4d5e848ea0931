//! model.safetensors read by PyTorch without vic: a trained VAE's encoder rebuilt in
//! torch from the tensors and the metadata alone (layers as torch.nn.Linear, the heads'
//! rows and activations) reproduces `vic encode`'s posterior means, and a constrained
//! `param` is stored in its declared space. Skipped, saying so, where no Python with
//! torch is installed (`pip install torch`).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run_ok, scratch, vic};
use std::process::Command;

const SPEC: &str = r#"
data x : Binary[16]
latent z : Real[3]
param noise : Positive = 0.5
net enc(x: Binary[16]) -> (loc: Real[3], scale: Positive[3]) = mlp(hidden = [12, 8], act = tanh)
net dec(z: Real[3]) -> Real[16] = mlp(hidden = [8], act = relu)
model {
  z ~ Normal(0, noise)
  x ~ Bernoulli(logits = dec(z))
}
guide {
  let (m, s) = enc(x)
  z ~ Normal(m, s)
}
train { dataset = "x.npz"; epochs = 2; batch = 16 }
"#;

const CHECK: &str = r#"
import json, struct, sys
import numpy as np
import torch
path, data, means = sys.argv[1], sys.argv[2], sys.argv[3]
raw = open(path, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
meta = json.loads(header.pop("__metadata__")["vic"])
body = raw[8 + n:]
def tensor(name):
    h = header[name]
    a, b = h["data_offsets"]
    assert h["dtype"] == "F32"
    return torch.from_numpy(np.frombuffer(body[a:b], dtype=np.float32).reshape(h["shape"]).copy())
# A constrained param in its declared space, its raw tensor beside it.
noise = tensor("noise").item()
assert abs(noise - torch.nn.functional.softplus(tensor("@raw.noise")).item()) < 1e-6, noise
enc = meta["nets"]["enc"]
assert meta["params"]["noise"]["map"] == "softplus"
acts = {"tanh": torch.tanh, "relu": torch.relu}
x = torch.from_numpy(np.load(data)["x_test"]).float()
h = x.reshape(x.shape[0], -1)
for i, layer in enumerate(enc["layers"]):
    lin = torch.nn.Linear(*tensor(layer + ".weight").shape[::-1])
    lin.weight.data = tensor(layer + ".weight")
    lin.bias.data = tensor(layer + ".bias")
    h = lin(h)
    if i + 1 < len(enc["layers"]):
        h = acts[enc["activation"]](h)
loc = next(hd for hd in enc["heads"] if hd["name"] == "loc")
assert loc["activation"] == "identity"
a, b = loc["rows"]
want = torch.from_numpy(np.load(means)).float()[-x.shape[0]:]
err = (h[:, a:b] - want).abs().max().item()
print(f"max difference {err:.2e}")
assert err < 1e-4, err
"#;

#[test]
fn pytorch_rebuilds_the_encoder_from_model_safetensors() {
    let has_torch = Command::new("python3")
        .args(["-c", "import torch, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        eprintln!("skipped: no python3 with torch and numpy (pip install torch)");
        return;
    }
    let dir = scratch("pytorch", "load");
    // 64 training and 10 test examples of binary data.
    let mut rng = vic::rng::Rng::seed(4);
    let bin = |n: usize, rng: &mut vic::rng::Rng| {
        let v: Vec<f32> = rng
            .uniform_vec(n * 16)
            .into_iter()
            .map(|u| f32::from(u < 0.3))
            .collect();
        candle_core::Tensor::from_vec(v, (n, 16), &candle_core::Device::Cpu).unwrap()
    };
    let (train, test) = (bin(64, &mut rng), bin(10, &mut rng));
    let data = dir.join("x.npz");
    candle_core::Tensor::write_npz(&[("x", &train), ("x_test", &test)], &data).unwrap();
    std::fs::write(dir.join("vae.vi"), SPEC).unwrap();
    let run = dir.join("run");
    run_ok(
        vic()
            .arg("train")
            .arg(dir.join("vae.vi"))
            .arg("--out")
            .arg(&run),
    );
    let means = dir.join("means.npy");
    run_ok(vic().arg("encode").arg(&run).arg("-o").arg(&means));
    let script = dir.join("check.py");
    std::fs::write(&script, CHECK).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(run.join("model.safetensors"))
        .arg(&data)
        .arg(&means)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
