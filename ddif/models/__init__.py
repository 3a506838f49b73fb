"""DDIF network: :class:`DDIF`, its building blocks and checkpoint loaders."""
from ddif.models.ddif import DDIF, ConditionCache
from ddif.models.loading import load_model
from ddif.models.published import load_published, unwrap_state_dict

__all__ = ["DDIF", "ConditionCache", "load_model", "load_published", "unwrap_state_dict"]
