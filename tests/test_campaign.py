"""The published store and the campaign: priorities, estimates, publishing, archives, clashes, kills, and (e2e) three
campaigns on a tiny config that share one store across a kill and two device labels."""

import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sdgm.campaign import archive, cli, costs, render, store, waves
from sdgm.common import importguard
from sdgm.harness.config import benchmarked_runs, check_config, runs
from sdgm.reporting import claims as C

REPO = Path(__file__).resolve().parents[1]
H100 = REPO / "results" / "h100"
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_config() -> dict:
    """The workflow's test case, shrunk: SDGM (with a GMM) and GPT-2 on PTB, seeds 0 and 1, 6 training steps."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["seeds"] = [0, 1]
    cfg["train"].update(
        max_steps=6, eval_every_steps=6, checkpoint_every_steps=6, log_every_steps=2, eval_max_windows=8
    )
    del cfg["experiments"]["sdgm_beta0"]
    check_config(cfg)
    return cfg


# ---- priorities, estimates, waves (no training) ------------------------------------------------------------------


def test_priority_is_seed_0_of_everything_first_main_before_ablations():
    order = costs.priority_order(PAPER)
    assert len(order) == 108
    assert [r.seed for r in order] == sorted(r.seed for r in order)
    first = order[:36]
    assert {r.seed for r in first} == {0}
    assert {(r.experiment, r.corpus) for r in first} == {
        (e, c) for e, x in PAPER["experiments"].items() for c in x["corpora"]
    }
    kinds = ["ablation_of" in PAPER["experiments"][r.experiment] for r in first]
    assert kinds == sorted(kinds)  # every main experiment of seed 0 before any ablation


def test_throughput_is_benchmarked_once_per_model_and_corpus_unless_asked():
    chosen = benchmarked_runs(PAPER)
    models = {(PAPER["experiments"][r.experiment]["model"], r.corpus) for r in runs(PAPER)}
    assert len(chosen) == len(models) == 12
    assert all(r.seed == 0 and "ablation_of" not in PAPER["experiments"][r.experiment] for r in chosen)
    every = json.loads(json.dumps(PAPER))
    every["benchmark"]["throughput"]["every_run"] = True
    check_config(every)
    assert benchmarked_runs(every) == runs(every)


def test_rates_come_from_the_committed_h100_records():
    rates = costs.measured_rates(H100)
    sdgm_ptb = json.loads((H100 / "runs/ptb/sdgm-s0/metrics.json").read_text())["metrics"]["train_tokens_per_s"]
    run = next(r for r in runs(PAPER) if (r.experiment, r.corpus, r.seed) == ("sdgm", "ptb", 0))
    assert rates.rate(PAPER, run, 8) == (sdgm_ptb, "sdgm on ptb, GPU shared")
    lstm = next(r for r in runs(PAPER) if r.experiment == "lstm" and r.corpus == "ptb")
    alone = rates.alone["lstm", "ptb"]
    assert rates.rate(PAPER, lstm, 1)[0] == alone
    assert rates.rate(PAPER, lstm, 8)[0] == pytest.approx(alone / rates.slowdown(PAPER))
    assert rates.slowdown(PAPER) > 1


def test_run_tokens_are_epochs_of_the_corpus_or_max_steps():
    run = next(r for r in runs(PAPER) if (r.experiment, r.corpus, r.seed) == ("sdgm", "ptb", 0))
    t = costs.run_tokens(PAPER, run)
    steps_per_epoch = 929589 // (32 * 128)
    assert t["train"] == steps_per_epoch * 10 * 32 * 128
    assert t["eval"] == 10 * 73760 + 73760 + 82430
    cfg = tiny_config()
    t = costs.run_tokens(cfg, runs(cfg)[0])
    assert t["train"] == 6 * 8 * 32 and t["eval"] == 1 * 8 * 32 + 73760 + 82430


def fake_rates(tmp_path):
    """Rates so high that a tiny run's estimate is its overhead alone."""
    p = tmp_path / "rates.csv"
    p.write_text("model,corpus,tokens_per_s\nsdgm,*,1e15\ngpt2,ptb,1e15\n")
    return p


