"""Test-session setup, the fixtures shared by several test files, and optional components.

Plain helpers shared by the test files are in helpers.py. A test that needs an optional component (Triton, a
Slurm installation) says so with `@pytest.mark.needs("triton")`: where the component is missing it is skipped
with a reason naming what is missing and how to install it (listed by `-rs`, which pyproject.toml's addopts
sets), unless the component's environment variable (SDGM_REQUIRE_TRITON, SDGM_REQUIRE_SLURM) is 1: then it
fails with that reason, as in CI. A test marked `gpu` (the GPU tier) needs a CUDA device the same way
(SDGM_REQUIRE_GPU=1 on a GPU machine turns its skip into a failure). `needs("triton")` means Triton's compiled kernels
on a test marked gpu, and Triton's interpreter (set up here only where there is no CUDA device) on any other.
"""

import dataclasses
import gc
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

# Triton reads this when it is imported: without a GPU its kernels then run on CPU tensors by its interpreter, so
# the fused spectral decoder's kernels are tested here too (tests/test_spectral_op.py). With a CUDA device the
# kernels are compiled and the GPU tier tests those, never the interpreter. Nothing else in the project uses Triton,
# and decoder "auto" never picks Triton on a CPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import write_grammar_tokens, write_toy_corpus

from sdgm.data.tokens import tokenize_corpus

# One intra-op thread in the test process. The models here are tiny, so a second thread gains nothing, and on a
# machine whose cores are busy with other work two threads that wait on each other made single tests 3-10x slower.
# (Training jobs set their own count: job_resources.train.threads; subprocesses are not affected.)
# One thread also makes CPU results bit-identical run to run, which the resume tests compare.
torch.set_num_threads(1)


# ---- optional components -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Requirement:
    """An optional component: the Python modules and programs it consists of (a program counts as present on the
    PATH or in /usr/sbin, where Debian puts daemons), whether it needs root, how to install it, and the environment
    variable that turns its absence from a skip into a failure. interpreter: Triton's interpreter must be what runs
    the kernels (TRITON_INTERPRET=1) and must work."""

    name: str
    install: str
    env_var: str
    modules: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()
    root: bool = False
    cuda: bool = False
    interpreter: bool = False

    def missing(self) -> list[str]:
        out = []
        for module in self.modules:
            try:
                __import__(module)
            except ImportError as e:
                out.append(f"Python module {module} ({e})")
        if self.interpreter and not out:
            import numpy
            import triton

            if os.environ.get("TRITON_INTERPRET") != "1":
                out.append(
                    "Triton's interpreter (TRITON_INTERPRET=1, which conftest.py sets only where there is no "
                    "CUDA device: here the kernels are compiled, and the GPU tier, -m gpu, tests them)"
                )
            else:
                defect = triton_interpreter_defect(triton.__version__, numpy.__version__, True)
                out += [defect] if defect else []
        out += [f"program {p}" for p in self.programs if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]
        if self.cuda and not out:
            import torch

            if not torch.cuda.is_available():
                out.append(f"a CUDA device (torch {torch.__version__}: torch.cuda.is_available() is False)")
        if self.root and os.geteuid() != 0:
            out.append(f"root (it runs as uid {os.geteuid()})")
        return out


def triton_interpreter_defect(triton_version: str, numpy_version: str, interpreting: bool) -> str | None:
    """Where Triton's kernels run in its interpreter (TRITON_INTERPRET=1: no GPU), the interpreter of Triton before
    3.7 with numpy 2.4 or later raises TypeError at `range(tl.minimum(...))` ('only 0-dimensional arrays can be
    converted to Python scalars'; seen with triton 3.6.0 and numpy 2.4.6, not with triton 3.7.1): a defect of that
    pair, not of the kernels. A kernel test would fail for it there, so that pair counts as Triton missing (this
    text says why); None where the kernels can be tested."""
    from packaging.version import Version

    if interpreting and Version(triton_version) < Version("3.7") and Version(numpy_version) >= Version("2.4"):
        return (
            f"a Triton interpreter that runs with numpy {numpy_version} (that of triton {triton_version} raises "
            f"TypeError at range(tl.minimum(...)) with numpy >= 2.4; triton >= 3.7 does not)"
        )
    return None


TRITON_INSTALL = "pip install triton==3.7.1 (CI's, in the test extra: pip install -c constraints.txt -e '.[test]')"
REQUIREMENTS = {
    # needs("triton") on a test marked gpu: Triton's compiled kernels
    "triton": Requirement("triton", modules=("triton",), env_var="SDGM_REQUIRE_TRITON", install=TRITON_INSTALL),
    # needs("triton") on any other test: the kernels on CPU tensors, run by Triton's interpreter (_needs)
    "triton-interpreter": Requirement(
        "triton-interpreter",
        modules=("triton",),
        env_var="SDGM_REQUIRE_TRITON",
        interpreter=True,
        install=TRITON_INSTALL + ", on a machine without a CUDA device",
    ),
    # the GPU tier (tests marked gpu: tests/test_gpu.py), run by `python -m pytest -m gpu` on a GPU machine
    "gpu": Requirement(
        "gpu",
        cuda=True,
        env_var="SDGM_REQUIRE_GPU",
        install="a machine with an NVIDIA GPU and a CUDA build of torch (docs/campaign.md: a GPU window)",
    ),
    "slurm": Requirement(
        "slurm",
        programs=("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd", "sacct", "sbatch"),
        root=True,
        env_var="SDGM_REQUIRE_SLURM",
        install="as root: apt-get install slurm-wlm slurmdbd munge mariadb-server (what .ci/run does)",
    ),
}


