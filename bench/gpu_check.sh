#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU, PyTorch with CUDA, no Rust
# toolchain and no network (the lent H100/H200 machines): is vic's CUDA path right, and
# how fast is it against PyTorch on the same GPU?
#
#   1. the lowering harness's GPU test: every spec and documented example, its loss and
#      every parameter's gradient on the GPU against the fused CPU path, from one seed
#   2. one epoch of specs/vae.vi end to end (`vic train`) on the GPU and on the CPU, same
#      seed: the test ELBOs, which should agree to rounding
#   3. steady-state training throughput of the VAE and the GMVAE: vic (bench/step_time.rs,
#      DEVICE=cuda, with the time of each phase) against bench/vae_torch.py and
#      bench/family_torch.py on the same GPU, interleaved, REPEATS times
#   4. three epochs of the VAE end to end, vic train against vae_torch.py train
#
# Prepare `.gpu/` first with bench/gpu_bundle.sh (here, on any machine), then run this
# from the repository's root on the GPU machine with `.gpu` carried along. Three files go
# to $OUT (default /tmp/gpu_check): summary.md (the figures, also printed at the end),
# log.txt (everything) and runs.tar.gz (the run directories' metrics and the PyTorch
# JSON); the rest stays in /tmp/gpu_check_work.
# DEVICE=cpu runs the same steps on the CPU, to try the script itself on a machine
# without a GPU (the test of step 1 is then skipped).
set -uo pipefail

OUT=${OUT:-/tmp/gpu_check}
WORK=/tmp/gpu_check_work
DEVICE=${DEVICE:-cuda}
REPEATS=${REPEATS:-2}
STEPS=${STEPS:-300}
ROOT=$(pwd)
BIN=/tmp/vic-gpu-bin
rm -rf "$WORK"
mkdir -p "$OUT" "$WORK" "$BIN"
LOG=$WORK/log.txt
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
# Run a step with a time limit, its output in the log; a failure is recorded and the
# script goes on to the next step.
step() {
    local limit=$1 name=$2
    shift 2
    say "$name: $*"
    local t0=$SECONDS
    timeout "$limit" "$@" >> "$LOG" 2>&1
    local rc=$?
    say "$name: rc=$rc in $((SECONDS - t0)) s"
    echo "$name $rc $((SECONDS - t0))" >> "$WORK/steps.txt"
    return $rc
}
: > "$WORK/steps.txt"

[ -f .gpu/bin.tar.xz ] || { echo "no .gpu/bin.tar.xz: run bench/gpu_bundle.sh first and carry .gpu" >&2; exit 2; }

# --- The machine and its libraries --------------------------------------------------
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  nproc
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
} > "$WORK/machine.txt" 2>&1
cat "$WORK/machine.txt" >> "$LOG"

# Python's lzma where the machine has no xz.
tar -xJf .gpu/bin.tar.xz -C "$BIN" 2>> "$LOG" \
    || python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu/bin.tar.xz "$BIN" \
    || { say "cannot unpack .gpu/bin.tar.xz"; cp "$LOG" "$OUT/"; exit 1; }
