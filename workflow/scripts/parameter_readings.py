"""The parameter count of every SDGM architecture reading, without training (rule parameter_readings)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))
from sdgm.common.preamble import setup  # first: the job preamble (log, threads, import guard)

# isort: split
from sdgm.common.atomic import write_json_atomic
from sdgm.harness.readings import parameter_readings

smk = snakemake
setup(smk)
record = parameter_readings(smk.params.grid, smk.params.vocab_sizes, smk.params.base)
write_json_atomic(smk.output[0], record)
print(f"{len(record['rows'])} architecture readings counted")
