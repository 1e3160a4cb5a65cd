"""The ``--set KEY=VALUE`` keys of ``glip train``, generated from the dataclasses that own them.

Three groups: :class:`glip.engine.train.TrainConfig` fields, :class:`glip.losses.criterion.CriterionConfig`
fields (also spelt ``loss.KEY``) and the dotted keys of the preset's :class:`glip.config.GLIPConfig`
(``head.num_blocks``; nested dicts such as ``text.bert`` too). Each key comes with its default and the
comment written beside the field in the source. ``glip train --help-config`` prints them; a key that is none
of them is one message naming the nearest valid key (:func:`check_set_keys`). docs/training.md holds the
training and loss tables as :func:`markdown_tables` writes them (a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class SetKey:
    """One ``--set`` key: its group (``train``, ``loss`` or ``model``), default value and description."""

    key: str
    group: str
    default: Any
    help: str = ""


@cache
def field_comments(cls: type) -> dict[str, str]:
    """``{field: comment}``: the ``# comment`` on a dataclass field's line in ``cls``'s source (empty when
    the source cannot be read)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    current: str | None = None
    depth = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.OP and token.string in "([{":
            depth += 1
        elif token.type == tokenize.OP and token.string in ")]}":
            depth -= 1
        if token.type == tokenize.NAME and depth == 0 and token.start[1] == 4 and current is None:
            current = token.string
        elif token.type == tokenize.COMMENT and current is not None:
            comments[current] = token.string.lstrip("#").strip()
        elif token.type == tokenize.NEWLINE:
            current = None
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: text for name, text in comments.items() if name in names}


# descriptions of TrainConfig fields that carry no comment in the source (a source comment is used otherwise)
TRAIN_HELP = {
    "out_dir": "run directory (--out)",
    "max_steps": "optimiser steps to train (--max-steps), or epochs",
    "epochs": "passes over the training set (--epochs)",
    "grad_accum": "batches accumulated per optimiser step",
    "weight_decay": "AdamW weight decay (none on biases and norms)",
    "bias_lr_factor": "learning-rate factor of biases",
    "lr_factors": "(parameter-name prefix, factor) pairs, first match wins, e.g. (('head.text_proj', 10.0),)",
    "milestones": "multistep: fractions of the run where the rate drops by gamma",
    "gamma": "multistep: rate factor at each milestone",
    "warmup_steps": "linear warm-up steps",
    "warmup_factor": "rate factor at the start of the warm-up",
    "freeze": "parameter-name prefixes kept frozen, e.g. ('text',)",
    "seed": "random seed (--seed)",
    "num_workers": "DataLoader worker processes",
    "log_every": "steps between metrics.jsonl records",
    "ckpt_every": "steps between last.pt checkpoints",
    "eval_every": "steps between evaluations on --val-ann (0 = off)",
    "device": "auto, cpu, cuda, cuda:N (--device)",
    "deterministic": "deterministic algorithms (slower)",
    "progress": "show the progress bar",
}


def _fields(cls: type, instance: Any, group: str, prefix: str = "") -> list[SetKey]:
    keys: list[SetKey] = []
    comments = {**field_comments(cls), **(TRAIN_HELP if group == "train" else {})}
    for field in dataclasses.fields(cls):
        value = getattr(instance, field.name)
        key = prefix + field.name
        if dataclasses.is_dataclass(value):
            keys.extend(_fields(type(value), value, group, key + "."))
        elif isinstance(value, dict):
            keys.extend(SetKey(f"{key}.{k}", group, v) for k, v in value.items())
        else:
            keys.append(SetKey(key, group, value, comments.get(field.name, "")))
    return keys


def train_keys() -> list[SetKey]:
    """The ``TrainConfig`` and ``CriterionConfig`` keys (preset-independent)."""
    from glip.engine.train import TrainConfig
    from glip.losses.criterion import CriterionConfig

    return _fields(TrainConfig, TrainConfig(), "train") + _fields(CriterionConfig, CriterionConfig(), "loss")


def model_keys(preset: str) -> list[SetKey]:
    """The dotted model-config keys of ``preset`` (its defaults)."""
    from glip.config import GLIPConfig, get_preset

    config = get_preset(preset)
    return [k for k in _fields(GLIPConfig, config, "model") if k.key != "name"]


def all_keys(preset: str) -> list[SetKey]:
    return train_keys() + model_keys(preset)


def valid_names(keys: Iterable[SetKey]) -> set[str]:
    """Every spelling ``--set`` accepts for ``keys`` (loss keys also as ``loss.KEY``)."""
    names: set[str] = set()
    for key in keys:
        names.add(key.key)
        if key.group == "loss":
            names.add(f"loss.{key.key}")
    return names


def check_set_keys(items: Sequence[str], preset: str, with_model: bool = True) -> None:
    """Raise ``ValueError`` for the first ``KEY=VALUE`` whose key ``--set`` does not know, naming the
    nearest valid key (``difflib``) and ``glip train --help-config``. ``with_model=False`` (a loaded
    ``--init`` model, whose architecture may not be ``preset``'s) lets every dotted model key through to the
    caller's own message."""
    keys = train_keys() + model_keys(preset)
    names = valid_names(keys)
    for item in items:
        if "=" not in item:
            continue  # the override parser names a malformed item
        key = item.split("=", 1)[0]
        if key in names or (not with_model and "." in key and not key.startswith("loss.")):
            continue
        close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.6)
        if not close:  # a dotted key: compare the last part with the last parts of the same group
            tail = key.rsplit(".", 1)[-1]
            by_tail = {
                name.rsplit(".", 1)[-1]: name for name in sorted(names) if name.startswith(key.split(".")[0])
            }
            close = [by_tail[m] for m in difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=0.6)]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown --set key {key!r}{hint} (glip train --preset {preset} --help-config lists every key)"
        )


def _value(value: Any) -> str:
    return repr(value)


def format_set_keys(preset: str) -> str:
    """The text of ``glip train --help-config``."""
    groups = {
        "train": "training (TrainConfig, glip.engine.train)",
        "loss": "losses (CriterionConfig, glip.losses.criterion; also as loss.KEY)",
        "model": f"model (GLIPConfig of preset {preset!r}; not with --init)",
    }
    keys = all_keys(preset)
    lines = [
        f"glip train --set KEY=VALUE keys (preset {preset!r}). VALUE is a Python literal (2, 0.5, True,",
        "\"('text',)\", [320, 352]) or else text. Defaults shown; --lr, --batch-size, --epochs ... set the",
        "training fields of the same name.",
    ]
    width = max(len(k.key) for k in keys) + 2
    for group, title in groups.items():
        lines += ["", f"{title}:"]
        for key in (k for k in keys if k.group == group):
            line = f"  {key.key:<{width}} {_value(key.default)}"
            lines.append(f"{line:<{width + 16}}  {key.help}".rstrip() if key.help else line)
    return "\n".join(lines)


def markdown_tables() -> str:
    """The training and loss keys as the markdown tables of docs/training.md."""
    lines: list[str] = []
    for group, title in (
        ("train", "Training (`TrainConfig`)"),
        ("loss", "Losses (`CriterionConfig`, also `loss.KEY`)"),
    ):
        lines += [f"{title}:", "", "| key | default | meaning |", "|---|---|---|"]
        for key in (k for k in train_keys() if k.group == group):
            lines.append(f"| `{key.key}` | `{_value(key.default)}` | {key.help.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
