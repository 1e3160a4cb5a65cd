"""The official training-loss reference (targets, ATSS assignment, loss values, gradients) reproduced."""

from __future__ import annotations

import pytest
import torch

from glip.losses.grounding import Target, glip_losses
from glip.preprocess import ImageBatch
from glip.weights.convert import official_name_map

# our stable loss keys -> the official loss dict keys
OFFICIAL_KEYS = {
    "loss_token": "loss_dot_product_token",
    "loss_giou": "loss_reg",
    "loss_centerness": "loss_centerness",
}


@pytest.fixture(scope="module")
def train_reference(reference_dir):
    inputs = torch.load(reference_dir / "train_reference_inputs.pth", weights_only=True)
    outputs = torch.load(reference_dir / "train_reference_outputs.pth", weights_only=True)
    return inputs, outputs


def _targets(inputs) -> list[Target]:
    targets, offset = [], 0
    for boxes, labels in zip(inputs["gt_boxes_xyxy_resized"], inputs["gt_labels"]):
        count = len(labels)
        targets.append(Target(boxes, labels, inputs["positive_map"][offset : offset + count]))
        offset += count
    return targets


@pytest.mark.parametrize("trim", [False, True], ids=["pad256", "trimmed"])
def test_losses_assignment_and_gradients(reduced_model, train_reference, trim):
    inputs, ref = train_reference
    model = reduced_model
    # the reference disabled dropout / drop path / DropBlock: eval mode has exactly that forward
    model.eval()
    model.zero_grad(set_to_none=True)
    model.trim_text_padding = trim
    try:
        batch = ImageBatch(inputs["batched_images"], [tuple(s) for s in inputs["image_sizes_hw"].tolist()])
        output = model(batch, inputs["input_ids"], inputs["attention_mask"])
        losses, assignments = glip_losses(
            output.head.token_logits,
            output.head.box_regression,
            output.head.centerness,
            output.anchors,
            _targets(inputs),
            output.text.mask,
        )
        for ours, theirs in OFFICIAL_KEYS.items():
            torch.testing.assert_close(losses[ours], ref["loss_dict"][theirs], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(sum(losses.values()), ref["total_loss"], rtol=1e-4, atol=1e-6)
        length = output.text.mask.shape[1]
        for ours, theirs in zip(assignments, ref["assignment"], strict=True):
            assert torch.equal(ours.labels, theirs["labels"])
            assert torch.equal(ours.positive, theirs["positive_mask"])
            assert torch.equal(ours.matched_gt, theirs["matched_gt_index"])
            torch.testing.assert_close(ours.reg_targets, theirs["reg_targets_all"], atol=1e-5, rtol=0)
            assert torch.equal(ours.token_targets, theirs["token_labels"][:, :length])
        assert int(sum(a.positive.sum() for a in assignments)) == int(ref["num_pos"]) == 53

        sum(losses.values()).backward()
        names = official_name_map(model)
        without_grad = sorted(names[k] for k, p in model.named_parameters() if p.grad is None)
        assert without_grad == sorted(ref["params_without_grad"])
        for key, param in model.named_parameters():
            if param.grad is None:
                continue
            expected = ref["grad_norms"][names[key]]
            # attention key biases have a mathematically zero gradient (softmax shift invariance): only noise
            torch.testing.assert_close(param.grad.norm(), expected, rtol=1e-3, atol=1e-5)
        for official, expected in ref["grads"].items():
            ours = dict(model.named_parameters())[{v: k for k, v in names.items()}[official]].grad
            torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    finally:
        model.zero_grad(set_to_none=True)
        model.trim_text_padding = True
