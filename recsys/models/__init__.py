"""Models: one module per algorithm, all sharing the contract in :mod:`recsys.models.base`.

Model classes are imported on demand so that using one model (or only serving) does not import
TensorFlow. The contract itself (numpy, scipy) loads on first use too: the CLI reads
``MODEL_CLASSES`` for its help text, and ``recsys --help`` must start fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from recsys.models.base import FitOptions, ModelConfig, Recommender, WarmStart

_CONTRACT = ("FitOptions", "ModelConfig", "Recommender", "WarmStart")


def __getattr__(name: str) -> Any:
    """The contract's names (``from recsys.models import Recommender``), imported on first use."""
    if name in _CONTRACT:
        from recsys.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Model name -> "module:Class". The names are the ones the CLI and the registry use.
MODEL_CLASSES: dict[str, str] = {
    "popularity": "recsys.models.popularity:Popularity",
    "mf": "recsys.models.mf:MatrixFactorization",
    "ials": "recsys.models.ials:ImplicitALS",
    "two-tower": "recsys.models.two_tower:TwoTower",
    "ease": "recsys.models.ease:EASE",
    "lowrank-ae": "recsys.models.lowrank:LowRankAE",
    "ials-lowrank": "recsys.models.ensemble:IALSLowRank",
}


def get_model_class(name: str) -> type[Recommender]:
    try:
        module_name, class_name = MODEL_CLASSES[name].split(":")
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODEL_CLASSES)}") from None
    cls: type[Recommender] = getattr(importlib.import_module(module_name), class_name)
    return cls


def create_model(name: str, **params: Any) -> Recommender:
    return get_model_class(name)(**params)


def load_model(path: Path) -> Recommender:
    """Load any saved model, choosing the class from its metadata."""
    from recsys.models.base import read_model_meta

    return get_model_class(read_model_meta(path)["model"]).load(path)


__all__ = [
    "MODEL_CLASSES",
    "FitOptions",
    "ModelConfig",
    "Recommender",
    "WarmStart",
    "create_model",
    "get_model_class",
    "load_model",
]
