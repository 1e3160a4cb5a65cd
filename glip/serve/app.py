"""The HTTP app: ``create_app(predictor) -> FastAPI``.

Endpoints (every error is a JSON ``{"error": "..."}`` with a 4xx/5xx status; none stops the server):

* ``POST /detect``: multipart ``image`` + form ``classes`` ("red circle,blue square") or ``caption``
  (+ ``phrases``, ";"-separated; default: the caption's noun phrases), ``threshold`` (0.5), ``masks``
  ("true" where the model has a mask head). Returns the ``predictions.json`` record of the image
  (:meth:`glip.predictor.Prediction.to_dict`, ``file`` = the upload's file name).
* ``POST /ask`` (GLIPv2 grounded VQA: multipart ``image`` + ``question`` [+ ``threshold``]) -> the answer, its
  score and the boxes of the question's entities (``Answer.to_dict()``); ``POST /caption`` (``image`` [+ ``beams``,
  ``max_length``]) -> the caption and each word's box (``Caption.to_dict()``). Both go through the same batcher
  (requests with the same question / settings share one call); a model without the head answers 501.
* ``GET /health``: ``{"status": "ok", "queued", "running", "stats"}`` with the batch sizes formed so far.
* ``GET /models``: the loaded model (name, preset, classes hint, tasks, limits).
* ``GET /``: the web page (self-contained HTML + JS, no CDN): upload an image, see the boxes.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations (Request) at runtime

import asyncio
import io
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, UnidentifiedImageError

from glip.images import ImageError, load_image
from glip.serve.batcher import AskRequest, Batcher, CaptionRequest, DetectRequest, QueueFullError
from glip.text.tokenizer import PromptError

if TYPE_CHECKING:
    from glip.predictor import GLIPPredictor

logger = logging.getLogger(__name__)

PAGE_PATH = Path(__file__).resolve().parent / "static" / "index.html"
MB = 1024 * 1024
# endpoint -> (the predictor method that would answer it, what the model needs for it)
#: endpoint -> (the predictor attribute that holds its head, what it needs)
TASKS: dict[str, tuple[str, str]] = {
    "ask": ("vqa", "a VQA head (GLIPv2 visual question answering, e.g. --model demo_v2)"),
    "caption": ("captioner", "a captioning head (GLIPv2 image captioning, e.g. --model demo_v2)"),
}


class RequestError(ValueError):
    """A bad request: ``status`` is the HTTP status to answer with, the message says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeLimits:
    """Per-request limits. ``max_upload_bytes``: image file size; ``max_pixels``: width x height (checked
    from the header, before decoding: decompression bombs); ``max_prompt_chars``: classes or caption."""

    max_upload_bytes: int = 20 * MB
    max_pixels: int = 25_000_000
    max_prompt_chars: int = 4000


def supported_tasks(predictor: Any) -> dict[str, bool]:
    """Which endpoints the loaded model can answer: detection always, the others with their head."""
    tasks = {"detect": True, "masks": getattr(predictor, "mask_head", None) is not None}
    for endpoint, (head, _) in TASKS.items():
        tasks[endpoint] = getattr(predictor, head, None) is not None
    return tasks


