#!/usr/bin/env bash
# Issue figures for `meta` families, on Fashion-MNIST (EPOCHS epochs each):
#   - MetaVAE (specs/metavae.vi: rotations, even angles trained, odd held out) against a
#     plain VAE of the same encoder and decoder trained on the training angles pooled
#     (specs/pooled_vae.vi) and the per-set latent of specs/vhe.vi: `vic probe`'s mean
#     test accuracy over the held-out angles (PROBE_EXAMPLES training examples each);
#   - the same for the scale family (the specs with `scale(0.5:1.9:0.1)`, 15 members);
#   - one-shot generation (specs/oneshot.vi, classes 0-6 trained, 7-9 held out) against
#     the same model without the exemplar: the test ELBO of the held-out classes, and a
#     PNG of draws from one exemplar of each held-out class;
#   - MetaVAE's training throughput against bench/metavae_torch.py (measure it on a quiet
#     machine: THROUGHPUT=1).
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-10}
SHOT_EPOCHS=${SHOT_EPOCHS:-5}
PROBE_EXAMPLES=${PROBE_EXAMPLES:-10000}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet
for s in metavae pooled_vae vhe; do
  sed 's/rotate(-180:160:20)  # 18 members: -180, -160, ..., 160 degrees/scale(0.5:1.9:0.1)  # 15 members: 0.5, 0.6, ..., 1.9/' specs/$s.vi > "$OUT/${s}_scale.vi"
done
sed -e '/^set E /d' -e '/^net read_e/d' -e 's/, r: Real\[N \* N\]) -> Real\[H\] = gru()/) -> Real[H] = gru()/' \
    -e 's/dec_cell(h\[t - 1\], z\[t\], read_e(E, h\[t - 1\]))/dec_cell(h[t - 1], z[t])/' specs/oneshot.vi > "$OUT/oneshot_noex.vi"
train() { # spec run epochs
  [ -f "$2/model.safetensors" ] || ./target/release/vic train "$1" --out "$2" --set train.epochs="$3"
}
for s in metavae pooled_vae vhe; do
  train specs/$s.vi "$OUT/$s" "$EPOCHS"
  [ -f "$OUT/$s-probe.json" ] || ./target/release/vic probe "$OUT/$s" --examples "$PROBE_EXAMPLES" --json > "$OUT/$s-probe.json"
done
for s in metavae pooled_vae; do
  train "$OUT/${s}_scale.vi" "$OUT/${s}_scale" "$EPOCHS"
  [ -f "$OUT/${s}_scale-probe.json" ] || ./target/release/vic probe "$OUT/${s}_scale" --examples "$PROBE_EXAMPLES" --json > "$OUT/${s}_scale-probe.json"
done
train specs/oneshot.vi "$OUT/oneshot" "$SHOT_EPOCHS"
train "$OUT/oneshot_noex.vi" "$OUT/oneshot_noex" "$SHOT_EPOCHS"
for r in oneshot oneshot_noex; do
  [ -f "$OUT/$r-eval.json" ] || ./target/release/vic eval "$OUT/$r" --samples 100 --json > "$OUT/$r-eval.json"
done
# One exemplar of each held-out class (7, 8, 9): the first test image of each.
python3 - "$OUT/exemplars.npy" <<'PY'
import sys, os
sys.path.insert(0, "bench")
import numpy as np
from seq_torch import read_idx, FASHION
x = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")).reshape(-1, 1, 28, 28)
y = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
np.save(sys.argv[1], np.stack([x[np.argmax(y == c)] for c in (7, 8, 9)]).astype(np.float32) / 255)
PY
./target/release/vic sample "$OUT/oneshot" --given "$OUT/exemplars.npy" -n 10 -o "$OUT/oneshot-heldout.png"
if [ -n "${THROUGHPUT:-}" ]; then
  FLUSH=1 STEPS=30 ./target/release/examples/step_time specs/metavae.vi > "$OUT/vic-metavae-steps.txt" 2>&1 || true
  THREADS=2 python3 bench/metavae_torch.py throughput --steps 30 --warmup 5 --flush-denormal > "$OUT/torch-metavae-tp.json"
fi
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
j = lambda n: json.load(open(f"{out}/{n}.json"))
for fam, suffix in [("rotate", ""), ("scale", "_scale")]:
    rows = [("MetaVAE", f"metavae{suffix}"), ("pooled VAE", f"pooled_vae{suffix}")] + ([("per-set latent (VHE)", "vhe")] if not suffix else [])
    print(f"{fam}: mean probe accuracy on the held-out members")
    for name, r in rows:
        p = j(f"{r}-probe")
        print(f"  {name:22} {p['mean_accuracy']:.4f}   " + " ".join(f"{m['test_accuracy']:.3f}" for m in p["members"]))
for r in ["oneshot", "oneshot_noex"]:
    v = j(f"{r}-eval")
    held = [m for m in v["members"] if m["held_out"]]
    e = sum(m["elbo"] * m["examples"] for m in held) / sum(m["examples"] for m in held)
    i = sum(m["iwae"] * m["examples"] for m in held) / sum(m["examples"] for m in held)
    print(f"{r:14} held-out classes: ELBO {e:.2f}  IWAE-100 {i:.2f}")
print(f"draws from one exemplar of each held-out class: {out}/oneshot-heldout.png")
PY
