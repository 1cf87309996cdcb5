"""The one list of model kinds: each ``model.kind`` with its builder, the ``model.*`` keys it reads, its
parameter count, whether it has a closed-form population loss and which theory describes it.

Every other part of the project asks this registry instead of testing kind names: the config refuses a
``model.*`` key the kind does not read and a population loss the kind does not have
(:mod:`dynamics.config.schema`), :func:`dynamics.models.build_model` builds through the entry, the memory
estimate counts its parameters (:mod:`dynamics.budget`), and the stage analysis shows the first-order
rates only where the entry names that theory. A kind of your own is one file (a :class:`~.base.Model`
and a builder) and one :func:`register_model` call, or an entry point in the group
:data:`ENTRY_POINT_GROUP` (docs/extending.md).

This module sits below the configuration (it never imports :mod:`dynamics.config` at run time: the
config's validation asks it), so a model file must not import the config either, except for type hints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..config import Config
    from ..task import FactTask
    from .base import Model

ENTRY_POINT_GROUP = "factrecall.models"  # an entry point there names a callable that registers kinds
# the first-order rates of the reduced linear-attention flow (analysis.stages.theory)
REDUCED_THEORY = "reduced"
# embeddings whose rows are orthonormal (the population loss is exact for them)
ORTHONORMAL_EMBEDDINGS = ("orthonormal", "onehot", "hadamard")


@dataclass(frozen=True)
class ModelKind:
    """A model kind. ``build(config, task)``: the model (on ``config.device``; tied noise tokens where the
    loss is the population one). ``reads``: the ``model.*`` keys (dotted) its builder reads; every other
    ``model.*`` key must stay at its default. ``parameters(config, untied)``: its parameter count from the
    config alone (``untied``: one parameter set per vocabulary token, the model of discrete training and
    of the sampled loss), for the memory estimate. ``population``: whether it can have the exact
    population loss (``loss.kind=population``). ``theory``: the theory whose rates describe it
    (:data:`REDUCED_THEORY`) or None. ``check(config)``: its own refusals of the values of the keys it
    reads (one ConfigError), or None. ``inits``: the ``init.kind`` values its ``initial_parameters``
    implements (the config refuses the others)."""

    name: str
    build: Callable[[Config, FactTask], Model]
    reads: tuple[str, ...]
    parameters: Callable[[Config, bool], int]
    population: bool
    theory: str | None = None
    check: Callable[[Config], None] | None = None
    summary: str = ""
    inits: tuple[str, ...] = ("constant", "gaussian")


# --- the built-in kinds ---------------------------------------------------------------------------------

# the builders import their model (torch) when they build: a config is checked without them
def _vocabulary_and_answers(config: Config) -> tuple[int, int]:
    t = config.task
    return t.vocabulary, t.relations * t.answers_per_relation


def _reduced(config: Config, task: FactTask) -> Model:
    from .reduced import ReducedModel

    return ReducedModel(task, config.model.attention, tied=config.loss.kind == "population",
                        device=config.device)


def _reduced_parameters(config: Config, untied: bool) -> int:
    from .reduced import token_count

    t = config.task  # the answers alone: the vocabulary is token_count's
    return token_count(t, tied=not untied) * (1 + t.relations * t.answers_per_relation)


def _embedded(config: Config, task: FactTask) -> Model:
    from . import EmbeddedModel  # the package's, loaded now

    m = config.model
    return EmbeddedModel(task, m.attention, m.dim, m.embeddings, m.seed,
                         tied_init=config.loss.kind == "population", device=config.device)


def _check_embedded(config: Config) -> None:
    m = config.model
    if m.embeddings in ("onehot", "hadamard") and m.seed != 0:
        raise ConfigError(f"model.seed={m.seed!r}: has no effect here: model.embeddings={m.embeddings!r} are "
                          "not drawn (orthonormal or gaussian are); allowed: 0 (the default)")
    vocab, answers = _vocabulary_and_answers(config)
    if m.embeddings in ("orthonormal", "onehot") and m.dim < max(vocab, answers):
        raise ConfigError(f"model.dim={m.dim!r}: {m.embeddings} embeddings need dim >= max(vocabulary "
                          f"{vocab}, answers {answers})")
    if m.embeddings == "hadamard" and (m.dim < max(vocab, answers) or m.dim & (m.dim - 1)):
        raise ConfigError(f"model.dim={m.dim!r}: hadamard embeddings need dim a power of 2 >= max(vocabulary "
                          f"{vocab}, answers {answers}), e.g. {1 << (max(vocab, answers) - 1).bit_length()}")
    if m.embeddings not in ORTHONORMAL_EMBEDDINGS and config.loss.kind == "population":
        raise ConfigError(f"loss.kind={config.loss.kind!r}: the population loss is exact only for "
                          "orthonormal embeddings; allowed: loss.kind=sampled")


def _transformer(config: Config, task: FactTask) -> Model:
    from .transformer import TransformerModel

    m = config.model
    return TransformerModel(task, m.dim, m.heads, m.head_dim, m.mlp_width, m.seed, device=config.device)


def _transformer_parameters(config: Config, untied: bool) -> int:
    m = config.model
    return 4 * m.heads * m.head_dim * m.dim + 2 * m.mlp_width * m.dim


def _check_transformer(config: Config) -> None:
    if config.model.attention != "softmax":
        raise ConfigError(f"model.attention={config.model.attention!r}: the transformer's heads are softmax; "
                          "allowed: model.attention=softmax")


# the starts of a model of token scores and values: Li et al.'s positive manifold too (dynamics.manifold)
_TOKEN_INITS = ("constant", "gaussian", "manifold")
_BUILTIN = (
        ModelKind("reduced", _reduced, reads=("model.attention",), parameters=_reduced_parameters,
                  population=True, theory=REDUCED_THEORY, inits=_TOKEN_INITS,
                  summary="one attention score and one value vector per token (docs/design.md §3.1)"),
        ModelKind("embedded", _embedded,
                  reads=("model.attention", "model.dim", "model.embeddings", "model.seed"),
                  parameters=lambda config, untied: 2 * config.model.dim ** 2, population=True,
                  theory=REDUCED_THEORY, check=_check_embedded, inits=_TOKEN_INITS,
                  summary="the same layer as d × d matrices W_KQ, W_OV on fixed embeddings (§3.2)"),
        ModelKind("transformer", _transformer,
                  reads=("model.attention", "model.dim", "model.seed", "model.heads", "model.head_dim",
                         "model.mlp_width"),
                  parameters=_transformer_parameters, population=False, check=_check_transformer,
                  summary="the paper's one-layer transformer: softmax heads and a ReLU MLP (§3.3)"))

MODEL_KINDS: Registry[ModelKind] = Registry("model.kind", ENTRY_POINT_GROUP, _BUILTIN)
BUILTIN = MODEL_KINDS.builtin  # the kinds above, which stay


def register_model(kind: ModelKind) -> ModelKind:
    """Add ``kind`` to the registry (from anywhere: a user's own file), so that ``model.kind`` may name it in
    every command and API; returns the entry. A name already registered, a name that is not an
    identifier, or a read key that is not a ``model.*`` key is refused (ValueError)."""
    wrong = [key for key in kind.reads if not key.startswith("model.") or key == "model.kind"]
    if wrong:
        raise ValueError(f"register_model: {kind.name!r} reads {wrong}: must be model.* keys but model.kind")
    return MODEL_KINDS.register(kind)


def unregister_model(name: str) -> None:
    """Remove a kind added by :func:`register_model` (the built-in ones stay: ValueError)."""
    MODEL_KINDS.unregister(name)


def get_model_kind(name: str) -> ModelKind:
    """The kind called ``name`` (installed entry points included); a one-line ConfigError naming the
    allowed ones otherwise."""
    return MODEL_KINDS.get_entry(name)
