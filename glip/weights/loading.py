"""Loading and saving models: official ``.pth`` checkpoints, our safetensors format, released names.

``load_model(name_or_path)`` accepts
* a released name (``glip_t``, ``glip_l`` ...), resolved through ``huggingface_hub`` when online, or
  found in ``$GLIP_HOME`` (default ``~/.cache/glip``) when the file was downloaded by hand;
* a directory written by :func:`save_model` (``config.json`` + ``model.safetensors``);
* a Hugging Face Hub repository ``"user/repo"`` holding such a directory (:mod:`glip.weights.hub`);
* an official ``.pth`` (bare state dict or ``{"model": ...}``, optional ``module.`` prefix, fp16 or fp32),
  with the architecture from ``config=`` (a preset name, a :class:`GLIPConfig` or an official YAML) or
  inferred from the tensor shapes for GLIP-T / GLIP-T (A) / GLIP-L.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from glip.config import GLIPConfig, get_preset
from glip.fileio import atomic_write_path, atomic_write_text
from glip.models.glip import GLIP, build_model
from glip.weights.convert import LoadReport, from_official, normalize_official_state
from glip.weights.format import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from glip.weights.registry import RELEASED, WeightsInfo

logger = logging.getLogger(__name__)


def glip_home() -> Path:
    return Path(os.environ.get("GLIP_HOME", Path.home() / ".cache" / "glip"))


# ---------------------------------------------------------------------- reading files
def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> object:
    """``torch.load`` with ``weights_only=True`` first; clear errors for missing / truncated / foreign files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory without {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                f"{path} holds Python objects besides tensors, which torch refuses to unpickle safely. If you "
                "trust the file, load it once with trust_pickle=True (CLI: glip convert --trust-pickle) and "
                "use the converted safetensors copy from then on."
            ) from exc
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({exc})") from exc
    except Exception as exc:  # torch raises many kinds (RuntimeError, EOFError, KeyError, ...) for bad bytes
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size} bytes) is truncated or not a PyTorch checkpoint: {str(exc).splitlines()[0]}"
        ) from exc


def infer_config(state: Mapping[str, torch.Tensor]) -> GLIPConfig:
    """Guess the preset of an official state dict from its shapes (GLIP-T, GLIP-T (A), GLIP-L)."""
    patch = state.get("backbone.body.patch_embed.proj.weight")
    if patch is None:
        raise CheckpointError(
            "not a GLIP checkpoint: no 'backbone.body.patch_embed.proj.weight' (Swin) key; "
            "pass config= (a preset name, GLIPConfig or official YAML) if this is a custom architecture"
        )
    deep_fusion = any(".b_attn." in k for k in state)
    embed = int(patch.shape[0])
    if embed == 96:
        return get_preset("glip_t" if deep_fusion else "glip_t_a")
    if embed == 192:
        return get_preset("glip_l")
    raise CheckpointError(f"cannot infer the architecture (Swin embed dim {embed}); pass config=")


def resolve_config(config: GLIPConfig | str | Path | None) -> GLIPConfig | None:
    if config is None or isinstance(config, GLIPConfig):
        return config
    text = str(config)
    if text.endswith((".yaml", ".yml")):
        from glip.weights.yaml_config import config_from_yaml

        return config_from_yaml(text)
    if text.endswith(".json"):
        return GLIPConfig.from_dict(json.loads(Path(text).read_text()))
    return get_preset(text)


def load_official(
    path: str | Path,
    config: GLIPConfig | str | Path | None = None,
    strict: bool = True,
    trust_pickle: bool = False,
    use_ema: bool = False,
) -> tuple[GLIP, LoadReport]:
    """Build the model and load an official checkpoint into it; ``CheckpointError`` on any mismatch if strict."""
    checkpoint = read_checkpoint(path, trust_pickle)
    if use_ema:
        if not (isinstance(checkpoint, Mapping) and "model_ema" in checkpoint):
            raise CheckpointError(f"{path} has no 'model_ema' entry")
        checkpoint = {"model": checkpoint["model_ema"]}
    try:
        state = normalize_official_state(checkpoint)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    cfg = resolve_config(config) or infer_config(state)
    with torch.device("meta"):
        model = build_model(_without_pretrained(cfg))
    converted, report = from_official(model, state)
    if not report.ok and strict:
        raise CheckpointError(
            f"{path} does not fit the '{cfg.name}' architecture: {report.summary()}. "
            "Pass the matching config= (or --config), or strict=False to load what fits."
        )
    if not report.ok:
        logger.warning("partial load of %s: %s", path, report.summary())
    model = _materialize(model, cfg, converted)
    return model, report


