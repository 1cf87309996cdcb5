"""Named presets: override sets on top of the defaults (the defaults are the paper's Figure 5).
Data only; docs/reproducing.md says what each one reproduces and what it gives."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's Figure 5: S=16, R=4, D=8, N=20, T=32, structured table, constant init 1e-5;
    # flow to t = 8192 steps × lr 0.1; discrete run plain SGD lr 0.1, batch 1024, 8192 steps.
    "figure5": {},
    # A small, fast configuration for tests, notebooks and smoke runs.
    "tiny": {
        "task.subjects": 4, "task.relations": 2, "task.answers_per_relation": 2,
        "task.noise_tokens": 3, "task.seq_len": 6, "init.scale": 1e-3,
        "flow.t_max": 400.0, "flow.points": 64, "train.steps": 2000, "train.batch_size": 128,
    },
    # Subjects learned first (docs/design.md §5): init -> marginal -> subject_first -> recall.
    "subject_first": {
        "task.subjects": 2, "task.relations": 32, "task.answers_per_relation": 8, "task.facts": "random",
        "task.noise_tokens": 20, "flow.t_max": 2000.0,
    },
    # A random fact table, hallucination level H(A|R) below log D.
    "random64": {
        "task.subjects": 64, "task.relations": 8, "task.answers_per_relation": 8, "task.facts": "random",
        "task.noise_tokens": 72, "flow.t_max": 4000.0,
    },
    # Beyond the analysed model: the Figure 5 task with one change each (docs/reproducing.md).
    # (a) softmax attention in the reduced model; population flow .
    "figure5_softmax": {"model.attention": "softmax", "flow.t_max": 20000.0},
    # (b) the embedded model with Gaussian N(0, I/d) embeddings (not orthogonal), on a fixed sample.
    "figure5_gaussian_d64": {
        "model.kind": "embedded", "model.embeddings": "gaussian", "model.dim": 64, "loss.kind": "sampled",
        "loss.samples": 2048, "flow.t_max": 2000.0, "flow.points": 128,
    },
    # d = 32 < V = 41: the tokens' embeddings must overlap (superposition).
    "figure5_gaussian_d32": {
        "model.kind": "embedded", "model.embeddings": "gaussian", "model.dim": 32, "loss.kind": "sampled",
        "loss.samples": 2048, "flow.t_max": 2000.0, "flow.points": 128,
    },
    # (c) the paper's one-layer transformer (docs/design.md §3.3) with d = 32, 4 heads of 8, MLP width 32;
    # Gaussian init N(0, 0.1²); flow on a fixed sample and online SGD (lr 0.5, batch 256, t = 0.5·step). Its
    # flow is stiff once learning starts and only piecewise smooth (ReLU kinks), so it uses bosh3 at a loose
    # tolerance (docs/stiff-flows.md says why).
    "figure5_transformer": {
        "model.kind": "transformer", "model.attention": "softmax", "model.dim": 32, "model.heads": 4,
        "model.head_dim": 8, "model.mlp_width": 32, "loss.kind": "sampled", "loss.samples": 1024,
        "init.kind": "gaussian", "init.scale": 0.1, "flow.t_min": 0.5, "flow.t_max": 800.0,
        "flow.points": 128, "flow.method": "bosh3", "flow.rtol": 1e-3, "flow.atol": 1e-6,
        "train.optimizer": "sgd", "train.lr": 0.5, "train.steps": 3000, "train.batch_size": 256,
    },
    # Data over time (docs/data-over-time.md), on random64's task: 13 of 64 subjects held out; a warm-up
    # on half the subjects for half of 0.8 × t_50 of the plain run; subjects trained with Zipf exponent 0.75.
    "data_unseen": {
        "task.subjects": 64, "task.relations": 8, "task.answers_per_relation": 8, "task.facts": "random",
        "task.noise_tokens": 72, "flow.t_max": 40000.0, "data.holdout": 13,
    },
    "data_warmup": {
        "task.subjects": 64, "task.relations": 8, "task.answers_per_relation": 8, "task.facts": "random",
        "task.noise_tokens": 72, "flow.t_max": 2165.0, "data.warmup_subjects": 0.5,
        "data.warmup_time": 1082.6,
    },
    "data_zipf": {
        "task.subjects": 64, "task.relations": 8, "task.answers_per_relation": 8, "task.facts": "random",
        "task.noise_tokens": 72, "flow.t_max": 40000.0, "data.zipf": 0.75,
    },
    # Li et al. 2026's setting (docs/geometry.md): one answer per fact (D = S on the structured table, so
    # |A| = S·R), T = 3 (no noise, no other token than subject, relation, EOS), uniform frequencies, their
    # start on the positive manifold α₀ = β₀ = 0.01. Another S needs task.answers_per_relation = S as well.
    "li2026": {
        "task.subjects": 16, "task.relations": 8, "task.answers_per_relation": 16, "task.noise_tokens": 0,
        "task.seq_len": 3, "init.kind": "manifold", "flow.t_min": 0.1, "flow.t_max": 1000.0,
    },
}
DEFAULT_PRESET = "figure5"

# One line per preset for ``factrecall presets`` and the ``--preset`` help (a test keeps the keys in step).
DESCRIPTIONS: dict[str, str] = {
    "figure5": "the paper's Figure 5: S=16, R=4, D=8, N=20, T=32, structured table; flow to t=819.2",
    "tiny": "a small, fast task (S=4, R=2, D=2) for tests, notebooks and smoke runs",
    "subject_first": "subjects learned first: init -> marginal -> subject_first -> recall (S=2, R=32)",
    "random64": "a random fact table, S=64, R=8, D=8: hallucination level H(A|R) below log D",
    "figure5_softmax": "Figure 5's task with softmax attention in the reduced model",
    "figure5_gaussian_d64": "Figure 5's task, embedded model with Gaussian embeddings, d=64, sampled loss",
    "figure5_gaussian_d32": "Figure 5's task, Gaussian embeddings, d=32 < V=41 (superposition), sampled loss",
    "figure5_transformer": "Figure 5's task on the one-layer transformer (d=32, 4 heads, MLP 32)",
    "data_unseen": "random64's task with 13 of 64 subjects held out of training",
    "data_warmup": "random64's task with a warm-up on half the subjects first",
    "data_zipf": "random64's task with subjects drawn with Zipf exponent 0.75",
    "li2026": "Li et al. 2026's setting: S=16, R=8, D=S (one answer per fact), T=3, manifold start 0.01",
}
