"""Training: :class:`Trainer` (AdamW, EMA, AMP, DDP, exact resume)."""

from ddif.training.trainer import RunOptions, Trainer

__all__ = ["Trainer", "RunOptions"]