FASHION=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION/train-images-idx3-ubyte.gz" ]; then
    mkdir -p "$FASHION" && cp .gpu/fashion-mnist/*.gz "$FASHION"/
fi
# cuBLAS, cuRAND and NVRTC from the machine's CUDA wheels (PyTorch's), the driver's
# libcuda, and the runtime the binaries were linked against.
NVLIBS=$(python3 - <<'EOF'
import glob, os
dirs = set()
try:
    import nvidia
    for base in nvidia.__path__:
        for p in glob.glob(os.path.join(base, "**", "lib*.so*"), recursive=True):
            dirs.add(os.path.dirname(p))
except ImportError:
    pass
print(":".join(sorted(dirs)))
EOF
)
export LD_LIBRARY_PATH=$ROOT/.gpu:${NVLIBS}:/usr/local/nvidia/lib64:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$LOG"
VIC=$BIN/vic

# --- 1. The lowering harness on the GPU ----------------------------------------------
if [ "$DEVICE" != cpu ]; then
    step 300 gpu_test env CARGO_MANIFEST_DIR="$ROOT" "$BIN/lowering" --ignored --exact \
        the_gpu_and_the_fused_cpu_path_agree_on_every_spec --nocapture
fi

# --- 2. One VAE epoch on the GPU and on the CPU, same seed ----------------------------
for d in $(printf '%s\n' "$DEVICE" cpu | awk '!seen[$0]++'); do
    step 240 "epoch_$d" "$VIC" train specs/vae.vi --device "$d" --set train.epochs=1 \
        --out "$WORK/vae_epoch_$d"
done

# --- 3. Steady-state throughput, interleaved ------------------------------------------
for r in $(seq 1 "$REPEATS"); do
    step 180 "vic_vae_$r" env DEVICE="$DEVICE" STEPS="$STEPS" "$BIN/step_time" specs/vae.vi
    step 180 "torch_vae_$r" python3 bench/vae_torch.py throughput --device "$DEVICE" \
        --steps "$STEPS" --warmup 100
    step 180 "vic_gmvae_$r" env DEVICE="$DEVICE" STEPS="$STEPS" "$BIN/step_time" specs/gmvae.vi
    step 180 "torch_gmvae_$r" python3 bench/family_torch.py throughput gmvae --device "$DEVICE" \
        --steps "$STEPS" --warmup 50
done

# --- 4. Three VAE epochs end to end ---------------------------------------------------
step 300 vic_train "$VIC" train specs/vae.vi --device "$DEVICE" --set train.epochs=3 \
    --out "$WORK/vae_train"
step 300 torch_train python3 bench/vae_torch.py train --device "$DEVICE" --epochs 3 \
    --iwae 10 --json "$WORK/vae_train_torch.json"

# --- The figures -------------------------------------------------------------------
python3 - "$WORK" "$DEVICE" <<'EOF' | tee "$OUT/summary.md"
import csv, json, os, re, sys, statistics
out, device = sys.argv[1], sys.argv[2]
log = open(os.path.join(out, "log.txt")).read()
steps = {}
for line in open(os.path.join(out, "steps.txt")):
    name, rc, secs = line.split()
    steps[name] = (int(rc), int(secs))
print(f"# vic on {device}: {open(os.path.join(out, 'machine.txt')).read().strip()}\n")
print("| step | exit | seconds |\n|---|---|---|")
for name, (rc, secs) in steps.items():
    print(f"| {name} | {rc} | {secs} |")
# Each step's own part of the log, between its "== name:" lines.
def section(name):
    m = re.search(rf"== {name}: (?!rc=).*?\n(.*?)== {name}: rc=", log, re.S)
    return m.group(1) if m else ""
def vic_rate(name):
    m = re.search(r"median ms:.*?total ([\d.]+) -> (\d+) ex/s", section(name))
    return float(m.group(2)) if m else None
def vic_phases(name):
    m = re.search(r"median ms:\s+(.*?) ->", section(name))
    return m.group(1) if m else "?"
def torch_rate(name):
    for line in section(name).splitlines():
        if line.startswith("{"):
            return json.loads(line).get("examples_per_second")
    return None
print("\n## Steady-state training throughput (examples/s, median of repeats)\n")
print("| model | vic | PyTorch | vic / PyTorch | vic's median step (ms) |\n|---|---|---|---|---|")
for model in ["vae", "gmvae"]:
    reps = [k.rsplit("_", 1)[1] for k in steps if k.startswith(f"vic_{model}_")]
    v = [x for x in (vic_rate(f"vic_{model}_{r}") for r in reps) if x]
    t = [x for x in (torch_rate(f"torch_{model}_{r}") for r in reps) if x]
    if v and t:
        ratios = [a / b for a, b in zip(v, t)]
        print(f"| {model} | {statistics.median(v):.0f} | {statistics.median(t):.0f} | "
              f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] | {vic_phases(f'vic_{model}_1')} |")
    else:
        print(f"| {model} | {v or 'failed'} | {t or 'failed'} | - | - |")
def metrics(run):
    p = os.path.join(out, run, "metrics.csv")
    return list(csv.DictReader(open(p))) if os.path.exists(p) else []
print("\n## One VAE epoch, same seed: test ELBO\n")
for d in dict.fromkeys([device, "cpu"]):
    m = metrics(f"vae_epoch_{d}")
    print(f"- {d}: " + (f"test ELBO {float(m[-1]['test_elbo']):.4f}, {float(m[-1]['examples_per_second']):.0f} ex/s" if m else "failed"))
print("\n## Three VAE epochs end to end (examples/s per epoch)\n")
m = metrics("vae_train")
print("- vic: " + (", ".join(f"{float(r['examples_per_second']):.0f}" for r in m) + f"; test ELBO {float(m[-1]['test_elbo']):.4f}" if m else "failed"))
p = os.path.join(out, "vae_train_torch.json")
if os.path.exists(p):
    j = json.load(open(p))
    print("- PyTorch: " + ", ".join(f"{h['examples_per_second']:.0f}" for h in j["history"]) + f"; test ELBO {j['test_elbo']:.4f}")
else:
    print("- PyTorch: failed")
test = section("gpu_test")
if test:
    tail = [l for l in test.splitlines() if l.strip()][-12:]
    print("\n## The GPU test\n\n```\n" + "\n".join(tail) + "\n```")
EOF
cp "$LOG" "$OUT/"
(cd "$WORK" && tar -czf "$OUT/runs.tar.gz" steps.txt machine.txt ./*/metrics.csv ./*.json 2>/dev/null)
