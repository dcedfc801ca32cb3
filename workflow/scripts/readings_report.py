"""The readings tables and figure from the runs' metrics.json and the readings records only (rule readings_report)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.readings import build_readings_report

smk = snakemake
setup(smk)
written = build_readings_report(
    smk.input.metrics,
    smk.input.readings,
    smk.input.parameters[0],
    Path(smk.output.tables[0]).parent,
    Path(smk.output.figures[0]).parent,
    default=smk.params.default,
    reference=smk.params.reference,
)
print(written)
