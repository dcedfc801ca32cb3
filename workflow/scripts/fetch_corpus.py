"""Materialize the three splits of one corpus, each verified against its SHA-256 and checked to be text (valid UTF-8,
no NUL byte, no absurd line or token: the corpus's `check`) as it is written (rule fetch_corpus)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.data.sources import materialize, shipped_sha256

setup(snakemake)
spec = snakemake.params.corpus
sha = spec["sha256"]
if sha == "shipped":
    sha = shipped_sha256(spec["source"]["corpus"])
for dest in snakemake.output:
    split = Path(dest).stem
    digest = materialize(split, spec["source"], dest, None if sha is None else sha[split], check=spec.get("check"))
    print(f"{dest}: sha256 {digest}")
