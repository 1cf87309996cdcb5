"""factrecall's engine: configuration, task, models, objectives, vector fields, solvers, discrete training,
the per-fact record and the one-call runs.

Typical use::

    from dynamics import resolve_config, run_flow
    traj = run_flow(resolve_config("figure5"))
    traj.info.status, traj.info.cost.function_evals, traj.final_loss

Layers, each importing only those before it: ``errors``, ``io``, ``numerics`` → ``solvers`` (any field
f(t, θ); nothing of models or configs) → ``geometry`` → ``task`` → ``manifold`` → ``models`` (with the
model-kind registry) → ``optimizers`` (the optimizer registry) → ``config`` (which asks the registries of
solver methods, geometries, model kinds and optimizers) → ``objective`` → ``fields`` (objective + geometry
→ field and Jacobian products) → ``training``, ``curvature`` → ``records``, ``trajectory`` → ``run`` (a
config in, a trajectory out). Below ``config``, a config is read only through its attributes (type hints
under ``TYPE_CHECKING``). Below every layer: ``registry`` (the one registry class), ``plugins`` and
``lazy``.

Each public name is imported when first read (``lazy``): resolving and checking a config loads no torch,
SciPy or matplotlib; the registries name what computes by where it lives.
"""

from .lazy import lazy_exports

# each public name and the module that defines it, imported when the name is first read: resolving a config
# loads no torch (tests/test_imports.py)
_EXPORTS = {name: module for module, names in {
    ".config": ("PRESETS", "Config", "resolve_config"),
    ".errors": ("ConfigError", "RunError"),
    ".fields": ("gradient_field", "gradient_field_jacobian", "gradient_field_jacobian_vector"),
    ".geometry": ("GEOMETRIES", "DiagonalMetric", "Geometry", "register_geometry"),
    ".manifold": ("ManifoldFlow", "manifold_flow"),
    ".models": ("MODEL_KINDS", "EmbeddedModel", "Model", "ModelKind", "ReducedModel", "build_model",
                "register_model"),
    ".objective": ("make_objective",),
    ".optimizers": ("OPTIMIZERS", "Optimizer", "Stepper", "register_optimizer"),
    ".records": ("RunInfo",),
    ".run": ("log_time_grid", "run_flow", "run_flow_batch", "run_training"),
    ".solvers": ("METHODS", "Cost", "FlowResult", "SolverOptions", "Status", "integrate_flow"),
    ".task": ("FactTask",),
    ".training": ("TrainResult", "train"),
    ".trajectory": ("FactClass", "Trajectory"),
}.items() for name in names}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["GEOMETRIES", "METHODS", "MODEL_KINDS", "OPTIMIZERS", "PRESETS", "Config", "ConfigError", "Cost",
           "DiagonalMetric", "EmbeddedModel", "FactClass", "FactTask", "FlowResult", "Geometry",
           "ManifoldFlow", "Model", "ModelKind", "Optimizer", "ReducedModel", "RunError", "RunInfo",
           "SolverOptions", "Status", "Stepper", "TrainResult", "Trajectory", "build_model", "gradient_field",
           "gradient_field_jacobian", "gradient_field_jacobian_vector", "integrate_flow", "log_time_grid",
           "make_objective", "manifold_flow", "register_geometry", "register_model", "register_optimizer",
           "resolve_config", "run_flow", "run_flow_batch", "run_training", "train"]
