"""The models of the factual-recall task, each a function of one flat parameter vector θ.

``base`` (the interface), ``tokens`` (token arithmetic shared by the attention models), ``reduced``
(one score and value per token: the analysed model), ``embedded`` (the same layer as matrices W_KQ, W_OV),
``transformer`` (the paper's one-layer transformer), ``memories`` (associative memories for the capacity
experiments), ``embeddings`` (fixed embedding tables). :func:`build_model` makes the one a config asks for.
"""

from __future__ import annotations

from ..config import Config
from ..task import FactTask
from .base import Model
from .embedded import EmbeddedModel
from .memories import LinearMemory, MLPMemory
from .reduced import ReducedModel
from .transformer import TransformerModel

__all__ = ["EmbeddedModel", "LinearMemory", "MLPMemory", "Model", "ReducedModel", "TransformerModel",
           "build_model"]


def build_model(config: Config, task: FactTask) -> Model:
    """The model a config asks for, on the config's device, shaped for its loss kind.

    The population loss ties the noise tokens (exact by symmetry); the sampled loss keeps them apart.
    """
    population = config.loss.kind == "population"
    if config.model.kind == "transformer":
        m = config.model
        return TransformerModel(task, m.dim, m.heads, m.head_dim, m.mlp_width, m.seed, device=config.device)
    if config.model.kind == "reduced":
        return ReducedModel(task, config.model.attention, tied=population, device=config.device)
    return EmbeddedModel(task, config.model.attention, config.model.dim, config.model.embeddings,
                         config.model.seed, tied_init=population, device=config.device)
