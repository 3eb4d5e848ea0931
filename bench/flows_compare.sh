#!/usr/bin/env bash
# Issue figures for flows and weight posteriors, on Fashion-MNIST, side by side with the
# PyTorch references bench/iaf_torch.py and bench/vdrop_torch.py:
#   - specs/iaf.vi (2 IAF steps) against the same encoder and decoder with the diagonal
#     guide (the spec without its `|> iaf(...)`), EPOCHS epochs each: test ELBO and
#     IWAE-500 on the first 2,000 test images; the PyTorch IAF and diagonal models;
#   - specs/lenet_vdrop.vi (LeNet-300-100 with sparse variational dropout) against the same
#     network with point weights (the spec with `weights = point`), VDROP_EPOCHS epochs:
#     test error, sparsity per layer, pruned error; the PyTorch reference of both.
# Throughput is measured apart, on a quiet machine (bench/family_throughput.sh).
# Needs: apt-get install dataset-fashion-mnist; pip install torch.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-10}
VDROP_EPOCHS=${VDROP_EPOCHS:-100}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet
sed 's/ |> iaf(ar, h, steps = 2)//' specs/iaf.vi > "$OUT/iaf_diag.vi"
sed 's/, weights = vdrop(kind = "B", kl = "molchanov")//' specs/lenet_vdrop.vi > "$OUT/lenet_point.vi"
train() { # spec run epochs
  [ -f "$2/model.safetensors" ] || ./target/release/vic train "$1" --out "$2" --set train.epochs="$3"
}
train specs/iaf.vi "$OUT/iaf" "$EPOCHS"
train "$OUT/iaf_diag.vi" "$OUT/iaf_diag" "$EPOCHS"
for r in iaf iaf_diag; do
  ./target/release/vic eval "$OUT/$r" --samples 500 --examples 2000 --json > "$OUT/$r-eval.json"
done
[ -f "$OUT/torch-iaf.json" ] || THREADS=2 python3 bench/iaf_torch.py train --steps 2 --epochs "$EPOCHS" --iwae 500 --test 2000 --json "$OUT/torch-iaf.json"
[ -f "$OUT/torch-iaf_diag.json" ] || THREADS=2 python3 bench/iaf_torch.py train --steps 0 --epochs "$EPOCHS" --iwae 500 --test 2000 --json "$OUT/torch-iaf_diag.json"
train specs/lenet_vdrop.vi "$OUT/lenet_vdrop" "$VDROP_EPOCHS"
train "$OUT/lenet_point.vi" "$OUT/lenet_point" "$VDROP_EPOCHS"
for r in lenet_vdrop lenet_point; do
  ./target/release/vic eval "$OUT/$r" --json > "$OUT/$r-eval.json"
done
[ -f "$OUT/torch-vdrop.json" ] || THREADS=2 python3 bench/vdrop_torch.py train --epochs "$VDROP_EPOCHS" --json "$OUT/torch-vdrop.json"
[ -f "$OUT/torch-point.json" ] || THREADS=2 python3 bench/vdrop_torch.py train --epochs "$VDROP_EPOCHS" --point --json "$OUT/torch-point.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
j = lambda n: json.load(open(f"{out}/{n}.json"))
print(f"{'':10}{'vic ELBO':>10}{'vic IWAE':>10}{'torch ELBO':>12}{'torch IWAE':>12}")
for r in ["iaf", "iaf_diag"]:
    v, t = j(f"{r}-eval"), j(f"torch-{r}")
    print(f"{r:10}{v['elbo']:10.2f}{v['iwae']:10.2f}{t['test_elbo']:12.2f}{t['iwae']:12.2f}")
a, d = j("iaf-eval"), j("iaf_diag-eval")
print(f"IAF gain (vic): ELBO {a['elbo'] - d['elbo']:+.2f}, IWAE {a['iwae'] - d['iwae']:+.2f} nats")
for r in ["lenet_vdrop", "lenet_point"]:
    v = j(f"{r}-eval")
    c = v["classification"][0]
    line = f"{r}: test error {100 * (1 - c['accuracy']):.2f}%  NLL {c['nll']:.4f}"
    if v.get("pruned_classification"):
        line += f"  pruned error {100 * (1 - v['pruned_classification'][0]['accuracy']):.2f}%"
    print(line)
    for s in v.get("sparsity", []):
        print(f"   {s['weight']}: {100 * s['pruned_fraction']:.1f}% of {s['entries']} pruned")
for r in ["torch-vdrop", "torch-point"]:
    print(r, {k: v for k, v in j(r).items() if k != "history"})
PY
