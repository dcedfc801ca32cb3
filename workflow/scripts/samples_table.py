"""The text samples of every run collected into one Markdown and one HTML page (rule samples_table)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.pages import write_samples_pages

smk = snakemake
setup(smk)
write_samples_pages(smk.input.samples, smk.input.metrics, smk.output.md, smk.output.html, smk.params.n_tokens)
