"""What every workflow script does first: send its output to the rule's log, use the rule's threads, and remove
temporaries of its outputs that a killed earlier attempt left behind (the job is their only writer).

Every script imports this module before anything else outside the standard library (tests/test_envs.py checks),
so that where SDGM_IMPORT_GUARD names an import plan (the tests set it), the job may import only what its conda
environment provides from then on (importguard). Nothing else installs the guard: importing sdgm changes nothing.
"""

from __future__ import annotations

import os
import sys

from .atomic import remove_stale_temporaries

if os.environ.get("SDGM_IMPORT_GUARD"):  # importguard.ENV_VAR; imported only here, as it needs yaml
    from .importguard import install

    install(os.environ["SDGM_IMPORT_GUARD"])


def setup(smk) -> None:
    if smk.log:
        log = open(smk.log[0], "a", buffering=1)
        sys.stdout = sys.stderr = log
    for out in smk.output:
        for stale in remove_stale_temporaries(out):
            print(f"removed {stale}, left by an interrupted earlier attempt", file=sys.stderr)
    torch = sys.modules.get("torch")  # only jobs whose code uses torch import it (the report environment has none)
    if smk.threads and torch is not None:
        torch.set_num_threads(smk.threads)
