"""The text samples of every run collected into one Markdown and one HTML page (rule samples_table)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.reporting.pages import write_samples_pages  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
write_samples_pages(smk.input.samples, smk.input.metrics, smk.output.md, smk.output.html, smk.params.n_tokens)
