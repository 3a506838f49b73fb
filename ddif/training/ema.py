"""Exponential moving average of the weights (published recipe: decay 0.995 from iteration 20k).

Before ``start_step`` the average tracks the weights exactly; from then on
``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step.
"""

from __future__ import annotations

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float = 0.995, start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.start_step = start_step
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        state = model.state_dict()
        if step < self.start_step:
            for k, v in self.shadow.items():
                v.copy_(state[k])
            return
        for k, v in self.shadow.items():
            v.lerp_(state[k].to(v.dtype), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v.to(state[k].device, state[k].dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "start_step": self.start_step, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.start_step = float(state["decay"]), int(state["start_step"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
