#!/usr/bin/env bash
# Trains SPEC in stages of STAGE epochs up to MAX, continuing the same run directory with
# `--resume --set train.epochs=N`, and evaluates the test split after each stage
# (`vic eval RUN --samples 1 --json` into OUT-eval-N.json: the test ELBO, the accuracy of
# a `partial` label's q(y | x), the clustering accuracy of a `Cat` latent). Extra
# arguments are passed to `vic train` (`--set train.supervised_weight=10`). Stops early
# when STOP_FLAT=K and the stage's accuracy has not risen for K stages.
#   bench/staged_train.sh specs/m2.vi /tmp/m2 10 100
#   bench/staged_train.sh specs/gmvae.vi /tmp/gmvae 10 50
# A copy of target/release/vic is used, so rebuilding while it runs changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
SPEC=$1 OUT=$2 STAGE=$3 MAX=$4
shift 4
VIC=$(mktemp /tmp/vic-staged.XXXXXX)
cp target/release/vic "$VIC"
chmod +x "$VIC"
best=0 flat=0
for ((e = STAGE; e <= MAX; e += STAGE)); do
  if [ "$e" = "$STAGE" ]; then
    "$VIC" train "$SPEC" --out "$OUT" --set train.epochs="$e" "$@" 2>&1 | tail -1
  else
    "$VIC" train "$SPEC" --out "$OUT" --resume --set train.epochs="$e" "$@" 2>&1 | tail -1
  fi
  "$VIC" eval "$OUT" --samples 1 --json > "$OUT-eval-$e.json"
  acc=$(python3 -c "
import json, sys
d = json.load(open(sys.argv[1]))
a = [x['accuracy'] for x in d.get('accuracy', [])] + list(d.get('clustering_accuracy', {}).values())
print(a[0] if a else 0)" "$OUT-eval-$e.json")
  echo "epochs $e: test ELBO $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['elbo'])" "$OUT-eval-$e.json"), accuracy $acc"
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$acc" "$best"; then
    best=$acc flat=0
  else
    flat=$((flat + 1))
    if [ -n "${STOP_FLAT:-}" ] && [ "$flat" -ge "$STOP_FLAT" ]; then
      echo "accuracy has not risen for $flat stages: stopping"
      break
    fi
  fi
done
rm -f "$VIC"
