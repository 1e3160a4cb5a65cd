"""Running the model over an evaluation set: sharding across ranks, a progress bar, a resumable cache of
per-image predictions, and gathering the results on every rank (all records, or what a
:class:`Collector` keeps of them).

Per-image records are plain JSON (``{"id", "boxes": [[x1, y1, x2, y2]], "scores", "labels"}``, boxes in
the annotation's pixel frame, full float precision), so a resumed run and a run on any number of
processes score exactly the same predictions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glip.eval.common import EvalError, barrier, gather_objects, load_eval_image, rank_info
from glip.eval.options import EvalOptions
from glip.fileio import atomic_write_text, open_append
from glip.text.prompts import Prompt, class_prompts, label_token_dict_from_spans
from glip.text.tokenizer import PromptError, get_tokenizer

logger = logging.getLogger(__name__)

CACHE_NAME = "predictions.cache.jsonl"
CACHE_VERSION = 1


@dataclass
class WorkItem:
    """One unit of inference: an image (for grounding: one (image, sentence) record).

    key: the record id (image id); path: the image file; size: (width, height) of the annotation's frame
    (None: the image's own); where: how messages name it.
    """

    key: Any
    path: Path
    size: tuple[float, float] | None
    where: str


# ------------------------------------------------------------------------------------------ the model


class LazyModel:
    """A model loaded on first use (``load()``), so that bad data is reported before a big checkpoint is
    read. ``loader()`` returns a GLIP model or a GLIPPredictor."""

    def __init__(self, loader: Callable[[], Any], name: str | None = None) -> None:
        self.loader = loader
        self.name = name
        self._model: Any = None

    def load(self) -> Any:
        if self._model is None:
            self._model = self.loader()
        return self._model


def as_predictor(model: Any, device: str | torch.device | None = None) -> Any:
    """A :class:`~glip.predictor.GLIPPredictor` for a predictor, a GLIP model, a DDP-wrapped model or a
    :class:`LazyModel`."""
    from glip.predictor import GLIPPredictor

    if isinstance(model, LazyModel):
        model = model.load()
    if isinstance(model, GLIPPredictor):
        return model
    module = getattr(model, "module", model)  # DistributedDataParallel
    return GLIPPredictor(module, device=device)


def weights_checksum(model: torch.nn.Module) -> str:
    """A cheap identity of the weights for the cache fingerprint (sum and count of every tensor)."""
    total = 0.0
    count = 0
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                total += float(tensor.detach().double().sum())
            count += tensor.numel()
    return f"{count}:{total!r}"


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (identifies the annotation file in the cache fingerprint)."""
    digest = hashlib.sha1()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ prompts


def detection_prompts(
    predictor: Any,
    names: Sequence[str],
    chunk_size: int | None,
    caption_prompt: Sequence[dict[str, str]] | None = None,
    where: str = "",
) -> list[Prompt]:
    """Class-list prompts (labels = 1-based indices into ``names``), as the official evaluation builds
    them from the categories sorted by id: :func:`glip.text.prompts.class_prompts` (". "-joined cleaned
    names; ``chunk_size`` k: chunks of k, official ``TEST.CHUNKED_EVALUATION``; -1: one prompt; None: the
    predictor's chunk size, else as many as fit the text length).

    ``caption_prompt``: official ``DATASETS.CAPTION_PROMPT`` (one ``{"prefix", "name", "suffix"}`` per
    class).
    """
    if caption_prompt is not None and len(caption_prompt) != len(names):
        raise EvalError(f"{where}: caption_prompt has {len(caption_prompt)} entries for {len(names)} classes")
    if chunk_size is None:
        chunk_size = getattr(predictor, "chunk_size", None)
    try:
        return class_prompts(
            list(names), chunk_size, max_len=predictor.max_query_len, caption_prompt=caption_prompt
        )
    except PromptError as exc:
        raise EvalError(f"{where}: cannot build the class prompts: {exc}") from None


def grounding_prompt(
    predictor: Any, caption: str, spans: Sequence[Sequence[Sequence[int]]], where: str
) -> Prompt:
    """The prompt of a grounding record: entity j (label j + 1) covers the tokens of its char spans
    (official ``positive_map_eval``). A phrase whose tokens fall past the model's text length gets none
    (it then has no prediction), as officially. Names: the caption text of each entity's spans."""
    try:
        encoding = get_tokenizer()(caption, truncation=False)
        labels = list(range(1, len(spans) + 1))
        label_to_tokens = label_token_dict_from_spans(encoding, spans, labels, caption=caption)
    except PromptError as exc:
        raise EvalError(f"{where}: {exc}") from None
    limit = predictor.max_query_len - 1  # the last kept position holds [SEP]
    label_to_tokens = {
        lab: [p for p in pos if p < limit]
        for lab, pos in label_to_tokens.items()
        if any(p < limit for p in pos)
    }
    names = tuple(" / ".join(caption[int(b) : int(e)] for b, e in entity) for entity in spans)
    return Prompt(caption, label_to_tokens, tuple(labels), names)


def predict_images(
    predictor: Any,
    items: Sequence[WorkItem],
    prompts: list[Prompt],
    names: Sequence[str],
    label_map: Callable[[int], Any],
    batch_size: int,
    masks: bool = False,
    detections_per_img: int | None = None,
) -> list[dict[str, Any]]:
    """Run the prompts on the items' images; one record per item with boxes in the annotation frame.

    Images are read with :func:`~glip.eval.common.load_eval_image` (the decoder of ``glip detect``) and run
    through :meth:`~glip.predictor.GLIPPredictor.predict_prompts`. ``label_map(index)`` turns the
    predictor's 0-based name index into the stored label (a category id or a phrase index); ``names`` is
    kept for the callers (the prompts carry their names). Threshold 0: the model's own post-processing
    (pre-NMS 0.05, NMS, ``detections_per_img``, None: the model's) decides what is kept. ``masks=True``:
    each record also has ``segmentation``, a COCO RLE per box in the annotation frame (the predictor's mask
    head).
    """
    del names
    images = [load_eval_image(item.path, item.where) for item in items]
    predictions = predictor.predict_prompts(
        images,
        prompts,
        threshold=0.0,
        batch_size=batch_size,
        masks=masks,
        detections_per_img=detections_per_img,
        sources=[str(item.path) for item in items],
    )
    records = []
    for item, image, prediction in zip(items, images, predictions):
        boxes = prediction.boxes.double()
        if item.size is not None and (item.size[0] != image.width or item.size[1] != image.height):
            logger.warning(
                "%s: image is %dx%d but the annotation says %gx%g: boxes rescaled to the annotation",
                item.where,
                image.width,
                image.height,
                item.size[0],
                item.size[1],
            )
            scale = torch.tensor([item.size[0] / image.width, item.size[1] / image.height] * 2).double()
            boxes = boxes * scale
        records.append(
            {
                "id": item.key,
                "boxes": boxes.tolist(),
                "scores": prediction.scores.double().tolist(),
                "labels": [label_map(int(i)) for i in prediction.labels.tolist()],
            }
        )
        if masks and prediction.masks is not None:
            from glip.data.masks import encode_rle

            instance_masks = prediction.masks
            if item.size is not None and (item.size[0] != image.width or item.size[1] != image.height):
                size = (int(round(item.size[1])), int(round(item.size[0])))
                instance_masks = torch.nn.functional.interpolate(
                    instance_masks[:, None].float(), size=size, mode="nearest"
                )[:, 0].bool()
            records[-1]["segmentation"] = [encode_rle(m) for m in instance_masks]
    return records


# ------------------------------------------------------------------------------------------ collecting


class Collector:
    """Receives this rank's per-image records; its ``state()`` is what is gathered, ``merge`` combines the
    states of all ranks. The default keeps every record (``{key: record}``)."""

    def __init__(self) -> None:
        self.records: dict[Any, dict[str, Any]] = {}

    def add(self, record: dict[str, Any]) -> None:
        self.records[record["id"]] = record

    def __len__(self) -> int:
        return len(self.records)

    def state(self) -> Any:
        return list(self.records.values())

    def merge(self, states: Sequence[Any]) -> Any:
        merged: dict[Any, dict[str, Any]] = {}
        for state in states:
            for record in state:
                merged[record["id"]] = record
        return merged


# ------------------------------------------------------------------------------------------- caching


class PredictionCache:
    """Per-image records appended to ``OUT/predictions.cache.jsonl`` (rank r > 0:
    ``predictions.cache.rank{r}.jsonl``). The first line holds a fingerprint of the settings; files with
    another fingerprint are ignored (and this rank's own is started anew)."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any], rank: int) -> None:
        self.directory = Path(directory)
        self.fingerprint = {"version": CACHE_VERSION, **fingerprint}
        self.path = self.directory / (CACHE_NAME if rank == 0 else f"predictions.cache.rank{rank}.jsonl")
        self._handle: Any = None

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("predictions.cache*.jsonl"))

    def _matches(self, first_line: str) -> bool:
        try:
            header = json.loads(first_line)
        except json.JSONDecodeError:
            return False
        return isinstance(header, dict) and header.get("fingerprint") == self.fingerprint

    def iter_records(self) -> Iterator[dict[str, Any]]:
        """Records of every rank's cache file with the same fingerprint, streamed line by line."""
        for path in self.files():
            with path.open() as handle:
                first = handle.readline()
                if not first:
                    continue
                if not self._matches(first):
                    logger.warning(
                        "%s was written with other settings (model, data or prompts): not reused", path
                    )
                    continue
                for number, line in enumerate(handle, start=2):
                    try:
                        record = json.loads(line)
                        record["id"]  # noqa: B018
                    except (json.JSONDecodeError, KeyError, TypeError):
                        logger.warning("%s line %d is incomplete (interrupted write?): skipped", path, number)
                        continue
                    yield record

    def open(self) -> None:
        """Append to this rank's file if it has the same fingerprint, else start it anew."""
        self.directory.mkdir(parents=True, exist_ok=True)
        reuse = False
        if self.path.is_symlink():  # planted: replaced by a file of our own, never followed
            self.path.unlink()
        if self.path.exists():
            with self.path.open() as handle:
                reuse = self._matches(handle.readline())
        if reuse:
            with self.path.open("r+b") as handle:  # an interrupted last write: drop the partial line
                handle.seek(0, 2)
                size = handle.tell()
                handle.seek(max(0, size - 1))
                if size and handle.read(1) != b"\n":
                    handle.seek(0)
                    data = handle.read()
                    handle.truncate(data.rfind(b"\n") + 1)
            self._handle = open_append(self.path)
        else:
            atomic_write_text(self.path, json.dumps({"fingerprint": self.fingerprint}) + "\n")
            self._handle = open_append(self.path)
        self._handle.flush()

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def run_inference(
    items: Sequence[WorkItem],
    predict: Callable[[list[WorkItem]], list[dict[str, Any]]],
    options: EvalOptions | None = None,
    *,
    collector: Collector | None = None,
    fingerprint: dict[str, Any] | None = None,
    desc: str = "eval",
) -> Any:
    """Predict every item once across all ranks; every rank gets ``collector.merge`` of all ranks' states
    (default: ``{key: record}`` of every item).

    Items are sharded ``items[rank::world_size]`` and ``predict`` gets ``options.batch_size`` of them at a
    time. With ``options.out_dir`` each new record is appended to the rank's cache file there as soon as it
    exists, and items already cached (by any rank, with the same ``fingerprint``) are skipped when
    ``options.resume`` is True. ``options.progress``: a progress bar on rank 0. A bad input met by one rank
    (an unreadable image) is raised on every rank.
    """
    from tqdm import tqdm

    options = options if options is not None else EvalOptions()
    batch_size, cache_dir = options.batch_size, options.out_dir
    resume, progress = options.resume, options.progress
    info = rank_info()
    collector = collector if collector is not None else Collector()
    mine = list(items[info.rank :: info.world_size])
    wanted = {item.key for item in mine}
    done: set[Any] = set()
    cache = PredictionCache(Path(cache_dir), fingerprint or {}, info.rank) if cache_dir is not None else None
    if cache is not None and resume:
        for record in cache.iter_records():
            if record["id"] in wanted and record["id"] not in done:
                done.add(record["id"])
                collector.add(record)
    barrier()  # every rank has read the caches before any rank rewrites its own
    todo = [item for item in mine if item.key not in done]
    if done:
        logger.info("reusing %d cached prediction(s) of %d image(s)", len(done), len(mine))
    if cache is not None:
        cache.open()
    label = desc if info.world_size == 1 else f"{desc} (rank 0 of {info.world_size})"
    error: str | None = None
    count = 0
    try:
        with tqdm(
            total=len(mine),
            initial=len(done),
            desc=label,
            unit="img",
            disable=not progress or not info.is_main,
        ) as bar:
            step = max(int(batch_size), 1)
            for start in range(0, len(todo), step):
                batch = todo[start : start + step]
                for record in predict(batch):
                    collector.add(record)
                    count += 1
                    if cache is not None:
                        cache.append(record)
                bar.update(len(batch))
    except EvalError as exc:
        if info.world_size == 1:
            raise
        error = str(exc)  # passed to every rank below, so that no rank waits for this one forever
    finally:
        if cache is not None:
            cache.close()
    if error is None and count + len(done) != len(mine):
        raise RuntimeError(f"{len(mine) - count - len(done)} image(s) got no prediction")
    states, errors = [], []
    for part in gather_objects((collector.state(), error)):
        state, part_error = part  # type: ignore[misc]
        states.append(state)
        if part_error:
            errors.append(part_error)
    if errors:
        raise EvalError(errors[0])
    return collector.merge(states)
