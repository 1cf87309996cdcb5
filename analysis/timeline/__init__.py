"""What happens to groups of facts when the training data change over time (docs/design.md §7): old facts
forgotten and relearned, new facts learned, held-out subjects' answers, stages per phase (``events``), the
``timeline.png`` figure (``plots``) and the files of a run directory (``report``). Everything reads
``Trajectory`` records and the schedule that ``summary.json`` holds."""

from .events import (
    FactEvents,
    GroupCurves,
    fact_events,
    group_curves,
    groups_of,
    phase_slices,
    unseen_summary,
)
from .plots import plot_timeline
from .report import analyse_timeline, format_timeline, has_timeline

__all__ = ["FactEvents", "GroupCurves", "analyse_timeline", "fact_events", "format_timeline", "group_curves",
           "groups_of", "has_timeline", "phase_slices", "plot_timeline", "unseen_summary"]