def _without_pretrained(cfg: GLIPConfig) -> GLIPConfig:
    """The same architecture, without loading separate pretrained parts (the checkpoint has them)."""
    import dataclasses

    from glip.config import EfficientNetConfig

    backbone = cfg.backbone
    if isinstance(backbone, EfficientNetConfig):
        backbone = dataclasses.replace(backbone, pretrained=False)
    return dataclasses.replace(cfg, backbone=backbone, text=dataclasses.replace(cfg.text, pretrained=None))


def _materialize(model: GLIP, cfg: GLIPConfig, state: Mapping[str, torch.Tensor]) -> GLIP:
    """Turn a meta-device model into a real one holding ``state`` (missing entries keep a fresh init)."""
    own = model.state_dict()
    if set(own) - set(state):
        # partial load: start from a real initialisation, then overwrite what the checkpoint has
        real = build_model(_without_pretrained(cfg))
        real.load_state_dict(dict(state), strict=False)
        return real.eval()
    typed = {k: v.to(dtype=own[k].dtype) for k, v in state.items()}
    model.load_state_dict(typed, strict=True, assign=True)
    model.config = cfg
    # non-persistent buffers (HF position ids) are still on the meta device: rebuild them
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                if name in ("position_ids", "token_type_ids"):
                    length = buffer.shape[-1]
                    value = torch.arange(length).expand(buffer.shape).clone()
                    module.register_buffer(
                        name, value if name == "position_ids" else value * 0, persistent=False
                    )
                else:
                    raise CheckpointError(f"buffer {name} was not restored")
    return model.eval()


# ---------------------------------------------------------------------- our own format
PRETRAINED_TEXT_PREFIX = "text_encoder."


