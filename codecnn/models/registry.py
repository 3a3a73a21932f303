"""A small explicit model registry: the CLI, the checkpoint loader and hm_bridge build models the same
way, from ``(name, config)`` (as CompressAI's ``registry/torch.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from codecnn.errors import CodecnnError

_MODELS: dict[str, tuple[type, type]] = {}


def register_model(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: ``@register_model("rdn", RDNConfig)``. A duplicate name raises."""

    def wrap(cls: type) -> type:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered ({_MODELS[name][0].__name__})")
        _MODELS[name] = (cls, config_cls)
        cls.arch = name
        return cls

    return wrap


def model_names() -> list[str]:
    return sorted(_MODELS)


def config_class(name: str) -> type:
    try:
        return _MODELS[name][1]
    except KeyError:
        raise CodecnnError(f"unknown model {name!r}; known: {', '.join(model_names())}") from None


def make_config(name: str, values: dict):
    """The frozen config of model ``name`` from a dict (e.g. a checkpoint's), rejecting unknown keys."""
    cls = config_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    extra = set(values) - known
    if extra:
        raise CodecnnError(f"config for {name!r} has unknown fields {sorted(extra)}")
    return cls(**values)


def build_model(name: str, config):
    """Instantiate model ``name`` from its config dataclass (or a dict of its fields)."""
    cls, config_cls = _MODELS.get(name, (None, None))
    if cls is None:
        config_class(name)
    if isinstance(config, dict):
        config = make_config(name, config)
    if not isinstance(config, config_cls):
        raise TypeError(f"{name} needs a {config_cls.__name__}, got {type(config).__name__}")
    return cls(**dataclasses.asdict(config))
