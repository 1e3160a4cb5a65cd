"""Models in glip's own format on the Hugging Face Hub: download (saving with a model card and pushing are
in :mod:`glip.weights.publish`).

A Hub repository holds what :func:`glip.weights.loading.save_model` writes (``config.json`` +
``model.safetensors``), optionally task heads beside it (:data:`HEAD_FILES`: the GLIPv2 mask head
``mask_head.*`` (:mod:`glip.models.mask_head`), VQA head ``vqa_head.*`` (:mod:`glip.models.vqa`) and captioning
head ``caption_head.*`` (:mod:`glip.models.captioning`), each downloaded when present) and a ``README.md``
model card. :func:`glip.weights.publish.save_pretrained` writes them; ``GLIPPredictor.from_pretrained`` finds
them in the folder.

``load_model("user/repo")`` (:func:`glip.weights.loading.load_model`) downloads through :func:`download`;
``GLIPPredictor.from_pretrained("user/repo")`` through :func:`local_model_path` (so heads beside the model load).
``HF_ENDPOINT`` (read at call time, so a test or a mirror can set it late) picks the server and
``HF_HUB_OFFLINE=1`` uses the local cache only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from glip.weights.format import CONFIG_FILE, WEIGHTS_FILE, CheckpointError

README_FILE = "README.md"
MASK_HEAD_FILES = ("mask_head.json", "mask_head.safetensors")  # glip.models.mask_head's file names
# optional task heads saved beside the model, by head: the files are downloaded when the repository has them
# (the file names of glip.models.mask_head, glip.models.vqa and glip.models.captioning)
HEAD_FILES: dict[str, tuple[str, ...]] = {
    "mask_head": MASK_HEAD_FILES,
    "vqa_head": ("vqa_head.json", "vqa_head.safetensors"),
    "caption_head": ("caption_head.json", "caption_head.safetensors"),
}
REQUIRED_FILES = (CONFIG_FILE, WEIGHTS_FILE)
OPTIONAL_FILES = (*(name for files in HEAD_FILES.values() for name in files), README_FILE)

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class HubError(CheckpointError, ValueError):
    """A Hub repository could not be read or written; the message says why and what to do."""


def is_repo_id(text: str) -> bool:
    """``"user/repo"``: exactly one ``/`` between two Hub-valid names (callers check it is not a path)."""
    return bool(_REPO_ID.match(text)) and ".." not in text


def endpoint() -> str | None:
    """``HF_ENDPOINT`` (read at call time), or None for the default server."""
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: only the local cache is used."""
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
        "local_files_only": offline(),
        "endpoint": endpoint(),
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


def local_model_path(name_or_path: str | Path) -> str:
    """``"user/repo"`` (one ``/``, not an existing path or a released name) -> the downloaded snapshot folder
    (:func:`download`, heads included); anything else unchanged. The rule is ``load_model``'s."""
    from glip.weights.registry import RELEASED

    text = str(name_or_path)
    if text in RELEASED or Path(text).exists() or text.count("/") != 1:
        return text
    return str(download(text))
