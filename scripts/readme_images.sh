#!/usr/bin/env bash
# The README's pictures, copied from a `make demo` run (never drawn by hand): the contact sheet of a
# recorded clip and the comparison of input | ground truth | frame-by-frame | temporal on a test clip.
#   make demo && bash scripts/readme_images.sh [DATA] [RUN]
set -euo pipefail
DATA="${1:-data/demo}"
RUN="${2:-runs/demo}"
compare=$(ls "$RUN"/predictions/*-compare.png 2>/dev/null | head -n 1 || true)
if [[ ! -f "$DATA/clip.png" || -z "$compare" ]]; then
    echo "error: no demo run in $DATA and $RUN; run make demo first" >&2
    exit 2
fi
mkdir -p docs/images
cp "$DATA/clip.png" docs/images/clip.png
cp "$compare" docs/images/compare.png
cp "${compare%.png}.mp4" docs/images/compare.mp4
echo "docs/images/clip.png, compare.png and compare.mp4 from $DATA and $RUN"
