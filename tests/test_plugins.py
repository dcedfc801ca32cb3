"""Models from installed packages (entry-point group sdgm_bench.models): found, checked, trained, audited, tabled.

A plug-in is installed for real: a distribution's metadata (dist-info with entry_points.txt) and its module on
sys.path, which is all importlib.metadata reads, or the example package itself installed with pip.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from helpers import train_tiny

from sdgm.harness.config import ConfigError, check_config
from sdgm.models import catalog
from sdgm.models.contract import ContractError, check_model
from sdgm.reporting import build_report

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "ema-mixer"
LEAKY = '''
import torch
from ema_mixer import EMAMixer


class Peeking(EMAMixer):
    """Declares itself causal (the default) but adds the next token's embedding at every position."""

    def forward(self, idx):
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)
        return super().forward(idx) + self.head(self.embed(nxt))
'''


def install(root: Path, monkeypatch, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """Install distribution `dist` under `root` (put on sys.path): its modules and its model entry points."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{catalog.GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    monkeypatch.syspath_prepend(str(root))


@pytest.fixture
def example(tmp_path, monkeypatch):
    """The example package (examples/ema-mixer), installed as its pyproject declares it."""
    install(
        tmp_path / "site",
        monkeypatch,
        "sdgm-bench-ema-mixer",
        {"ema_mixer": "ema_mixer:EMAMixer"},
        {"ema_mixer": (EXAMPLE / "ema_mixer.py").read_text()},
    )
    return tmp_path / "site"


def test_example_declares_its_entry_point():
    import tomllib

    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    assert meta["entry-points"][catalog.GROUP] == {"ema_mixer": "ema_mixer:EMAMixer"}


def test_installed_model_is_found_built_and_passes_the_contract(example):
    assert catalog.entry("ema_mixer").package == "sdgm-bench-ema-mixer"
    assert list(catalog.models())[:6] == list(catalog.MODELS) and "ema_mixer" in catalog.models()
    audit = check_model("ema_mixer", vocab_size=40, seq_len=12, d_model=8)
    assert audit["passed"] and audit["declared_causal"]
    assert not catalog.has_mixing_vectors("ema_mixer") and catalog.options("ema_mixer") == {
        "seq_len",
        "d_model",
        "decay",
    }


ANY_LENGTH = """
from dataclasses import dataclass
from ema_mixer import EMAMixer


@dataclass
class AnyLengthConfig:  # no seq_len field: the model takes any length
    vocab_size: int = 40
    d_model: int = 8
    decay: float = 0.9
    seq_len = 64  # a class attribute, not a field: the window EMAMixer reads


class AnyLength(EMAMixer):
    Config = AnyLengthConfig
"""


def test_build_model_sets_the_shared_context_length_only_where_the_config_has_the_field(example, tmp_path, monkeypatch):
    """One rule for every caller (training, the device and untrained benchmarks, the contract): seq_len goes into the
    model's config where its dataclass has the field, is left out where not, and an option of its own must agree."""
    from sdgm.models.registry import build_model, model_options

    install(
        tmp_path / "more", monkeypatch, "any-length", {"any_length": "any_length:AnyLength"}, {"any_length": ANY_LENGTH}
    )
    assert build_model("ema_mixer", 40, seq_len=12, d_model=8).cfg.seq_len == 12
    assert build_model("any_length", 40, seq_len=12).max_context == 64
    assert model_options("any_length", {"d_model": 8}, 12) == {"d_model": 8}
    assert model_options("ema_mixer", {"d_model": 8}, 12) == {"seq_len": 12, "d_model": 8}
    assert model_options("ema_mixer", {"seq_len": 12}, None) == {"seq_len": 12}
    with pytest.raises(ValueError, match="model seq_len 8 differs from the shared context length 12"):
        model_options("ema_mixer", {"seq_len": 8}, 12)


def test_config_takes_a_plugin_and_checks_its_options(example):
    cfg = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    check_config(cfg)
    cfg["models"]["ema_mixer"]["n_layer"] = 2
    with pytest.raises(
        ConfigError,
        match=r"^models\.ema_mixer\.n_layer: model 'ema_mixer' \(package "
        r"'sdgm-bench-ema-mixer'\) has no option 'n_layer'; its options: ",
    ):
        check_config(cfg)
    del cfg["models"]["ema_mixer"]["n_layer"]
    cfg["gmm"]["experiments"] = ["ema_mixer"]
    with pytest.raises(ConfigError, match="'ema_mixer' trains ema_mixer, which has no mixing vectors"):
        check_config(cfg)


@pytest.mark.parametrize(
    "entries,modules,message",
    [
        ({"sdgm": "ema_mixer:EMAMixer"}, {}, r"package 'clash' registers model 'sdgm' .* is a built-in model"),
        (
            {"plain": "plain:Plain"},
            {"plain": "import torch\nclass Plain(torch.nn.Module):\n    pass\n"},
            r"model 'plain' \(from package 'clash'\): plain:Plain is not a subclass of sdgm.models.interface.LanguageModel",
        ),
        (
            {"noconf": "noconf:NoConf"},
            {"noconf": "from sdgm.models.interface import LanguageModel\nclass NoConf(LanguageModel):\n    pass\n"},
            r"model 'noconf' \(from package 'clash'\): noconf:NoConf has no class attribute `Config`",
        ),
        ({"broken": "ema_mixer"}, {}, r"package 'clash' registers model 'broken' .*: the entry must be 'module:Class'"),
        ({"gone": "no_such_module:Model"}, {}, r"model 'gone' \(from package 'clash'\): cannot import no_such_module"),
    ],
)
def test_a_bad_plugin_is_one_clear_error_naming_its_package(example, tmp_path, monkeypatch, entries, modules, message):
    install(tmp_path / "clash", monkeypatch, "clash", entries, modules)
    cfg = yaml.safe_load((EXAMPLE / "config.yaml").read_text())
    name = next(iter(entries))
    cfg["experiments"]["other"] = {"model": name, "corpora": ["ptb"]}
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_two_packages_registering_one_name_are_refused(example, tmp_path, monkeypatch):
    install(tmp_path / "second", monkeypatch, "second", {"ema_mixer": "ema_mixer:EMAMixer"}, {})
    with pytest.raises(
        catalog.PluginError, match="'sdgm-bench-ema-mixer' registers 'ema_mixer' too|'second' registers 'ema_mixer' too"
    ):
        catalog.entry("ema_mixer")


def test_a_leaky_plugin_is_caught_by_the_contract_the_audit_and_the_tables(example, tmp_path, monkeypatch, toy_tokens):
    install(tmp_path / "leaky", monkeypatch, "leaky", {"peeking": "peeking:Peeking"}, {"peeking": LEAKY})
    with pytest.raises(ContractError, match="model 'peeking': declares causal = True, but the largest change"):
        check_model("peeking", vocab_size=40, seq_len=12, d_model=8)
    recs = []
    for name in ("ema_mixer", "peeking"):
        train_tiny(
            toy_tokens,
            tmp_path / name,
            name,
            "ptb",
            {"d_model": 8},
            seq_len=16,
            batch_size=8,
            max_steps=4,
            lr=1e-2,
            log_every_steps=2,
        )
        recs.append(tmp_path / name / "run" / "metrics.json")
    audits = [json.loads(p.read_text())["metrics"]["causal_audit"] for p in recs]
    assert audits[0]["passed"] and not audits[1]["passed"] and audits[1]["declared_causal"]
    metrics = [json.loads(p.read_text()) for p in recs]
    assert (
        metrics[0]["metrics"]["flops_per_token"] is None and "does not implement" in metrics[0]["na"]["flops_per_token"]
    )
    build_report(recs, tmp_path / "tables", tmp_path / "figures")
    main = (tmp_path / "tables" / "main.md").read_text()
    assert "peeking (non-causal)" in main and "LEAKS future tokens" in main
    assert "ema_mixer (non-causal)" not in main


@pytest.mark.e2e
def test_example_package_runs_through_the_quick_dag_beside_sdgm(tmp_path):
    """The example installed with pip (into a directory of its own on PYTHONPATH), then the whole DAG with its
    config: its row stands in the tables beside SDGM's."""
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(tmp_path / "site"),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path / "site")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            str(EXAMPLE / "config.yaml"),
            "--cores",
            "2",
            "--show-failed-logs",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    res = tmp_path / "results-ema-mixer"
    main = (res / "tables" / "main.csv").read_text()
    assert "ema_mixer" in main and "sdgm" in main
    thr = (res / "tables" / "throughput.csv").read_text()
    assert "ema_mixer" in thr
    assert (res / "samples" / "ptb").glob("ema_mixer-s0-*.txt")
