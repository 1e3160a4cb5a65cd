"""The bundled demo model (glip/assets/demo_model, trained by experiments/demo_model.py) on fresh synthetic images.

The full figure (200 test images) is in docs/reproduction.md section 2; this is the small version the issue asks
for: a world seed never used in training, evaluated with ``glip.eval`` like ``glip eval`` does.
"""

from __future__ import annotations

import json

import pytest

from glip.weights.demo import DEMO_MODEL_DIR, demo_model_available

pytestmark = pytest.mark.skipif(not demo_model_available(), reason="bundled demo model not installed")

# experiments/demo_model.py trains on seed 0 (split train) and reports on seed 0 (split test)
FRESH_SEED = 4242


@pytest.fixture(scope="module")
def fresh_world(tmp_path_factory):
    from glip.data.synthetic.writers import generate

    out = tmp_path_factory.mktemp("fresh_world")
    generate(out, num_images=40, seed=FRESH_SEED, split="test")
    return out


def test_demo_model_detects_seen_concepts_on_a_fresh_seed(fresh_world):
    from glip.eval.coco import evaluate_coco
    from glip.eval.options import EvalOptions
    from glip.weights.loading import load_model

    model = load_model(DEMO_MODEL_DIR).eval()
    result = evaluate_coco(
        model,
        fresh_world / "detection.json",
        fresh_world / "images",
        EvalOptions(progress=False, report=False),
    )
    concepts = {
        c["id"]: c["concept"] for c in json.loads((fresh_world / "detection.json").read_text())["categories"]
    }
    seen = [r["AP50"] for r in result.per_category if concepts[r["id"]] == "seen" and r["AP50"] > -1]
    assert len(seen) >= 20  # most of the 30 seen names occur in 40 images
    ap50_seen = sum(seen) / len(seen)
    # the target; measured 0.913 (0.855 on the 200 test images of seed 0)
    assert ap50_seen >= 0.8, ap50_seen


def test_demo_model_names_the_right_colour_and_shape(fresh_world):
    """The top-scoring name at each seen object: right for most objects (not just "some word")."""
    import torch
    from PIL import Image
    from torchvision.ops import box_iou

    from glip.predictor import GLIPPredictor

    data = json.loads((fresh_world / "detection.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"] if c["concept"] == "seen"}
    prompt = sorted(names.values())
    predictor = GLIPPredictor.from_pretrained(DEMO_MODEL_DIR)
    right = total = 0
    for image in data["images"][:12]:
        result = predictor.predict(
            Image.open(fresh_world / "images" / image["file_name"]).convert("RGB"),
            classes=prompt,
            threshold=0.0,
        )
        for ann in data["annotations"]:
            if ann["image_id"] != image["id"] or ann["category_id"] not in names:
                continue
            total += 1
            x, y, w, h = ann["bbox"]
            iou = box_iou(result.boxes, torch.tensor([[x, y, x + w - 1, y + h - 1]], dtype=torch.float32))[
                :, 0
            ]
            hits = (iou >= 0.5).nonzero().flatten()
            if len(hits):
                best = hits[result.scores[hits].argmax()]
                right += prompt[int(result.labels[best])] == names[ann["category_id"]]
    assert total >= 15
    assert right / total >= 0.8, (right, total)  # measured 26 / 27
