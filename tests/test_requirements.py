"""Optional components (conftest.require): a missing one skips the test naming what is missing and how to install
it, or fails it where its SDGM_REQUIRE_<NAME> variable is 1, as CI sets it."""

import sys
from pathlib import Path

import pytest
from conftest import REQUIREMENTS, Requirement, require

ABSENT = Requirement(
    "frobnicator",
    install="apt-get install frobnicator",
    env_var="SDGM_REQUIRE_FROBNICATOR",
    modules=("sdgm_no_such_module",),
    programs=("sdgm-no-such-program",),
)


def test_a_missing_component_is_skipped_naming_it_and_how_to_install_it(monkeypatch):
    monkeypatch.delenv("SDGM_REQUIRE_FROBNICATOR", raising=False)
    with pytest.raises(pytest.skip.Exception) as e:
        require(ABSENT)
    reason = str(e.value)
    for part in (
        "needs frobnicator",
        "Python module sdgm_no_such_module",
        "program sdgm-no-such-program",
        "install: apt-get install frobnicator",
        "SDGM_REQUIRE_FROBNICATOR=1",
    ):
        assert part in reason, (part, reason)


@pytest.mark.parametrize("value", ["0", "", "yes"])
def test_only_the_value_1_makes_a_missing_component_required(monkeypatch, value):
    monkeypatch.setenv("SDGM_REQUIRE_FROBNICATOR", value)
    with pytest.raises(pytest.skip.Exception):
        require(ABSENT)


def test_a_required_missing_component_fails_with_the_same_reason(monkeypatch):
    monkeypatch.setenv("SDGM_REQUIRE_FROBNICATOR", "1")
    with pytest.raises(pytest.fail.Exception) as e:
        require(ABSENT)
    reason = str(e.value)
    assert "program sdgm-no-such-program" in reason and "apt-get install frobnicator" in reason, reason
    assert "SDGM_REQUIRE_FROBNICATOR=1" in reason


def test_a_present_component_neither_skips_nor_fails(monkeypatch):
    monkeypatch.setenv("SDGM_REQUIRE_PYTHON", "1")
    here = Requirement(
        "python", install="-", env_var="SDGM_REQUIRE_PYTHON", modules=("json",), programs=(str(Path(sys.executable)),)
    )
    assert here.missing() == []
    assert require(here) is None


def test_root_is_a_requirement_of_its_own(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert Requirement("r", install="-", env_var="X", root=True).missing() == ["root (it runs as uid 1000)"]


def test_every_component_names_its_variable_and_how_to_install_it():
    assert set(REQUIREMENTS) == {"triton", "triton-interpreter", "slurm", "gpu"}
    for name, req in REQUIREMENTS.items():  # the interpreter is Triton's: required by the same variable
        assert req.name == name and req.env_var == f"SDGM_REQUIRE_{name.split('-')[0].upper()}" and req.install