def decode_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Uploaded bytes -> RGB image (EXIF orientation applied); :class:`RequestError` when not an image or
    too many pixels (the size is read from the header, before any pixel is decoded)."""
    if not data:
        raise RequestError("the uploaded image is empty (0 bytes)")
    try:
        opened = Image.open(io.BytesIO(data))  # reads the header only; PIL refuses > 2x MAX_IMAGE_PIXELS
        if opened.width * opened.height > max_pixels:
            raise RequestError(
                f"the image is {opened.width}x{opened.height} = {opened.width * opened.height} pixels, "
                f"more than the server's limit of {max_pixels}: send a smaller image",
                status=413,
            )
        opened.load()
        return load_image(opened)
    except Image.DecompressionBombError as exc:
        raise RequestError(
            f"the image has too many pixels (decompression bomb?): {exc}", status=413
        ) from None
    except UnidentifiedImageError:
        raise RequestError("the upload is not an image file PIL can read (PNG, JPEG, WebP, ...)") from None
    except ImageError as exc:
        raise RequestError(f"unreadable image: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"the image is corrupt or truncated: {exc}") from None


def _text_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"form field {name!r} must be text, not a file")
    return value.strip() or None


def _parse_bool(text: str | None, name: str) -> bool:
    if text is None:
        return False
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise RequestError(f"{name} must be true or false, got {text!r}")


def parse_detect_form(form: Any, image: Image.Image, limits: ServeLimits, has_masks: bool) -> DetectRequest:
    """The form fields of ``POST /detect`` -> a :class:`DetectRequest` (or :class:`RequestError`)."""
    classes_text = _text_field(form, "classes")
    caption = _text_field(form, "caption")
    phrases_text = _text_field(form, "phrases")
    if (classes_text is None) == (caption is None):
        raise RequestError(
            "give exactly one of the form fields 'classes' (comma-separated names) or 'caption'"
            + (" (both were given)" if classes_text is not None else " (both are missing or empty)")
        )
    prompt = classes_text if classes_text is not None else caption
    assert prompt is not None
    if len(prompt) + len(phrases_text or "") > limits.max_prompt_chars:
        raise RequestError(
            f"the prompt is {len(prompt) + len(phrases_text or '')} characters long, more than the "
            f"server's limit of {limits.max_prompt_chars}"
        )
    classes = None
    if classes_text is not None:
        classes = tuple(c.strip() for c in classes_text.split(",") if c.strip())
        if not classes:
            raise RequestError(f"no class name in classes={classes_text!r}: give e.g. 'cat,dog'")
    if phrases_text is not None and caption is None:
        raise RequestError("'phrases' needs 'caption'")
    phrases = tuple(p.strip() for p in phrases_text.split(";") if p.strip()) if phrases_text else None
    threshold_text = _text_field(form, "threshold")
    try:
        threshold = float(threshold_text) if threshold_text is not None else 0.5
    except ValueError:
        raise RequestError(f"threshold must be a number in [0, 1], got {threshold_text!r}") from None
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise RequestError(f"threshold must be a number in [0, 1], got {threshold_text!r}")
    masks = _parse_bool(_text_field(form, "masks"), "masks")
    if masks and not has_masks:
        raise RequestError("masks=true needs a model with a mask head; this one predicts boxes only")
    return DetectRequest(image, classes, caption, phrases or None, threshold, masks)


def _number(form: Any, name: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    text = _text_field(form, name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not (math.isfinite(value) and low <= value <= high):
        kind = "an integer" if integer else "a number"
        raise RequestError(f"{name} must be {kind} in [{low:g}, {high:g}], got {text!r}")
    return value


def parse_ask_form(form: Any, image: Image.Image, limits: ServeLimits) -> AskRequest:
    """The form fields of ``POST /ask`` (``question``, ``threshold``) -> an :class:`AskRequest`."""
    question = _text_field(form, "question")
    if question is None:
        raise RequestError("give the form field 'question' (e.g. 'what colour is the circle?')")
    if len(question) > limits.max_prompt_chars:
        raise RequestError(
            f"the question is {len(question)} characters long, more than the server's limit of "
            f"{limits.max_prompt_chars}"
        )
    return AskRequest(image, question, _number(form, "threshold", 0.3, 0.0, 1.0))


def parse_caption_form(form: Any, image: Image.Image) -> CaptionRequest:
    """The form fields of ``POST /caption`` (``beams`` 1-8, ``max_length`` 1-64) -> a :class:`CaptionRequest`."""
    beams = _number(form, "beams", 1, 1, 8, integer=True)
    return CaptionRequest(image, beams, _number(form, "max_length", 32, 1, 64, integer=True))


def create_app(
    predictor: Any,
    *,
    max_batch: int = 8,
    max_wait_ms: float = 10.0,
    max_queue: int = 64,
    max_upload_bytes: int = 20 * MB,
    max_pixels: int = 25_000_000,
    max_prompt_chars: int = 4000,
    model_name: str | None = None,
    classes_hint: Sequence[str] | None = None,
) -> Any:
    """A FastAPI app serving ``predictor`` (a :class:`~glip.predictor.GLIPPredictor`, loaded once).

    ``max_batch`` / ``max_wait_ms`` / ``max_queue``: see :class:`~glip.serve.batcher.Batcher`;
    ``model_name`` and ``classes_hint`` (the names the model knows, pre-filled in the page) are shown by
    ``GET /models``.
    """
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.exceptions import HTTPException
    except ImportError:
        raise ImportError(
            "glip serve needs the serve extra: pip install '.[serve]' (in the glip checkout)"
        ) from None

    limits = ServeLimits(max_upload_bytes, max_pixels, max_prompt_chars)
    batcher = Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
    tasks = supported_tasks(predictor)
    page = PAGE_PATH.read_text(encoding="utf-8")
    config = getattr(getattr(predictor, "model", None), "config", None)
    model_info = {
        "name": model_name or getattr(config, "name", None),
        "preset": getattr(config, "name", None),
        "classes_hint": list(classes_hint) if classes_hint else [],
        "tasks": tasks,
        "device": str(getattr(predictor, "device", "")),
        "limits": asdict(limits),
        "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_queue": max_queue},
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="glip serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.status_code != 404 else f"no such endpoint: {request.url.path}"
        return error(exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(400, f"bad request: {exc.errors()}")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "queued": batcher.queued,
            "running": batcher.running,
            "stats": batcher.stats.to_dict(),
        }

    @app.get("/models")
    async def models() -> dict[str, Any]:
        return model_info

    async def answer(request: Request, endpoint: str, parse: Any) -> JSONResponse:
        """Read the multipart upload, ``parse(form, image)`` into a request, run it through the batcher."""
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return error(400, "bad Content-Length header")
        if length > limits.max_upload_bytes + 1 * MB:  # the image plus room for the form fields
            return error(413, f"the request is {length} bytes, over the {limits.max_upload_bytes}-byte limit")
        try:
            form = await request.form(max_files=1, max_fields=16)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise RequestError("send the image as the multipart file field 'image'")
            data = await upload.read(limits.max_upload_bytes + 1)
            if len(data) > limits.max_upload_bytes:
                raise RequestError(
                    f"the image file is over the server's limit of {limits.max_upload_bytes} bytes", 413
                )
            image = await asyncio.to_thread(decode_upload, data, limits.max_pixels)
            result = await batcher.submit(parse(form, image))
        except RequestError as exc:
            return error(exc.status, str(exc))
        except QueueFullError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except (PromptError, ImageError, ValueError) as exc:
            return error(400, str(exc))
        except HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - one request's failure must not stop the server
            logger.exception("POST /%s failed", endpoint)
            return error(500, f"internal error: {type(exc).__name__}: {exc}")
        record = result.to_dict()
        record["file"] = upload.filename or None
        return JSONResponse(record)

    @app.post("/detect")
    async def detect(request: Request) -> JSONResponse:
        return await answer(
            request, "detect", lambda form, image: parse_detect_form(form, image, limits, tasks["masks"])
        )

    def unsupported(endpoint: str) -> JSONResponse:
        _, needs = TASKS[endpoint]
        return error(
            501,
            f"POST /{endpoint} needs {needs}; the loaded model ({model_info['name']}) has none "
            "(GET /models lists the tasks it supports)",
        )

    @app.post("/ask")
    async def ask(request: Request) -> JSONResponse:
        if not tasks["ask"]:
            return unsupported("ask")
        return await answer(request, "ask", lambda form, image: parse_ask_form(form, image, limits))

    @app.post("/caption")
    async def caption(request: Request) -> JSONResponse:
        if not tasks["caption"]:
            return unsupported("caption")
        return await answer(request, "caption", parse_caption_form)

    return app


def load_served_predictor(
    model: str, config: str | None, device: str, precision: str, runtime: str = "pytorch"
) -> "tuple[GLIPPredictor, str, list[str] | None]":
    """``'demo'`` -> the bundled demo model (with its classes as the hint); anything else -> load_model.
    ``runtime="onnxruntime"``: ``model`` is a folder written by ``glip export`` (``GLIPPredictor.from_onnx``,
    CPU, fp32)."""
    from glip.predictor import GLIPPredictor
    from glip.runtime import resolve_device
    from glip.weights.loading import load_model, resolve_config

    if runtime == "onnxruntime":
        if device not in ("auto", "cpu") or precision != "fp32" or config is not None:
            raise ValueError(
                "--runtime onnxruntime runs on CPU in fp32: drop --device, --precision, --config"
            )
        return GLIPPredictor.from_onnx(model), model, None
    if runtime != "pytorch":
        raise ValueError(f"runtime must be pytorch or onnxruntime, got {runtime!r}")
    resolved = resolve_device(device)
    if model in ("demo", "demo_v2"):  # bundled: the GLIP / GLIPv2 demo model, with its heads
        from glip.weights.demo import DEMO_PROMPT, bundled_model_dir

        predictor = GLIPPredictor.from_pretrained(
            str(bundled_model_dir(model)), device=str(resolved), precision=precision
        )
        return predictor, model, DEMO_PROMPT.split(",")
    if config is None:
        predictor = GLIPPredictor.from_pretrained(model, device=str(resolved), precision=precision)
    else:
        loaded = load_model(model, config=resolve_config(config), device=str(resolved))
        predictor = GLIPPredictor(loaded, device=resolved, precision=precision)
    return predictor, model, None
