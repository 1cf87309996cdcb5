"""A preconditioner for cvode's Newton systems, built from the model's own structure.

Every Newton iteration of CVODE solves (I − γJ) δ = r by GMRES with products J·v. On a stiff plateau
I − γJ has a block of large eigenvalues (docs/stiff-flows.md: the R(D − 1) modes of the relation blocks),
and unpreconditioned GMRES needs several products per Newton iteration to resolve them. With
``flow.newton_preconditioner=blocks`` the problem carries ``newton_blocks`` (:class:`~.options.FlowProblem`):
an approximate inverse of I − γJ from the model's closed-form curvature blocks
(:class:`dynamics.models.factorised.CurvatureBlocks`), which GMRES applies on the left (SUNDIALS' ``psolve``).

SUNDIALS decides when the blocks are rebuilt: its ``psetup`` is called with ``jok`` false when the
Jacobian data must be evaluated afresh (at the start, after convergence failures, every few dozen steps),
and with ``jok`` true when only γ changed — then the blocks are kept and only the small matrices of
``factor(γ)`` are factorised again. A setup costs about one gradient's work; the counts are in
:class:`Preconditioning`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .options import NewtonBlocks


@dataclass
class Preconditioning:
    """The counts of a preconditioned cvode run: ``setups`` (blocks built from a state: about one gradient
    each), ``factorisations`` (the blocks' small matrices factorised for a new γ) and ``solves`` (one per
    GMRES iteration and Newton iteration), ``products`` (J·v from the blocks: ``flow.jacobian=blocks``)."""

    setups: int = 0
    factorisations: int = 0
    solves: int = 0
    products: int = 0


class CvodePreconditioner:
    """``newton_blocks`` as scikit-sundae's setup and solve functions (:meth:`sundials`), and, where the
    blocks stand for the Jacobian too, its J·v products (:meth:`jacobian_vector`)."""

    def __init__(self, blocks: NewtonBlocks, like: torch.Tensor):
        self.blocks, self.like = blocks, like
        self.counts = Preconditioning()
        self._system = None
        self._product = None
        self._solve = None
        self._gamma = None

    def _tensor(self, y: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(y, dtype=np.float64), device=self.like.device)

    def _apply(self, function, source: np.ndarray, target: np.ndarray) -> torch.Tensor:
        """``function(r, out=z)`` on CVODE's vectors: read and written in place where they are on the CPU
        (a copy of 6.5 MB at 10^5 facts, per call, is several passes of the solve's own work), else copied."""
        if self.like.device.type != "cpu" or np.may_share_memory(source, target):
            result = function(self._tensor(source))
            target[:] = result.cpu().numpy()
            return torch.from_numpy(target)
        with warnings.catch_warnings():  # CVODE hands its vector read-only: it is only read here
            warnings.simplefilter("ignore", UserWarning)
            r = torch.as_tensor(source)
        return function(r, out=torch.from_numpy(target))

    def setup(self, t, y, yp, jok, jnew, gamma) -> None:
        """SUNDIALS' psetup: rebuild the blocks at (t, y) unless ``jok``; tell it in ``jnew[0]``."""
        if jok and self._system is not None:
            jnew[0] = 0
        else:
            self.counts.setups += 1
            # the old blocks and their factors let go first: at 10^6 facts they hold about 0.7 GB, which
            # would otherwise sit beside the new ones while those are built
            self._system = self._solve = self._product = self._gamma = None
            self._system = self.blocks.at(float(t), self._tensor(y))
            jnew[0] = 1
        self._refactor(float(gamma))

    def _refactor(self, gamma: float) -> None:
        if gamma != self._gamma:
            self.counts.factorisations += 1
            # the old factors (state-sized tables) go before the new are made; γ too, so that a factor that
            # failed is made again, never taken for the one of γ
            self._solve = self._gamma = None
            self._solve, self._gamma = self._system.factor(gamma), gamma

    def solve(self, t, y, yp, rvec, zvec, gamma, delta, lr) -> None:
        """SUNDIALS' psolve: z = M⁻¹ r with the blocks of the last setup (γ may have moved since)."""
        self.counts.solves += 1
        self._refactor(float(gamma))
        self._apply(self._solve, rvec, zvec)

    def jacobian_vector(self, t, y, fy, v, jv) -> None:
        """SUNDIALS' jtimes: J̃ v = −P H̃ v with the blocks of the last setup (the state CVODE last judged
        current: a modified Newton iteration, as with CVODE's own stored Jacobians)."""
        if self._system is None:
            raise RuntimeError("cvode asked for J·v before setting its preconditioner up")
        self.counts.products += 1
        if self._product is None:
            self._product = self._system.product()
        self._apply(self._product, v, jv).neg_()

    def sundials(self):
        """The ``precond`` argument of scikit-sundae's CVODE (left preconditioning)."""
        from sksundae.cvode import CVODEPrecond

        return CVODEPrecond(self.setup, self.solve, side="left")
