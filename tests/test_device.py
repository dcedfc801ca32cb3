"""The device benchmark (python -m sdgm.bench.device): fresh weights of every compared model, each cost written as
the records the claims code reads, and the device's claims table judged from them."""

import json
from pathlib import Path

import pandas as pd
import pytest

from sdgm.bench import device as D
from sdgm.harness.config import load_config
from sdgm.reporting import claim_row as V

REPO = Path(__file__).resolve().parents[1]
MODELS = ["sdgm", "gpt2", "linformer", "transformer_xl"]
JUDGED = ["fewer-params", "less-train-memory", "faster-training", "faster-inference", "less-memory", "params"]


@pytest.mark.e2e
def test_device_command_writes_the_records_the_claims_read_and_judges_them(tmp_path):
    out = tmp_path / "dev"
    assert (
        D.main(
            [
                "--configfile",
                str(REPO / "config/quick.yaml"),
                "--out",
                str(out),
                "--experiments",
                ",".join(MODELS),
                "--device",
                "cpu",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--new-tokens",
                "4",
                "--context-multiple",
                "1",
                "--batch-sizes",
                "1,2",
                "--score-batch-size",
                "2",
                "--scaling-args",
                "--lengths 64,128,256 --tokens-per-batch 256 --batch-lengths 64,128,256 "
                "--decoders chunked --repeats 1 --warmup 0",
            ]
        )
        == 0
    )
    for exp in MODELS:
        tp = json.loads((out / "bench/throughput/wikitext2" / f"{exp}-s0.json").read_text())
        m = tp["metrics"]
        assert tp["kind"] == "throughput" and tp["fresh_weights"] and m["train_tokens_per_s"] > 0
        param_bytes = 4 * m["params"]  # fp32 on a CPU: the peaks count the parameters, built inside the probe
        assert m["score_peak_mem_bytes"] > param_bytes
        assert m["train_peak_mem_bytes"] > 3 * param_bytes  # and gradients and Adam's two moments
        probe = tp["memory"]["train"]  # the protocol the verdicts compare
        assert (probe["steps"], probe["fresh_process"], probe["compile"]) == (2, True, False)
        assert probe["precision"] == "fp32"
        gen = json.loads((out / "bench/generation/wikitext2" / f"{exp}-s0.json").read_text())
        assert list(gen["paths"]) == [gen["own_path"]] == ["cache"]
        assert gen["paths"]["cache"]["generate"]["b1"]["tokens_per_s"] > 0
        assert len(gen["paths"]["cache"]["latency"]["median_s"]) == 64  # context_multiple 1 x L
    rec = json.loads((out / "bench/device.json").read_text())
    assert rec["settings"]["experiments"] == MODELS and rec["wall_s"]["total_s"] > 0
    assert rec["settings"]["scaling"].startswith("run here") and (out / "bench/scaling.json").exists()
    claims = pd.read_csv(out / "tables/claims.csv").set_index("id")
    for cid in JUDGED:
        assert claims.loc[cid, "verdict"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.CONTRADICTED), cid
    # three lengths per view here: the slope judges nothing (docs/claims.md: slopes), and says why
    assert claims.loc["linear-in-L", "reason"].startswith("no view judges: batch: ")
    assert "lengths, fewer than 4" in claims.loc["linear-in-L", "reason"]  # those from slope_min_length
    assert claims.loc["speed", "verdict"] == V.NOT_COMPARABLE and claims.loc["memory", "verdict"] == V.NOT_COMPARABLE
    assert claims.loc["wt2-val-ppl", "reason"] == f"{V.NOT_ON_DEVICE}: no metrics record in this folder"
    assert claims.loc["wt2-generation-quality", "reason"] == f"{V.NOT_ON_DEVICE}: no quality record in this folder"


def test_default_experiments_are_one_per_model_but_the_leaking_one():
    config = load_config(REPO / "config/config.yaml")
    assert D.default_experiments(config) == ["sdgm", "gpt2", "linformer", "transformer_xl", "lstm"]
