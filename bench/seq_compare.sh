#!/usr/bin/env bash
# Issue figures for the sequence families, side by side with the PyTorch references of
# bench/seq_torch.py (the same models, trained the same way), on Fashion-MNIST:
#   VRNN (specs/vrnn.vi) and DRAW (specs/draw.vi, and specs/draw_dense.vi without
#   attention): EPOCHS epochs each, the test ELBO and the IWAE-500 bound on the first
#   2,000 test images, the KL summed over steps; DRAW's canvas after every step
#   (steps.png). Throughput is measured apart, on a quiet machine: bench/seq_throughput.sh.
# Needs: apt-get install dataset-fashion-mnist; pip install torch. About 2 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-5}
OUT=${OUT:-$(mktemp -d)}
cargo build --release --quiet
for spec in vrnn draw draw_dense; do
  if [ ! -f "$OUT/$spec/model.safetensors" ]; then
    ./target/release/vic train specs/$spec.vi --out "$OUT/$spec" --set train.epochs="$EPOCHS"
  fi
  [ -f "$OUT/$spec-eval.json" ] || ./target/release/vic eval "$OUT/$spec" --samples 500 --examples 2000 --json > "$OUT/$spec-eval.json"
done
[ -f "$OUT/draw/steps.png" ] || ./target/release/vic sample "$OUT/draw" -n 8 --steps
for m in vrnn draw draw_dense; do
  [ -f "$OUT/torch-$m.json" ] || THREADS=2 python3 bench/seq_torch.py train $m --epochs "$EPOCHS" --iwae 500 --test 2000 --json "$OUT/torch-$m.json"
done
python3 - "$OUT" <<'PY'
import csv, json, sys
out = sys.argv[1]
print(f"{'':12}{'vic ELBO':>10}{'torch ELBO':>12}{'diff':>7}{'vic IWAE':>10}{'torch IWAE':>12}{'diff':>7}{'vic KL':>8}{'torch KL':>9}")
for m in ["vrnn", "draw", "draw_dense"]:
    v = json.load(open(f"{out}/{m}-eval.json"))
    t = json.load(open(f"{out}/torch-{m}.json"))
    rows = list(csv.DictReader(open(f"{out}/{m}/metrics.csv")))
    kl = float(rows[-1]["KL(z)"])
    print(f"{m:12}{v['elbo']:10.2f}{t['test_elbo']:12.2f}{v['elbo'] - t['test_elbo']:7.2f}"
          f"{v['iwae']:10.2f}{t['iwae']:12.2f}{v['iwae'] - t['iwae']:7.2f}{kl:8.2f}{t['kl']:9.2f}")
d = json.load(open(f"{out}/draw-eval.json")); dd = json.load(open(f"{out}/draw_dense-eval.json"))
print(f"attention's margin over dense DRAW (vic): ELBO {d['elbo'] - dd['elbo']:+.2f}, IWAE {d['iwae'] - dd['iwae']:+.2f}")
print(f"canvas steps: {out}/draw/steps.png")
PY
