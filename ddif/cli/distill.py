"""Progressive distillation (Salimans & Ho, ICLR 2022) of a DDIF checkpoint into a few-step sampler.

    ddif distill --teacher run/model_ema.pt --data train.h5 --val val.h5 --out distill/ \\
                 --schedule 32,16,8,4,2,1 --iterations-per-round 2000
    ddif distill ... --resume          # finished rounds are skipped, the current one resumes exactly

Each round writes ``OUT/round_<N>to<N/2>/student.pt``, an engine checkpoint whose config carries
its sampling grid: ``ddif sample`` / ``ddif evaluate`` / ``python -m ddif.export.onnx`` use it as is.
"""

from __future__ import annotations

import argparse

from ddif.cli.args import add_dataclass_args, dataclass_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ddif.training.distill import DistillConfig

    p.add_argument("--teacher", required=True, help="teacher checkpoint (engine checkpoint or training state)")
    p.add_argument("--preset", default=None, help="preset of a published-layout teacher")
    p.add_argument("--data", required=True, help="training .h5")
    p.add_argument("--val", default=None, help="validation .h5 (reduced resolution)")
    p.add_argument("--out", required=True, help="output folder (one sub-folder per round)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--fused-kernels", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--stop-after", type=int, default=None, help="stop the current round after N steps")
    add_dataclass_args(p, DistillConfig, "distillation config")


def run(args: argparse.Namespace) -> int:
    import torch

    from ddif.cli.common import enable_fused_kernels
    from ddif.cli.train import open_dataset
    from ddif.models import load_model
    from ddif.training import RunOptions
    from ddif.training.distill import DistillConfig, distill

    dcfg = dataclass_from_args(DistillConfig, args)
    teacher = load_model(args.teacher, args.preset)
    if args.fused_kernels:
        enable_fused_kernels(teacher)
    torch.manual_seed(dcfg.seed)
    train_set = open_dataset(args.data, teacher.preset, require_gt=True)  # the trainer augments
    val_set = open_dataset(args.val, teacher.preset, require_gt=True) if args.val else None
    options = RunOptions(
        out=args.out,
        device=args.device,
        amp=args.amp,
        fused_kernels=teacher.fused_kernels,
        resume=args.resume,
        progress=not args.no_progress,
        stop_after=args.stop_after,
    )
    students = distill(teacher, train_set, val_set, args.out, dcfg, options)
    for path in students:
        print(f"student: {path}")
    return 0
