"""Why a value is missing: the reasons written beside a null (a record's "na") and shown as "n/a (reason)".

Every writer and reader names a fixed reason by its constant here; a reason built at run time (an error message,
"fewer than 2 measured lengths >= 64") is written where it arises. `na` is the one way a missing value reads.
"""

from __future__ import annotations

NOT_MEASURED = "not measured"
NO_STATE = "model carries no state across windows"  # val_ppl_mem & co. of a stateless model
NO_RECONSTRUCTION = "model has no embedding reconstruction"  # cosine_val/cosine_test of a model without X_hat
NO_GPU = "no GPU (CPU run); see peak_rss_bytes"  # peak_mem_bytes of a CPU run
OUT_OF_MEMORY = "out of memory"
NAN_RECORDED = "NaN recorded"
NOT_IN_PAPER = "not in paper"
LEAKS_FUTURE = "leaks future tokens"  # a difference to the paper of a non-causal run
MODEL_NOT_RECORDED = "model not recorded"
CONFIG_NOT_RECORDED = "configuration not recorded"
MAIN_RUN_NOT_IN_REPORT = "main run not in the report"
SAME_CONFIG_AS_MAIN = "same configuration as the main run"


def na(reason: str | None) -> str:
    """'n/a (reason)'; a reason that already reads so is kept, an empty one is NOT_MEASURED."""
    reason = str(reason or "").strip()
    if reason.startswith("n/a (") and reason.endswith(")"):
        return reason
    return f"n/a ({reason or NOT_MEASURED})"
