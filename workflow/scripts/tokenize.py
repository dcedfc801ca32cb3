"""Word-level tokens and vocabulary of one corpus, checked against the known counts (rule tokenize)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.data.tokens import check_counts, tokenize_corpus

setup(snakemake)
stats = tokenize_corpus(Path(snakemake.input[0]).parent, Path(snakemake.output.stats).parent)
check_counts(stats, snakemake.params.expected)
print(stats)
