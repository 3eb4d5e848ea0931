#!/usr/bin/env bash
# Training throughput of every family `vic train` supports against a PyTorch
# implementation of the same model (same layers, batch, optimizer, flush-to-zero, 2
# threads), side by side in one run, REPEATS times each, interleaved:
#   vic:     bench/step_time.rs (the trainer's batching, objective, backward, optimizer;
#            examples of the epoch's pass per second, median of the steps);
#   PyTorch: bench/vae_torch.py, seq_torch.py, iaf_torch.py, vdrop_torch.py,
#            metavae_torch.py, family_torch.py.
# One table: examples/s of each (median and range over the repeats), the ratio, vic's
# share of the fp32 GEMM roofline (ROOFLINE GFLOP/s; the plan's forward FLOPs times 3
# for forward and backward), and vic's peak memory (RSS) beside the plan's activations
# per batch. Run it on a quiet machine: nothing else may run beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${REPEATS:-3}
STEPS=${STEPS:-40}
ROOFLINE=${ROOFLINE:-320}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
cargo build --release --quiet --example step_time
cargo build --release --quiet
# family  spec  torch command
FAMILIES=(
  "vae|specs/vae.vi|python3 bench/vae_torch.py throughput --steps 300 --warmup 300 --flush-denormal"
  "conv_vae|specs/conv_vae.vi|python3 bench/family_torch.py throughput conv_vae --steps 40 --warmup 10 --flush-denormal"
  "cvae|specs/cvae.vi|python3 bench/family_torch.py throughput cvae --steps 100 --warmup 20 --flush-denormal"
  "m2|specs/m2.vi|python3 bench/family_torch.py throughput m2 --steps 30 --warmup 5 --flush-denormal"
  "gmvae|specs/gmvae.vi|python3 bench/family_torch.py throughput gmvae --steps 30 --warmup 5 --flush-denormal"
  "vrnn|specs/vrnn.vi|python3 bench/seq_torch.py throughput vrnn --steps 40 --warmup 10 --flush-denormal"
  "draw|specs/draw.vi|python3 bench/seq_torch.py throughput draw --steps 30 --warmup 5 --flush-denormal"
  "iaf|specs/iaf.vi|python3 bench/iaf_torch.py throughput --steps 2 --iters 60 --warmup 10 --flush-denormal"
  "lenet_vdrop|specs/lenet_vdrop.vi|python3 bench/vdrop_torch.py throughput --iters 200 --warmup 20 --flush-denormal"
  "savae|specs/savae.vi|python3 bench/family_torch.py throughput savae --steps 6 --warmup 2 --flush-denormal"
  "random_function|specs/random_function.vi|python3 bench/family_torch.py throughput random_function --steps 60 --warmup 10 --flush-denormal"
  "metavae|specs/metavae.vi|python3 bench/metavae_torch.py throughput --steps 8 --warmup 2 --flush-denormal"
)
for r in $(seq 1 "$REPEATS"); do
  for f in "${FAMILIES[@]}"; do
    IFS='|' read -r name spec torch <<< "$f"
    steps=$STEPS
    case $name in savae|metavae|m2|gmvae|draw) steps=$((STEPS / 4 + 2));; esac
    /usr/bin/time -f "%M" -o "$OUT/$name-rss-$r.txt" env FLUSH=1 STEPS=$steps ./target/release/examples/step_time "$spec" > "$OUT/$name-vic-$r.txt" 2>&1
    THREADS=2 $torch > "$OUT/$name-torch-$r.json" 2> "$OUT/$name-torch-$r.err" || echo '{"examples_per_second": null}' > "$OUT/$name-torch-$r.json"
  done
done
for f in "${FAMILIES[@]}"; do
  IFS='|' read -r name spec _ <<< "$f"
  ./target/release/vic compile "$spec" --emit plan > "$OUT/$name-plan.txt"
done
python3 - "$OUT" "$REPEATS" "$ROOFLINE" <<'PY'
import json, re, sys, statistics
out, reps, roof = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
names = ["vae", "conv_vae", "cvae", "m2", "gmvae", "vrnn", "draw", "iaf", "lenet_vdrop", "savae", "random_function", "metavae"]
print(f"{'family':16}{'vic ex/s':>18}{'torch ex/s':>18}{'ratio':>14}{'roofline':>10}{'RSS MB':>9}{'plan act. MB':>13}")
for n in names:
    v, t, rss = [], [], []
    for r in range(1, reps + 1):
        txt = open(f"{out}/{n}-vic-{r}.txt").read()
        m = re.search(r"median ms:.*-> (\d+) ex/s", txt)
        if m: v.append(float(m.group(1)))
        j = json.load(open(f"{out}/{n}-torch-{r}.json"))
        if j.get("examples_per_second"): t.append(j["examples_per_second"])
        try: rss.append(int(open(f"{out}/{n}-rss-{r}.txt").read().split()[-1]) / 1024)
        except Exception: pass
    plan = open(f"{out}/{n}-plan.txt").read()
    fl = re.search(r"per example: (\d+) FLOPs", plan)
    act = re.search(r"per batch of \d+: \d+ FLOPs .*?, (\d+) bytes", plan)
    fmt = lambda xs: f"{statistics.median(xs):7.0f} [{min(xs):.0f}-{max(xs):.0f}]" if xs else "n/a"
    ratio = (f"{statistics.median(v) / statistics.median(t):5.2f}x [{min(v) / max(t):.2f}-{max(v) / min(t):.2f}]" if v and t else "n/a")
    rl = f"{100 * statistics.median(v) * 3 * int(fl.group(1)) / (roof * 1e9):8.1f}%" if v and fl else "n/a"
    mem = f"{statistics.median(rss):9.0f}" if rss else "n/a"
    pa = f"{int(act.group(1)) / 1e6:13.1f}" if act else "n/a"
    print(f"{n:16}{fmt(v):>18}{fmt(t):>18}{ratio:>14}{rl:>10}{mem}{pa}")
PY
