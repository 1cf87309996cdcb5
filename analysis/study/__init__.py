"""Named studies of many runs, each a ``factrecall study NAME`` command writing a resumable directory: the
registry of studies (:mod:`.registry`, standard library only), the runner that checks ``--out``, keeps
finished points in the sweep's point store and shows progress (:mod:`.runner`), and one module per study
(:mod:`.scale`, :mod:`.geometry`, :mod:`.timeline`). Importing this package loads no engine."""

from .registry import STUDIES, Study, register_study

__all__ = ["STUDIES", "Study", "register_study"]
