"""Named studies of many runs, each a ``factrecall study NAME`` command writing a resumable directory: the
registry of studies (:mod:`.registry`, standard library only), the runner that checks ``--out``, keeps
finished points in the sweep's point store and shows progress (:mod:`.runner`), and one module per study
(:mod:`.scale`, :mod:`.geometry`, :mod:`.timeline`). Importing this package loads no engine."""

import importlib
from typing import Any

from .registry import STUDIES, Study, register_study

# names whose modules load the engine: imported when first asked for, so that this package stays light
_ENGINE_NAMES = {"run_study": "runner", "study_args": "runner", "StudyPlan": "runner",
                 "study_config": "scale", "shipped_study": "scale"}


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        return getattr(importlib.import_module(f".{_ENGINE_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STUDIES", "StudyPlan", "Study", "register_study", "run_study", "shipped_study", "study_args",
           "study_config"]
