"""anchor_view flattens one forward level by level in S_ground's order; attend_to_anchors is multi-head
attention with an additive bias (the same numbers as torch's scaled_dot_product_attention with a float mask)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glip.data.toy import deterministic_tiny_random
from glip.models.anchor_view import anchor_view, attend_to_anchors
from glip.models.glip import build_model
from glip.preprocess import ImageBatch
from glip.text.tokenizer import tokenize_captions


def test_anchor_view_follows_the_levels_in_token_logit_order():
    torch.manual_seed(0)
    model = build_model(deterministic_tiny_random()).eval()
    images = ImageBatch(torch.randn(2, 3, 96, 128), [(96, 128), (80, 100)])
    tokens = tokenize_captions(["red circle. blue square.", "star."], pad_to_max=False)
    with torch.no_grad():
        output = model(images, tokens.input_ids, tokens.attention_mask)
    view = anchor_view(output)
    sizes = [f.shape[2] * f.shape[3] for f in output.head.features]
    assert view.level_sizes == tuple(sizes) and view.features.shape[1] == sum(sizes)
    assert torch.equal(view.token_logits, torch.cat(output.head.token_logits, dim=1))
    level, row, col = 1, 2, 3  # one anchor of P4: its tower feature sits at the same flat index
    index = sizes[0] + row * output.head.features[1].shape[3] + col
    assert torch.equal(view.features[:, index], output.head.features[level][:, :, row, col])
    assert torch.equal(view.fpn[:, index], output.fpn[level][:, :, row, col])
    assert bool((view.centres >= 0).all() and (view.centres <= 1).all())
    assert not torch.equal(view.centres[0], view.centres[1])  # each image's own size


def test_attend_to_anchors_is_biased_multi_head_attention():
    torch.manual_seed(0)
    query, key, value = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    bias = torch.randn(2, 4, 5, 7)
    out = attend_to_anchors(query, key, value, 4, bias)
    split = lambda x: x.view(2, -1, 4, 2).transpose(1, 2)  # noqa: E731
    expected = F.scaled_dot_product_attention(split(query), split(key), split(value), attn_mask=bias)
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out, expected.transpose(1, 2).reshape(2, 5, 8), atol=1e-6)
