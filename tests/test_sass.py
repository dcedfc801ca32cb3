"""The Triton kernels compiled for an H100 (sm_90) on any machine and their machine code read (sdgm.bench.sass)."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.e2e  # a compiler subprocess of about 20 s
@pytest.mark.needs("triton")
def test_sm90_machine_code_uses_hardware_sine_and_does_not_spill():
    """Compile every launch config for an H100 (sm_90) without a GPU and read the SASS: the hardware sine (and the
    cosine in the parameter-gradient kernel and at the rotation's anchors), tensor-core MMAs for bf16, no
    local-memory spills, <= 255 registers; the rotation kernels evaluate a small fraction of the direct ones' sines
    per tile."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for real, not interpret
    code = "import json; from sdgm.bench.sass import report; print(json.dumps(report('bf16') + report('fp16')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(rows) == 18
    for r in rows:
        assert r["mufu_sin"] > 0, r
        if r["kernel"].startswith(("param", "mix rot")):
            assert r["mufu_cos"] > 0, r
        assert r["stack"] == 0 and r["stl"] == 0 and r["ldl"] == 0, r
        assert r["regs"] <= 255 and r["mma"] > 0, r
    sines = {r["kernel"].split(" B<=")[0]: r["sines_per_32_positions"] for r in rows}
    assert sines["mix rot"] * 32 <= sines["mix direct"] and sines["param rot"] * 16 <= sines["param direct"]
