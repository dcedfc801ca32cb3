"""One table as an HTML page for the Snakemake report (rule table_html)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.reporting.pages import table_html

smk = snakemake
setup(smk)
table_html(smk.input[0], smk.output[0], f"Table: {smk.wildcards.table}")
