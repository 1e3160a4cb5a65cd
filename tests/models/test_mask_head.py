"""GLIPv2 language-guided mask head (glip.models.mask_head): config, levels, shapes, matching, saving, predictor
masks (its targets, paste-back and second-stage training: tests/v2/test_segmentation.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from glip.config import get_preset  # noqa: E402
from glip.data import CocoGroundingDataset, EvalTransform  # noqa: E402
from glip.data import synthetic as S  # noqa: E402
from glip.data.types import collate  # noqa: E402
from glip.models.glip import build_model  # noqa: E402
from glip.models.mask_head import (  # noqa: E402
    MaskHead,
    MaskHeadConfig,
    detection_masks,
    load_mask_head,
    phrase_features,
    save_mask_head,
)

SIZE = 96


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny_random detector, a mask head for it, and a synthetic set with masks (EvalTransform at 96 px)."""
    out = tmp_path_factory.mktemp("seg")
    S.generate(out, 4, seed=1, size=SIZE, split="train", masks=True)
    config = get_preset("tiny_random")
    torch.manual_seed(0)
    model = build_model(config).eval()
    model.head.bias0.data.fill_(0.0)  # so that the random detector returns boxes at threshold 0
    head = MaskHead(MaskHeadConfig.for_model(config, num_convs=2, conv_channels=32, embed_dim=32))
    dataset = CocoGroundingDataset(
        out / "detection.json",
        out / "images",
        EvalTransform(SIZE, 160),
        masks=True,
        num_negatives=4,
        shuffle_classes=False,
    )
    return {"dir": out, "config": config, "model": model, "head": head, "dataset": dataset}


def _forward(model, samples):
    batch = collate(samples)
    with torch.no_grad():
        output = model(batch.images, batch.input_ids, batch.attention_mask)
    return batch, output


def test_config_follows_the_model(setup) -> None:
    head_config = setup["head"].config
    assert head_config.in_channels == 64 and head_config.text_dim == 64 and head_config.strides == (8, 16, 32)
    assert MaskHeadConfig.from_dict(head_config.to_dict()) == head_config
    with pytest.raises(ValueError, match="unknown"):
        MaskHeadConfig.from_dict({"nope": 1})


def test_levels_by_box_size(setup) -> None:
    head = setup["head"]
    boxes = torch.tensor(
        [[0, 0, 32, 32], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 2000, 2000]], dtype=torch.float
    )
    # canonical: 224 -> P4 (index 1); 32 -> P3 (clamped); 448 -> P5; bigger stays at the last level
    assert head.levels(boxes).tolist() == [0, 1, 2, 2]


def test_shapes_and_phrase_features(setup) -> None:
    model, head = setup["model"], setup["head"]
    samples = [setup["dataset"][0], setup["dataset"][1]]
    batch, output = _forward(model, samples)
    token_maps = [t.token_map for t in batch.targets]
    words = phrase_features(output.head.fused_text, token_maps)
    count = sum(len(t.boxes) for t in batch.targets)
    assert words.shape == (count, 64)
    # hand-computed: mean of the first box's phrase tokens
    first = batch.targets[0].token_map[0, : output.head.fused_text.shape[1]].bool()
    assert torch.allclose(words[0], output.head.fused_text[0, first].mean(0), atol=1e-6)
    boxes = [t.boxes for t in batch.targets]
    logits = head(output.head.features, boxes, words, batch.images.tensors)
    assert logits.shape == (count, 28, 28)
    with pytest.raises(ValueError, match="no token"):
        phrase_features(output.head.fused_text[:1], [torch.zeros(1, 256)])
    with pytest.raises(ValueError, match="phrase features"):
        head(output.head.features, boxes, words[:-1], batch.images.tensors)
    with pytest.raises(ValueError, match="refines with the image"):
        head(output.head.features, boxes, words)
    with pytest.raises(ValueError, match="one image per box list"):
        head(output.head.features, boxes, words, batch.images.tensors[:1])


def test_the_image_sharpens_the_mask(setup) -> None:
    """The refining convolutions read the network input on each box's mask grid: another image under the same
    features gives another mask; pool_image samples the box's own pixels (a box over a constant region
    pools that constant)."""
    model, head = setup["model"], setup["head"]
    batch, output = _forward(model, [setup["dataset"][0]])
    boxes = [batch.targets[0].boxes[:1]]
    words = phrase_features(output.head.fused_text, [batch.targets[0].token_map[:1]])
    images = batch.images.tensors
    with torch.no_grad():
        a = head(output.head.features, boxes, words, images)
        b = head(output.head.features, boxes, words, images.flip(-1))
    assert not torch.allclose(a, b)
    constant = torch.zeros_like(images)
    constant[:, :, 10:50, 20:70] = 2.5
    pooled = head.pool_image(constant, [torch.tensor([[30.0, 20.0, 59.0, 39.0]])])
    assert pooled.shape == (1, 3, 28, 28) and torch.allclose(pooled, torch.full_like(pooled, 2.5))


