#!/usr/bin/env bash
# How a training step scales from one thread to two: bench/step_time.rs on each spec
# with RAYON_NUM_THREADS=1 and =2 (median step, its breakdown), interleaved, REPEATS
# times. Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
SPECS=${SPECS:-"specs/vae.vi specs/gmvae.vi specs/vrnn.vi specs/draw.vi"}
cargo build --release --quiet --example step_time
for spec in $SPECS; do
  for r in $(seq 1 "$REPEATS"); do
    for t in 1 2; do
      line=$(RAYON_NUM_THREADS=$t FLUSH=1 STEPS=${STEPS:-40} ./target/release/examples/step_time "$spec" | grep median)
      echo "$spec threads=$t $line"
    done
  done
done
