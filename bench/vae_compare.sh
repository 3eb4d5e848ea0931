#!/usr/bin/env bash
# Side by side, in one run on this machine: vic and the PyTorch reference (bench/vae_torch.py)
# on the VAE of LANGUAGE.md section 1 (specs/vae.vi) on Fashion-MNIST.
#   accuracy: 10 epochs each, test ELBO and IWAE-1000 bound;
#   throughput: training examples/s (vic's per-epoch figure; PyTorch's own loop, with and
#   without torch.set_flush_denormal; NumPyro's jit-compiled SVI step, bench/vae_numpyro.py),
#   reported with the ratios, also against the fastest of the peers.
# Needs: apt-get install dataset-fashion-mnist; pip install torch numpyro jax[cpu].
# Takes about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-$(mktemp -d)}
cargo build --release --quiet --example step_time
./target/release/vic train specs/vae.vi --out "$OUT/vic" --set train.epochs="$EPOCHS"
./target/release/vic eval "$OUT/vic" --samples 1000 --json > "$OUT/vic-eval.json"
THREADS=2 python3 bench/vae_torch.py train --epochs "$EPOCHS" --iwae 1000 --json "$OUT/torch.json"
FLUSH=1 ./target/release/examples/step_time specs/vae.vi > "$OUT/vic-steps.txt"
THREADS=2 python3 bench/vae_torch.py throughput --steps 300 --warmup 300 > "$OUT/torch-tp.json"
THREADS=2 python3 bench/vae_torch.py throughput --steps 300 --warmup 300 --flush-denormal > "$OUT/torch-ftz-tp.json"
python3 bench/vae_numpyro.py throughput --steps 300 --warmup 300 > "$OUT/numpyro-tp.json"
python3 - "$OUT" <<'PY'
import csv, json, re, sys
out = sys.argv[1]
ve = json.load(open(f"{out}/vic-eval.json"))
te = json.load(open(f"{out}/torch.json"))
rows = list(csv.DictReader(open(f"{out}/vic/metrics.csv")))
vic_epoch = sum(float(r["examples_per_second"]) for r in rows) / len(rows)
torch_epoch = sum(h["examples_per_second"] for h in te["history"]) / len(te["history"])
steps = open(f"{out}/vic-steps.txt").read()
vic_steady = float(re.search(r"-> (\d+) ex/s", steps).group(1))
tp = json.load(open(f"{out}/torch-tp.json"))["examples_per_second"]
ftz = json.load(open(f"{out}/torch-ftz-tp.json"))["examples_per_second"]
npy = json.load(open(f"{out}/numpyro-tp.json"))["examples_per_second"]
print(f"{'':24}{'vic':>12}{'PyTorch':>12}{'difference':>12}")
print(f"{'test ELBO':24}{ve['elbo']:12.2f}{te['test_elbo']:12.2f}{ve['elbo'] - te['test_elbo']:12.2f}")
print(f"{'IWAE-1000 bound':24}{ve['iwae']:12.2f}{te['iwae']:12.2f}{ve['iwae'] - te['iwae']:12.2f}")
print(f"{'ex/s, epoch average':24}{vic_epoch:12.0f}{torch_epoch:12.0f}{vic_epoch / torch_epoch:11.2f}x")
print(f"{'ex/s, steady (300 steps)':24}{vic_steady:12.0f}{tp:12.0f}{vic_steady / tp:11.2f}x")
print(f"{'  vs PyTorch flush-to-0':24}{'':12}{ftz:12.0f}{vic_steady / ftz:11.2f}x")
print(f"{'  vs NumPyro (jit)':24}{'':12}{npy:12.0f}{vic_steady / npy:11.2f}x")
best = max(tp, ftz, npy)
print(f"{'  vs the fastest peer':24}{'':12}{best:12.0f}{vic_steady / best:11.2f}x")
PY
