"""Compile the spectral decoder's Triton kernels for an H100 (sm_90) on any machine, and read the machine code.

    python -m sdgm.bench.sass            # one row per kernel and launch config: registers, spills, sines, MMAs

Triton compiles without a GPU when given the target; the cuobjdump shipped inside the Triton wheel dumps the
SASS and the resource usage. What a row says: `regs` registers per thread (255 is the hardware limit), `stack`
bytes of local memory per thread and `stl`/`ldl` the spill stores and loads (all 0 means nothing spills),
`mufu_sin`/`mufu_cos` the hardware sine and cosine instructions (the library sine would show none), `mma` the
tensor-core instructions (HGMMA is Hopper's warpgroup MMA, HMMA the older warp MMA), `instructions` the SASS count,
`sines_per_32_positions` the sines and cosines one program's tile evaluates over 32 positions (at R = 256 atom
rows for the mix kernels): the static MUFU count says only that the hardware sine is used, this one how often.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from ..spectral.ops import rotation_triton as st

_PTR = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


def _mix_signature(dtype: str) -> dict:
    p = _PTR[dtype]
    sig = {"IN": p, "A": "*fp32", "F": "*fp32", "PH": "*fp32", "TP": "*fp64", "OUT": p}
    sig.update({n: "i32" for n in ("B", "L", "R", "O", "s_ar", "s_ao", "T_PER_PROG")})
    sig.update({n: "constexpr" for n in ("BLOCK_B", "BLOCK_R", "BLOCK_O", "FAST", "DOT_FP32", "PRECISION")})
    return sig


def _mix_rot_signature(dtype: str) -> dict:
    p = _PTR[dtype]
    sig = {"IN": p, "A": "*fp32", "F": "*fp32", "PH": "*fp32", "CW": "*fp32", "SW": "*fp32", "TP": "*fp64", "OUT": p}
    sig.update({n: "i32" for n in ("B", "L", "R", "O", "s_ar", "s_ao", "T_PER_PROG")})
    sig.update({n: "constexpr" for n in ("BLOCK_B", "R_PAD", "BLOCK_O", "FAST", "DOT_FP32", "PRECISION")})
    return sig


def _param_signature(dtype: str) -> dict:
    p = _PTR[dtype]
    sig = {"C": p, "G": p, "F": "*fp32", "PH": "*fp32", "CW": "*fp32", "SW": "*fp32", "TP": "*fp64", "PART": "*fp32"}
    sig.update({n: "i32" for n in ("B", "L", "K", "D", "T_PER_PROG")})
    sig.update(
        {n: "constexpr" for n in ("BLOCK_B", "BLOCK_K", "BLOCK_D", "FAST", "DOT_FP32", "PRECISION", "ROTATE", "ANCHOR")}
    )
    return sig


def kernel_variants(dtype: str = "bf16"):
    """(name, kernel, signature, constexprs, num_warps) of every launch config the op uses on a GPU for `dtype`:
    the kernels with a sine per atom element ("direct", for positions without a constant step and, in the mix
    kernel, batches above 16) and with atoms advanced by rotation ("rot")."""
    common = {"FAST": True, "DOT_FP32": dtype == "fp32", "PRECISION": "ieee"}
    for largest, bb, br, bo, warps in st.MIX_CONFIGS:
        yield (
            f"mix direct B<={largest or 'any'}",
            st._mix_kernel,
            _mix_signature(dtype),
            {"BLOCK_B": bb, "BLOCK_R": br, "BLOCK_O": bo, **common},
            warps,
        )
    for largest, bb, bo, warps in st.MIX_ROT_CONFIGS if dtype != "fp32" else ():  # fp32 keeps the direct kernel
        yield (
            f"mix rot B<={st.MIX_ROT_MAX_B} R<={largest}",
            st._mix_rot_kernel,
            _mix_rot_signature(dtype),
            {"BLOCK_B": bb, "R_PAD": largest, "BLOCK_O": bo, **common},
            warps,
        )
    for rotate in (False, True):
        for largest, bb, bk, bd, warps in st.PARAM_CONFIGS if rotate else st.PARAM_DIRECT_CONFIGS:
            yield (
                f"param {'rot' if rotate else 'direct'} B<={largest or 'any'}",
                st._param_kernel,
                _param_signature(dtype),
                {"BLOCK_B": bb, "BLOCK_K": bk, "BLOCK_D": bd, **common, "ROTATE": rotate, "ANCHOR": st.ROTATION_ANCHOR},
                warps,
            )


def sines_per_tile(name: str, constexprs: dict, positions: int = st.ROTATION_ANCHOR, R: int = 256) -> int:
    """Sines and cosines one program evaluates for `positions` positions of its output tile (R atom rows for the
    mix kernels): what the kernel's loops do, counted from its tile sizes, beside the SASS's static MUFU count."""
    c = constexprs
    if name.startswith("mix direct"):
        return positions * R * c["BLOCK_O"]  # a sine per atom element at every position
    if name.startswith("mix rot"):
        return 2 * R * c["BLOCK_O"]  # sine and cosine once, at the program's first position (its anchor)
    per_anchor = 2 * c["BLOCK_K"] * c["BLOCK_D"]
    return per_anchor * (-(-positions // st.ROTATION_ANCHOR) if c["ROTATE"] else positions)


def _tool(name: str) -> str:
    from triton.backends.nvidia import compiler as nvidia

    path = os.path.join(os.path.dirname(nvidia.__file__), "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not in this Triton installation ({path})")
    return path


def inspect_cubin(cubin: bytes) -> dict:
    """Registers, local memory, spill and special instructions of a compiled kernel (one function)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run(
            [_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    if m is None:
        raise ValueError(f"no resource usage in cuobjdump's output: {usage[:300]!r}")
    ops = [ln.split("*/", 1)[1].strip() for ln in sass.splitlines() if re.match(r"\s*/\*[0-9a-f]{4}\*/", ln)]
    opcode = [re.sub(r"^@!?U?P\w+\s+", "", o).split(" ")[0].rstrip(";") for o in ops]
    return {
        "regs": int(m.group(1)),
        "stack": int(m.group(2)),
        "stl": sum(o.startswith("STL") for o in opcode),
        "ldl": sum(o.startswith("LDL") for o in opcode),
        "mufu_sin": sum(o == "MUFU.SIN" for o in opcode),
        "mufu_cos": sum(o == "MUFU.COS" for o in opcode),
        "mma": sum(o.startswith(("HGMMA", "HMMA")) for o in opcode),
        "mma_kind": sorted({o.split(".")[0] for o in opcode if o.startswith(("HGMMA", "HMMA"))}),
        "instructions": len(opcode),
    }


def compile_variant(kernel, signature: dict, constexprs: dict, num_warps: int, arch: int = 90):
    return triton.compile(
        ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": st.NUM_STAGES},
    )


def report(dtype: str = "bf16", arch: int = 90) -> list[dict]:
    rows = []
    for name, kernel, sig, cst, warps in kernel_variants(dtype):
        compiled = compile_variant(kernel, sig, cst, warps, arch)
        rows.append(
            {
                "kernel": name,
                "dtype": dtype,
                "num_warps": warps,
                "tile": "x".join(str(v) for k, v in cst.items() if k.startswith(("BLOCK", "R_PAD"))),
                "sines_per_32_positions": sines_per_tile(name, cst),
                **inspect_cubin(compiled.asm["cubin"]),
            }
        )
    return rows


def main() -> None:
    cols = (
        "kernel",
        "dtype",
        "tile",
        "num_warps",
        "regs",
        "stack",
        "stl",
        "ldl",
        "mufu_sin",
        "mufu_cos",
        "mma",
        "mma_kind",
        "instructions",
        "sines_per_32_positions",
    )
    print(f"Triton {triton.__version__}, target sm_90")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for dtype in ("bf16", "fp32"):
        for r in report(dtype):
            print("| " + " | ".join(str(r[c]) if c != "mma_kind" else ",".join(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
