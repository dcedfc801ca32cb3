"""The snakemake-workflows standard layout: formatting, the catalog file, the test case and the config's documentation.
(The test case itself runs in tests/test_envs.py, under the import guard.)"""
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_workflow_is_snakefmt_clean():
    r = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", "workflow"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, "run `snakefmt workflow`:\n" + (r.stdout + r.stderr)[-4000:]


def test_catalog_file_names_the_workflow():
    cat = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert cat["usage"]["software-stack-deployment"]["conda"] is True
    assert cat["usage"]["report"] is True
    assert (REPO / "config" / "README.md").exists() and (REPO / ".test" / "config" / "config.yaml").exists()


def schema_keys(node: dict) -> set[str]:
    keys = set()
    for k, v in node.get("properties", {}).items():
        keys |= {k} | schema_keys(v)
    for k in ("additionalProperties", "items"):
        if isinstance(node.get(k), dict):
            keys |= schema_keys(node[k])
    return keys


def test_config_readme_describes_every_key():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    text = (REPO / "config" / "README.md").read_text()
    missing = sorted(k for k in schema_keys(schema) if f"`{k}`" not in text)
    assert not missing, f"config/README.md does not describe: {missing}"


def test_test_case_config_is_small_and_complete():
    """.test/ runs every rule on one corpus in a short time: few steps, one seed, and the keys the schema needs."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] <= 50 and cfg["seeds"] == [0] and len(cfg["corpora"]) == 1
    assert cfg["gmm"]["experiments"], "the test case must fit a GMM (rules fit_gmm, interpretability_figures)"
    assert any("ablation_of" in e for e in cfg["experiments"].values()), "the test case must build the ablation table"