def absence(req: Requirement, environ=os.environ) -> tuple[str, bool] | None:
    """None where every part of `req` is here; otherwise (the reason, naming what is missing and how to install it;
    whether it is required: environ[req.env_var] is '1')."""
    missing = req.missing()
    if not missing:
        return None
    required = environ.get(req.env_var) == "1"
    reason = f"needs {req.name}, but {', '.join(missing)} missing; install: {req.install}"
    return (
        f"{reason} ({req.env_var}=1: {req.name} is required)"
        if required
        else f"{reason} (set {req.env_var}=1 to fail instead of skipping)"
    ), required


def require(req: Requirement, environ=os.environ) -> None:
    """Return where every part of `req` is here; otherwise skip the calling test naming what is missing and how to
    install it, or fail it with that reason where environ[req.env_var] is '1'."""
    found = absence(req, environ)
    if found is None:
        return
    reason, required = found
    if required:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pytest_collection_finish(session):
    """Move the objects that live through the session (modules, collected tests) out of the garbage collector's
    view: the benchmarks call gc.collect() before every case they measure (sdgm.common.timing.free_memory), and
    each full collection walked all of them, 0.2-0.4 s a call. Garbage made by the tests is collected as before."""
    gc.freeze()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "needs(name): needs an optional component of conftest.REQUIREMENTS "
        "(skipped loudly where missing, failed where SDGM_REQUIRE_<NAME>=1)",
    )


def _needs(item) -> list[Requirement]:
    """The requirements of a test: its needs(...) marks, and the GPU for a test marked gpu. needs("triton") means
    the compiled kernels on a test marked gpu and Triton's interpreter on any other."""
    names = [name for mark in item.iter_markers("needs") for name in mark.args]
    if item.get_closest_marker("gpu") is not None:
        names.insert(0, "gpu")
    else:
        names = ["triton-interpreter" if name == "triton" else name for name in names]
    return [REQUIREMENTS[name] for name in dict.fromkeys(names)]


def pytest_collection_modifyitems(config, items):
    """A test that needs a missing component is skipped (reported at the test, with the reason), unless the
    component is required: that test fails when it runs (pytest_runtest_setup)."""
    absent = {}
    for item in items:
        for req in _needs(item):
            if req.name not in absent:
                absent[req.name] = absence(req)
            if absent[req.name] is not None and not absent[req.name][1]:
                item.add_marker(pytest.mark.skip(reason=absent[req.name][0]))
                break


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for req in _needs(item):  # before the test's fixtures are set up (a Slurm cluster is not started without Slurm)
        found = absence(req)
        if found is not None and found[1]:
            pytest.fail(found[0], pytrace=False)


# ---- shared fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def toy_tokens(tmp_path_factory):
    """Token files of a toy corpus (helpers.write_toy_corpus: 30 words, 8 a line; 400 training lines, 40
    validation, 40 test) for tiny training runs; returns the tokens directory (read-only for the tests)."""
    root = write_toy_corpus(tmp_path_factory.mktemp("toy_corpus"))
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"


@pytest.fixture(scope="session")
def grammar_tokens(tmp_path_factory):
    """Token files of helpers.write_grammar_corpus (seed 0; 41 tokens with <eos>), a corpus a model learns from in
    a few dozen steps; returns the tokens directory (read-only for the tests)."""
    return write_grammar_tokens(tmp_path_factory.mktemp("grammar_corpus"))


@pytest.fixture(scope="session")
def tokens(grammar_tokens):
    """The tokens the training and fault tests run on: grammar_tokens (read-only for the tests)."""
    return grammar_tokens


# ---- a disk of a given size (tests/test_faults_edges.py, test_faults_archives.py) ----
class Disk:
    """A tmpfs of a given size, mounted for one test: full and read-only for real."""

    def __init__(self, path: Path, size: int):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"mounting a tmpfs needs root: {r.stderr.strip()}")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def fill(self) -> None:
        """Take every free byte (a file of zeros written until the disk refuses)."""
        with open(self.path / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def disk(tmp_path):
    mounted = []

    def make(size: int, name: str = "disk") -> Disk:
        d = Disk(tmp_path / name, size)
        mounted.append(d)
        return d

    yield make
    for d in mounted:
        d.unmount()
