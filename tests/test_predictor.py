"""GLIPPredictor: chunking, backbone reuse, text cache, batching, image inputs, bad inputs, result formats.

A small randomly initialised model (``tiny_random`` with ``bias0 = 0`` so that it produces detections). Its
input size is lowered to 160 (shorter side) so the file runs fast; the architecture and weights are the
preset's.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

import glip
from glip.images import ImageError, load_image
from glip.predictor import GLIPPredictor, Prediction
from glip.preprocess import normalize, pad_batch, resize_image
from glip.text.prompts import build_detection_prompt
from glip.text.tokenizer import PromptError, tokenize_captions
from tests.helpers import make_image, one_thread, tiny_random_model  # noqa: F401  (fixture)

CLASSES = ["cat", "dog", "red ball", "person", "traffic light"]


@pytest.fixture(scope="module")
def model() -> glip.GLIP:
    return tiny_random_model()


@pytest.fixture
def predictor(model: glip.GLIP) -> GLIPPredictor:
    return GLIPPredictor(model)  # a fresh text cache per test


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return make_image(120, 160)


class Counter:
    """Counts forward calls of a module (a forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_args: object) -> None:
        self.calls += 1

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *_args: object) -> None:
        self.handle.remove()


def assert_same(a: Prediction, b: Prediction, atol: float = 1e-5) -> None:
    """Same detections up to ``atol`` (scores; boxes divided by their largest coordinate), any order.

    Each detection of ``a`` is matched to a distinct detection of ``b`` with the same label.
    """
    assert a.image_size == b.image_size
    assert a.names == b.names
    assert len(a) == len(b), (len(a), len(b))
    if len(a) == 0:
        return
    assert a.phrases == [a.names[i] for i in a.labels.tolist()]
    box_scale = max(float(a.boxes.abs().max()), 1.0)
    distance = (a.boxes[:, None, :] - b.boxes[None, :, :]).abs().amax(-1) / box_scale + (
        a.scores[:, None] - b.scores[None, :]
    ).abs()
    distance[a.labels[:, None] != b.labels[None, :]] = float("inf")
    best = distance.argmin(dim=1)
    assert len(set(best.tolist())) == len(a), "detections of a match the same detection of b"
    assert float(distance.gather(1, best[:, None]).max()) <= 2 * atol
    torch.testing.assert_close(a.scores, b.scores[best], atol=atol, rtol=0)
    torch.testing.assert_close(a.boxes / box_scale, b.boxes[best] / box_scale, atol=atol, rtol=0)


def official_single_prompt(model: glip.GLIP, image: Image.Image, classes: list[str], threshold: float):
    """The official way: the whole model on (image, caption padded to 256) + post-processing."""
    cfg = model.config.input
    tensor = normalize(
        resize_image(image, cfg.min_size, cfg.max_size), cfg.pixel_mean, cfg.pixel_std, cfg.to_bgr255
    )
    prompt = build_detection_prompt(classes)
    tokens = tokenize_captions([prompt.caption], max_length=256, pad_to_max=True)
    with torch.inference_mode():
        output = model(pad_batch([tensor], cfg.size_divisibility), tokens.input_ids, tokens.attention_mask)
        dets = model.postprocess(output, prompt.label_to_token)[0]
    dets = dets.select(dets.scores >= threshold)
    dets = dets.select(dets.scores.argsort(descending=True))
    scale = torch.tensor([image.width / tensor.shape[-1], image.height / tensor.shape[-2]] * 2)
    labels = dets.labels - 1
    return Prediction(
        boxes=dets.boxes * scale,
        scores=dets.scores,
        labels=labels,
        phrases=[classes[i] for i in labels.tolist()],
        names=list(classes),
        image_size=image.size,
    )


# ---------------------------------------------------------------------- chunking
def test_one_prompt_equals_official_single_prompt(model, predictor, image):
    """All classes in one prompt: the predictor (backbone once, cached text, head) = the whole model."""
    official = official_single_prompt(model, image, CLASSES, threshold=0.0)
    assert len(official) > 10 and len(set(official.labels.tolist())) > 1
    for chunk_size in (None, 5, 40):
        ours = predictor.predict(image, classes=CLASSES, threshold=0.0, chunk_size=chunk_size)
        assert_same(ours, official, atol=1e-5)
    # the threshold only filters
    median = float(official.scores.median())
    high = predictor.predict(image, classes=CLASSES, threshold=median)
    assert 0 < len(high) < len(official) and bool((high.scores >= median).all())
    assert_same(high, official_single_prompt(model, image, CLASSES, threshold=median), atol=1e-5)


