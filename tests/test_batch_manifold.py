"""Members of a batched flow may differ in the manifold start's α₀ and β₀ (init.alpha, init.beta): each
member integrates from its own θ(0), and the batch equals the runs alone to the batch tolerance."""

from __future__ import annotations

import numpy as np

from dynamics import resolve_config, run_flow, run_flow_batch
from dynamics.run import batch_key


def test_manifold_starts_differing_in_alpha_and_beta_batch_and_equal_their_runs_alone():
    base = resolve_config("li2026", overrides={"task.subjects": 4, "task.relations": 2,
                                               "task.answers_per_relation": 4, "flow.t_max": 5.0,
                                               "flow.points": 8})
    configs = [base.override({"init.alpha": a, "init.beta": b}) for a, b in ((0.01, 0.01), (0.05, 0.02))]
    assert batch_key(configs[0]) == batch_key(configs[1])
    batch = run_flow_batch(configs)
    assert all(flow.info.flow.batch_size == 2 for flow in batch)
    singles = [run_flow(config) for config in configs]
    assert not np.allclose(singles[0].loss, singles[1].loss)  # the two starts differ
    for flow, single in zip(batch, singles, strict=True):
        np.testing.assert_allclose(flow.loss, single.loss, rtol=0, atol=1e-6)
