"""The Slurm profile on a real single-node Slurm cluster (slurmctld + slurmd + slurmdbd/MariaDB on localhost).

Needs root and Debian's slurm-wlm, slurmdbd, munge and mariadb-server (`.ci/run` installs them); on a machine
without them run the suite with `-m "not slurm"`. The test starts the cluster, runs a small pipeline once
locally and once through `--profile workflow/profiles/slurm`, checks that the jobs went through Slurm
(sacct) and that both runs measured the same numbers, then stops the cluster.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdgm.config import runs

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [t for t in ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sacct")
               if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]
    assert not missing, f"Slurm test needs {missing} (apt-get install slurm-wlm slurmdbd munge mariadb-server, as root)"
    assert os.geteuid() == 0, "the single-node Slurm cluster is started as root"
    d = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ)
    r = subprocess.run(["bash", str(CLUSTER), "start", str(d)], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in (d / "log").glob("*.log"))
        subprocess.run(["bash", str(CLUSTER), "stop", str(d)], env=env)
        pytest.fail(f"cluster did not start:\n{r.stdout}\n{r.stderr}\n{logs}")
    yield env
    subprocess.run(["bash", str(CLUSTER), "stop", str(d)], env=env, timeout=60)


def tiny_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    cfg["experiments"] = {"sdgm": {"model": "sdgm", "corpora": ["ptb"]}}
    cfg["corpora"] = {"ptb": cfg["corpora"]["ptb"]}
    cfg["gmm"]["experiments"] = ["sdgm"]
    cfg["train"].update(max_steps=40, eval_every_steps=20)
    cfg["job_resources"] = {"train": {"threads": 1, "mem_mb": 2000, "runtime": 15, "gpu": 0},
                            "default": {"threads": 1, "mem_mb": 2000, "runtime": 15, "gpu": 0}}
    return cfg


def run_snakemake(cwd: Path, *args, env=None):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
           "--configfile", "tiny.yaml", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def test_pipeline_through_slurm_matches_local_run(slurm, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for d in (local, cluster):
        d.mkdir()
        (d / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))

    r = run_snakemake(local, "--cores", "2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]

    r = run_snakemake(cluster, "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                      "--slurm-init-seconds-before-status-checks", "5", "--jobs", "2", env=slurm)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "executor: slurm" in out.lower() or "slurm" in out.lower()

    # every job was a Slurm job and finished COMPLETED, as accounting recorded it
    acct = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,State,ExitCode", "-S", "now-1hour"],
                          env=slurm, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    states = [line.split("|")[2] for line in acct]
    n_jobs = 6  # fetch_corpus, tokenize, train, fit_gmm, sample, report
    assert states.count("COMPLETED") >= n_jobs, acct
    assert not [s for s in states if s in ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY")], acct

    # the cluster run measured exactly what the local run measured
    name = runs(tiny_config())[0].name  # sdgm-s0-<hash>
    rel = Path(f"results/runs/ptb/{name}/metrics.json")
    a = json.loads((local / rel).read_text())["metrics"]
    b = json.loads((cluster / rel).read_text())["metrics"]
    for key in ("val_ppl", "test_ppl", "cosine_val", "params", "steps"):
        assert a[key] == b[key], (key, a[key], b[key])
    for path in ("results/tables/main.csv", "results/figures/training_curves.png", f"results/samples/ptb/{name}.txt"):
        assert (cluster / path).stat().st_size > 0
