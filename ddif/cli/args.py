"""Generate argparse options from the dataclass configs, and apply them back onto a preset.

Every field of ModelConfig / DiffusionConfig / TrainConfig / DataConfig becomes an option
(``lr_milestones`` -> ``--lr-milestones 100000,200000``; booleans get ``--x / --no-x``). Options
default to "not given", so the preset's value stands unless the user overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, TypeVar

from ddif.config import DataConfig, DiffusionConfig, ModelConfig, Preset, TrainConfig

T = TypeVar("T")

SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "diffusion": DiffusionConfig,
    "train": TrainConfig,
    "data": DataConfig,
}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_for(tp: Any):
    origin = typing.get_origin(tp)
    if origin is tuple:
        (inner, *_rest) = typing.get_args(tp)

        def parse_tuple(text: str):
            text = text.strip().strip("()[]")
            return tuple(inner(x) for x in text.split(",") if x.strip()) if text else ()

        return parse_tuple, "comma-separated list"
    if tp in (int, float, str):
        return tp, tp.__name__
    raise TypeError(f"unsupported config field type {tp!r}")


def add_config_args(parser: argparse.ArgumentParser, sections: tuple[str, ...] = tuple(SECTIONS)) -> None:
    """Add one option per config field (grouped by section); defaults come from ``--preset``."""
    for section in sections:
        dc = SECTIONS[section]
        hints = typing.get_type_hints(dc)
        defaults = dc()
        group = parser.add_argument_group(f"{section} config (defaults: the preset's values)")
        for f in dataclasses.fields(dc):
            tp = hints[f.name]
            default = getattr(defaults, f.name)
            dest = f"cfg__{section}__{f.name}"
            if tp is bool:
                group.add_argument(
                    _option(f.name),
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=f"(generic default {default})",
                )
            else:
                conv, what = _parser_for(tp)
                group.add_argument(
                    _option(f.name),
                    dest=dest,
                    type=conv,
                    default=None,
                    metavar=what.upper()[:5],
                    help=f"{what} (generic default {default})",
                )


def add_dataclass_args(parser: argparse.ArgumentParser, dc: type, title: str) -> None:
    """One option per field of any dataclass (default: the dataclass default)."""
    hints = typing.get_type_hints(dc)
    defaults = dc()
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(dc):
        tp, default = hints[f.name], getattr(defaults, f.name)
        dest = f"dc__{dc.__name__}__{f.name}"
        if tp is bool:
            group.add_argument(_option(f.name), dest=dest, action=argparse.BooleanOptionalAction, default=default)
            continue
        optional = typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None))
        if optional:
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        conv, what = _parser_for(tp)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        group.add_argument(
            _option(f.name),
            dest=dest,
            type=conv,
            default=default,
            metavar=what.upper()[:5],
            help=f"{what} (default {shown})",
        )


def dataclass_from_args(dc: type[T], args: argparse.Namespace) -> T:
    prefix = f"dc__{dc.__name__}__"
    return dc(**{k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix)})


def apply_config_args(preset: Preset, args: argparse.Namespace) -> Preset:
    """Set every option the user gave on the preset (re-validating each section)."""
    for key, value in vars(args).items():
        if not key.startswith("cfg__") or value is None:
            continue
        _, section, name = key.split("__", 2)
        setattr(getattr(preset, section), name, value)
    for section in SECTIONS:
        obj = getattr(preset, section)
        post = getattr(obj, "__post_init__", None)
        if post is not None:
            post()
    return preset


def input_scale(text: str) -> float:
    """argparse type of ``--input-scale``: a finite positive number (DN = file value x it)."""
    from ddif.data.scale import check_input_scale

    try:
        value = check_input_scale(float(text), "--input-scale")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    assert value is not None
    return value
