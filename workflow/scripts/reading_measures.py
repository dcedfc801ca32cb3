"""The measurement readings of one trained run: reconstruction cosines, further evaluations (rule reading_measures)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.common.atomic import write_json_atomic
from sdgm.harness.readings import measure_run

smk = snakemake
setup(smk)
wc = smk.wildcards
record = measure_run(
    Path(smk.input.run[0]).parent,
    Path(smk.input.tokens[0]).parent,
    run_id=f"{wc.corpus}/{wc.experiment}-s{wc.seed}-{wc.run_hash}",
    experiment=wc.experiment,
    corpus=wc.corpus,
    seq_len=smk.params.seq_len,
    evaluations=smk.params.evaluations,
)
write_json_atomic(smk.output[0], record)
print(record)
