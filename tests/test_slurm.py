"""The Slurm profile on a real single-node Slurm cluster (slurmctld + slurmd + slurmdbd/MariaDB on localhost).

Needs root and Debian's slurm-wlm, slurmdbd, munge and mariadb-server (`.ci/run` installs them); on a machine
without them the test is skipped, naming what is missing (it fails instead where SDGM_REQUIRE_SLURM=1, as in CI).
The test starts the cluster, runs a small pipeline once locally and once through
`--profile workflow/profiles/slurm`, checks that the jobs went through Slurm (sacct) and that both runs measured
the same numbers, then stops the cluster.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from helpers import REPO, logged_steps, one_run_config, snakemake, snakemake_command, write_config

from sdgm.harness.config import runs

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
pytestmark = [pytest.mark.slurm, pytest.mark.needs("slurm")]  # its programs, and root: the cluster starts as root


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
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
    cfg = one_run_config(gmm=True)
    # long enough to be interrupted partway (below); checkpoints every 100 steps, so a resume from the SIGTERM's
    # own checkpoint is told apart from one at a periodic checkpoint
    cfg["train"].update(max_steps=400, eval_every_steps=200, checkpoint_every_steps=100, log_every_steps=10)
    cfg["job_resources"] = {
        "train": {"threads": 1, "mem_mb": 2000, "runtime": 15, "gpu": 0},
        "default": {"threads": 1, "mem_mb": 2000, "runtime": 15, "gpu": 0},
    }
    return cfg


def test_pipeline_through_slurm_matches_local_run(slurm, tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    for d in (local, cluster):
        write_config(d, tiny_config())

    r = snakemake("--configfile", "tiny.yaml", "--cores", "2", cwd=local, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]

    # the cluster run; its training job gets SIGTERM through Slurm partway (as at a time limit, with the profile's
    # --signal, or on preemption): it checkpoints that step and fails, Snakemake's retry resubmits it, and the
    # resubmitted job resumes at that step, losing nothing
    name = runs(tiny_config())[0].name  # sdgm-s0-<hash>
    steps_log = cluster / "results" / "checkpoints" / "ptb" / name / "log.jsonl"
    proc = subprocess.Popen(
        snakemake_command(
            "--configfile",
            "tiny.yaml",
            "--profile",
            str(REPO / "workflow" / "profiles" / "slurm"),
            "--slurm-init-seconds-before-status-checks",
            "5",
            "--jobs",
            "2",
        ),
        cwd=cluster,
        env=slurm,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, signalled = time.time() + 900, None
    while signalled is None and time.time() < deadline and proc.poll() is None:
        steps = [s for s in logged_steps(steps_log) if s < 400]
        if steps and 150 <= max(steps) < 350:
            jobs = subprocess.run(["squeue", "-h", "-o", "%i|%k"], env=slurm, capture_output=True, text=True).stdout
            train = [line.split("|")[0] for line in jobs.splitlines() if "rule_train" in line]
            if train:
                subprocess.run(["scancel", "--signal=TERM", train[0]], env=slurm, check=True)
                signalled = max(steps)
        time.sleep(0.2)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-6000:]
    assert signalled is not None, "the training job was never seen between steps 150 and 350"
    train_log = (cluster / "results" / "logs" / "train" / "ptb" / f"{name}.log").read_text()
    resumed = [int(m.group(1)) for m in re.finditer(r"resuming sdgm on ptb from step (\d+)", train_log)]
    assert resumed and resumed[0] >= signalled, (signalled, train_log[-3000:])  # its own checkpoint, not step 100
    assert "executor: slurm" in out.lower() or "slurm" in out.lower()

    # every job was a Slurm job and finished COMPLETED, as accounting recorded it
    acct = (
        subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,JobName,State,ExitCode", "-S", "now-1hour"],
            env=slurm,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()
    )
    states = [line.split("|")[2] for line in acct]
    n_jobs = 7  # tokenize, train, fit_gmm, sample, the atoms figures, throughput, scaling, generation, ...
    assert states.count("COMPLETED") >= n_jobs, acct
    # trivial jobs (the workflow's localrules) ran beside Snakemake, never queued
    assert re.search(r"^localrule report:", out, re.M) and re.search(r"^rule train:", out, re.M), out[-6000:]
    assert states.count("FAILED") == 1, acct  # the interrupted training attempt (status 143), then resubmitted
    assert not [s for s in states if s in ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY")], acct

    # the cluster run, interrupted and resumed, measured exactly what the local run measured
    rel = Path(f"results/runs/ptb/{name}/metrics.json")
    a = json.loads((local / rel).read_text())["metrics"]
    b = json.loads((cluster / rel).read_text())["metrics"]
    for key in ("val_ppl", "test_ppl", "cosine_val", "params", "steps"):
        assert a[key] == b[key], (key, a[key], b[key])
    for path in ("results/tables/main.csv", "results/figures/training_curves.png", f"results/samples/ptb/{name}.txt"):
        assert (cluster / path).stat().st_size > 0
