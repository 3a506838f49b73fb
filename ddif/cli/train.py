"""Train a DDIF model.

    ddif train --preset wv3 --data TRAIN.h5 --val VAL.h5 --out runs/wv3
    ddif train --preset wv3 --data TRAIN.h5 --out runs/wv3 --resume          # continue exactly
    torchrun --nproc-per-node 2 -m ddif.cli.main train ...                    # data-parallel

Every field of the preset's model / diffusion / train / data configs is an option (the
published recipe is the default). The run folder gets config.json, train.csv / val.csv logs,
checkpoints/step_*.pt (full training state, atomic) and model_ema.pt (EMA weights, for
`ddif sample` / `ddif evaluate`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ddif.cli.args import add_config_args, apply_config_args

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ddif.config import Preset
    from ddif.data.h5 import FusionH5
    from ddif.models.ddif import DDIF


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", default="wv3", help="starting configuration (wv3, gf2, qb, cave, harvard, landsat_small)"
    )
    p.add_argument("--config", default=None, help="a config JSON (e.g. a run's config.json) instead of --preset")
    p.add_argument(
        "--data",
        required=True,
        help="training .h5 (PanCollection or HISR layout); several comma-separated files are concatenated "
        "(e.g. one per scene or tile)",
    )
    p.add_argument("--val", default=None, help="validation .h5 (reduced resolution, with ground truth)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--init", default=None, help="initialise the weights from this checkpoint")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision")
    p.add_argument("--fused-kernels", action="store_true", help="train through the fused kernels where live")
    p.add_argument("--device", default="auto")
    p.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if installed)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--val-batches", type=int, default=2)
    p.add_argument("--val-sample-steps", type=int, default=10)
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps of this run")
    add_config_args(p)


def load_preset(args: argparse.Namespace) -> Preset:
    from ddif.config import Preset, get_preset

    if args.config:
        with open(args.config) as f:
            preset = Preset.from_json(f.read())
    else:
        preset = get_preset(args.preset)
    return apply_config_args(preset, args)


def open_dataset(path: str, preset: Preset, train: bool = False, *, require_gt: bool = False) -> FusionH5:
    """The .h5 file at ``path``, checked against ``preset``, never augmenting (the trainer does);
    ``require_gt`` (or its old name ``train``) refuses a file without ground truth. Also used by
    ``ddif sample`` / ``evaluate`` / ``distill``."""
    from ddif.data import open_dataset as _open

    return _open(path, preset, require_gt=require_gt or train, augment=False)


def open_training_sets(spec: str, preset: Preset, args: argparse.Namespace | None = None) -> Dataset:
    """The training file(s) of ``--data`` (comma-separated paths are concatenated, in order); the
    preprocessing is adopted from the first, and every other must agree with it."""
    from torch.utils.data import ConcatDataset

    paths = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not paths:
        raise ValueError("--data: no training file given")
    sets = [open_dataset(p, preset, require_gt=True) for p in paths]
    adopt_preprocessing(preset, sets[0].info.attrs, args)
    first = {k: sets[0].info.attrs.get(k) for k in ("interpolation", "interp_padding", "band_names")}
    for path, ds in zip(paths[1:], sets[1:]):
        other = {k: ds.info.attrs.get(k) for k in first}
        differs = [k for k in first if first[k] is not None and other[k] is not None and str(first[k]) != str(other[k])]
        if differs:
            raise ValueError(
                f"--data {path}: {', '.join(f'{k} {other[k]!r}' for k in differs)} differ from {paths[0]}'s "
                f"{', '.join(repr(first[k]) for k in differs)}; one model is trained on one preprocessing"
            )
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def adopt_preprocessing(preset: Preset, attrs: Mapping[str, Any], args: argparse.Namespace | None = None) -> None:
    """The checkpoint records how its inputs were made (``preset.data.interpolation`` /
    ``interp_padding``) so that every entry point applies the same: take it from the training
    file (``ddif make-dataset`` writes it) unless the option was given on the command line."""
    names = attrs.get("band_names")
    if (
        isinstance(names, (list, tuple))
        and names
        and len(names) == preset.model.bands
        and getattr(args, "cfg__data__band_names", None) is None
    ):
        preset.data.band_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    for field in ("interpolation", "interp_padding"):
        value = attrs.get(field)
        if not isinstance(value, str) or not value:
            continue
        given = getattr(args, f"cfg__data__{field}", None) if args is not None else None
        if given is not None and given != value:
            print(
                f"warning: --{field.replace('_', '-')} {given} differs from the training file's {value}; "
                f"the checkpoint records {given}"
            )
            continue
        setattr(preset.data, field, value)
    preset.data.__post_init__()


def init_model(model: DDIF, path: str) -> None:
    """``--init``: start from another checkpoint's weights (fine-tuning). Its own preset may differ
    in name, data, recipe and band count (a 4-band model from a 3-band one:
    :func:`ddif.models.transfer.transfer_weights`), not in the rest of the architecture."""
    from ddif.models import load_model
    from ddif.models.transfer import transfer_weights

    init = load_model(path)
    mapped = transfer_weights(init, model)
    if mapped:
        print(
            f"--init {path}: {init.config.bands} -> {model.config.bands} bands; {len(mapped)} tensors had their band "
            "channels mapped (new bands start from the last band's output weights, their inputs at zero)"
        )


def run(args: argparse.Namespace) -> int:
    import torch
    import torch.distributed as dist

    from ddif.cli.common import enable_fused_kernels
    from ddif.models import DDIF
    from ddif.training import RunOptions, Trainer

    preset = load_preset(args)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    try:
        # ground truth required; no dataset augmentation: the trainer augments every batch once
        train_set = open_training_sets(args.data, preset, args)
        val_set = open_dataset(args.val, preset, require_gt=True) if args.val else None
        torch.manual_seed(preset.train.seed)  # deterministic initial weights
        model = DDIF(preset)
        if args.init:
            init_model(model, args.init)
        if args.fused_kernels:
            enable_fused_kernels(model)
        options = RunOptions(
            out=args.out,
            device=args.device,
            amp=args.amp,
            fused_kernels=model.fused_kernels,
            resume=args.resume,
            tensorboard=args.tensorboard,
            progress=not args.no_progress,
            val_batches=args.val_batches,
            val_sample_steps=args.val_sample_steps,
            stop_after=args.stop_after,
        )
        trainer = Trainer(preset, train_set, val_set, options, model=model)
        history = trainer.fit()
        if trainer.is_main and history:
            print(f"step {trainer.step}: loss {history[-1]['loss']:.5f}; run folder {args.out}")
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0
