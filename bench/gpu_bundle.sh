#!/usr/bin/env bash
# Prepare, on a machine without a GPU, what bench/gpu_check.sh needs on one that has a
# GPU but no Rust toolchain and no network: `.gpu/` (ignored by git) gets
#
#   bin.tar.xz     vic, the step_time example and the lowering test binary, built with
#                  `--features cuda` and stripped (one xz stream: they share most code)
#   libcudart.so.13  the CUDA runtime they link against (cuBLAS, cuRAND and NVRTC are
#                  opened at run time from the GPU machine's own CUDA libraries)
#   fashion-mnist/ Debian's four Fashion-MNIST files (no apt there)
#
# about 35 MB in all. Usage, from the repository's root:
#
#     bench/gpu_bundle.sh [CUDA_DIR]    # CUDA_DIR: a toolkit from scripts/cuda_toolkit.sh
#                                       # (made there if missing; default ~/cuda13)
#
# Builds into CARGO_TARGET_DIR (default target/cuda, kept apart from the CPU build: a
# first build takes about 17 minutes on 2 cores).
set -euo pipefail

CUDA_DIR=${1:-$HOME/cuda13}
TARGET=${CARGO_TARGET_DIR:-target/cuda}
FASHION=/usr/share/datasets/fashion-mnist

[ -f Cargo.toml ] && [ -d specs ] || { echo "run from the repository's root" >&2; exit 2; }
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [ -f "$FASHION/$f" ] || { echo "$FASHION/$f is missing: apt-get install dataset-fashion-mnist" >&2; exit 2; }
done

# Made there on the first run, reused after; its exports for the build. (An assignment,
# not `eval "$(...)"` at once, so that the toolkit script's failure stops this one.)
exports=$(scripts/cuda_toolkit.sh "$CUDA_DIR")
eval "$exports"

export CARGO_TARGET_DIR=$TARGET
cargo build --release --features cuda --bin vic --example step_time
# The test binary's path, from cargo's own account of what it built.
lowering=$(cargo test --release --features cuda --test lowering --no-run --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "lowering":
        print(m["executable"])')
[ -n "$lowering" ] || { echo "cargo built no lowering test binary" >&2; exit 1; }

rm -rf .gpu
mkdir -p .gpu/fashion-mnist .gpu/stage
cp "$TARGET/release/vic" "$TARGET/release/examples/step_time" .gpu/stage/
cp "$lowering" .gpu/stage/lowering
strip .gpu/stage/*
# A dictionary as large as one binary lets xz find the code the three share.
tar -C .gpu/stage -cf - vic step_time lowering | xz -T0 -9 --lzma2=preset=9,dict=96MiB > .gpu/bin.tar.xz
rm -rf .gpu/stage
cp -L "$CUDA_DIR/lib/libcudart.so.13" .gpu/
cp "$FASHION"/*.gz .gpu/fashion-mnist/
du -sh .gpu
echo "now, on the GPU machine: bash bench/gpu_check.sh (carrying .gpu)" >&2