def test_plan_fills_waves_in_priority_order_within_the_budget(tmp_path):
    cfg = tiny_config()
    rates = costs.measured_rates(None, None, fake_rates(tmp_path))
    pl = costs.plan(cfg, set(), rates, parallel=2, overhead_min=1.0, bench_min=0.0, minutes=1.5)
    assert [[(e["run"].experiment, e["run"].seed) for e in w] for w in pl["waves"]] == [[("sdgm", 0), ("gpt2", 0)]]
    assert [(e["run"].experiment, e["run"].seed) for e in pl["unplanned"]] == [("sdgm", 1), ("gpt2", 1)]
    # a throughput job runs alone after the trainings: it counts once per benchmarked run
    pl = costs.plan(cfg, set(), rates, parallel=2, overhead_min=1.0, bench_min=1.0, minutes=2.5)
    assert [[(e["run"].experiment, e["run"].seed) for e in w] for w in pl["waves"]] == [[("sdgm", 0), ("sdgm", 1)]]


def test_matrix_estimate_covers_every_run():
    est = costs.matrix_estimate(PAPER, costs.measured_rates(H100))
    assert sum(p["runs"] for p in est["parts"].values()) == 108
    assert est["allocations"] >= math_ceil((est["wave_min_total"] + est["alone_min_total"]) / 25)
    assert all(w <= 25 for w in est["waves"])
    assert "Whole matrix" in costs.format_estimate(est)


