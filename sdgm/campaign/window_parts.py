"""The GPU window's parts (sdgm.campaign.window): what each runs, in what order of experiments, with which flags,
and what its outcome says; the environment part itself (`python -m sdgm.campaign.window part env`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

from ..common.atomic import write_json_atomic
from .window_env import project_requirements
from .window_records import RECORDS

REPO = Path(__file__).resolve().parents[2]
CAMPAIGN_STOP_S = 75.0  # the campaign is given this much less than its deadline: it stops Snakemake itself
BENCH_STOP_S = 10.0  # a benchmark's own budget is this much less than its part's deadline: it stops by itself
CORPUS = "wikitext2"  # the corpus of the efficiency claims (sdgm.bench.device's default)
# the device benchmark's flags, as results/cpu was measured (its bench/device.json names the command)
DEVICE_FLAGS = ("--repeats", "3", "--warmup", "1", "--new-tokens", "64", "--context-multiple", "1")


@dataclasses.dataclass(frozen=True)
class Part:
    name: str
    share: float  # of the window's minutes
    min_s: float  # not started with less time than this
    what: str


PARTS = (  # share of the window, and the least a part is started with
    Part("env", 0.03, 45, "environment record and the on-device check of the Triton kernels"),
    Part(
        "device",
        0.35,
        45,
        "device benchmark (python -m sdgm.bench.device): parameters, training and scoring speed "
        "and memory, generation; what the device's records lack first",
    ),
    Part("scaling", 0.15, 30, "scaling benchmark at the config's sizes (tokens and batch views), lengths that fit"),
    Part("gpu_tier", 0.25, 20, "pytest -m gpu: models, kernels, NVML, torch.compile, NCCL, one campaign wave"),
    Part("campaign", 1.0, CAMPAIGN_STOP_S + 15, "the campaign for the minutes left (seed 0 of every experiment first)"),
)


class WindowError(RuntimeError):
    pass


def part_command(window, name: str, part_dir: Path, seconds: float) -> tuple[list[str], Path] | str:
    """The part's command and working directory in `window` (a sdgm.campaign.window.Window), or why it cannot run
    here."""
    py, cfg = sys.executable, str(window.configfile)

    def bench_command(module: str, *flags: str) -> list[str]:
        """A benchmark's command: the window's config, records and device, `flags`, the time left to it."""
        budget = f"{max(1.0, seconds - BENCH_STOP_S):.0f}"
        out = str(window.dir / RECORDS)
        return [
            py,
            "-m",
            module,
            "--configfile",
            cfg,
            "--out",
            out,
            "--device",
            window.device,
            *flags,
            "--budget-s",
            budget,
        ]

    if name == "env":
        return [
            py,
            "-m",
            "sdgm.campaign.window",
            "part",
            "env",
            "--out",
            str(part_dir),
            "--device",
            window.device,
        ], REPO
    if name == "device":
        try:
            order, why = device_order(window.configfile, window.device_slug())
        except Exception as e:  # the benchmark still runs, in its default order
            order, why = [], f"the default order: the committed records could not be read ({e})"
        window.extra[name] = {"order": order, "order_reason": why}
        order_flags = ["--experiments", ",".join(order)] if order else []
        return bench_command(
            "sdgm.bench.device", "--corpus", CORPUS, *order_flags, *DEVICE_FLAGS, "--skip-scaling"
        ), REPO
    if name == "scaling":
        return bench_command("sdgm.bench.scaling"), REPO
    if name == "gpu_tier":
        tests = REPO / "tests" / "test_gpu.py"
        if not tests.is_file():
            return f"{tests.relative_to(REPO)} is not in this checkout"
        return [
            py,
            "-m",
            "pytest",
            str(tests),
            "-m",
            "gpu",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "sdgm.campaign.pytest_lines",
            f"--lines-to={part_dir / 'tests.jsonl'}",
            f"--junitxml={part_dir / 'junit.xml'}",
            f"--rootdir={REPO}",
        ], REPO
    if name == "campaign":
        import importlib.util

        if importlib.util.find_spec("snakemake") is None:  # the GPU machine has none, and no index to get it
            return "snakemake is not installed here: the campaign runs the workflow with it"
        minutes = (seconds - CAMPAIGN_STOP_S) / 60
        if minutes <= 0.2:
            return f"{seconds:.0f} s left: too little for the campaign to stop by itself at its deadline"
        window.directory.mkdir(parents=True, exist_ok=True)  # the campaign's workflow directory is its cwd
        cmd = [
            py,
            "-m",
            "sdgm.campaign",
            "run",
            "--configfile",
            cfg,
            "--minutes",
            f"{minutes:.2f}",
            "--directory",
            str(window.directory),
            "--archive-dir",
            str(part_dir),
        ]
        return cmd + (["--device-label", window.device_label] if window.device_label else []), window.directory
    raise WindowError(f"unknown part {name!r}")


def judge(name: str, rc: int | None, seconds: float, budget: float, part_dir: Path, records: Path) -> dict:
    """A finished part's status, seconds and reason from its exit status (None: stopped at its deadline), its log
    and what it wrote (the GPU tier's test lines, the benchmarks' records under `records`)."""
    out = {"seconds": round(seconds, 1), "deadline_s": round(budget, 1), "exit_status": rc}
    if name == "gpu_tier" and (part_dir / "tests.jsonl").is_file():  # finished tests, even when stopped
        out["tests"] = lines_summary(part_dir / "tests.jsonl")
    if name in ("device", "scaling"):
        out["records"] = bench_records(records, name)
    if rc is None:
        return {
            **out,
            "status": "stopped",
            "reason": f"stopped at its deadline of {budget:.0f} s",
            "log_tail": tail(part_dir / "log.txt"),
        }
    if name == "gpu_tier" and "tests" in out:
        s = out["tests"]
        if rc == 0 and s["tests"] and s["skipped"] == s["tests"]:
            return {**out, "status": "skipped", "reason": "; ".join(s["skip_reasons"]) or "every test skipped"}
    if rc != 0:
        return {**out, "status": "failed", "reason": f"exit status {rc}", "log_tail": tail(part_dir / "log.txt")}
    return {**out, "status": "ok"}


def tail(path: Path, n: int = 12) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def lines_summary(path: Path) -> dict:
    from .pytest_lines import summary

    return summary(path)


# ---- what the device's committed records lack ----------------------------------------------------------------------
def committed_records(slug: str, corpus: str = CORPUS, root: Path = REPO / "results") -> tuple[dict, list[str]]:
    """({"throughput": experiments, "generation": experiments}, folders) of the benchmark records committed under
    `root` (each results folder, and each device of the published store) whose provenance names the device of this
    slug, on `corpus`. An unreadable record counts as absent."""
    from ..reporting.claims import find_records
    from .store import device_slug

    have: dict[str, set] = {"throughput": set(), "generation": set()}
    folders = set()
    for folder in sorted(
        [p for p in root.glob("*") if p.is_dir()] + [p for p in root.glob("published/*") if p.is_dir()]
    ):
        found = find_records(folder)
        for kind in have:
            for path in found[kind]:
                try:
                    rec = json.loads(path.read_text(encoding="utf-8"))
                    named = device_slug(rec["provenance"]["device"], "")
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue
                if rec.get("kind") == kind and rec.get("corpus") == corpus and named == slug:
                    have[kind].add(rec.get("experiment"))
                    folders.add(folder.relative_to(root.parent).as_posix())
    return have, sorted(folders)


def device_order(configfile: Path, slug: str, root: Path = REPO / "results") -> tuple[list[str], str]:
    """The device benchmark's experiments (sdgm.bench.device's defaults), those the device's committed records lack
    first (with neither a throughput nor a generation record, then with one of them missing), else in the config's
    order; and why, in words."""
    from ..bench.device_run import default_experiments
    from ..harness.config import load_config

    experiments = default_experiments(load_config(configfile))
    have, folders = committed_records(slug, root=root)
    lacks = {e: [k for k in ("throughput", "generation") if e not in have[k]] for e in experiments}
    order = sorted(experiments, key=lambda e: -len(lacks[e]))  # stable: the config's order within a rank
    where = ", ".join(folders) or f"no committed records of {slug}"
    missing = "; ".join(f"{e}: no {' or '.join(lacks[e])}" for e in order if lacks[e]) or "nothing"
    return order, f"{where}: lacking {missing}"


def bench_records(records: Path, part: str) -> list[str]:
    """The records a benchmark part has written so far (paths under the records folder)."""
    globs = ("bench/throughput/*/*.json", "bench/generation/*/*.json") if part == "device" else ("bench/scaling.json",)
    return sorted(p.relative_to(records).as_posix() for g in globs for p in records.glob(g))


def part_env(out: Path, device: str) -> dict:
    import platform

    import torch

    from ..harness.provenance import provenance
    from ..harness.recipe import resolve_device
    from ..spectral.ops import resolve_impl

    dev = resolve_device(device)
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("triton", "numba", "nvidia-ml-py", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    missing = []  # the project's requirements (without torch and Triton) not installed here: `install` adds them
    for req in project_requirements():
        name = re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0]
        try:
            version(name)
        except PackageNotFoundError:
            missing.append(req)
    auto = resolve_impl("auto", dev)  # on CUDA: the kernel check runs here, once
    smi = None
    if dev.type == "cuda":
        try:
            smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError) as e:
            smi = f"nvidia-smi: {type(e).__name__}: {e}"
    rec = {
        "kind": "window_env",
        "provenance": provenance(dev),
        "versions": versions,
        "cuda_available": torch.cuda.is_available(),
        "device_count": torch.cuda.device_count(),
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "capability": list(torch.cuda.get_device_capability(dev)) if dev.type == "cuda" else None,
        "decoder_auto": auto,
        "missing_requirements": missing,
        "python_executable": sys.executable,
        "machine": platform.machine(),
        "nvidia_smi": smi,
    }
    write_json_atomic(out / "env.json", rec)
    print(json.dumps({k: rec[k] for k in ("decoder_auto", "versions", "missing_requirements")}), flush=True)
    print(f"torch {rec['provenance']['torch']} on {rec['provenance']['device']}", flush=True)
    return rec