def test_chunks_equal_their_own_single_prompts(predictor, image):
    """chunk_size=2: three prompts, each NMS'd and capped on its own and concatenated (official chunked
    evaluation). Each chunk's detections are exactly those of a single-prompt call with that chunk's classes.

    (They differ from the one-prompt result: the deep fusion lets every class of a prompt attend to the
    image features that the other classes of that prompt changed.)
    """
    chunked = predictor.predict(image, classes=CLASSES, threshold=0.0, chunk_size=2)
    assert len(chunked) > 100  # three chunks of up to 100 each: no cross-chunk cap
    assert set(chunked.labels.tolist()) == set(range(len(CLASSES)))
    for start in range(0, len(CLASSES), 2):
        names = CLASSES[start : start + 2]
        alone = predictor.predict(image, classes=names, threshold=0.0)
        keep = (chunked.labels >= start) & (chunked.labels < start + 2)
        part = Prediction(
            boxes=chunked.boxes[keep],
            scores=chunked.scores[keep],
            labels=chunked.labels[keep] - start,
            phrases=[p for p, k in zip(chunked.phrases, keep.tolist()) if k],
            names=names,
            image_size=chunked.image_size,
        )
        assert_same(part, alone, atol=1e-5)
    assert chunked.scores.tolist() == sorted(chunked.scores.tolist(), reverse=True)


def test_backbone_once_per_image_and_text_cache(model, predictor, image):
    with Counter(model.backbone) as backbone, Counter(model.text_encoder) as text:
        first = predictor.predict(image, classes=CLASSES, threshold=0.3, chunk_size=2)
        assert (backbone.calls, text.calls) == (1, 3)  # 5 classes in 3 chunks: backbone once
        again = predictor.predict(image, classes=CLASSES, threshold=0.3, chunk_size=2)
        assert (backbone.calls, text.calls) == (2, 3)  # the text encoder is not called again
        other = predictor.predict(make_image(100, 140, seed=3), classes=CLASSES, threshold=0.3, chunk_size=2)
        assert (backbone.calls, text.calls) == (3, 3)
    assert_same(first, again, atol=0.0)
    assert len(other) > 0


def test_text_cache_is_bounded(model, image):
    predictor = GLIPPredictor(model, text_cache_size=2)
    with Counter(model.text_encoder) as text:
        predictor.predict(image, classes=CLASSES, threshold=0.9, chunk_size=2)  # 3 prompts, cache of 2
        assert text.calls == 3 and len(predictor._text_cache) == 2
        predictor.predict(image, classes=CLASSES[4:], threshold=0.9)  # the last prompt: still cached
        assert text.calls == 3