def math_ceil(x: float) -> int:
    return int(-(-x // 1))


def test_a_wave_past_the_deadline_is_stopped(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(waves, "snakemake_command", lambda *a: [sys.executable, "-c", "import time; time.sleep(120)"])
    t0 = time.monotonic()
    with open(tmp_path / "log", "w") as log:
        finished = waves.snakemake_wave(
            tmp_path / "c.yaml", tmp_path, ["x"], 1, 1, 1.0, tmp_path / "store", log, [], None
        )
    assert finished is False and time.monotonic() - t0 < 30
    assert "the time budget is spent" in capsys.readouterr().out


# ---- the store (no training): records from the committed H100 metrics --------------------------------------------


def fake_run(tmp_path: Path, corpus="ptb", experiment="sdgm", seed=0, device="NVIDIA H100 80GB HBM3", val=None):
    """A run's files as the workflow writes them, from the committed H100 metrics."""
    rec = json.loads((H100 / f"runs/{corpus}/{experiment}-s0/metrics.json").read_text())
    rec["seed"], rec["provenance"]["device"] = seed, device
    if val is not None:  # a record that agrees with itself: the perplexity is exp of its NLL
        rec["metrics"]["val_ppl"], rec["metrics"]["val_nll"] = val, math.log(val)
    d = tmp_path / "work" / corpus / f"{experiment}-s{seed}-{device[:4]}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.json").write_text(json.dumps(rec))
    (d / "samples.txt").write_text((H100 / f"samples/{corpus}/{experiment}-s0.txt").read_text())
    return d


def publish(st, d, cfg_hash="aaaaaaaa", **kw):
    return store.publish_run(st, d / "metrics.json", PAPER, cfg_hash, samples=d / "samples.txt", **kw)


def test_publish_writes_a_verified_record_and_again_is_a_no_op(tmp_path):
    st = tmp_path / "store"
    d = fake_run(tmp_path)
    target, new = publish(st, d)
    assert new and target == st / "nvidia-h100-80gb-hbm3" / "runs" / "ptb" / "sdgm-s0"
    m = store.verify_record(target)
    assert m["run_hash"] == "aaaaaaaa" and m["run_id"] == "ptb/sdgm-s0-aaaaaaaa" and m["commit"]
    assert set(m["files"]) == {"metrics.json", "samples.txt", "config.yaml"}
    before = (target / "manifest.json").stat().st_mtime_ns
    assert publish(st, d) == (target, False)
    assert (target / "manifest.json").stat().st_mtime_ns == before
    assert store.verify_store(st) == []


def test_a_clashing_hash_is_refused_naming_both(tmp_path):
    st = tmp_path / "store"
    d = fake_run(tmp_path)
    target, _ = publish(st, d, "aaaaaaaa")
    with pytest.raises(store.StoreError) as e:
        publish(st, d, "bbbbbbbb")
    msg = str(e.value)
    assert "ptb/sdgm-s0-aaaaaaaa" in msg and "ptb/sdgm-s0-bbbbbbbb" in msg and str(target) in msg and str(d) in msg
    assert store.read_manifest(target)["run_hash"] == "aaaaaaaa"  # untouched
    # the same hash with other files is refused too
    (d / "samples.txt").write_text("# samples from something else: prompt 'x'\n")
    with pytest.raises(store.StoreError, match="same run hash but other files"):
        publish(st, d, "aaaaaaaa")


def test_device_label_overrides_the_recorded_device(tmp_path, monkeypatch):
    assert store.device_slug("cpu (x86_64, 2 logical cores, 1 torch threads)") == "cpu"
    monkeypatch.setenv(store.DEVICE_ENV, "Lab A100 #2")
    target, _ = publish(tmp_path / "store", fake_run(tmp_path))
    assert target.parts[-4] == "lab-a100-2"


def test_a_publish_killed_midway_leaves_nothing_and_the_next_one_completes(tmp_path):
    st, d = tmp_path / "store", fake_run(tmp_path)
    # a process killed (os._exit: no cleanup) after copying its first file
    code = (
        "import os, shutil, sys; from pathlib import Path; from sdgm.campaign import store\n"
        "real = shutil.copyfile\n"
        "def dying(*a, **k):\n    real(*a, **k); os._exit(9)\n"
        "shutil.copyfile = dying\n"
        f"store.publish_run({str(st)!r}, Path({str(d / 'metrics.json')!r}), {{}}, 'aaaaaaaa', "
        f"samples=Path({str(d / 'samples.txt')!r}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert store.record_dirs(st) == []  # no record, only a temporary
    assert list((st / "nvidia-h100-80gb-hbm3" / "runs" / "ptb").glob("sdgm-s0.part-*"))
    target, new = publish(st, d)
    assert new and store.verify_store(st) == []
    assert not list(target.parent.glob("*.part-*"))


def test_two_devices_pack_import_and_render_grouped_by_device(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for corpus in ("ptb", "wikitext2"):
        for exp in ("sdgm", "gpt2"):
            publish(a, fake_run(tmp_path, corpus, exp, 0, "NVIDIA H100 80GB HBM3"))
            publish(b, fake_run(tmp_path, corpus, exp, 0, "NVIDIA A100-SXM4-40GB", val=1234.5))
    arch_a = archive.pack(a, store.record_dirs(a), tmp_path / "a.tar.gz")
    archive.pack(b, store.record_dirs(b), tmp_path / "b.tar.gz")
    assert arch_a["bytes"] <= archive.ARCHIVE_LIMIT and not arch_a["left_out"]
    merged = tmp_path / "merged"
    res = archive.import_archives([tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"], merged)
    assert len(res["new"]) == 8 and not res["refused"]
    again = archive.import_archives([tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"], merged)
    assert again["new"] == [] and len(again["same"]) == 8
    by_dev = store.published_files(merged, "metrics")
    assert sorted(by_dev) == ["nvidia-a100-sxm4-40gb", "nvidia-h100-80gb-hbm3"]
    render.render_store(merged)
    h100 = (merged / "nvidia-h100-80gb-hbm3" / "tables" / "main.md").read_text()
    a100 = (merged / "nvidia-a100-sxm4-40gb" / "tables" / "main.md").read_text()
    assert "1234.5" in a100 and "1234.5" not in h100  # never one mean over devices
    assert "nvidia-a100-sxm4-40gb" in (merged / "README.md").read_text()
    # the claims judged per device, from the published records alone (no weights, no results folder)
    claims = {d: pd.read_csv(merged / d / "tables" / "claims.csv") for d in by_dev}
    a100_ppl = claims["nvidia-a100-sxm4-40gb"].set_index("id").loc["ptb-val-ppl", "ours_value"]
    assert (
        a100_ppl == 1234.5
        and claims["nvidia-h100-80gb-hbm3"].set_index("id").loc["ptb-val-ppl", "ours_value"] != 1234.5
    )
    assert C.find_records(merged / "nvidia-a100-sxm4-40gb")["metrics"]  # a device folder is a --records folder
    assert store.verify_store(merged) == []


def test_a_record_with_its_quality_record_is_imported_and_judges_generation_quality(tmp_path):
    """A record carrying its quality record (rule score_samples) goes through publish, pack, import and verify, and
    a device folder of the store judges the generation-quality claim from it; a record without one stays valid."""
    a, merged = tmp_path / "a", tmp_path / "merged"
    for exp in ("sdgm", "gpt2", "linformer", "transformer_xl"):
        target, _ = publish(a, fake_run(tmp_path, "ptb", exp), quality=H100 / f"quality/ptb/{exp}-s0.json")
        assert "quality.json" in store.verify_record(target)["files"]
    publish(a, fake_run(tmp_path, "wikitext2", "sdgm"))  # an older record: no quality.json
    archive.pack(a, store.record_dirs(a), tmp_path / "a.tar.gz")
    res = archive.import_archives([tmp_path / "a.tar.gz"], merged)
    assert len(res["new"]) == 5 and res["refused"] == [], res
    assert store.verify_store(merged) == []
    dev = merged / "nvidia-h100-80gb-hbm3"
    assert len(store.published_files(merged, "quality")[dev.name]) == 4
    found = C.find_records(dev)
    assert sorted(p.parent.name for p in found["quality"]) == [
        "gpt2-s0",
        "linformer-s0",
        "sdgm-s0",
        "transformer_xl-s0",
    ]
    committed = pd.read_csv(H100 / "tables" / "claims.csv").set_index("id").loc["ptb-generation-quality"]
    render.render_store(merged)
    for tables in (dev / "tables", C.build_claims(tmp_path / "tables", **found)["claims_csv"].parent):
        rows = pd.read_csv(tables / "claims.csv").set_index("id")
        row = rows.loc["ptb-generation-quality"]
        # judged from the store's quality records: the same verdict and numbers as from the results folder
        assert (row["verdict"], row["reason"]) == (committed["verdict"], committed["reason"])
        assert row["ours_value"] == pytest.approx(committed["ours_value"])
        assert "runs/ptb/sdgm-s0/quality.json" in row["evidence"]
        wt2 = rows.loc["wt2-generation-quality"]
        assert wt2["verdict"] == "not measured" and "no quality record" in wt2["reason"]


def test_pack_leaves_out_what_exceeds_the_limit(tmp_path):
    st = tmp_path / "store"
    for exp in ("sdgm", "gpt2", "linformer"):
        publish(st, fake_run(tmp_path, "ptb", exp))
    one = archive.pack(st, store.record_dirs(st)[:1], tmp_path / "o.tar.gz")["bytes"]
    recs = store.record_dirs(st)
    res = archive.pack(st, recs, tmp_path / "x.tar.gz", limit=one)
    assert res["records"] == recs[:1] and res["left_out"] == recs[1:] and res["bytes"] <= one
    with pytest.raises(costs.CampaignError, match="over the"):
        archive.pack(st, recs, tmp_path / "y.tar.gz", limit=one // 2)
    assert not (tmp_path / "y.tar.gz").exists()


def test_import_refuses_a_clashing_record_naming_both(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    publish(a, fake_run(tmp_path), "aaaaaaaa")
    publish(b, fake_run(tmp_path), "cccccccc")
    archive.pack(b, store.record_dirs(b), tmp_path / "b.tar.gz")
    res = archive.import_archives([tmp_path / "b.tar.gz"], a)
    assert res["new"] == [] and len(res["refused"]) == 1
    msg = res["refused"][0]
    assert "ptb/sdgm-s0-aaaaaaaa" in msg and "ptb/sdgm-s0-cccccccc" in msg and "b.tar.gz" in msg
    assert cli.main(["import", str(tmp_path / "b.tar.gz"), "--store", str(a)]) == 1


def test_import_refuses_unsafe_archives(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        p = tmp_path / "x"
        p.write_text("x")
        tar.add(p, arcname="../x")
    with pytest.raises(costs.CampaignError, match="refusing member"):
        archive.import_archives([bad], tmp_path / "store")


# ---- three campaigns on the tiny config (trains for real) --------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def run_cli(args, env_extra, **kw):
    env = {**os.environ, waves.CLOCK_ENV: "estimate", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "sdgm.campaign", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        **kw,
    )


@pytest.mark.e2e
def test_campaigns_accumulate_across_budget_kill_and_devices(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cfg = tiny_config()
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rates = fake_rates(tmp_path)
    base = [
        "--configfile",
        str(work / "config.yaml"),
        "--directory",
        str(work),
        "--rates",
        str(rates),
        "--overhead-min",
        "1",
        "--bench-min",
        "0",
        "--cores",
        "2",
    ]
    st = work / "results" / "published"
    hashes = {(r.experiment, r.seed): r.run_hash for r in runs(cfg)}
    # every job may import only what its rule's environment provides (rule store_run: the report environment)
    (tmp_path / "import-plan.json").write_text(json.dumps(importguard.plan(REPO)))
    guard = {importguard.ENV_VAR: str(tmp_path / "import-plan.json")}
    t0 = time.monotonic()

    # 1. a budget for one wave of two runs: seed 0 of both experiments is published, the rest waits
    r = run_cli(["run", "--minutes", "1.5", "--parallel", "2", "--device-label", "gpu-a", *base], guard)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "does not fit" in r.stdout
    mans = {(m["experiment"], m["seed"]): m for _, m in store.manifests(st)}
    assert set(mans) == {("sdgm", 0), ("gpt2", 0)} and {m["device_slug"] for m in mans.values()} == {"gpu-a"}
    assert all(mans[k]["run_hash"] == hashes[k] for k in mans)
    sdgm0 = store.record_dir(st, "gpu-a", "ptb", "sdgm", 0)
    assert {"gmm.json", "throughput.json", "figures/atoms.png", "samples.txt", "quality.json"} <= set(
        mans["sdgm", 0]["files"]
    )
    archives_a = sorted(work.glob("results/campaign-gpu-a-*.tar.gz"))
    assert len(archives_a) == 1
    print(f"campaign 1: {time.monotonic() - t0:.0f} s")

    # 2. a campaign killed (the allocation ends) as soon as it has published one record
    env = {**os.environ, waves.CLOCK_ENV: "estimate", **guard}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdgm.campaign",
            "run",
            "--minutes",
            "10",
            "--parallel",
            "1",
            "--device-label",
            "gpu-b",
            *base,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 900
        while not list(st.glob("gpu-b/runs/*/*/manifest.json")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the campaign ended before it was killed"
            time.sleep(0.5)
    finally:
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert store.verify_store(st) == []
    published = {(m["experiment"], m["seed"]) for _, m in store.manifests(st)}
    assert published == {("sdgm", 0), ("gpt2", 0), ("sdgm", 1)}  # seed 1 in priority order: sdgm first
    print(f"campaign 2 (killed): {time.monotonic() - t0:.0f} s")

    # 3. the next campaign publishes only what is left, and redoes nothing
    stamps = {
        p: p.stat().st_mtime_ns
        for p in [*work.glob("results/runs/*/*/metrics.json"), *st.glob("*/runs/*/*/manifest.json")]
    }
    r = run_cli(["run", "--minutes", "10", "--parallel", "2", "--device-label", "gpu-b", *base], guard)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every run of the config is published" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {(m["experiment"], m["seed"]) for _, m in store.manifests(st)} == set(hashes)
    print(f"campaign 3: {time.monotonic() - t0:.0f} s")

    # the two devices' records, packed and imported into one store twice, render one set of tables per device
    r = run_cli(["pack", "--store", str(st), "--device", "gpu-b", "--out", str(tmp_path / "b.tar.gz")], {})
    assert r.returncode == 0, r.stderr
    merged = tmp_path / "merged"
    for _ in range(2):
        r = run_cli(["import", str(archives_a[0]), str(tmp_path / "b.tar.gz"), "--store", str(merged)], {})
        assert r.returncode == 0, r.stderr
    assert "imported 0 new record(s), 4 already there" in r.stdout
    for dev in ("gpu-a", "gpu-b"):
        main = (merged / dev / "tables" / "main.csv").read_text()
        assert "sdgm" in main and "gpt2" in main
        assert (merged / dev / "tables" / "samples.md").is_file()
    assert (merged / "gpu-a" / "tables" / "throughput.md").is_file()
    assert store.verify_store(merged) == []
    assert store.verify_record(sdgm0)["device_slug"] == "gpu-a"
