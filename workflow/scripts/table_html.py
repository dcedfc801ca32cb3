"""One table as an HTML page for the Snakemake report (rule table_html)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.reporting.pages import table_html  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
table_html(smk.input[0], smk.output[0], f"Table: {smk.wildcards.table}")
