"""The interface every model of the factual-recall task offers, as functions of one flat parameter vector θ.

A model knows nothing about solvers: it maps θ to logits and losses, and exposes a diagonal flow metric
``preconditioner`` P (the flow is dθ/dt = −P ∇L; P = 1/N on a tied noise token standing for N tokens).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..errors import ConfigError
from ..geometry import ParameterBlock
from ..task import FactTask
from .tokens import attention_from_tokens, count_logits_from_tokens, population_logits_from_tokens

if TYPE_CHECKING:
    from ..config import InitConfig


class Model:
    """Common interface: token parameters from θ, logits, losses; subclasses define the parametrisation."""

    task: FactTask
    attention: str
    num_params: int
    preconditioner: torch.Tensor
    population_exact: bool

    def token_parameters(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``a`` (n,) and values ``v`` (n, |A|) of the model's token axis."""
        raise NotImplementedError

    def collapse_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Map counts over the full vocabulary (B, V) onto the model's token axis."""
        return counts

    def initial_parameters(self, init: InitConfig) -> torch.Tensor:
        """θ(0) for an initialisation config (float64, seeded)."""
        raise NotImplementedError

    def parameter_norms(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named Euclidean norms of the parameter blocks."""
        raise NotImplementedError

    def with_task(self, task: FactTask) -> Model:
        """This model (same parameters' meaning) on another instance of its task with the same table and
        vocabulary but other fact frequencies: what a data schedule trains at one time."""
        other = copy.copy(self)
        other.task = task
        return other

    def grown_state(self, theta_old: torch.Tensor, old_task: FactTask, theta_init: torch.Tensor
                    ) -> torch.Tensor:
        """θ for this model from ``theta_old``, a state of the same model on ``old_task``, whose subjects are
        the first of this task's: old tokens keep their parameters, new ones take ``theta_init``'s."""
        raise ConfigError("init.from_run: starting from another run's state is offered for "
                          f"model.kind=reduced; this model is {type(self).__name__}")

    def parameter_blocks(self) -> list[ParameterBlock]:
        """θ's named blocks, vectors and matrices, in order (the spectral geometry and Muon act per matrix).
        By default one vector: all of θ."""
        return [ParameterBlock("theta", 0, (self.num_params,))]

    def untied(self) -> tuple[Model, Callable[[torch.Tensor], torch.Tensor]]:
        """An equivalent model with one parameter set per vocabulary token, and the map θ -> θ_untied."""
        return self, lambda theta: theta

    # --- shared computations -------------------------------------------------------------------
    def population_logits(self, theta: torch.Tensor) -> torch.Tensor:
        """(S, R, |A|) logits of every fact with expected noise counts."""
        a, v = self.token_parameters(theta)
        return population_logits_from_tokens(a, v, self.task, self.attention)

    def attention_weights(self, theta: torch.Tensor) -> torch.Tensor:
        """(S, R, 4) attention on subject, relation, noise block, EOS (see ``attention_from_tokens``)."""
        a, _ = self.token_parameters(theta)
        return attention_from_tokens(a, self.task, self.attention)

    def sequence_logits(self, theta: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(B, |A|) logits of sampled sequences given as vocabulary counts (B, V)."""
        a, v = self.token_parameters(theta)
        return count_logits_from_tokens(a, v, self.collapse_counts(counts), self.attention)

    def population_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """L(θ) = Σ_{s,r} w_{sr} · CE(logits(s, r), a*(s, r)), the exact population loss when exact."""
        logp = torch.log_softmax(self.population_logits(theta), dim=-1)
        target = torch.as_tensor(self.task.facts, device=logp.device)
        weights = torch.as_tensor(self.task.fact_weights, device=logp.device)
        return -(weights * logp.gather(-1, target[..., None])[..., 0]).sum()

    def population_loss_and_gradient(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(L(θ), ∇L(θ)) of the population loss in closed form, or None where only autodiff is offered."""
        return None

    def population_gradient(self, theta: torch.Tensor) -> torch.Tensor | None:
        """∇L(θ) of :meth:`population_loss_and_gradient` alone (a model may skip forming L), or None."""
        result = self.population_loss_and_gradient(theta)
        return None if result is None else result[1]

    has_fact_record = False  # whether fact_record(states) gives the per-fact record (else: from the logits)
    has_closed_hvp = False  # whether population_hessian_vector_product gives H·u (else None: autodiff)
    has_curvature_blocks = False  # whether curvature_blocks(θ) gives cvode's preconditioner blocks

    def curvature_blocks(self, theta: torch.Tensor):
        """The closed-form curvature blocks of the population loss at θ
        (:class:`~dynamics.models.factorised.CurvatureBlocks`), where ``has_curvature_blocks``."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form curvature blocks")

    def population_hessian_vector_product(self, theta: torch.Tensor, vector: torch.Tensor
                                          ) -> torch.Tensor | None:
        """H(θ)·u of the population loss in closed form, or None where only autodiff is offered."""
        return None

    def sequence_loss(self, theta: torch.Tensor, counts: torch.Tensor, targets: torch.Tensor
                      ) -> torch.Tensor:
        """Mean cross-entropy over a batch of sequences (counts (B, V), targets (B,))."""
        logits = self.sequence_logits(theta, counts)
        return torch.nn.functional.cross_entropy(logits, targets)
