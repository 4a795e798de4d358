#!/usr/bin/env bash
# `make demo`: install, record a small synthetic dataset over train, val and test towns, check it,
# train the tiny preset through all four stages on CPU, and show what it learned: the comparison
# sheet and video of input | ground truth | frame-by-frame | temporal, and the evaluation table.
# Re-running resumes: the install, the recorded clips and the trained stages are kept.
set -euo pipefail
DATA="${1:-data/demo}"
RUN="${2:-runs/demo}"
BIN="${BIN:-.venv/bin}"  # the installed commands (make install puts them in .venv)
STEPS=9
START=$SECONDS
STEP=0

step() {
    STEP=$((STEP + 1))
    local elapsed=$((SECONDS - START))
    printf '\n== step %d/%d: %s (elapsed %d:%02d) ==\n' "$STEP" "$STEPS" "$1" $((elapsed / 60)) $((elapsed % 60))
}

step "installing into .venv (make install; nothing to do when installed)"
"${MAKE:-make}" --no-print-directory install

step "recording the training towns Town01 and Town03 (embedded simulator, no CARLA server)"
"$BIN/capture" record --backend synthetic --town Town01 --clips 6 --clips-per-shard 4 --out "$DATA"
"$BIN/capture" record --backend synthetic --town Town03 --clips 6 --out "$DATA"

step "recording the validation town Town10HD and the test town Town02"
"$BIN/capture" record --backend synthetic --town Town10HD --clips 2 --out "$DATA"
"$BIN/capture" record --backend synthetic --town Town02 --clips 2 --out "$DATA"

step "splitting by town (train / val / test)"
"$BIN/capture" split "$DATA"

step "verifying every clip"
"$BIN/capture" verify "$DATA"

step "inspecting: contact sheet $DATA/clip.png and video $DATA/clip.mp4"
"$BIN/capture" inspect "$DATA" --sheet "$DATA/clip.png" --video "$DATA/clip.mp4"

step "training the tiny preset through all four stages (CPU)"
"$BIN/train" run pipeline --data "$DATA" --out "$RUN" --preset tiny --resume

step "predicting a test clip: frame-by-frame beside temporal ($RUN/predictions/)"
"$BIN/train" predict pipeline --run "$RUN" "$DATA/Town02" --compare

step "evaluating on the test town: frame-by-frame vs temporal, clean and corrupted"
"$BIN/train" eval pipeline --run "$RUN" --split test --perturbed

elapsed=$((SECONDS - START))
printf '\ndemo done in %d:%02d: dataset %s, run %s, comparison %s/predictions/*-compare.{png,mp4}\n' \
    $((elapsed / 60)) $((elapsed % 60)) "$DATA" "$RUN" "$RUN"
