"""Networks. Each registers itself (``@register_model``) so that everything builds models from
``(name, config)``: the CLI, the checkpoint loader and hm_bridge."""

from codecnn.models import modenet, rdn  # noqa: F401  (register "modenet", "rdn")
from codecnn.models.modenet import ModeNet, ModeNetConfig
from codecnn.models.rdn import RDB, RDN, RDNConfig
from codecnn.models.registry import build_model, config_class, make_config, model_names, register_model

__all__ = [
    "ModeNet",
    "ModeNetConfig",
    "RDB",
    "RDN",
    "RDNConfig",
    "build_model",
    "config_class",
    "make_config",
    "model_names",
    "register_model",
]
