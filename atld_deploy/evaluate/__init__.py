"""Robustness evaluation: the published protocol, adaptive attacks on the deployed IMT pipeline, the
per-example worst case, and checks that make a broken evaluation loud.

    report = evaluate_run("runs/demo", n=500)
    print(format_table(report))
"""

from .api import evaluate_models, evaluate_run, machine_info, subset_indices
from .protocols import PROTOCOLS, Outcome, worst_case
from .report import EvalReport, format_markdown, format_table
from .suite import ATTACKS, DEFAULT_ATTACKS
from .targets import MODEL_NAMES

__all__ = [
    "ATTACKS", "DEFAULT_ATTACKS", "MODEL_NAMES", "PROTOCOLS", "EvalReport", "Outcome", "evaluate_models",
    "evaluate_run", "format_markdown", "format_table", "machine_info", "subset_indices", "worst_case",
]
