"""Deep fusion: bidirectional image <-> text cross-attention (the paper's X-MHA, official "MHA-B").

Official: maskrcnn_benchmark/utils/fuse_helper.py (BiMultiHeadAttention, BiAttentionBlockForCheckpoint)
and rpn/vldyhead.py (VLFuse). All five pyramid levels are flattened and concatenated into one image
sequence; the residual is added to the *layer-normed* inputs, scaled by a learnable layer scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glip.memory import in_place

# Official fuse_helper.py clamps attention logits to +-50000 ("data type half has quite limited range").
LOGIT_CLAMP = 50000.0
# Official fuse_helper.py fills masked text positions with -9e15 before the image->text softmax.
TEXT_MASK_FILL = -9e15


class BiMultiHeadAttention(nn.Module):
    """Cross-attention in both directions with shared logits.

    ``vision``: (B, N, Cv) image tokens (all levels), ``text``: (B, T, Ct), ``text_mask``: (B, T) 1 = real.
    Returns (delta_vision (B, N, Cv), delta_text (B, T, Ct)).
    """

    def __init__(
        self, vision_dim: int, text_dim: int, embed_dim: int, num_heads: int, dropout: float
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"fusion embed dim {embed_dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        # heads per group in :meth:`forward`: as many as keep B * N * group * T under this many elements
        self.max_logit_elements = 1 << 22
        self.vision_query = nn.Linear(vision_dim, embed_dim)
        self.text_key = nn.Linear(text_dim, embed_dim)
        self.vision_value = nn.Linear(vision_dim, embed_dim)
        self.text_value = nn.Linear(text_dim, embed_dim)
        self.vision_out = nn.Linear(embed_dim, vision_dim)
        self.text_out = nn.Linear(embed_dim, text_dim)
        for layer in (
            self.vision_query,
            self.text_key,
            self.vision_value,
            self.text_value,
            self.vision_out,
            self.text_out,
        ):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, L, d)

    def forward(
        self, vision: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official computation, re-associated so that no (N, embed_dim) image tensor is ever formed.

        The image side is the big one (N ~ 22k tokens at 800x1333, embed 2048). Per head h, with the text-side
        projections K_h, V_h (T, d) computed as usual:
          logits_h = (v Wq_h^T + bq_h) K_h^T s = v (Wq_h^T K_h^T s) + (bq_h . K_h) s          (N, T)
          out_v    = sum_h P_h V_h Wo_h^T + bo = sum_h P_h (V_h Wo_h^T) + bo                   (N, Cv)
          out_t_h  = P'_h (v Wv_h^T + bv_h) = (P'_h v) Wv_h^T + rowsum(P'_h) bv_h              (T, d)
        The same numbers up to float rounding (the reference tests hold), 2-3x fewer FLOPs. Parameter
        names and shapes are the official ones. :meth:`forward_naive` is the literal computation.
        """
        batch, num_vision, vision_dim = vision.shape
        heads, dim, length = self.num_heads, self.head_dim, text.shape[1]
        key = self._heads(self.text_key(text))  # (B, h, T, d)
        value_text = self._heads(self.text_value(text))  # (B, h, T, d)
        w_query = self.vision_query.weight.view(heads, dim, vision_dim) * self.scale  # (h, d, Cv)
        b_query = self.vision_query.bias.view(heads, dim) * self.scale  # (h, d)
        query_map = torch.einsum("hdc,bhtd->bhct", w_query, key)  # (B, h, Cv, T)
        query_bias = torch.einsum("hd,bhtd->bht", b_query, key)  # (B, h, T)
        w_out = self.vision_out.weight.view(vision_dim, heads, dim)  # (Cv, h, d)
        text_to_vision = torch.einsum("bhtd,chd->bhtc", value_text, w_out)  # (B, h, T, Cv)
        w_value = self.vision_value.weight.view(heads, dim, vision_dim)  # (h, d, Cv)
        mask_fill = None
        # Whether the text has padding is looked up on the host only on CPU, where it costs nothing and
        # saves an add over the logits; on an accelerator (no host synchronisation inside the forward) and
        # when exporting (glip.export: the padding of a traced graph's inputs is not known) it is always
        # masked (the official computation).
        if text_mask is not None and (
            torch.compiler.is_exporting() or vision.device.type != "cpu" or bool((text_mask == 0).any())
        ):
            # at least fp32: -9e15 overflows fp16 (autocast inference), and the masked softmax then runs in fp32
            fill_dtype = torch.promote_types(vision.dtype, torch.float32)
            mask_fill = text_mask.to(fill_dtype).masked_fill(text_mask == 0, TEXT_MASK_FILL)  # (B, T)

        # On CPU, heads are processed in groups so that the (B, N, h, T) logits and the two softmaxes over
        # them never exist for all heads at once (GLIP-T at 800x1333: 126 MB per copy for 8 heads); on an
        # accelerator all heads go at once (fewer, larger kernels; its memory holds them).
        group = heads
        if vision.device.type == "cpu" and not torch.compiler.is_exporting():
            group = max(1, min(heads, self.max_logit_elements // max(1, batch * num_vision * length)))
        out_vision = self.vision_out.bias.view(1, 1, -1).expand(batch, num_vision, vision_dim)
        # CPU inference (glip.memory.in_place): the logits and both probability maps of every group are
        # written into the same three buffers and the image output is accumulated in place, so a block
        # allocates 4 large tensors instead of 4 per head group (same operations, same bits).
        reuse = in_place(vision) if mask_fill is None else in_place(vision, mask_fill)
        buffers: list[torch.Tensor] | None = None
        out_text_heads = []
        for start in range(0, heads, group):
            hs = slice(start, min(start + group, heads))
            count = hs.stop - hs.start
            if reuse and (buffers is None or buffers[0].shape[-1] != count * length):
                buffers = [vision.new_empty(batch, num_vision, count * length) for _ in range(3)]
            # (B, N, g*T): one GEMM for the group's heads, layout (B, N, g, T) so nothing big is permuted
            logits = torch.baddbmm(
                query_bias[:, hs].reshape(batch, 1, count * length),
                vision,
                query_map[:, hs].permute(0, 2, 1, 3).reshape(batch, vision_dim, count * length),
                **({"out": buffers[0]} if buffers is not None else {}),
            ).clamp_(-LOGIT_CLAMP, LOGIT_CLAMP)
            probs_vision, probs_text_t = self._probabilities(
                logits.view(batch, num_vision, count, length),
                mask_fill,
                None if buffers is None else [b.view(batch, num_vision, count, length) for b in buffers[1:]],
            )
            del logits
            # sum over the group's heads of P_h @ (V_h Wo_h^T)
            probs_flat = probs_vision.reshape(batch, num_vision, -1)
            values = text_to_vision[:, hs].reshape(batch, count * length, vision_dim)
            if reuse and start > 0:
                out_vision.baddbmm_(probs_flat, values)
            else:
                out_vision = torch.baddbmm(out_vision, probs_flat, values)  # (B, N, Cv)
            del probs_vision, probs_flat
            probs_text_t = probs_text_t.reshape(batch, num_vision, count * length)
            pooled = torch.bmm(probs_text_t.transpose(1, 2), vision).view(batch, count, length, vision_dim)
            out_text = torch.einsum("bhtc,hdc->bhtd", pooled, w_value[hs])  # P'_h v Wv_h^T
            row_sums = probs_text_t.sum(dim=1).view(batch, count, length, 1)  # 1 unless dropout is active
            out_text_heads.append(out_text + row_sums * self.vision_value.bias.view(1, heads, 1, dim)[:, hs])
            del probs_text_t, pooled
        out_text = torch.cat(out_text_heads, dim=1).transpose(1, 2).reshape(batch, length, -1)  # (B, T, E)
        return out_vision, self.text_out(out_text)

    def _probabilities(
        self, logits: torch.Tensor, mask_fill: torch.Tensor | None, out: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clamped logits (B, N, h, T) -> (image<-text probs (B, N, h, T), text<-image probs, same layout).

        ``mask_fill``: (B, T) the official additive text mask (1 on real tokens, -9e15 on padding), or None
        when there is no padding. ``out``: two (B, N, h, T) buffers for the two results (inference only; the
        mask is then added to ``logits`` in place).

        Text <- image: official softmax over the image tokens of ``(logits - max).clamp(-50000)``; the
        clamp can only touch values whose exp underflows to 0 anyway, so a plain softmax over N is the same.
        No image mask: the zero padding of a batch is attended, as official.
        Image <- text: softmax over the text tokens after adding the official mask (-9e15 on padding, +1 on
        real tokens; a uniform +1 is a no-op for softmax, so it is only added where there is padding).
        """
        if out is not None:
            probs_text_t = torch.softmax(logits, dim=1, out=out[1])
            if mask_fill is not None:
                logits.add_(mask_fill[:, None, None, :])
            probs_vision = torch.softmax(logits, dim=-1, out=out[0])
        else:
            probs_text_t = logits.softmax(dim=1)
            if mask_fill is not None:
                logits = logits + mask_fill[:, None, None, :]
            probs_vision = logits.softmax(dim=-1)
        probs_vision = F.dropout(probs_vision, p=self.dropout, training=self.training)
        probs_text_t = F.dropout(probs_text_t, p=self.dropout, training=self.training)
        return probs_vision, probs_text_t

    def forward_naive(
        self, vision: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The literal official computation (projects every image token to the 2048-d joint space)."""
        batch, num_vision, _ = vision.shape
        query = self._heads(self.vision_query(vision) * self.scale)  # (B, h, N, d)
        key = self._heads(self.text_key(text))  # (B, h, T, d)
        value_vision = self._heads(self.vision_value(vision))  # (B, h, N, d)
        value_text = self._heads(self.text_value(text))  # (B, h, T, d)
        logits = (query @ key.transpose(-1, -2)).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)  # (B, h, N, T)
        logits_t = logits.transpose(-1, -2)  # (B, h, T, N)
        logits_t = (logits_t - logits_t.amax(dim=-1, keepdim=True)).clamp(-LOGIT_CLAMP, LOGIT_CLAMP)
        probs_text = logits_t.softmax(dim=-1)
        if text_mask is not None:
            fill = text_mask.to(logits.dtype).masked_fill(text_mask == 0, TEXT_MASK_FILL)
            logits = logits + fill[:, None, None, :]
        probs_vision = logits.softmax(dim=-1)
        probs_vision = F.dropout(probs_vision, p=self.dropout, training=self.training)
        probs_text = F.dropout(probs_text, p=self.dropout, training=self.training)
        out_vision = (probs_vision @ value_text).transpose(1, 2).reshape(batch, num_vision, -1)  # (B, N, E)
        out_text = (probs_text @ value_vision).transpose(1, 2).reshape(batch, text.shape[1], -1)  # (B, T, E)
        return self.vision_out(out_vision), self.text_out(out_text)


class FusionBlock(nn.Module):
    """X-MHA block: ``v = LN(v) + gamma_v * dv``, ``t = LN(t) + gamma_t * dt`` over all pyramid levels."""

    def __init__(
        self,
        vision_dim: int,
        text_dim: int,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.1,
        layer_scale: float = 1.0 / 6.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.vision_norm = nn.LayerNorm(vision_dim)
        self.text_norm = nn.LayerNorm(text_dim)
        self.attn = BiMultiHeadAttention(vision_dim, text_dim, embed_dim, num_heads, dropout)
        self.vision_gamma = nn.Parameter(torch.full((vision_dim,), layer_scale))
        self.text_gamma = nn.Parameter(torch.full((text_dim,), layer_scale))
        self.use_checkpoint = use_checkpoint

    def fuse_sequence(
        self,
        vision: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        update_vision: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """vision: (B, N, C), text: (B, T, D), text_mask: (B, T) -> fused (B, N, C), (B, T, D).

        ``update_vision=False`` (GLIPv2 captioning): the image <- text direction is off, the image output is
        ``LN(v)`` and does not depend on the text; the text still attends to the image.
        """
        vision = self.vision_norm(vision)
        text = self.text_norm(text)
        delta_vision, delta_text = self.attn(vision, text, text_mask)
        if not update_vision:
            return vision, text + self.text_gamma * delta_text
        if in_place(vision, delta_vision, self.vision_gamma):
            # CPU inference: the residual in place in the fresh delta (a + g * d and g * d + a are the same bits)
            return delta_vision.mul_(self.vision_gamma).add_(vision), text + self.text_gamma * delta_text
        return vision + self.vision_gamma * delta_vision, text + self.text_gamma * delta_text

    def forward(
        self,
        features: list[torch.Tensor],
        text: torch.Tensor,
        text_mask: torch.Tensor | None,
        update_vision: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """features: L maps (B, C, H_l, W_l); text: (B, T, D) -> (L fused maps, fused text (B, T, D)).

        ``update_vision=False``: see :meth:`fuse_sequence`.
        """
        shapes = [f.shape[-2:] for f in features]
        vision = torch.cat([f.flatten(2).transpose(1, 2) for f in features], dim=1)  # (B, sum HW, C)
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            vision, text = checkpoint(
                self.fuse_sequence, vision, text, text_mask, update_vision, use_reentrant=False
            )
        else:
            vision, text = self.fuse_sequence(vision, text, text_mask, update_vision)
        out, start = [], 0
        for h, w in shapes:
            level = vision[:, start : start + h * w].transpose(1, 2)  # (B, C, HW)
            out.append(level.reshape(level.shape[0], -1, h, w))
            start += h * w
        return out, text
