"""DDIF network: :class:`DDIF`, its building blocks and checkpoint loaders."""
from ddif.models.ddif import DDIF, ConditionCache
from ddif.models.published import load_published, unwrap_state_dict

__all__ = ["DDIF", "ConditionCache", "load_published", "unwrap_state_dict"]