def save_model(
    model: GLIP, directory: str | Path, skip_pretrained_text: bool = False, half: bool = False
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` atomically (temp file + rename) into ``directory``.

    ``skip_pretrained_text``: leave out the text encoder when it is a frozen copy of the pretrained one the
    config names (``text.pretrained``); :func:`load_model` reloads it from its package. ``half``: store
    floating-point weights as fp16 (loaded back as fp32). Both keep shipped models small.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if skip_pretrained_text:
        if model.config.text.pretrained is None:
            raise ValueError(
                "skip_pretrained_text needs a config whose text encoder is pretrained (text.pretrained)"
            )
        state = {k: v for k, v in state.items() if not k.startswith(PRETRAINED_TEXT_PREFIX)}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    atomic_write_path(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(directory / CONFIG_FILE, model.config.to_json())
    return directory


def load_saved(directory: str | Path, strict: bool = True) -> GLIP:
    """Load a directory written by :func:`save_model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        cfg = GLIPConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{directory / CONFIG_FILE}: unreadable model config ({exc})") from exc
    try:
        state = load_file(str(directory / WEIGHTS_FILE))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(
            f"{directory / WEIGHTS_FILE} is missing, truncated or not safetensors ({exc})"
        ) from exc
    if cfg.text.pretrained is not None and not any(k.startswith(PRETRAINED_TEXT_PREFIX) for k in state):
        # saved without its (frozen, pretrained) text encoder: rebuild that from its package
        model = build_model(dataclasses.replace(cfg, backbone=_without_pretrained(cfg).backbone))
        text_state = {k: v for k, v in model.state_dict().items() if k.startswith(PRETRAINED_TEXT_PREFIX)}
        state = {**text_state, **state}
    with torch.device("meta"):
        model = build_model(_without_pretrained(cfg))
    own = model.state_dict()
    report = LoadReport(
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        shape_mismatch=[
            (k, tuple(v.shape), tuple(own[k].shape))
            for k, v in state.items()
            if k in own and v.shape != own[k].shape
        ],
    )
    if not report.ok and strict:
        raise CheckpointError(f"{directory} does not fit its own config: {report.summary()}")
    return _materialize(model, cfg, {k: v for k, v in state.items() if k in own and v.shape == own[k].shape})


# ---------------------------------------------------------------------- public entry point
HUB_ENDPOINT = "https://huggingface.co"
#: seconds the one reachability check of the Hub waits (instead of huggingface_hub's ~30 s of retries)
REACH_TIMEOUT_S = 3.0


def _hub_endpoint() -> str:
    """``HF_ENDPOINT`` read at call time (huggingface_hub reads it once, at import), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT).rstrip("/")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable(endpoint: str | None = None, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """Why the Hub at ``endpoint`` (default :func:`_hub_endpoint`) cannot be reached, or None when it answers.

    One HEAD request (proxies from the environment are used): any HTTP answer, even an error status, means
    reachable; a refused connection, an unknown host or a timeout gives the reason. Offline, this is what
    turns ~30 s of huggingface_hub retries (with two warnings each) into one message.
    """
    import urllib.error
    import urllib.request

    url = endpoint or _hub_endpoint()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except (TimeoutError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


def _download(info: WeightsInfo) -> Path:
    """The official file of a released name: ``$GLIP_HOME``, else the Hugging Face cache, else downloaded.

    Offline (``HF_HUB_OFFLINE`` set, or the Hub not answering one quick request) it fails at once with one
    message saying so and where to put a hand-downloaded copy."""
    local = glip_home() / info.filename
    if local.exists():
        return local
    from huggingface_hub import hf_hub_download

    endpoint = _hub_endpoint()
    by_hand = f"Download {info.url} by hand and put it at {local} (or pass its path directly)."
    try:  # a cached copy needs no network
        return Path(hf_hub_download(info.repo_id, info.filename, local_files_only=True, endpoint=endpoint))
    except Exception:  # not cached (LocalEntryNotFoundError, ...)
        pass
    if _hub_offline():
        raise CheckpointError(
            f"{info.filename} ({info.description}) is not in the Hugging Face cache and HF_HUB_OFFLINE is "
            f"set, so it is not downloaded. {by_hand}"
        )
    reason = hub_unreachable(endpoint)
    if reason is not None:
        raise CheckpointError(
            f"cannot fetch {info.filename} ({info.description}): {endpoint} cannot be reached ({reason}); "
            f"offline? {by_hand}"
        )
    try:
        return Path(hf_hub_download(info.repo_id, info.filename, endpoint=endpoint))
    except Exception as exc:  # network errors, missing repo: all get the same advice
        raise CheckpointError(
            f"could not fetch {info.filename} ({info.description}) from {endpoint}/{info.repo_id}: "
            f"{type(exc).__name__}. {by_hand}"
        ) from exc


def _cached_hub_model(repo_id: str) -> Path | None:
    """The cached snapshot folder of a glip-format Hub repository (config + weights), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a core dependency
        return None
    found = [try_to_load_from_cache(repo_id, name) for name in (CONFIG_FILE, WEIGHTS_FILE)]
    if all(isinstance(f, str) for f in found):
        return Path(found[0]).parent  # type: ignore[arg-type]
    return None


def load_model(
    name_or_path: str | Path,
    config: GLIPConfig | str | Path | None = None,
    device: str | torch.device = "cpu",
    strict: bool = True,
    trust_pickle: bool = False,
) -> GLIP:
    """Load a released model by name, a saved directory or an official ``.pth``; returns it in eval mode."""
    text = str(name_or_path)
    path = Path(text)
    if text in ("demo", "demo_v2") and not (path / CONFIG_FILE).exists():  # a folder named demo is no model
        from glip.weights.demo import bundled_model_dir, demo_model_problem

        problem = demo_model_problem(text)
        if problem is not None:
            raise CheckpointError(f"cannot load the bundled model {text!r}: {problem}")
        path = bundled_model_dir(text)
    if text in RELEASED and not path.exists():
        info = RELEASED[text]
        model, _ = load_official(_download(info), config or info.preset, strict, trust_pickle)
    elif path.is_dir() and (path / CONFIG_FILE).exists():  # our format (also the demo model)
        model = load_saved(path, strict)
    elif path.exists():
        model, _ = load_official(path, config, strict, trust_pickle)
    elif text.count("/") == 1:  # a Hub repository "user/repo" in glip's format (glip.weights.hub)
        from glip.weights.hub import download

        reason = None if _hub_offline() else hub_unreachable()
        if reason is not None:  # offline: the cached copy, or one message (not ~30 s of retries)
            cached = _cached_hub_model(text)
            if cached is None:
                raise CheckpointError(
                    f"cannot fetch the Hub repository {text!r}: {_hub_endpoint()} cannot be reached "
                    f"({reason}) and it is not in the Hugging Face cache; offline? Download the folder by "
                    "hand and pass its path."
                )
            model = load_saved(cached, strict)
        else:
            model = load_saved(download(text), strict)
    else:
        known = ", ".join(sorted(RELEASED))
        raise CheckpointError(f"no such model or file: {text!r} (released names: {known})")
    return model.to(device)
