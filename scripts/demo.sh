#!/usr/bin/env bash
# `make demo`: record a small synthetic dataset over a train, a val and a test town, then look at it.
# Re-running resumes: clips that exist are not recorded again.
set -euo pipefail
DATA="${1:-data/demo}"
RUN="${2:-runs/demo}"
BIN=.venv/bin

echo "== recording (embedded simulator, no CARLA server needed) =="
"$BIN/capture" record --backend synthetic --town Town01 --clips 6 --clips-per-shard 4 --out "$DATA"
"$BIN/capture" record --backend synthetic --town Town03 --clips 6 --out "$DATA"
"$BIN/capture" record --backend synthetic --town Town10HD --clips 2 --out "$DATA"
"$BIN/capture" record --backend synthetic --town Town02 --clips 2 --out "$DATA"

echo "== splitting by town (train / val / test) =="
"$BIN/capture" split "$DATA"

echo "== verifying every clip =="
"$BIN/capture" verify "$DATA"

echo "== inspecting =="
"$BIN/capture" inspect "$DATA" --sheet "$DATA/clip.png" --video "$DATA/clip.mp4"
echo "demo dataset in $DATA (contact sheet: $DATA/clip.png, video: $DATA/clip.mp4)"

echo "== training the tiny preset through all four stages (CPU; about 5 minutes) =="
"$BIN/train" run pipeline --data "$DATA" --out "$RUN" --preset tiny --resume

echo "== predictions of the temporal model on a test clip =="
"$BIN/train" predict pipeline --run "$RUN" "$DATA/Town02"

echo "== evaluation on the test town: frame-by-frame vs temporal, clean and corrupted =="
"$BIN/train" eval pipeline --run "$RUN" --split test --perturbed
