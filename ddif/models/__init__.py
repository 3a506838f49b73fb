"""DDIF network: :class:`DDIF`, its building blocks and the one checkpoint loader
(:meth:`DDIF.from_pretrained`; ``load_model`` and ``load_published`` are aliases kept for
compatibility; formats in :mod:`ddif.models.checkpoint`)."""

from ddif.models.ddif import DDIF, ConditionCache
from ddif.models.loading import load_model
from ddif.models.published import load_published, unwrap_state_dict

from_pretrained = DDIF.from_pretrained

__all__ = ["DDIF", "ConditionCache", "from_pretrained", "load_model", "load_published", "unwrap_state_dict"]
