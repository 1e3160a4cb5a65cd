"""GLIPv2 captioning: next-token prediction in causal mode, greedy / beam-search decoding, grounded words.

GLIPv2 (paper section 3.3) trains captioning "with the unidirectional language modelling loss, which
maximises the likelihood of the next word given the context", with "a unidirectional attention mask, and the
image part prevented from attending to the text in the fusion layers"; grounded captioning also localises
each decoded word. Here:

    [CLS] w1 .. wn [SEP] (B, T) --GLIP(causal=True)--> fused text (B, T, D), S_ground (B, A, T)
    fused text --CaptionHead (Linear-GELU-LayerNorm, decoder tied to the word embeddings)--> (B, T, V)
    position t predicts token t + 1 (cross-entropy over the real next tokens)

In causal mode (:meth:`glip.models.glip.GLIP.forward`) the logits of token t do not depend on later tokens
and the image features do not depend on the text, so decoding re-runs the head on the growing prefix with the
backbone computed once, and the grounding logits of word t (S_ground column t) are those it had when it was
decoded: one final forward of the caption gives every word's box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from glip.models.anchor_view import AnchorView, anchor_view, attend_to_anchors
from glip.models.glip import GLIP, GLIPOutput
from glip.models.head_files import load_head_weights, read_head_meta, save_head_files
from glip.preprocess import ImageBatch
from glip.text.tokenizer import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID, get_tokenizer

__all__ = [
    "CaptionHead",
    "CaptionOutput",
    "CaptionPrediction",
    "GLIPForCaptioning",
    "GroundedWord",
    "load_caption_head",
    "save_caption_head",
]

#: Tokens never generated ([SEP] ends a caption and stays allowed).
_BANNED = (PAD_ID, UNK_ID, CLS_ID, MASK_ID)


class CaptionHead(nn.Module):
    """Next-token logits from the causal fused text and the image it looks at (module docstring).

    A multi-head cross-attention from each text position to the tower's anchor features, with a learned bias
    over where each anchor lies relative to the object the caption last mentioned (found through the
    model's own grounding of the tokens so far), then Linear(D, D) -> GELU -> LayerNorm -> (word
    embeddings)^T + bias. The decoder matrix is the text encoder's word-embedding table, passed at call time
    (tied, not copied: no duplicate tensor in the state dict).
    """

    def __init__(
        self,
        hidden_dim: int,
        vocab_size: int,
        feature_dim: int,
        fpn_dim: int,
        heads: int = 4,
        head_dim: int = 32,
        frequencies: int = 4,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.heads, self.frequencies = heads, frequencies
        width = heads * head_dim
        position_dim = 4 * frequencies
        self.text_norm = nn.LayerNorm(hidden_dim)
        self.feature_norm = nn.LayerNorm(feature_dim)
        self.fpn_norm = nn.LayerNorm(fpn_dim)
        self.query = nn.Linear(hidden_dim, width)
        self.key = nn.Linear(feature_dim + fpn_dim + position_dim, width)
        self.value = nn.Linear(feature_dim + fpn_dim + position_dim, width)
        self.out = nn.Linear(width, hidden_dim)
        self.token_code = nn.Linear(hidden_dim, 8)
        # where an anchor lies relative to the last mentioned object: (dx, dy, strength, x, y, 8 token codes)
        self.relative = nn.Sequential(nn.Linear(13, 32), nn.GELU(), nn.Linear(32, heads))
        self.recency = nn.Parameter(torch.tensor([1.0, 1.0]))  # weights of grounding strength and position
        self.transform = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(), nn.LayerNorm(hidden_dim, eps=eps)
        )
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def _positions(self, centres: torch.Tensor) -> torch.Tensor:
        """centres (B, A, 2) in [0, 1] -> Fourier features (B, A, 4 * frequencies)."""
        scales = 2.0 ** torch.arange(self.frequencies, device=centres.device, dtype=centres.dtype) * torch.pi
        angles = (centres[..., None] * scales).flatten(-2)  # (B, A, 2F)
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def last_mentioned(self, view: AnchorView, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Where the object the text last mentioned lies, per position: centre (B, T, 2) and strength (B, T).

        Each token s grounds with strength g_s = max_A sigmoid(S_ground) at the S_ground-weighted centre of
        the anchors; position t takes the tokens s <= t weighted by softmax_s(w0 * logit(g_s) + w1 * s), the
        recent strongly grounded tokens. Read from the detached grounding (the caption loss does not move it).
        """
        logits = view.token_logits[..., :length].detach()  # (B, A, T)
        strength = logits.max(dim=1).values  # (B, T) logit of g_s
        centres = torch.einsum("bat,bac->btc", logits.softmax(dim=1), view.centres)  # (B, T, 2)
        steps = torch.arange(length, device=logits.device, dtype=logits.dtype)
        score = self.recency[0] * strength[:, None, :] + self.recency[1] * steps  # (B, 1 -> T, T)
        causal = torch.ones(length, length, dtype=torch.bool, device=logits.device).tril()
        weights = score.expand(-1, length, -1).masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return weights @ centres, (weights * strength.sigmoid()[:, None, :]).sum(-1)

    def forward(
        self,
        fused_text: torch.Tensor,
        view: AnchorView,
        word_embeddings: torch.Tensor,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """fused_text: (B, T, D) causal; view: the same forward's anchors; word_embeddings: (V, D)
        -> logits (B, T, V); with ``rows`` (bool (B, T)) only those positions' logits, (N, V) in row-major
        order (the vocabulary projection is most of the head's cost: the loss needs only the positions that
        have a next token, decoding only the last one)."""
        length = fused_text.shape[1]
        anchors = view.features.shape[1]
        image = torch.cat(
            [self.feature_norm(view.features), self.fpn_norm(view.fpn), self._positions(view.centres)], dim=-1
        )
        where, strength = self.last_mentioned(view, length)  # (B, T, 2), (B, T)
        relative = torch.cat(
            [
                view.centres[:, None] - where[:, :, None],  # (B, T, A, 2)
                strength[:, :, None, None].expand(-1, -1, anchors, 1),
                view.centres[:, None].expand(-1, length, -1, -1),
                self.token_code(fused_text)[:, :, None].expand(-1, -1, anchors, -1),
            ],
            dim=-1,
        )
        bias = self.relative(relative).permute(0, 3, 1, 2)  # (B, H, T, A)
        query = self.query(self.text_norm(fused_text))
        context = attend_to_anchors(
            query, self.key(image), self.value(image), self.heads, bias
        )  # (B, T, H*d)
        hidden = fused_text + self.out(context)
        if rows is not None:
            hidden = hidden[rows]  # (N, D)
        return self.transform(hidden) @ word_embeddings.t() + self.bias


@dataclass
class CaptionOutput:
    """token_logits: (B, T, V) next-token logits (position t predicts token t + 1), or (N, V) at the ``rows``
    asked for; glip: the causal forward."""

    token_logits: torch.Tensor
    glip: GLIPOutput


@dataclass
class GroundedWord:
    """A decoded word and its best box (xyxy, network-input frame) and score; None when nothing scored."""

    word: str
    box: list[float] | None
    score: float


@dataclass
class CaptionPrediction:
    """A generated caption: text, token ids (no [CLS] / [SEP]) and, if asked, each word with its box."""

    text: str
    token_ids: list[int]
    words: list[GroundedWord] | None = None


class GLIPForCaptioning(nn.Module):
    """GLIP in causal mode + :class:`CaptionHead` tied to the text encoder's word embeddings."""

    def __init__(self, glip: GLIP) -> None:
        super().__init__()
        self.glip = glip
        embeddings = self.word_embeddings()
        self.head = CaptionHead(
            embeddings.shape[1], embeddings.shape[0], glip.config.head.channels, glip.config.fpn_channels
        )

    def word_embeddings(self) -> torch.Tensor:
        """(V, D) the text encoder's input word embeddings (the tied decoder)."""
        return self.glip.text_encoder.bert.get_input_embeddings().weight

    def forward(
        self,
        images: ImageBatch,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        fpn: list[torch.Tensor] | None = None,
        rows: torch.Tensor | None = None,
    ) -> CaptionOutput:
        """images: (B, 3, H, W) padded; input_ids / attention_mask: (B, T) -> :class:`CaptionOutput`;
        ``rows`` (bool (B, T)): the next-token logits of those positions only, (N, V)."""
        if rows is not None and (rows.dtype != torch.bool or rows.shape != input_ids.shape):
            raise TypeError(
                f"rows must be a bool mask of shape {tuple(input_ids.shape)}, got {rows.dtype} "
                f"{tuple(rows.shape)}"
            )
        output = self.glip(images, input_ids, attention_mask, fpn=fpn, causal=True)
        text = output.head.fused_text  # (B, T', D): the text encoder drops the columns that are all padding
        if rows is not None and text.shape[1] < rows.shape[1]:  # (a host sync only when columns were dropped)
            if bool(rows[:, text.shape[1] :].any()):
                raise ValueError("rows asks for padding positions the text encoder dropped")
            rows = rows[:, : text.shape[1]]
        head = self.head(text, anchor_view(output), self.word_embeddings(), rows)
        return CaptionOutput(head, output)

    # ------------------------------------------------------------------ decoding
    def _next_log_probs(self, fpn: list[torch.Tensor], sizes: list, ids: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (B, V) of the token after the prefixes ``ids`` (B, t) (all real tokens)."""
        images = ImageBatch(fpn[0].new_zeros(0), sizes)
        last = torch.zeros_like(ids, dtype=torch.bool)
        last[:, -1] = True
        logits = self(images, ids, torch.ones_like(ids), fpn=fpn, rows=last).token_logits  # (B, V)
        logits[:, list(_BANNED)] = float("-inf")
        return logits.log_softmax(dim=-1)

    @torch.no_grad()
    def greedy(self, images: ImageBatch, max_length: int = 32) -> list[list[int]]:
        """Greedy decoding of one caption per image: token ids without [CLS] / [SEP] (at most ``max_length``)."""
        fpn = self.glip.encode_images(images.tensors)
        batch = images.tensors.shape[0]
        ids = torch.full((batch, 1), CLS_ID, dtype=torch.long, device=images.tensors.device)
        done = torch.zeros(batch, dtype=torch.bool, device=ids.device)
        for _ in range(max_length):
            log_probs = self._next_log_probs(fpn, list(images.image_sizes), ids)
            token = log_probs.argmax(dim=-1)
            token = torch.where(done, torch.full_like(token, SEP_ID), token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            done |= token == SEP_ID
            if bool(done.all()):
                break
        return [_strip(row.tolist()) for row in ids]

    @torch.no_grad()
    def beam_search(
        self, images: ImageBatch, beam_size: int = 3, max_length: int = 32, length_penalty: float = 0.0
    ) -> list[list[int]]:
        """Beam search per image; a finished caption scores ``log p / length ** length_penalty``.

        Keeps ``beam_size`` unfinished beams; stops once ``beam_size`` captions ended with [SEP] (or at
        ``max_length`` tokens, where the unfinished beams count as finished). ``beam_size=1`` is greedy.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        fpn_all = self.glip.encode_images(images.tensors)
        results = []
        for index, size in enumerate(images.image_sizes):
            fpn_one = [level[index : index + 1] for level in fpn_all]
            alive: list[tuple[list[int], float]] = [([CLS_ID], 0.0)]
            finished: list[tuple[list[int], float]] = []
            for _ in range(max_length):
                ids = torch.tensor([seq for seq, _ in alive], dtype=torch.long, device=fpn_one[0].device)
                fpn = [level.expand(len(alive), -1, -1, -1) for level in fpn_one]
                log_probs = self._next_log_probs(fpn, [size] * len(alive), ids)  # (beams, V)
                top_lp, top_ids = log_probs.topk(beam_size, dim=-1)
                candidates = [
                    (score + float(lp), seq, int(tok))
                    for (seq, score), lps, toks in zip(alive, top_lp, top_ids)
                    for lp, tok in zip(lps, toks)
                ]
                candidates.sort(key=lambda c: -c[0])
                alive = []
                for score, seq, tok in candidates:
                    if tok == SEP_ID:
                        finished.append((seq + [tok], score))
                    elif len(alive) < beam_size:
                        alive.append((seq + [tok], score))
                    if len(alive) == beam_size:
                        break
                if len(finished) >= beam_size or not alive:
                    break
            finished.extend(alive)  # max_length reached: unfinished beams compete too

            def normalised(item: tuple[list[int], float]) -> float:
                length = max(len(_strip(item[0])), 1)
                return item[1] / length**length_penalty

            best = max(finished, key=normalised)
            results.append(_strip(best[0]))
        return results

    @torch.no_grad()
    def generate(
        self, images: ImageBatch, beam_size: int = 1, max_length: int = 32, ground: bool = False
    ) -> list[CaptionPrediction]:
        """Captions for ``images`` (greedy when ``beam_size == 1``); ``ground``: every word gets a box."""
        sequences = (
            self.greedy(images, max_length)
            if beam_size == 1
            else self.beam_search(images, beam_size, max_length)
        )
        tokenizer = get_tokenizer()
        predictions = [CaptionPrediction(tokenizer.decode(ids), ids) for ids in sequences]
        if ground:
            for index, prediction in enumerate(predictions):
                one = ImageBatch(images.tensors[index : index + 1], [images.image_sizes[index]])
                prediction.words = self.ground_words(one, prediction.token_ids)
        return predictions

    @torch.no_grad()
    def ground_words(self, image: ImageBatch, token_ids: Sequence[int]) -> list[GroundedWord]:
        """Box each word of a caption (ids without [CLS] / [SEP]) on one image: S_ground of the word's tokens
        in the causal forward (as at decoding time), the model's post-processing, the best box per word."""
        tokenizer = get_tokenizer()
        pieces = tokenizer.convert_ids_to_tokens(list(token_ids))
        words: list[tuple[str, list[int]]] = []
        for position, piece in enumerate(pieces, start=1):  # position 0 is [CLS]
            if piece.startswith("##") and words:
                words[-1] = (words[-1][0] + piece[2:], [*words[-1][1], position])
            else:
                words.append((piece, [position]))
        if not words:
            return []
        ids = torch.tensor([[CLS_ID, *token_ids]], dtype=torch.long, device=image.tensors.device)
        output = self(image, ids, torch.ones_like(ids))
        label_to_tokens = {k + 1: positions for k, (_, positions) in enumerate(words)}
        detections = self.glip.postprocess(output.glip, label_to_tokens)[0]
        grounded = []
        for k, (word, _) in enumerate(words):
            mine = detections.labels == k + 1
            if bool(mine.any()):
                best = int(torch.argmax(torch.where(mine, detections.scores, -1.0)))
                grounded.append(
                    GroundedWord(word, detections.boxes[best].tolist(), float(detections.scores[best]))
                )
            else:
                grounded.append(GroundedWord(word, None, 0.0))
        return grounded


def _strip(ids: Sequence[int]) -> list[int]:
    """Token ids without the leading [CLS] and from the first [SEP] / [PAD] on."""
    out = []
    for token in ids[1:] if ids and ids[0] == CLS_ID else ids:
        if token in (SEP_ID, PAD_ID):
            break
        out.append(int(token))
    return out


# ----------------------------------------------------------------------------------------------- saving

CAPTION_HEAD_FILES = ("caption_head.json", "caption_head.safetensors")
#: 2: the head of this module that looks at the image (1, unmarked: the earlier one on fused text alone).
HEAD_FORMAT = 2


def save_caption_head(captioner: GLIPForCaptioning, directory: str | Path, half: bool = False) -> Path:
    """Write ``caption_head.json`` (``{"hidden_dim", "vocab_size"}``) + ``caption_head.safetensors`` into
    ``directory`` (beside a saved model), atomically; ``half``: fp16 weights (loaded back as fp32)."""
    embeddings = captioner.word_embeddings()
    meta = {
        "hidden_dim": int(embeddings.shape[1]),
        "vocab_size": int(embeddings.shape[0]),
        "format": HEAD_FORMAT,
        "feature_dim": captioner.head.feature_norm.normalized_shape[0],
        "fpn_dim": captioner.head.fpn_norm.normalized_shape[0],
    }
    return save_head_files(captioner.head, directory, CAPTION_HEAD_FILES, meta, half)


def load_caption_head(directory: str | Path, glip: GLIP) -> GLIPForCaptioning | None:
    """The captioning wrapper around ``glip`` with the head saved in ``directory``; None when there is none.

    Raises ``ValueError`` when the head was trained for another vocabulary (another text encoder)."""
    meta = read_head_meta(directory, CAPTION_HEAD_FILES)
    if meta is None:
        return None
    if meta.get("format") != HEAD_FORMAT:
        raise ValueError(
            f"the caption head in {directory} is of an older format (fused text alone); this version also "
            "looks at the image: retrain it (glip.v2.vl_train.train_vl)"
        )
    built = (glip.config.head.channels, glip.config.fpn_channels)
    if (meta["feature_dim"], meta["fpn_dim"]) != built:
        raise ValueError(
            f"the caption head in {directory} was trained for (head, FPN) channels "
            f"{(meta['feature_dim'], meta['fpn_dim'])}, the model has {built}"
        )
    captioner = GLIPForCaptioning(glip)
    shape = tuple(captioner.word_embeddings().shape)
    if shape != (meta["vocab_size"], meta["hidden_dim"]):
        raise ValueError(
            f"the caption head in {directory} was trained for a {meta['vocab_size']} x {meta['hidden_dim']} "
            f"vocabulary, the model has {shape[0]} x {shape[1]}"
        )
    load_head_weights(captioner.head, Path(directory) / CAPTION_HEAD_FILES[1])
    return captioner.eval()
