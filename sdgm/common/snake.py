"""What every workflow script does first: send its output to the rule's log, use the rule's threads, and remove
temporaries of its outputs that a killed earlier attempt left behind (the job is their only writer)."""
from __future__ import annotations

import sys

from .atomic import remove_stale_temporaries


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
