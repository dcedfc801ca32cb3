"""What a campaign runs first and how long each run takes: the priority order of the config's runs, their tokens,
the training rates measured on a device (committed records, the store's own, or a table), and the waves of runs
that fit a time budget; also the estimate of the whole matrix (docs/campaign.md). sdgm.campaign.waves runs the
waves.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..harness.config import Run, ablations, benchmarked_runs, runs
from .store import published_files

REPO = Path(__file__).resolve().parents[2]
H100_RECORDS = REPO / "results" / "h100"
# Trainings at once on one GPU. The one sharing measured: results/h100 step 2 trained 10 runs with --cores 16 and
# 2 threads per training, so at most 8 at once (5 min 2 s; README there). Not tuned beyond that.
DEFAULT_PARALLEL = 8
DEFAULT_OVERHEAD_MIN = 1.0  # per run: process start, compile, GMM fit, samples (an assumption, not measured)
DEFAULT_BENCH_MIN = 1.5  # per benchmarked run: the throughput job, alone on the device (an assumption)


class CampaignError(RuntimeError):
    pass


def priority_order(config: dict) -> list[Run]:
    """Seed by seed (in the config's order); within a seed the main experiments, then the ablations, each in the
    config's order and on every corpus."""
    abl = ablations(config)
    names = list(config["experiments"])
    seeds = list(config["seeds"])
    return sorted(runs(config), key=lambda r: (seeds.index(r.seed), r.experiment in abl, names.index(r.experiment)))


def run_tokens(config: dict, run: Run) -> dict:
    """Upper bounds of the tokens one run processes: training (every epoch, no early stop, or max_steps) and
    evaluation (each validation, then the final validation and test), from the corpus's expected token counts."""
    exp = config["experiments"][run.experiment]
    t = {**config["train"], **exp.get("train", {})}
    expected = config["corpora"][run.corpus].get("expected") or {}
    for key in ("train_tokens", "valid_tokens", "test_tokens"):
        if key not in expected:
            raise CampaignError(f"corpora.{run.corpus}.expected.{key}: needed to estimate the run's time")
    window = t.get("train_seq_len") or t["seq_len"]
    steps_per_epoch = max(1, expected["train_tokens"] // (t["batch_size"] * window))
    steps = steps_per_epoch * t["epochs"]
    if t.get("max_steps"):
        steps = min(steps, t["max_steps"])
    train = steps * t["batch_size"] * window
    per_eval = expected["valid_tokens"]
    if t.get("eval_max_windows"):
        per_eval = min(per_eval, t["eval_max_windows"] * t["seq_len"])
    evals = steps // t["eval_every_steps"] if t.get("eval_every_steps") else math.ceil(steps / steps_per_epoch)
    evaluation = evals * per_eval + expected["valid_tokens"] + expected["test_tokens"]
    return {"train": train, "eval": evaluation, "steps": steps}


@dataclass
class TrainingRates:
    """Measured training rates (tokens/s): `shared` per (experiment, corpus), from runs that trained beside others
    on the GPU; `alone` per (model, corpus), from throughput records with the device to itself; `given` per
    (model, corpus) or (model, "*"), from a --rates table, used before anything else."""

    shared: dict
    alone: dict
    given: dict
    sources: list

    def slowdown(self, config: dict) -> float:
        """The largest measured ratio of a model's rate alone to the rate of one of its runs beside others (1 when
        nothing was measured both ways)."""
        ratios = [
            a / v
            for (m, c), a in self.alone.items()
            for (e, c2), v in self.shared.items()
            if c2 == c and config["experiments"].get(e, {}).get("model") == m
        ]
        return max(ratios, default=1.0)

    def rate(self, config: dict, run: Run, parallel: int) -> tuple[float, str]:
        model = config["experiments"][run.experiment]["model"]
        for key in ((model, run.corpus), (model, "*")):
            if key in self.given:
                return self.given[key], f"given for {key[0]} on {key[1]}"
        alone = self.alone.get((model, run.corpus)) or min(
            [v for (m, _), v in self.alone.items() if m == model], default=None
        )
        if parallel == 1 and alone:
            return alone, f"{model} alone on the GPU"
        if (run.experiment, run.corpus) in self.shared:
            return self.shared[run.experiment, run.corpus], f"{run.experiment} on {run.corpus}, GPU shared"
        same_model = [
            v
            for (e, c), v in self.shared.items()
            if c == run.corpus and config["experiments"].get(e, {}).get("model") == model
        ]
        if same_model:
            return min(same_model), f"slowest {model} run on {run.corpus}, GPU shared"
        if alone:
            f = self.slowdown(config)
            return alone / f, f"{model} alone / {f:.2f}, the largest measured slowdown beside other runs"
        raise CampaignError(
            f"no measured training rate for model {model!r} (run {run.corpus}/{run.name}): give one "
            f"with --rates (CSV: model,corpus,tokens_per_s)"
        )


def _metrics_rates(paths, experiments: set | None = None) -> dict:
    out: dict = {}
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text(encoding="utf-8"))
            v = rec["metrics"].get("train_tokens_per_s")
        except (OSError, ValueError, KeyError):
            continue
        if isinstance(v, (int, float)) and v > 0:
            key = (rec["experiment"], rec["corpus"])
            out[key] = min(v, out.get(key, v))  # the slowest measurement: estimates err on the long side
    return out


def measured_rates(
    records: str | Path | None = H100_RECORDS, store: str | Path | None = None, given: str | Path | None = None
) -> TrainingRates:
    """Rates from committed records (`records`: runs/*/*/metrics.json and tables/throughput.csv, as results/h100),
    the store's published metrics, and a --rates CSV (model,corpus,tokens_per_s; corpus * for any)."""
    shared: dict = {}
    alone: dict = {}
    sources = []
    if records is not None and Path(records).is_dir():
        records = Path(records)
        shared.update(_metrics_rates(sorted(records.glob("runs/*/*/metrics.json"))))
        table = records / "tables" / "throughput.csv"
        if table.is_file():
            with open(table, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh):
                    with contextlib.suppress(KeyError, ValueError):
                        alone[row["model"], row["corpus"]] = float(row["train_tok_s"])
            sources.append(str(table))
        sources.append(str(records / "runs"))
    if store is not None:
        for key, v in _metrics_rates([p for ps in published_files(store, "metrics").values() for p in ps]).items():
            shared[key] = min(v, shared.get(key, v))
        sources.append(str(store))
    table = {}
    if given is not None:
        with open(given, newline="", encoding="utf-8") as fh:
            for i, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    table[row["model"], row.get("corpus") or "*"] = float(row["tokens_per_s"])
                except (KeyError, ValueError, TypeError) as e:
                    raise CampaignError(f"{given}:{i}: need model,corpus,tokens_per_s ({e})") from e
        sources.append(str(given))
    return TrainingRates(shared, alone, table, sources)


def estimate_run(
    config: dict, run: Run, rates: TrainingRates, parallel: int, overhead_min: float, bench_min: float, benchmarked: set
) -> dict:
    tokens = run_tokens(config, run)
    rate, why = rates.rate(config, run, parallel)
    bench = bench_min * 60 if run in benchmarked else 0.0
    train_s = (tokens["train"] + tokens["eval"]) / rate + overhead_min * 60
    return {
        "run": run,
        "tokens": tokens,
        "rate": rate,
        "rate_source": why,
        "train_s": train_s,
        "bench_s": bench,
        "seconds": train_s + bench,
    }


def wave_seconds(estimates: list[dict]) -> float:
    """Runs of a wave train at once; their throughput jobs run alone afterwards, one after the other."""
    return max(e["train_s"] for e in estimates) + sum(e["bench_s"] for e in estimates) if estimates else 0.0


def next_wave(todo: list[dict], remaining_s: float, parallel: int) -> list[dict]:
    """The highest-priority runs, at most `parallel`, that finish together within `remaining_s`."""
    wave: list[dict] = []
    for e in todo:
        if len(wave) < parallel and wave_seconds([*wave, e]) <= remaining_s:
            wave.append(e)
    return wave


def plan(
    config: dict,
    done: set[str],
    rates: TrainingRates,
    parallel: int,
    overhead_min: float,
    bench_min: float,
    minutes: float | None = None,
    wave_limit_min: float | None = None,
) -> dict:
    """The waves a campaign of `minutes` would run (None: no limit), each at most `wave_limit_min` long, given the
    run hashes already published (`done`)."""
    bench = set(benchmarked_runs(config))
    todo, finished = [], []
    for r in priority_order(config):
        (finished if r.run_hash in done else todo).append(r)
    ests = [estimate_run(config, r, rates, parallel, overhead_min, bench_min, bench) for r in todo]
    waves, left, remaining = [], list(ests), (minutes * 60 if minutes is not None else math.inf)
    while left:
        w = next_wave(left, min(remaining, wave_limit_min * 60 if wave_limit_min else math.inf), parallel)
        if not w:
            break
        waves.append(w)
        remaining -= wave_seconds(w)
        left = [e for e in left if e not in w]
    return {"finished": finished, "todo": ests, "waves": waves, "unplanned": left}


# ---- the whole matrix ----------------------------------------------------------------------------------------------


def matrix_estimate(
    config: dict,
    rates: TrainingRates,
    parallel: int = DEFAULT_PARALLEL,
    overhead_min: float = DEFAULT_OVERHEAD_MIN,
    bench_min: float = DEFAULT_BENCH_MIN,
    allocation_min: float = 25.0,
) -> dict:
    """GPU-minutes of every run of `config` by part (main experiments, ablations; by seed rank), as the campaign
    plans them, and the allocations of `allocation_min` minutes its waves need (a wave never spans two)."""
    abl = ablations(config)
    bench = set(benchmarked_runs(config))
    parts: dict = {}
    for r in priority_order(config):
        e = estimate_run(config, r, rates, parallel, overhead_min, bench_min, bench)
        part = (
            "ablations" if r.experiment in abl else "main experiments",
            "seed 0" if r.seed == config["seeds"][0] else "later seeds",
        )
        p = parts.setdefault(part, {"runs": 0, "tokens": 0, "gpu_min_shared": 0.0})
        p["runs"] += 1
        p["tokens"] += e["tokens"]["train"] + e["tokens"]["eval"]
        p["gpu_min_shared"] += e["seconds"] / 60
    pl = plan(config, set(), rates, parallel, overhead_min, bench_min, wave_limit_min=allocation_min)
    waves = [wave_seconds(w) / 60 for w in pl["waves"]]
    # runs too long for one allocation beside others: alone on the GPU (--parallel 1), one wave each
    alone = [estimate_run(config, e["run"], rates, 1, overhead_min, bench_min, bench) for e in pl["unplanned"]]
    allocations, left = 0, 0.0
    for w in waves + [a["seconds"] / 60 for a in alone]:  # in order: a wave starts only if it ends in the allocation
        if w > allocation_min:
            raise CampaignError(f"{w:.1f} min: longer than one {allocation_min:g}-minute allocation even alone")
        if allocations == 0 or w > left:
            allocations, left = allocations + 1, allocation_min
        left -= w
    return {
        "parts": parts,
        "waves": waves,
        "wave_min_total": sum(waves),
        "allocations": allocations,
        "alone_min_total": sum(a["seconds"] for a in alone) / 60,
        "allocation_min": allocation_min,
        "parallel": parallel,
        "slowdown": rates.slowdown(config),
        "too_long": [(e["run"], e["seconds"] / 60, a["seconds"] / 60) for e, a in zip(pl["unplanned"], alone)],
    }


def format_estimate(est: dict) -> str:
    lines = ["| part | runs | tokens (upper bound) | run-minutes at the shared rate |", "|---|---|---|---|"]
    for (kind, seeds), p in sorted(est["parts"].items(), key=lambda kv: (kv[0][1] != "seed 0", kv[0][0])):
        lines.append(f"| {kind}, {seeds} | {p['runs']} | {p['tokens']:,} | {p['gpu_min_shared']:.1f} |")
    tot = {k: sum(p[k] for p in est["parts"].values()) for k in ("runs", "tokens", "gpu_min_shared")}
    lines.append(f"| all | {tot['runs']} | {tot['tokens']:,} | {tot['gpu_min_shared']:.1f} |")
    lines += [
        "",
        f"{len(est['waves'])} waves of at most {est['parallel']} runs at once: "
        f"{est['wave_min_total']:.1f} GPU-minutes (longest wave {max(est['waves'], default=0):.1f} min).",
    ]
    if est["too_long"]:
        lines += [
            "",
            f"{len(est['too_long'])} run(s) do not fit one {est['allocation_min']:g}-minute allocation "
            f"beside others (minutes beside others; alone, --parallel 1):",
        ]
        lines += [f"- {r.corpus}/{r.name}: {shared:.1f}; alone {alone:.1f}" for r, shared, alone in est["too_long"]]
        lines += ["", f"Alone, one after the other: {est['alone_min_total']:.1f} GPU-minutes."]
    total = est["wave_min_total"] + est["alone_min_total"]
    lines += [
        "",
        f"Whole matrix: {total:.1f} GPU-minutes in {est['allocations']} allocations of "
        f"{est['allocation_min']:g} minutes (a wave starts only if it ends inside its allocation).",
    ]
    lines += ["", f"Largest measured slowdown beside other runs: {est['slowdown']:.2f}."]
    return "\n".join(lines)
