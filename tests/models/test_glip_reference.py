"""The official reduced GLIP reference (../shared/reference) reproduced through the public API.

Tolerances from the reference README: intermediates ~1e-4, detections: same labels, boxes 1e-3 px,
scores 1e-5 after sorting by score.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from glip.preprocess import ImageBatch, pad_batch, preprocess
from glip.weights.convert import tower_indices

ATOL = 1e-4


def _label_map(inputs: dict) -> dict[int, list[int]]:
    return {int(k): [int(t) for t in v] for k, v in inputs["positive_map_label_to_token"].items()}


def test_preprocessing_matches_official_transform(reference_inputs, reduced_config):
    raw = reference_inputs["raw_image_rgb_uint8_hwc"].numpy()
    image = Image.fromarray(raw)
    tensor = preprocess(image, reduced_config.input.min_size, reduced_config.input.max_size)
    torch.testing.assert_close(tensor, reference_inputs["preprocessed_image_chw"], atol=1e-5, rtol=0)
    batch = pad_batch([tensor], reduced_config.input.size_divisibility)
    assert batch.image_sizes == [tuple(reference_inputs["image_sizes_hw"][0].tolist())]
    torch.testing.assert_close(batch.tensors, reference_inputs["batched_images"], atol=1e-5, rtol=0)
    assert isinstance(raw, np.ndarray)


def _run(model, inputs, trim: bool):
    """Forward with hooks on every tower module, in official tower order."""
    captured: dict[int, dict[str, object]] = {}
    handles = []
    for (block_index, part), position in tower_indices(model).items():
        module = getattr(model.head.blocks[block_index], part)

        def hook(_module, _args, output, position=position, part=part):
            if part == "fusion":
                captured[position] = {"visual": output[0], "lang": output[1]}
            elif part == "text_layer":
                captured[position] = {"lang": output}
            else:
                captured[position] = {"visual": output}

        handles.append(module.register_forward_hook(hook))
    model.trim_text_padding = trim
    batch = ImageBatch(inputs["batched_images"], [tuple(inputs["image_sizes_hw"][0].tolist())])
    try:
        with torch.no_grad():
            body = model.backbone(batch.tensors)
            output = model(batch, inputs["input_ids"], inputs["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
        model.trim_text_padding = True
    return body, output, captured


@pytest.mark.parametrize("trim", [False, True], ids=["pad256", "trimmed"])
def test_intermediates_match(reduced_model, reference_inputs, reference_outputs, trim):
    body, output, captured = _run(reduced_model, reference_inputs, trim)
    ref = reference_outputs
    for ours, theirs in zip(body, ref["backbone_body"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=ATOL)
    for ours, theirs in zip(output.fpn, ref["fpn"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=ATOL)
    length = output.text.hidden.shape[1]
    assert length == (12 if trim else 256)
    torch.testing.assert_close(
        output.text.hidden, ref["language"]["hidden"][:, :length], atol=ATOL, rtol=ATOL
    )
    torch.testing.assert_close(
        output.text.embedded, ref["language"]["embedded"][:, :length], atol=ATOL, rtol=ATOL
    )
    # tower: the same 6 official modules (fusion, BERT layer, DyConv) x 2, each output compared
    assert sorted(captured) == list(range(len(ref["tower"])))
    last_lang = None
    for position, values in captured.items():
        theirs = ref["tower"][position]
        if "visual" in values:
            for ours, reference in zip(values["visual"], theirs["visual"], strict=True):  # type: ignore[arg-type]
                torch.testing.assert_close(ours, reference, atol=ATOL, rtol=ATOL)
        if "lang" in values:
            last_lang = values["lang"]
            torch.testing.assert_close(last_lang, theirs["lang_hidden"][:, :length], atol=ATOL, rtol=ATOL)
    assert last_lang is not None
    for ours, theirs in zip(output.head.token_logits, ref["dot_product_logits"], strict=True):
        torch.testing.assert_close(ours, theirs[..., :length], atol=ATOL, rtol=ATOL)
    for ours, theirs in zip(output.head.box_regression, ref["bbox_reg"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=ATOL)
    for ours, theirs in zip(output.head.centerness, ref["centerness"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=ATOL)
    for ours, theirs in zip(output.anchors, ref["anchors"], strict=True):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


@pytest.mark.parametrize("trim", [False, True], ids=["pad256", "trimmed"])
def test_final_detections_match(reduced_model, reference_inputs, reference_outputs, trim):
    _, output, _ = _run(reduced_model, reference_inputs, trim)
    detections = reduced_model.postprocess(output, _label_map(reference_inputs))[0]
    ref = reference_outputs
    assert len(detections) == len(ref["scores"]) == 100
    ours = detections.scores.argsort(descending=True)
    theirs = ref["scores"].argsort(descending=True)
    torch.testing.assert_close(detections.scores[ours], ref["scores"][theirs], atol=1e-5, rtol=0)
    assert torch.equal(detections.labels[ours], ref["labels"][theirs])
    torch.testing.assert_close(detections.boxes[ours], ref["boxes"][theirs], atol=1e-3, rtol=0)


def test_torchvision_deform_kernel_gives_the_same_result(reduced_model, reference_inputs, reference_outputs):
    """Both deformable-conv paths (torchvision's kernel and our grid_sample one) reproduce the reference."""
    from glip.models.dyhead import ConvNorm

    previous = ConvNorm.deform_impl
    ConvNorm.deform_impl = "torchvision"
    try:
        _, output, _ = _run(reduced_model, reference_inputs, trim=True)
    finally:
        ConvNorm.deform_impl = previous
    for ours, theirs in zip(output.head.token_logits, reference_outputs["dot_product_logits"], strict=True):
        torch.testing.assert_close(ours, theirs[..., : ours.shape[-1]], atol=ATOL, rtol=ATOL)
