"""Publishing glip models: ``save_pretrained`` (glip's format + a generated model card) and ``push_to_hub``.

See :mod:`glip.weights.hub` for the repository layout and :func:`glip.weights.loading.load_model` for loading
``"user/repo"`` back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glip.fileio import atomic_write_text
from glip.weights.hub import README_FILE, HubError, endpoint, is_repo_id, offline
from glip.weights.loading import save_model


def model_card(
    model: Any,
    repo_id: str | None = None,
    training_data: str | None = None,
    metrics: Mapping[str, float] | None = None,
    notes: str | None = None,
    mask_head: Any = None,
    tasks: Sequence[str] = (),
) -> str:
    """A README.md model card: preset, parameter count, task heads (``tasks``: more task names, e.g. the
    GLIPv2 VQA / captioning heads), training data summary and metrics when given."""
    config = model.config
    parameters = sum(p.numel() for p in model.parameters())
    title = repo_id or config.name
    lines = [
        "---",
        "library_name: glip",
        "pipeline_tag: zero-shot-object-detection",
        "tags:",
        "- glip",
        "- object-detection",
        "- phrase-grounding",
        "---",
        "",
        f"# {title}",
        "",
        "A GLIP / GLIPv2 detector saved by the `glip` package (pure PyTorch): `config.json` holds the "
        "architecture, `model.safetensors` the weights.",
        "",
        "| | |",
        "|---|---|",
        f"| preset | `{config.name}` |",
        f"| backbone | `{type(config.backbone).__name__}` |",
        f"| parameters | {parameters:,} ({parameters / 1e6:.1f} M) |",
        f"| text encoder | `{config.text.pretrained or 'BERT (in the weights)'}` |",
        f"| max query length | {config.text.max_query_len} |",
        "| tasks | detection, phrase grounding"
        + (", instance masks (`mask_head.safetensors`)" if mask_head is not None else "")
        + "".join(f", {task}" for task in tasks)
        + " |",
    ]
    if training_data:
        lines += ["", "## Training data", "", training_data.strip()]
    if metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in metrics.items()]
    if notes:
        lines += ["", "## Notes", "", notes.strip()]
    load_id = repo_id or "user/repo"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from glip.predictor import GLIPPredictor",
        "",
        f'predictor = GLIPPredictor.from_pretrained("{load_id}")',
        'prediction = predictor.predict("image.jpg", classes=["person", "dog"])',
        "```",
        "",
    ]
    return "\n".join(lines)


def save_pretrained(
    model: Any,
    directory: str | Path,
    *,
    repo_id: str | None = None,
    training_data: str | None = None,
    metrics: Mapping[str, float] | None = None,
    notes: str | None = None,
    mask_head: Any = None,
    skip_pretrained_text: bool = False,
    half: bool = False,
) -> Path:
    """:func:`glip.weights.loading.save_model` + a generated ``README.md`` (+ the mask head if given).

    ``model``: a :class:`glip.models.glip.GLIP` or a :class:`glip.predictor.GLIPPredictor` (its model, its
    mask head unless ``mask_head`` is given, and its GLIPv2 VQA / captioning heads when it has them).
    ``GLIPPredictor.from_pretrained(directory)`` loads them all back.
    """
    predictor = model if hasattr(model, "predict") and hasattr(model, "model") else None
    model, mask_head = _model_and_heads(model, mask_head)
    directory = save_model(model, directory, skip_pretrained_text=skip_pretrained_text, half=half)
    if mask_head is not None:
        from glip.models.mask_head import save_mask_head

        save_mask_head(mask_head, directory, half=half)
    tasks = []
    vqa, captioner = getattr(predictor, "vqa", None), getattr(predictor, "captioner", None)
    if vqa is not None:  # GLIPv2 VL heads of a predictor (glip.models.vqa / glip.models.captioning)
        from glip.models.vqa import save_vqa_head

        save_vqa_head(vqa, directory, half=half)
        tasks.append("grounded VQA (`vqa_head.safetensors`)")
    if captioner is not None:
        from glip.models.captioning import save_caption_head

        save_caption_head(captioner, directory, half=half)
        tasks.append("grounded captioning (`caption_head.safetensors`)")
    atomic_write_text(
        directory / README_FILE,
        model_card(model, repo_id, training_data, metrics, notes, mask_head, tasks=tasks),
    )
    return directory


def _model_and_heads(model: Any, mask_head: Any) -> tuple[Any, Any]:
    """A predictor (it has ``.model`` and ``.predict``) -> its model and mask head; a model -> itself."""
    if hasattr(model, "predict") and hasattr(model, "model"):
        return model.model, mask_head if mask_head is not None else getattr(model, "mask_head", None)
    return model, mask_head


def push_to_hub(
    model: Any,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload glip model",
    revision: str | None = None,
    training_data: str | None = None,
    metrics: Mapping[str, float] | None = None,
    notes: str | None = None,
    mask_head: Any = None,
    skip_pretrained_text: bool = False,
    half: bool = False,
    ignore_patterns: Sequence[str] | None = None,
) -> str:
    """Save the model or predictor (:func:`save_pretrained`) to a temporary folder and upload it; returns the
    commit URL.

    Creates the repository when needed (``HfApi.create_repo(exist_ok=True)``) and uploads the folder in one
    commit (``HfApi.upload_folder``). ``HF_ENDPOINT`` selects the server, ``token`` (or the login) the user.
    """
    import tempfile

    from huggingface_hub import HfApi

    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repository id of the form 'user/repo'")
    if offline():
        raise HubError("HF_HUB_OFFLINE is set: unset it to push to the Hub")
    api = HfApi(endpoint=endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="glip-push-") as tmp:
        folder = save_pretrained(
            model,
            tmp,
            repo_id=repo_id,
            training_data=training_data,
            metrics=metrics,
            notes=notes,
            mask_head=mask_head,
            skip_pretrained_text=skip_pretrained_text,
            half=half,
        )
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=commit_message,
                revision=revision,
                ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
            )
        except Exception as exc:
            raise HubError(
                f"could not push to {repo_id!r}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ". Log in (huggingface-cli login or token=...) with write access, or check HF_ENDPOINT."
            ) from exc
    return str(getattr(info, "commit_url", info))
