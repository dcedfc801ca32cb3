"""results/README.md from the tables, figures and metrics (rule results_readme)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.pages import results_readme

smk = snakemake
setup(smk)
pngs = list(smk.input.run_figures)
per_run = len(pngs) // max(len(smk.params.run_figures), 1)
run_figures = [
    (corpus, run, pngs[i * per_run : (i + 1) * per_run]) for i, (corpus, run) in enumerate(smk.params.run_figures)
]
results_readme(
    smk.output[0],
    smk.input.main,
    smk.input.tables,
    smk.input.figures,
    run_figures,
    smk.input.metrics,
    smk.input.gmm,
    smk.params.summary,
    claims_md=smk.input.claims,
    compact_md=smk.input.compact,
)
