"""Word-level tokens and vocabulary of one corpus, checked against the known counts (rule tokenize)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.data.tokens import check_counts, tokenize_corpus  # noqa: E402

setup(snakemake)  # noqa: F821
stats = tokenize_corpus(Path(snakemake.input[0]).parent, Path(snakemake.output.stats).parent)  # noqa: F821
check_counts(stats, snakemake.params.expected)  # noqa: F821
print(stats)
