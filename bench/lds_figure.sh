#!/usr/bin/env bash
# Issue figures for exact evidence on linear-Gaussian state-space models (data/lds.npz,
# made by data/make_lds.py):
#   - specs/lds.vi (`guide exact`, a Kalman filter and RTS smoother) trained; its exact
#     test log p(x) from `vic eval` against pykalman's filter run on the run's own
#     parameters (the relative difference), and against pykalman's EM fit;
#   - specs/lds_em.vi (an amortized VRNN-style guide under `alternate`): its ELBO beside the
#     Kalman evidence, plotted by `vic plot` (RUN/metrics.png: the gap closes in E phases).
# Needs: pip install pykalman.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet
[ -f "$OUT/lds/model.safetensors" ] || ./target/release/vic train specs/lds.vi --out "$OUT/lds"
./target/release/vic eval "$OUT/lds" --json > "$OUT/lds/eval.json"
python3 bench/lds_pykalman.py "$OUT/lds" --json "$OUT/lds-pykalman.json"
[ -f "$OUT/lds_em/model.safetensors" ] || ./target/release/vic train specs/lds_em.vi --out "$OUT/lds_em"
./target/release/vic plot "$OUT/lds_em"
python3 - "$OUT" <<'PY'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/lds_em/metrics.csv")))
for r in rows[:: max(1, len(rows) // 12)] + [rows[-1]]:
    gap = float(r["test_log_px"]) - float(r["test_elbo"])
    print(f"step {r['step']:>5} phase {r.get('phase', ''):1}  test ELBO {float(r['test_elbo']):9.3f}  exact log p(x) {float(r['test_log_px']):9.3f}  gap {gap:6.3f}")
print(f"plot: {out}/lds_em/metrics.png")
PY
