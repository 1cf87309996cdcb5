"""The words a user reads about stages, each defined once: ``factrecall stages --help`` prints them as its
epilog and docs/stages.md is generated from them (``python -m analysis.docgen``). Standard library only:
the parser imports this module and must not load the engine."""

from __future__ import annotations

import argparse
import textwrap

# (word, definition): the aggregate stages of the loss, in the order a run can meet them (the names of
# analysis.stages.detect.STAGE_LEVELS, a test keeps them in step)
STAGES: tuple[tuple[str, str], ...] = (
    ("init", "loss at log|A|: uniform output over all |A| answers; nothing learned yet"),
    ("marginal", "loss at H(A): answers as often as each occurs overall, knowing neither relation nor "
                 "subject (only when H(A) differs from log|A|, e.g. a random table)"),
    ("hallucination", "loss at H(A|R): the relation is known, so the answer has the right type (one of the "
                      "relation's D answers A_r), but not yet the subject's own answer"),
    ("subject_first", "loss at H(A|S): the subject is known, the relation not (many relations, few "
                      "subjects)"),
    ("recall", "loss at 0: every fact's own answer"),
)

# (word, definition): each fact's state at each time (facts.png, fractions.png, stages.npz)
FACT_STATES: tuple[tuple[str, str], ...] = (
    ("uninformed", "a fact neither recalled nor hallucinating"),
    ("hallucinating", "not recalled, but the mass on the relation's answers p(A_r) is above 1/2 (R > 2; "
                      "halfway from chance 1/R to 1 when R = 2)"),
    ("recalled", "p(a*) > 1/2: the fact's own answer is the likely one"),
)

# (word, definition): the other words of stage tables, sweeps and figures
TERMS: tuple[tuple[str, str], ...] = (
    ("S, R, D, N, T", "subjects, relations, answers per relation, noise tokens, sequence length; a fact is "
                      "a pair (s, r) with its answer a*, among the relation's D answers A_r"),
    ("level", "a reference loss of the run's own table: log|A| (uniform over all answers), H(A) (the "
              "answers' marginal), H(A|R) (given the relation), H(A|S) (given the subject), 0"),
    ("plateau", "a stretch of log t where the smoothed loss stays near one level (an intermediate one for at "
                "least 0.15 decades); a stage contains one. Facts can pass through the hallucinating state "
                "without the loss resting on a plateau: then no hallucination stage is shown"),
    ("transition", "where the smoothed loss crosses the midpoint of two stages' levels: t_end of one, "
                   "t_start of the next"),
    ("intermediate", "the stages between init and recall (marginal, hallucination, subject_first); a "
                     "sweep's 'intermediate' column joins them with '+', 'none': the loss fell from init "
                     "to recall without one"),
    ("stage chain", "the stages in time order: 'init → hallucination → recall' (a sweep's results.csv "
                    "writes 'init > hallucination > recall')"),
    ("t_R, t_S", "the linearised theory's escape times of the relation (end of init) and of the subject "
                 "(end of the hallucination plateau), beside the measured ones"),
)


def epilog(width: int = 100) -> str:
    """The glossary as plain text for ``factrecall stages --help``: one word and its definition a line,
    wrapped to ``width``."""
    sections = (("stages of the loss", STAGES), ("states of each fact", FACT_STATES), ("other words", TERMS))
    indent = 2 + max(len(word) for _, words in sections for word, _ in words) + 2
    lines = []
    for title, words in sections:
        lines.append(f"{title}:")
        for word, definition in words:
            lines += textwrap.wrap(definition, width, initial_indent=f"  {word:<{indent - 4}}  ",
                                   subsequent_indent=" " * indent)
    return "\n".join(lines)


def markdown() -> str:
    """The glossary as Markdown tables (docs/stages.md)."""
    sections = (("Stages of the loss", "stage", STAGES), ("States of each fact", "state", FACT_STATES),
                ("Other words", "word", TERMS))
    lines = []
    for title, header, words in sections:
        lines += [f"### {title}", "", f"| {header} | meaning |", "|---|---|"]
        lines += [f"| `{word}` | {definition.replace('|', chr(92) + '|')} |" for word, definition in words]
        lines.append("")
    return "\n".join(lines).rstrip()


def attach(parser: argparse.ArgumentParser) -> None:
    """Make the glossary the epilog of ``parser`` (``factrecall stages --help``), laid out as written."""
    parser.epilog = epilog()
    parser.formatter_class = type("GlossaryFormatter", (argparse.RawDescriptionHelpFormatter,
                                                        parser.formatter_class), {})