# ---------------------------------------------------------------------- batches
@pytest.mark.parametrize(
    "sizes, chunk_size, backbone_calls",
    [
        (((120, 160), (150, 100)), None, 2),  # different padded sizes: two groups, one backbone call each
        (((120, 160), (120, 165)), 3, 1),  # 160x213 and 160x220 both pad to 160x224: one batch of two
    ],
)
def test_batch_equals_single_calls(model, predictor, sizes, chunk_size, backbone_calls):
    images = [make_image(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    singles = [
        predictor.predict(img, classes=CLASSES, threshold=0.0, chunk_size=chunk_size) for img in images
    ]
    with Counter(model.backbone) as backbone:
        batch = predictor.predict(
            tuple(images), classes=CLASSES, threshold=0.0, chunk_size=chunk_size, batch_size=2
        )
    assert backbone.calls == backbone_calls
    assert isinstance(batch, list) and len(batch) == 2
    for ours, alone, img in zip(batch, singles, images):
        assert ours.image_size == img.size
        assert_same(ours, alone, atol=1e-5)


def test_naive_padding_would_change_results(model):
    """Why the predictor groups by padded size: in one zero-padded batch with a larger image, an image's
    detections change (e.g. the fusion's text <- image attention runs over every location, padding
    included). If this ever fails, padding no longer matters and the grouping could be relaxed."""
    small, large = make_image(120, 160, seed=0), make_image(150, 100, seed=1)
    cfg = model.config.input
    tensors = [
        normalize(resize_image(img, cfg.min_size, cfg.max_size), cfg.pixel_mean, cfg.pixel_std)
        for img in (small, large)
    ]
    prompt = build_detection_prompt(CLASSES)
    tokens = tokenize_captions([prompt.caption] * 2, pad_to_max=False)
    with torch.inference_mode():
        naive = model(pad_batch(tensors, cfg.size_divisibility), tokens.input_ids, tokens.attention_mask)
        alone = model(
            pad_batch(tensors[:1], cfg.size_divisibility), tokens.input_ids[:1], tokens.attention_mask[:1]
        )
    level0_naive = naive.head.token_logits[0][0]  # (H*W, T) of the padded batch: more locations
    assert level0_naive.shape[0] > alone.head.token_logits[0][0].shape[0]
    naive_dets = model.postprocess(naive, prompt.label_to_token)[0]
    alone_dets = model.postprocess(alone, prompt.label_to_token)[0]
    assert len(naive_dets) != len(alone_dets) or not torch.allclose(
        naive_dets.scores.sort().values, alone_dets.scores.sort().values, atol=1e-4
    )


# ---------------------------------------------------------------------- image inputs
def pixels(source: object) -> np.ndarray:
    return np.asarray(load_image(source))


def test_image_input_types_give_the_same_result(predictor, image, tmp_path):
    path = tmp_path / "image.png"
    image.save(path)
    array = np.asarray(image)
    inputs = {
        "str": str(path),
        "Path": path,
        "PIL": image,
        "ndarray": array,
        "tensor uint8": torch.from_numpy(array.copy()).permute(2, 0, 1),
        "tensor float": torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0,
        "ndarray float": array.astype(np.float32) / 255.0,
        "ndarray uint16": array.astype(np.uint16) * 257,
    }
    for name, value in inputs.items():  # the same pixels, hence the same detections
        np.testing.assert_array_equal(pixels(value), array, err_msg=name)
    reference = predictor.predict(image, classes=CLASSES, threshold=0.0)
    for name in ("str", "ndarray", "tensor float"):
        assert_same(predictor.predict(inputs[name], classes=CLASSES, threshold=0.0), reference, atol=0.0)
    results = predictor.predict([str(path), path, image], classes=["cat"], threshold=0.9)
    assert [r.source for r in results] == [str(path), str(path), None]


def test_load_image_value_ranges():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = np.stack([values, 255 - values, values // 2], axis=-1)
    for array in (rgb, rgb.astype(np.float32) / 255.0, rgb.astype(np.int64), rgb.astype(np.uint16) * 257):
        np.testing.assert_array_equal(np.asarray(load_image(array)), rgb)
    # floats are [0, 1] by rule (not guessed from the maximum): a 0..255 float image is refused, not clipped
    with pytest.raises(ImageError, match=r"must hold values in \[0, 1\], got 0\.\.255"):
        load_image(rgb.astype(np.float64))
    tensor = torch.from_numpy(rgb.copy()).permute(2, 0, 1)
    np.testing.assert_array_equal(np.asarray(load_image(tensor)), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(tensor.float() / 255.0)), rgb)
    np.testing.assert_array_equal(np.asarray(load_image(values)), np.stack([values] * 3, axis=-1))
    sixteen = Image.fromarray(values.astype(np.uint16) * 257)  # mode I;16: scaled by 257, not by its max
    np.testing.assert_array_equal(np.asarray(load_image(sixteen))[..., 0], values)
    dark = Image.fromarray((values // 4).astype(np.uint16) * 257)
    np.testing.assert_array_equal(np.asarray(load_image(dark))[..., 0], values // 4)


def test_image_modes_are_handled(predictor, image, tmp_path):
    gray = image.convert("L")
    gray.save(tmp_path / "gray.png")
    np.testing.assert_array_equal(pixels(tmp_path / "gray.png"), np.asarray(gray.convert("RGB")))
    # RGBA: composited on white
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(image.size))
    rgba.save(tmp_path / "rgba.png")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    composited = Image.alpha_composite(white, rgba).convert("RGB")
    np.testing.assert_array_equal(pixels(tmp_path / "rgba.png"), np.asarray(composited))
    # palette
    palette = image.quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as opened:
        assert opened.mode == "P"
    np.testing.assert_array_equal(pixels(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))
    # 16-bit grayscale PNG: 0..65535 -> 0..255
    Image.fromarray(np.asarray(gray).astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as opened:
        assert opened.mode.startswith("I")
    np.testing.assert_array_equal(pixels(tmp_path / "gray16.png"), np.asarray(gray.convert("RGB")))
    # each goes through the predictor (one batch: same size)
    files = [tmp_path / f"{name}.png" for name in ("gray", "rgba", "palette", "gray16")]
    results = predictor.predict(files, classes=CLASSES, threshold=0.0, batch_size=4)
    assert all(r.image_size == image.size and len(r) > 0 for r in results)
    assert_same(results[0], results[3], atol=1e-5)  # gray == gray16


def test_exif_rotated_jpeg(predictor, tmp_path):
    stored = make_image(120, 160)  # stored 160 wide, 120 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    with Image.open(path) as raw:  # decoded as stored, rotated by hand, without the EXIF tag
        upright = np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    assert upright.shape == (160, 120, 3)
    np.testing.assert_array_equal(pixels(path), upright)
    with Image.open(path) as opened:  # a PIL image opened by the user is turned upright too
        np.testing.assert_array_equal(pixels(opened), upright)
    result = predictor.predict(str(path), classes=CLASSES, threshold=0.0)
    assert result.image_size == (120, 160)  # (width, height) as displayed: swapped
    assert float(result.boxes[:, 0::2].max()) <= 120 and float(result.boxes[:, 1::2].max()) <= 160
    assert_same(result, predictor.predict(upright, classes=CLASSES, threshold=0.0), atol=0.0)


def test_bad_images_raise_image_error(predictor, tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    good = tmp_path / "good.png"
    make_image(60, 80).save(good)
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        str(tmp_path / "missing.png"): "not found",
        str(tmp_path / "text.jpg"): "not an image",
        str(tmp_path / "truncated.png"): "truncated",
        str(tmp_path / "empty.png"): "not an image",
        str(tmp_path): "directory",
    }
    for source, message in cases.items():
        with pytest.raises(ImageError, match=message) as info:
            predictor.predict(source, classes=CLASSES)
        assert source in str(info.value)
    with pytest.raises(ImageError, match="HxWx3"):
        predictor.predict(np.zeros((4, 4, 5), dtype=np.uint8), classes=CLASSES)
    with pytest.raises(ImageError, match=r"\(C, H, W\)"):
        predictor.predict(torch.zeros(2, 8, 8), classes=CLASSES)
    with pytest.raises(ImageError, match="unsupported image type"):
        predictor.predict(12, classes=CLASSES)  # type: ignore[arg-type]
    with pytest.raises(ImageError):  # a bad image anywhere in a batch: one clear error
        predictor.predict([str(good), str(tmp_path / "missing.png")], classes=CLASSES)
    assert issubclass(ImageError, ValueError)


# ---------------------------------------------------------------------- prompts
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"caption": ""}, "empty"),
        ({"caption": "   "}, "empty"),
        ({"caption": "... !?"}, "only punctuation"),
        ({"classes": []}, "no class names"),
        ({"classes": ""}, "empty after cleaning"),
        ({"classes": ["cat", ""]}, "class 1 '' is empty after cleaning"),
        ({"classes": ["(empty)"]}, "class 0 '\\(empty\\)' is empty after cleaning"),
        ({"classes": ["cat", "..."]}, "class 1 '...' is empty after cleaning"),
        ({"classes": ["cat", "(x)_."]}, "is empty after cleaning"),
        ({"classes": ["cat", "_"]}, "is empty after cleaning"),
        ({"caption": "a black dog", "phrases": ["a red ball"]}, "'a red ball' does not occur"),
        ({"caption": "a black dog", "spans": [[(0, 50)]]}, r"span \(0, 50\) does not fit"),
        ({"caption": "a black dog", "spans": [[(5, 2)]]}, "does not fit"),
        ({"caption": "a black dog", "spans": [[(-1, 3)]]}, "does not fit"),
        ({"caption": "a black dog", "phrases": ["a", "b"], "spans": [[(0, 3)]]}, "2 phrase names for 1"),
        ({"classes": ["cat"], "chunk_size": 0}, "chunk_size must be a positive number"),
        ({"classes": ["cat"], "chunk_size": -2}, "chunk_size must be a positive number"),
        ({}, "exactly one of"),
        ({"classes": ["cat"], "caption": "a cat"}, "exactly one of"),
    ],
)
def test_prompt_errors(predictor, image, kwargs, message):
    with pytest.raises(PromptError, match=message) as info:
        predictor.predict(image, **kwargs)
    assert "\n" not in str(info.value)


def long_vocabulary(count: int) -> list[str]:
    first = ["red", "small", "wooden", "striped", "plastic", "metal", "paper", "glass", "green", "old"]
    second = ["toy", "kitchen", "garden", "office", "sports", "music", "bath", "travel", "baby", "farm"]
    third = ["box", "chair", "lamp", "basket", "bottle", "brush", "bag", "clock", "drum", "fan"]
    names = [f"{a} {b} {c}" for a in first for b in second for c in third]
    return names[:count]


def test_long_vocabulary_is_chunked_never_truncated(model, predictor, image):
    names = long_vocabulary(300)
    prompts = predictor.class_prompts(names)
    assert len(prompts) > 1
    labels = [label for prompt in prompts for label in prompt.labels]
    assert labels == list(range(1, 301))  # every class once, in order
    for prompt in prompts:
        tokens = tokenize_captions([prompt.caption], max_length=256, pad_to_max=False)
        assert not tokens.truncated[0] and tokens.num_tokens[0] <= 256
        assert sorted(prompt.label_to_tokens) == list(prompt.labels)  # every class has tokens
        assert max(max(t) for t in prompt.label_to_tokens.values()) < tokens.num_tokens[0] - 1
    with Counter(model.backbone) as backbone, Counter(model.text_encoder) as text:
        result = predictor.predict(image, classes=names, threshold=0.0)
    assert (backbone.calls, text.calls) == (1, len(prompts))
    assert result.names == names and int(result.labels.max()) >= 250  # late classes are detected too
    # an explicit chunk size that does not fit 256 tokens is refused, not truncated
    with pytest.raises(PromptError, match="use a smaller chunk size"):
        predictor.class_prompts(names, chunk_size=300)
    # an over-long caption is refused, never truncated silently
    with pytest.raises(PromptError, match="more than max_length=256"):
        predictor.predict(image, caption=", ".join(names), phrases=[names[0]])


# ---------------------------------------------------------------------- results
def test_result_formats(predictor, image):
    result = predictor.predict(image, classes=CLASSES, threshold=0.3)
    assert isinstance(result, Prediction) and len(result) > 0
    assert result.boxes.shape == (len(result), 4) and result.boxes.dtype == torch.float32
    assert result.scores.shape == (len(result),) and bool((result.scores >= 0.3).all())
    assert result.labels.dtype == torch.int64 and result.phrases == [CLASSES[i] for i in result.labels]
    assert result.scores.tolist() == sorted(result.scores.tolist(), reverse=True)
    width, height = result.image_size
    assert (width, height) == (160, 120)
    assert bool((result.boxes[:, 0::2] <= width).all()) and bool((result.boxes[:, 1::2] <= height).all())
    assert bool((result.boxes >= 0).all()) and bool((result.boxes[:, 2:] >= result.boxes[:, :2]).all())

    record = json.loads(json.dumps(result.to_dict()))
    assert set(record) == {"file", "width", "height", "caption", "detections"}
    assert (record["width"], record["height"]) == (160, 120)
    assert len(record["detections"]) == len(result)
    first = record["detections"][0]
    assert set(first) == {"box_xyxy", "score", "label", "phrase"}
    assert first["box_xyxy"] == pytest.approx(result.boxes[0].tolist(), abs=0.01)
    assert first["phrase"] == CLASSES[first["label"]]

    category_ids = [10, 20, 30, 40, 50]
    coco = result.to_coco_results(image_id=7, category_ids=category_ids)
    assert len(coco) == len(result)
    x1, y1, x2, y2 = result.boxes[0].tolist()
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == category_ids[int(result.labels[0])]
    assert coco[0]["bbox"] == pytest.approx([x1, y1, x2 - x1 + 1, y2 - y1 + 1])  # legacy "+1" xywh
    assert coco[0]["score"] == pytest.approx(float(result.scores[0]))

    if importlib.util.find_spec("supervision") is None:
        with pytest.raises(ImportError, match="pip install supervision"):
            result.to_supervision()
    else:  # pragma: no cover - supervision is optional
        detections = result.to_supervision()
        assert len(detections) == len(result)
        np.testing.assert_allclose(detections.xyxy, result.boxes.numpy())


def test_hugging_face_convention(predictor, image):
    out = predictor(image, candidate_labels=["cat", "dog"], threshold=0.3)
    assert isinstance(out, list) and len(out) > 3
    for item in out:
        assert set(item) == {"score", "label", "box"} and item["label"] in ("cat", "dog")
        assert set(item["box"]) == {"xmin", "ymin", "xmax", "ymax"}
        assert all(isinstance(v, int) for v in item["box"].values()) and item["score"] >= 0.3
    assert [o["score"] for o in out] == sorted((o["score"] for o in out), reverse=True)
    result = predictor.predict(image, classes=["cat", "dog"], threshold=0.3)
    assert out[0]["score"] == pytest.approx(float(result.scores[0]))
    assert out[0]["box"]["xmin"] == int(float(result.boxes[0, 0]))  # truncated, as transformers does
    top = predictor(image, candidate_labels="cat,dog", threshold=0.3, top_k=2)
    assert top == out[:2]
    assert predictor(image, candidate_labels=["cat", "dog"], threshold=0.99) == []


def test_noun_phrases_for_a_caption_without_phrases(predictor, image):
    pytest.importorskip("spacy")
    from glip.text.noun_phrases import find_noun_phrases

    caption = "a black dog next to a red ball"
    try:
        assert find_noun_phrases(caption) == ["a black dog", "a red ball"]
    except PromptError as exc:  # spaCy without its English model
        pytest.skip(str(exc))
    result = predictor.predict(image, caption=caption, threshold=0.0)
    assert result.names == ["a black dog", "a red ball"] and result.caption == caption
    assert set(result.phrases) <= set(result.names) and len(result) > 0
    explicit = predictor.predict(image, caption=caption, phrases=["a black dog", "a red ball"], threshold=0.0)
    assert_same(result, explicit, atol=0.0)
    spans = predictor.predict(image, caption=caption, spans=[[(0, 11)], [(20, 30)]], threshold=0.0)
    assert spans.names == ["a black dog", "a red ball"]
    assert_same(spans, explicit, atol=0.0)
    with pytest.raises(PromptError, match="no noun phrase"):
        predictor.predict(image, caption="running quickly")


# ---------------------------------------------------------------------- predict_prompts
def test_predict_prompts_is_what_predict_runs(predictor, image):
    from glip.text.prompts import Prompt, class_prompts

    by_classes = predictor.predict(
        [image, make_image(90, 70, 3)], classes=CLASSES, threshold=0.2, chunk_size=2
    )
    prompts = class_prompts(CLASSES, 2, max_len=predictor.max_query_len)
    assert all(isinstance(p, Prompt) for p in prompts) and len(prompts) == 3
    direct = predictor.predict_prompts([image, make_image(90, 70, 3)], prompts, threshold=0.2)
    for a, b in zip(by_classes, direct):
        assert_same(a, b, atol=0.0)
        assert b.names == CLASSES
    caption = "a red ball next to a cat"
    grounded = predictor.predict(image, caption=caption, phrases=["red ball", "cat"], threshold=0.2)
    [prompt] = [predictor.caption_prompt(caption, ["red ball", "cat"])[0]]
    [direct] = predictor.predict_prompts([image], [prompt], threshold=0.2, caption=caption)
    assert_same(grounded, direct, atol=0.0)
    assert direct.caption == caption and direct.names == ["red ball", "cat"]


def test_predict_prompts_detections_per_img(model, predictor, image):
    prompts = predictor.class_prompts(CLASSES)
    config = model.config
    [capped] = predictor.predict_prompts([image], prompts, threshold=0.0, detections_per_img=5)
    assert model.config is config  # passed down, not swapped into the config
    [full] = predictor.predict_prompts([image], prompts, threshold=0.0)
    assert len(capped) == 5 < len(full)
    assert torch.equal(capped.scores, full.scores[:5])


def test_encode_prompt_text_is_cached(model, predictor):
    with Counter(model.text_encoder) as text:
        first = predictor.encode_prompt_text("cat. dog")
        again = predictor.encode_prompt_text("cat. dog")
    assert text.calls == 1 and first is again
    assert first.hidden.shape[0] == 1


def test_predict_bgr(predictor, image):
    rgb = np.asarray(image)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    assert_same(
        predictor.predict(bgr, classes=CLASSES, threshold=0.2, bgr=True),
        predictor.predict(rgb, classes=CLASSES, threshold=0.2),
        atol=0.0,
    )


def test_chunk_size_minus_one_is_one_prompt(predictor, image):
    assert len(predictor.class_prompts(CLASSES, -1)) == 1
    assert_same(
        predictor.predict(image, classes=CLASSES, threshold=0.2, chunk_size=-1),
        predictor.predict(image, classes=CLASSES, threshold=0.2),
        atol=0.0,
    )


def test_threshold_must_be_a_number_in_0_1(predictor, image):
    for bad in (float("nan"), -0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
            predictor.predict(image, classes=["cat"], threshold=bad)
