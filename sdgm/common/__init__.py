"""Small utilities every part of sdgm shares: atomic writes (atomic), the reasons a value is missing (missing),
strict JSON Schemas and the schema of metrics.json (schema, schemas/), timing and memory of a call and of the
process (timing), a command's parser from its docstring (usage), the preamble of every workflow script (preamble)
and the check that a workflow job imports only what its conda environment provides (importguard). It imports no
other part of sdgm; only timing imports torch.
"""
