"""Copy one finished run's weight-free files into the published store (rule store_run)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.campaign.store import publish_run
from sdgm.common.atomic import write_json_atomic

smk = snakemake
setup(smk)
inp = smk.input
target, new = publish_run(
    smk.params.store,
    inp.metrics,
    smk.params.config,
    smk.params.run["hash"],
    samples=inp.samples,
    gmm=inp.get("gmm"),
    throughput=inp.get("throughput"),
    quality=inp.get("quality"),
    figures=list(inp.get("figures", [])),
)
print(("published" if new else "already published (identical)"), target)
write_json_atomic(smk.output[0], {"record": str(target), "new": new})
