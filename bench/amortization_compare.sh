#!/usr/bin/env bash
# Issue figures for the amortization gap, on Fashion-MNIST (EPOCHS epochs each; IWAE-500
# and the refinement on the first 2,000 test images):
#   - SA-VAE (specs/savae.vi, `through = true`), VAE+SVI (the same with
#     `through = false`) and the plain VAE (the same without `@refine`): the test ELBO at
#     the encoder's output λ0 and after the refinement λK (`vic eval --refine 20`), the
#     IWAE bound, the share of examples whose ELBO the refinement raised;
#   - the random-function guide (specs/random_function.vi) against the plain VAE of the
#     same encoder and decoder (specs/vae.vi): IWAE, the time of one inference pass over
#     the test split (`vic encode`), and Spearman's rho between each test example's GP
#     predictive variance and its amortization gap after 20 refinement steps.
# Training time per epoch: each run's metrics.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${EPOCHS:-10}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet
sed 's/through = true/through = false/' specs/savae.vi > "$OUT/vae_svi.vi"
sed 's/ @refine(steps = 20, lr = 1.0, through = true)//' specs/savae.vi > "$OUT/vae_plain.vi"
train() { # spec run
  [ -f "$2/model.safetensors" ] || ./target/release/vic train "$1" --out "$2" --set train.epochs="$EPOCHS"
}
train specs/savae.vi "$OUT/savae"
train "$OUT/vae_svi.vi" "$OUT/vae_svi"
train "$OUT/vae_plain.vi" "$OUT/vae_plain"
train specs/random_function.vi "$OUT/random_function"
train specs/vae.vi "$OUT/vae"
for r in savae vae_svi vae_plain random_function vae; do
  [ -f "$OUT/$r-eval.json" ] || ./target/release/vic eval "$OUT/$r" --samples 500 --examples 2000 --refine 20 --json > "$OUT/$r-eval.json"
done
for r in random_function vae; do
  s=$(date +%s.%N)
  ./target/release/vic encode "$OUT/$r" -o "$OUT/$r-z.npy" 2>/dev/null
  e=$(date +%s.%N)
  echo "$r $(echo "$e - $s" | bc)" >> "$OUT/encode-seconds.txt"
done
python3 - "$OUT" <<'PY'
import csv, json, sys
from scipy.stats import spearmanr
out = sys.argv[1]
j = lambda n: json.load(open(f"{out}/{n}.json"))
def epoch_seconds(r):
    rows = list(csv.DictReader(open(f"{out}/{r}/metrics.csv")))
    return sum(float(x["seconds"]) for x in rows) / len(rows)
print(f"{'':16}{'ELBO(λ0)':>10}{'ELBO(λK)':>10}{'IWAE':>10}{'raised':>8}{'s/epoch':>9}")
for r in ["savae", "vae_svi", "vae_plain", "random_function", "vae"]:
    v = j(f"{r}-eval"); g = v["refinement"]
    raised = sum(1 for d in g["per_example_gap"] if d >= 0) / len(g["per_example_gap"])
    print(f"{r:16}{g['elbo_start']:10.2f}{g['elbo_refined']:10.2f}{v['iwae']:10.2f}{100 * raised:7.1f}%{epoch_seconds(r):9.1f}")
    if r in ("savae", "vae_svi"):
        print(f"{'':16}(vic eval's ELBO, refined as trained: {v['elbo']:.2f})")
rf = j("random_function-eval")
rho = spearmanr(rf["random_function"]["per_example_variance"], rf["refinement"]["per_example_gap"])
print(f"random function: IWAE gain over the VAE {rf['iwae'] - j('vae-eval')['iwae']:+.2f} nats; "
      f"Spearman rho(GP variance, amortization gap) = {rho.correlation:.3f} (p = {rho.pvalue:.2g})")
secs = dict(l.split() for l in open(f"{out}/encode-seconds.txt"))
print(f"inference pass (vic encode, 70,000 images): random function {float(secs['random_function']):.2f} s, "
      f"VAE {float(secs['vae']):.2f} s, ratio {float(secs['random_function']) / float(secs['vae']):.2f}")
PY
