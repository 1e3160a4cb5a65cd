"""Models in glip's own format on the Hugging Face Hub: download, save with a model card, push.

A Hub repository holds what :func:`glip.weights.loading.save_model` writes (``config.json`` +
``model.safetensors``), optionally the GLIPv2 mask head beside it (``mask_head.json`` +
``mask_head.safetensors``, :mod:`glip.v2.segmentation`) and a ``README.md`` model card. The VQA and captioning
heads of :mod:`glip.v2` live in the model's own state dict (``model.safetensors``), so they travel with it.

``load_model("user/repo")`` (:func:`glip.weights.loading.load_model`) downloads through :func:`download`.
``HF_ENDPOINT`` (read at call time, so a test or a mirror can set it late) picks the server and
``HF_HUB_OFFLINE=1`` uses the local cache only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glip.weights.loading import CONFIG_FILE, WEIGHTS_FILE, CheckpointError, save_model

README_FILE = "README.md"
MASK_HEAD_FILES = ("mask_head.json", "mask_head.safetensors")
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
OPTIONAL_FILES = (*MASK_HEAD_FILES, README_FILE)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubError(CheckpointError, ValueError):
    """A Hub repository could not be read or written; the message says why and what to do."""


def is_repo_id(text: str) -> bool:
    """``"user/repo"``: exactly one ``/`` between two Hub-valid names (callers check it is not a path)."""
    return bool(_REPO_ID.match(text)) and ".." not in text


def _endpoint() -> str | None:
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download(
    repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None, token: str | None = None
) -> Path:
    """Fetch a glip-format repository into the Hub cache; returns the local snapshot directory.

    ``config.json`` and ``model.safetensors`` must exist; the mask head files and README are fetched when
    present. Raises :class:`HubError` (missing repo or file, no connection, offline without a cached copy).
    """
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise HubError("loading from the Hub needs huggingface_hub: pip install huggingface_hub") from exc
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repository id of the form 'user/repo'")
    options: dict[str, Any] = {
        "revision": revision,
        "cache_dir": str(cache_dir) if cache_dir is not None else None,
        "local_files_only": _offline(),
        "endpoint": _endpoint(),
        "token": token,
    }
    directory: Path | None = None
    for name in REQUIRED_FILES:
        try:
            directory = Path(hf_hub_download(repo_id, name, **options)).parent
        except Exception as exc:  # network errors, offline mode, missing repo / file: the same advice
            where = "the local cache (HF_HUB_OFFLINE is set)" if options["local_files_only"] else "the Hub"
            raise HubError(
                f"could not fetch {name} of {repo_id!r} from {where}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}. Check the repository id and revision, "
                "your connection (or HF_ENDPOINT), or download the folder by hand and pass its path."
            ) from exc
    for name in OPTIONAL_FILES:
        try:
            hf_hub_download(repo_id, name, **options)
        except EntryNotFoundError:
            continue
        except Exception:  # offline and never cached, or a flaky optional file: the model still loads
            continue
    assert directory is not None
    return directory


def model_card(
    model: Any,
    repo_id: str | None = None,
    training_data: str | None = None,
    metrics: Mapping[str, float] | None = None,
    notes: str | None = None,
) -> str:
    """A README.md model card: preset, parameter count, training data summary and metrics when given."""
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
    """:func:`glip.weights.loading.save_model` + a generated ``README.md`` (+ the mask head if given)."""
    directory = save_model(model, directory, skip_pretrained_text=skip_pretrained_text, half=half)
    if mask_head is not None:
        from glip.v2.segmentation import save_mask_head

        save_mask_head(mask_head, directory)
    (directory / README_FILE).write_text(model_card(model, repo_id, training_data, metrics, notes))
    return directory


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
    """Save the model (:func:`save_pretrained`) to a temporary folder and upload it; returns the commit URL.

    Creates the repository when needed (``HfApi.create_repo(exist_ok=True)``) and uploads the folder in one
    commit (``HfApi.upload_folder``). ``HF_ENDPOINT`` selects the server, ``token`` (or the login) the user.
    """
    import tempfile

    from huggingface_hub import HfApi

    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repository id of the form 'user/repo'")
    if _offline():
        raise HubError("HF_HUB_OFFLINE is set: unset it to push to the Hub")
    api = HfApi(endpoint=_endpoint(), token=token)
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
