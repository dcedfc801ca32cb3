"""The parameter count of every SDGM architecture reading, without training (rule parameter_readings)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).resolve().parents[1]))  # noqa: F821
from sdgm.common.preamble import setup  # noqa: E402
from sdgm.common.atomic import write_json_atomic  # noqa: E402
from sdgm.harness.readings import parameter_readings  # noqa: E402

smk = snakemake  # noqa: F821
setup(smk)
record = parameter_readings(smk.params.grid, smk.params.vocab_sizes, smk.params.base)
write_json_atomic(smk.output[0], record)
print(f"{len(record['rows'])} architecture readings counted")