def test_heads_saved_before_the_image_input_load_without_it(setup, tmp_path: Path) -> None:
    """A mask_head.json without ``image_channels`` (written before the image input existed) is a head on the
    tower features alone, and runs without images."""
    import json

    model = setup["model"]
    old = MaskHead(
        MaskHeadConfig.for_model(
            setup["config"], num_convs=1, conv_channels=16, embed_dim=16, image_channels=0
        )
    )
    save_mask_head(old, tmp_path)
    config = json.loads((tmp_path / "mask_head.json").read_text())
    config.pop("image_channels")
    (tmp_path / "mask_head.json").write_text(json.dumps(config))
    loaded = load_mask_head(tmp_path)
    assert loaded.config.image_channels == 0 and loaded.refine is None
    batch, output = _forward(model, [setup["dataset"][0]])
    words = phrase_features(output.head.fused_text, [batch.targets[0].token_map])
    assert loaded(output.head.features, [batch.targets[0].boxes], words).shape[1:] == (28, 28)


def test_mask_logits_match_the_words(setup) -> None:
    """Classification-to-matching: the logits are pixel . word; another phrase gives another mask."""
    model, head = setup["model"], setup["head"]
    batch, output = _forward(model, [setup["dataset"][0]])
    boxes = [batch.targets[0].boxes[:1]]
    words = phrase_features(output.head.fused_text, [batch.targets[0].token_map[:1]])
    other = torch.randn_like(words)
    with torch.no_grad():
        images = batch.images.tensors
        a = head(output.head.features, boxes, words, images)
        b = head(output.head.features, boxes, other, images)
        pixels = head.pixel_embeddings(head.pool(output.head.features, boxes), head.pool_image(images, boxes))
        expected = torch.einsum("kemn,ke->kmn", pixels, head.word_embeddings(words)) / np.sqrt(32) + head.bias
    assert not torch.allclose(a, b)
    assert torch.allclose(a, expected, atol=1e-5)


def test_save_load_round_trip(setup, tmp_path: Path) -> None:
    head = setup["head"]
    save_mask_head(head, tmp_path)
    loaded = load_mask_head(tmp_path / "mask_head.safetensors")
    assert loaded.config == head.config and not loaded.training
    for key, value in head.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="mask head file not found"):
        load_mask_head(tmp_path / "missing")


def test_predictor_masks(setup, tmp_path: Path) -> None:
    from glip.predictor import GLIPPredictor
    from glip.weights.loading import save_model

    model, head = setup["model"], setup["head"]
    image = setup["dir"] / "images" / "train_000000.png"
    classes = ["red circle", "blue square", "green star"]
    plain = GLIPPredictor(model)
    with pytest.raises(ValueError, match="mask head"):
        plain.predict(image, classes=classes, masks=True)
    boxes_only = plain.predict(image, classes=classes, threshold=0.0)
    assert boxes_only.masks is None
    save_model(model, tmp_path)
    save_mask_head(head, tmp_path)
    predictor = GLIPPredictor.from_pretrained(str(tmp_path))  # finds mask_head.safetensors beside the model
    result = predictor.predict(image, classes=classes, threshold=0.0, masks=True)
    assert len(result) > 0
    assert torch.allclose(result.boxes, boxes_only.boxes) and torch.equal(result.labels, boxes_only.labels)
    assert result.masks.dtype == torch.bool and result.masks.shape == (len(result), SIZE, SIZE)
    for box, mask in zip(result.boxes.tolist(), result.masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):
            assert (
                xs.min() >= int(box[0])
                and xs.max() <= box[2] + 1
                and ys.min() >= int(box[1])
                and ys.max() <= box[3] + 1
            )
    assert "segmentation" in result.to_dict()["detections"][0]
    batch, output = _forward(model, [setup["dataset"][0]])
    probs = detection_masks(
        head,
        output.head.features,
        output.head.fused_text,
        [torch.zeros(0, 4)],
        [torch.zeros(0, dtype=torch.long)],
        {},
        images=batch.images.tensors,
    )
    assert probs[0].shape == (0, 28, 28)
