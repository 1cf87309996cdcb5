"""The models of the factual-recall task, each a function of one flat parameter vector θ.

``base`` (the interface), ``tokens`` (token arithmetic shared by the attention models), ``reduced``
(one score and value per token: the analysed model), ``embedded`` (the same layer as matrices W_KQ, W_OV),
``transformer`` (the paper's one-layer transformer), ``memories`` (associative memories for the capacity
experiments), ``embeddings`` (fixed embedding tables), ``registry`` (the one list of model kinds:
:func:`register_model` adds one). :func:`build_model` makes the one a config asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports
from .registry import MODEL_KINDS, ModelKind, get_model_kind, register_model, unregister_model

if TYPE_CHECKING:
    from ..config import Config
    from ..task import FactTask
    from .base import Model

# the models compute (torch), loaded when first read; the registry alone checks a config
__getattr__, __dir__ = lazy_exports(__name__, {
    "Model": ".base", "EmbeddedModel": ".embedded", "LinearMemory": ".memories", "MLPMemory": ".memories",
    "ReducedModel": ".reduced", "TransformerModel": ".transformer"})

__all__ = ["MODEL_KINDS", "EmbeddedModel", "LinearMemory", "MLPMemory", "Model", "ModelKind", "ReducedModel",
           "TransformerModel", "build_model", "get_model_kind", "register_model",
           "unregister_model"]


def build_model(config: Config, task: FactTask) -> Model:
    """The model a config asks for (its kind's builder, :mod:`.registry`), on the config's device, shaped
    for its loss kind: the population loss ties the noise tokens (exact by symmetry); the sampled loss keeps
    them apart."""
    return get_model_kind(config.model.kind).build(config, task)
