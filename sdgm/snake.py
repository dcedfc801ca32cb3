"""What every workflow script does first: send its output to the rule's log and use the rule's threads."""
from __future__ import annotations

import sys


def setup(smk) -> None:
    if smk.log:
        log = open(smk.log[0], "a", buffering=1)
        sys.stdout = sys.stderr = log
    if smk.threads:
        import torch

        torch.set_num_threads(smk.threads)
