#!/usr/bin/env bash
# The GPU check of issue 15, item 4, as one script for a lent GPU machine (docs/cuda-build.md,
# "The GPU run"). Runs from the repository root there, on the bundle that `cargo xtask gpu-bundle`
# built on a CPU machine (folder .gpu-bundle, carried to the device):
#
#   1. the GPU tests (flowfm-ops' portable path, flowfm-models' device parity) with
#      FLOWFM_REQUIRE_GPU=1, so a GPU that fails to open fails instead of skipping;
#   2. throughput against PyTorch on the same GPU: flowfm's throughput example (--device cuda)
#      and gpu/torch_peer.py, batches 64 and 512, alternating, two rounds;
#   3. a short run of the full profile: `flowfm pretrain --config configs/flowfm-full.toml
#      --device cuda --stop-after 60` on the bundled window store.
#
# Logs and a summary go to $OUT (or ./gpu-out when OUT is unset). Each step has its own time
# limit; the whole script is meant to end within 9 minutes.
set -uo pipefail
B=.gpu-bundle
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt"; }

[ -d "$B" ] || { echo "no $B: run cargo xtask gpu-bundle first and carry it" >&2; exit 2; }
# Python's tarfile reads xz whether or not the machine has the xz tool.
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$B/bin.tar.xz" "$B" || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/summary.txt"

# cuBLAS, cuRAND and the CUDA runtime (libcublas.so.13, libcurand.so.10, libcudart.so.13) come
# from the Python wheels PyTorch installed; the driver's libcuda.so.1 from the machine.
LIBS=""
for lib in libcublas.so.13 libcurand.so.10 libcudart.so.13; do
  for sp in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))'); do
    f=$(find "$sp/nvidia" -name "$lib" 2>/dev/null | head -1)
    if [ -n "$f" ]; then LIBS="$LIBS:$(dirname "$f")"; break; fi
  done
done
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$B/bin/flowfm" | grep -E "cuda|cublas|curand|not found" | tee -a "$OUT/summary.txt"

export FLOWFM_REQUIRE_GPU=1 CANDLE_NUM_THREADS=1
status=0
for t in portable_path device_parity; do
  log "test $t"
  if timeout 240 "$B/bin/$t" --test-threads 1 >"$OUT/test-$t.log" 2>&1; then
    log "test $t: $(grep -E '^test result' "$OUT/test-$t.log" | tail -1)"
  else
    status=1
    log "test $t FAILED (exit $?); tail:"
    tail -30 "$OUT/test-$t.log" | tee -a "$OUT/summary.txt"
  fi
done

log "throughput: flowfm and PyTorch, alternating"
: >"$OUT/throughput.jsonl"
for round in 1 2; do
  for batch in 64 512; do
    timeout 120 "$B/bin/throughput" --json --device cuda --batch "$batch" --iters 20 2>>"$OUT/throughput.err" \
      | sed "s/^{/{\"side\": \"flowfm\", \"round\": $round, /" >>"$OUT/throughput.jsonl"
    timeout 120 python3 gpu/torch_peer.py --models-dir "$B" --batch "$batch" --reps 20 2>>"$OUT/throughput.err" \
      | sed "s/^{/{\"side\": \"pytorch\", \"round\": $round, /" >>"$OUT/throughput.jsonl"
  done
done
python3 - "$OUT/throughput.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def speed(r):
    return r["windows_per_s"] if "windows_per_s" in r else 1000.0 / r["ms_per_nfe_per_window"]
keys = sorted({(r["what"], float(r.get("width", 1.0)), r["batch"]) for r in recs})
print(f"{'work':24} {'width':>5} {'batch':>5} {'flowfm':>10} {'pytorch':>10} {'ratio':>6}")
for k in keys:
    side = {s: [speed(r) for r in recs if (r["what"], float(r.get("width", 1.0)), r["batch"]) == k and r["side"] == s]
            for s in ("flowfm", "pytorch")}
    f = statistics.median(side["flowfm"]) if side["flowfm"] else float("nan")
    p = statistics.median(side["pytorch"]) if side["pytorch"] else float("nan")
    print(f"{k[0]:24} {k[1]:5.2f} {k[2]:5d} {f:10.1f} {p:10.1f} {f / p:6.2f}")
PY

log "full profile, 60 steps on the GPU"
rm -rf /tmp/flowfm-full-run
/usr/bin/time -v timeout 240 "$B/bin/flowfm" pretrain --config configs/flowfm-full.toml \
  --store "$B/store.h5" --device cuda --stop-after 60 --out /tmp/flowfm-full-run \
  >"$OUT/pretrain-full.log" 2>&1 || status=1
tail -5 "$OUT/pretrain-full.log" | tee -a "$OUT/summary.txt"
grep -E "Maximum resident|Elapsed" "$OUT/pretrain-full.log" | tee -a "$OUT/summary.txt"
[ -f /tmp/flowfm-full-run/metrics.jsonl ] && cp /tmp/flowfm-full-run/metrics.jsonl "$OUT/" 
log "done, status $status"
exit $status
