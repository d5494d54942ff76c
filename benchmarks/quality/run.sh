#!/usr/bin/env bash
# The quality benchmark: replays SpamAssassin (single-label), Reuters-21578 corn/grain (multi-label) and WNUT-16
# (entities) through a fresh embedded pipeline each, the gold labels playing the reviewers, and writes each
# report (JSON) and budget curve (PNG) into benchmarks/quality/results/, then the summary table.
# Needs the datasets: `make data` (or `make bench-quality`, which fetches them and runs this).
# Environment: TARGET_PRECISION (default 0.95), SEEDS (random-review draws, default 20), LIMIT (items per
# dataset, for a quick run), OUT (results folder).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${OUT:-benchmarks/quality/results}
target=${TARGET_PRECISION:-0.95}
seeds=${SEEDS:-20}
limit=()
[[ -n "${LIMIT:-}" ]] && limit=(--limit "$LIMIT")
mkdir -p "$out"

echo "quality benchmark: spam-assassin" >&2
.venv/bin/labelgate demo --target-precision "$target" --seeds "$seeds" "${limit[@]}" --out "$out" --json >/dev/null
for dataset in reuters wnut16; do
  echo "quality benchmark: $dataset" >&2
  .venv/bin/labelgate replay --dataset "$dataset" --target-precision "$target" --seeds "$seeds" "${limit[@]}" \
    --out "$out" --json >/dev/null
done
.venv/bin/python benchmarks/quality/summarize.py "$out" | tee "$out/summary.md"
