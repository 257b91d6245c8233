#!/usr/bin/env bash
# Runs `wakeguard bench` the way docs/benchmarks.md reports it.
#
#   bench/run_bench.sh [OUT_DIR]
#
# - RUNS (default 3) separate runs of the latency bench with one inference thread (the
#   process runs on one core at a time; CORE=N pins it to core N with taskset, which on a
#   shared machine means competing with whatever else runs there), REPEATS (default 300) timed
#   runs per stage and command length after WARMUP (20) warm-up rounds; the int8 bundle, its
#   float32 variant and the Void-style baseline interleaved in every run;
# - the first run also measures streaming cost at real-time speed (STREAM_SECONDS, default
#   30 s of idle audio and 30 s of commands) and writes the PNG;
# - summary.md / summary.json: medians over the runs, each ratio taken within one run;
# - lscpu.txt and the exact commands (commands.txt) beside the results.
#
# Environment: MODEL (bundle folder; default: the shipped bundle), FLOAT_MODEL, VOID_MODEL,
# WAKEGUARD (the wakeguard executable), PYTHON (the same environment's python).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${WAKEGUARD:-}" ]]; then
  if [[ -x "$here/.venv/bin/wakeguard" ]]; then WAKEGUARD="$here/.venv/bin/wakeguard"; else WAKEGUARD="$(command -v wakeguard)"; fi
fi
PYTHON="${PYTHON:-$(dirname "$WAKEGUARD")/python}"
RUNS="${RUNS:-3}"
REPEATS="${REPEATS:-300}"
WARMUP="${WARMUP:-20}"
CORE="${CORE:-}"
STREAM_SECONDS="${STREAM_SECONDS:-30}"
OUT="${1:-$here/bench/results/$(hostname)-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"

args=(bench --json --threads 1 --repeats "$REPEATS" --warmup "$WARMUP")
[[ -n "${MODEL:-}" ]] && args+=(--model "$MODEL")
[[ -n "${FLOAT_MODEL:-}" ]] && args+=(--float-model "$FLOAT_MODEL")
[[ -n "${VOID_MODEL:-}" ]] && args+=(--void-model "$VOID_MODEL")

pin=()
if [[ -n "$CORE" ]]; then pin=(taskset -c "$CORE"); fi

lscpu > "$OUT/lscpu.txt" 2>/dev/null || cat /proc/cpuinfo > "$OUT/lscpu.txt"
: > "$OUT/commands.txt"
files=()
for i in $(seq 1 "$RUNS"); do
  extra=()
  if [[ "$i" == 1 ]]; then
    extra=(--stream --stream-seconds "$STREAM_SECONDS" --stream-speed 1 --plot "$OUT/bench.png")
  fi
  cmd=("${pin[@]}" "$WAKEGUARD" "${args[@]}" "${extra[@]}")
  echo "${cmd[*]} > $OUT/run$i.json" | tee -a "$OUT/commands.txt" >&2
  "${cmd[@]}" > "$OUT/run$i.json" 2> "$OUT/run$i.log"
  files+=("$OUT/run$i.json")
done
"$PYTHON" -c 'from wakeguard.tools.bench_cmd import summarize_main; summarize_main()' "$OUT" "${files[@]}"
echo "results: $OUT" >&2
