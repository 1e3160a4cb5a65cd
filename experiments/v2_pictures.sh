#!/usr/bin/env bash
# The four GLIPv2 pictures of the README / docs/segmentation.md / docs/vl-understanding.md, made with the
# bundled demo_v2 model on image 2 of `glip synth --split test --seed 21`:
#   bash experiments/v2_pictures.sh            (run from the repository root, with .venv/bin on PATH or GLIP set)
set -euo pipefail
GLIP=${GLIP:-glip}
WORK=${WORK:-outputs/v2_pictures}
rm -rf "$WORK"
"$GLIP" synth --out "$WORK/world" --split test --seed 21 --num-images 4 --masks >/dev/null
IMAGE="$WORK/world/images/test_000002.png"
SEEN="red circle,red square,red triangle,red star,red cross,red ring,green circle,green square,green triangle,green star,green cross,green ring,blue circle,blue square,blue triangle,blue star,blue cross,blue ring,yellow circle,yellow square,yellow triangle,yellow star,yellow cross,yellow ring,purple circle,purple square,purple triangle,purple star,purple cross,purple ring"
"$GLIP" detect "$IMAGE" --classes "$SEEN" --masks --out "$WORK/masks"
"$GLIP" detect "$IMAGE" --caption "a large yellow diamond and the large plain blue circle to the left of the small blue square." --masks --threshold 0.4 --out "$WORK/referring"
"$GLIP" ask "$IMAGE" --question "what colour is the diamond?" --out "$WORK/ask"
"$GLIP" caption "$IMAGE" --out "$WORK/caption"
cp "$WORK/masks/test_000002.png" docs/images/v2_masks.png
cp "$WORK/referring/test_000002.png" docs/images/v2_referring.png
cp "$WORK/ask/test_000002.png" docs/images/v2_ask.png
cp "$WORK/caption/test_000002.png" docs/images/v2_caption.png
