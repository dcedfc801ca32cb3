"""Where a number came from: code version, device, library versions, time, config hash."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from ..common.missing import na
from ..spectral.ops.dispatch import decoder_record

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit SHA, working tree dirty?) or (None, None) outside a git checkout."""
    env_sha = os.environ.get("SDGM_GIT_COMMIT")
    if env_sha:
        return env_sha, None
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            != ""
        )
        return sha, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"{torch.get_num_threads()} torch threads)"
    )


def library_versions(names=("transformers", "linformer")) -> dict[str, str | None]:
    """Versions of the libraries baselines are built from (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def config_hash(obj) -> str:
    """Short stable hash of a JSON-able config."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def provenance(device: torch.device | str = "cpu") -> dict:
    sha, dirty = git_commit()
    device = torch.device(device)
    info = {
        "git_commit": sha,
        "git_dirty": dirty,
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "driver": None,
        "python": sys.version.split()[0],
        "libraries": library_versions(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # the spectral decoder each request of this process ran with, and why ('auto' on CUDA: Triton only after
        # its kernels passed their check on the device); empty where no spectral decoder ran
        "spectral_decoder": decoder_record(),
    }
    if device.type == "cuda":
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as e:  # NVML missing or unusable: say so instead of guessing
            info["driver"] = na(type(e).__name__)
    return info
