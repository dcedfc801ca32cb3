"""Every table, figure and page made from the records, in the report environment: the results tables and figures
(results, rule report: records -> tables -> render, and plots), the benchmark tables (bench_report,
generation_report), the weight-free generation quality (sample_scores scores the samples, quality_report draws
them), the paper's claims judged (claim_rules with claim_row, slope_rule and competitive_rule; claims_tables renders
them, claims is the step and its command; evidence, protocol, statistics; claims.yaml, paper_numbers.yaml), the
readings of the paper (readings_records, readings) and one explanation per claim (reading_gaps) and the pages beside
the tables (pages: samples, HTML tables, results/README.md).
It imports only sdgm.common, and never torch: it reads records, never the code that made them.
"""

from ..common.missing import NO_RECONSTRUCTION, NOT_IN_PAPER, NOT_MEASURED
from .plots import plot_ablations, plot_sweep, plot_training_curves, save_figure, sweep_points
from .records import (
    ABLATION_COLUMNS,
    CAUSAL_YES,
    DISPLAY_COLUMNS,
    LEAKS,
    MAIN_RUN,
    NON_CAUSAL_SUFFIX,
    PAPER_PATH,
    RECONSTRUCTION_COLUMNS,
    ReportError,
    load_metrics,
    load_paper,
)
from .render import latex_escape, to_latex, to_markdown, write_table
from .results import build_report
from .tables import (
    ablation_label,
    ablation_table,
    ablation_table_numeric,
    aggregate,
    format_aggregate,
    leaks,
    main_table,
    main_table_numeric,
    numeric_columns,
    reconstruction_table,
    reconstruction_table_numeric,
    setting_diff,
)

__all__ = [
    "ABLATION_COLUMNS",
    "CAUSAL_YES",
    "DISPLAY_COLUMNS",
    "LEAKS",
    "MAIN_RUN",
    "NON_CAUSAL_SUFFIX",
    "NOT_IN_PAPER",
    "NOT_MEASURED",
    "NO_RECONSTRUCTION",
    "PAPER_PATH",
    "RECONSTRUCTION_COLUMNS",
    "ReportError",
    "ablation_label",
    "ablation_table",
    "ablation_table_numeric",
    "aggregate",
    "build_report",
    "format_aggregate",
    "latex_escape",
    "leaks",
    "load_metrics",
    "load_paper",
    "main_table",
    "main_table_numeric",
    "numeric_columns",
    "plot_ablations",
    "plot_sweep",
    "plot_training_curves",
    "reconstruction_table",
    "reconstruction_table_numeric",
    "save_figure",
    "setting_diff",
    "sweep_points",
    "to_latex",
    "to_markdown",
    "write_table",
]
