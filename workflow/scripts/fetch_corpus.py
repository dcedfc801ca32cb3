"""Materialize the three splits of one corpus, each verified against its SHA-256 and checked to be text (valid UTF-8,
no NUL byte, no absurd line or token: the corpus's `check`) as it is written (rule fetch_corpus)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.data.sources import materialize, shipped_sha256  # noqa: E402

setup(snakemake)  # noqa: F821
spec = snakemake.params.corpus  # noqa: F821
sha = spec["sha256"]
if sha == "shipped":
    sha = shipped_sha256(spec["source"]["corpus"])
for dest in snakemake.output:  # noqa: F821
    split = Path(dest).stem
    digest = materialize(split, spec["source"], dest, None if sha is None else sha[split], check=spec.get("check"))
    print(f"{dest}: sha256 {digest}")
