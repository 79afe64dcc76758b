"""The persistent CUDA kernel's critical-path walk for one plan (the rows of cuda_rows.py).

The persistent kernel is one template per pass and dtype; the plan's `Layout` reaches it as
a kernel parameter (csrc/layout.h), so a branch on one of its fields is a branch on a value
the plan fixes. The walk (sass_path.analyse) is told the fields the kernel branches on
(WALK_LAYOUT, WALK_STAGE) at their constant-bank offsets and resolves those branches: the
tier, each stage's passes over K (NP), split-K slices (KS), warp tile (WM, WN), pointwise
pair slots in use (ppt), X buffers (nx), segments (nseg). Each walk is keyed by the values
it was told (walk_key) and cached with the build's other critical paths (cuda_rows.kernel_facts).

A pass that loads its inputs two steps ahead (Pass::kDepth 2, csrc/passes.cuh) runs its step
loop unrolled by two (csrc/persistent.cuh): one trip of the loop is two steps, and the walk
is told so (steps_per_trip), read from the constants in csrc/passes.cuh that the build compiled.
"""
from __future__ import annotations

import json
import os
import re
import subprocess

from . import sass_path

# csrc/layout.h, in declaration order (every field an int): Layout, then Layout::st[kMaxStages]
LAYOUT_FIELDS = ("tier", "U", "UP", "NU", "Hp", "Pp", "BG", "NBG", "Bp", "D", "nst", "Kx")
STAGE_FIELDS = ("cw", "nseg", "rows", "K", "Kp", "RP", "lda", "ldx", "ldp", "KS", "WM", "WN", "ppt", "nx", "NP",
                "CPP", "off_a", "off_x", "off_out")
STAGE_AT, STAGE_BYTES = 4 * len(LAYOUT_FIELDS), 4 * len(STAGE_FIELDS)  # layout.h asserts both
# the fields the kernel branches on; the others only enter address arithmetic
WALK_LAYOUT = ("tier", "nst", "D", "NU")  # NU: the grid tier's flag poll slots per lane
WALK_STAGE = ("nseg", "KS", "WM", "WN", "ppt", "nx", "NP")
PASSES_CUH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc",
                          "passes.cuh")
_DEPTHS = re.compile(r"constexpr int kInputDepth = (\d+), kInputDepthProj = (\d+);")


def input_depths(source: str | None = None) -> tuple[int, int]:
    """(kInputDepth, kInputDepthProj) of csrc/passes.cuh (or of `source`, its text): how many
    steps ahead the passes without and with a projection load their inputs."""
    if source is None:
        with open(PASSES_CUH) as f:
            source = f.read()
    m = _DEPTHS.search(source)
    if m is None:
        raise RuntimeError("csrc/passes.cuh: no `constexpr int kInputDepth = N, kInputDepthProj = M;`")
    return int(m.group(1)), int(m.group(2))


def steps_per_trip(key: str) -> int:
    """Recurrence steps per trip of the step loop of persistent kernel `key`
    ("persistent|<pass>|<cell>|<dtype>"): its pass's input depth (persistent.cuh unrolls the
    loop by two where it is 2; the two-stage passes, a projection's and the reset-before GRU's,
    keep kInputDepthProj)."""
    plain, proj = input_depths()
    two_stage = key.split("|")[1].endswith("-proj") or key.split("|")[2] == "gru_reset_before"  # passes_reset.cuh
    return proj if two_stage else plain


def field_offset(name: str, stage: int | None = None) -> int:
    """Byte offset of a Layout field (stage None) or of Layout::st[stage].<name>."""
    if stage is None:
        return 4 * LAYOUT_FIELDS.index(name)
    return STAGE_AT + stage * STAGE_BYTES + 4 * STAGE_FIELDS.index(name)


def walk_params(layout: dict, at: int) -> dict[int, int]:
    """{constant-bank offset: value} of the fields a walk is told, the Layout parameter at `at`."""
    out = {at + field_offset(f): layout[f] for f in WALK_LAYOUT}
    for k, st in enumerate(layout["stages"]):
        out.update({at + field_offset(f, k): st[f] for f in WALK_STAGE})
    return out


def walk_key(layout: dict) -> str:
    """The values a walk is told, as text: e.g. "tier1 nst1 D1 NU1 | nseg1 KS2 WM1 WN1 ppt1 nx2 NP1"."""
    parts = [" ".join(f"{f}{layout[f]}" for f in WALK_LAYOUT)]
    parts += [" ".join(f"{f}{st[f]}" for f in WALK_STAGE) for st in layout["stages"]]
    return " | ".join(parts)


def report(insts: list, layout_at: int, layout: dict, steps: int = 1) -> sass_path.PathReport:
    """The critical path of one plan's step; steps: recurrence steps per trip of the loop."""
    return sass_path.analyse(insts, walk_params(layout, sass_path.PARAM_BASE_SM90 + layout_at), steps_per_trip=steps)


def walk(insts: list, layout_at: int, layout: dict, steps: int = 1) -> dict:
    """The critical-path counts of one plan's step (sass_path.PathReport.as_dict)."""
    return report(insts, layout_at, layout, steps).as_dict()


class PlanWalks:
    """Walks of the persistent kernels of one build, done on demand and cached in `paths`
    ({kernel key: {walk key: counts}}, the build's critical-path cache, written to `path`)."""

    def __init__(self, cubins: str, path: str, paths: dict, cuobjdump: str, demangle):
        self.cubins, self.path, self.paths = cubins, path, paths
        self.cuobjdump, self.demangle = cuobjdump, demangle
        self._sass: dict[str, dict] = {}  # cell -> {kernel key: (instructions, Layout offset)}

    def kernel(self, key: str, cell: str) -> tuple[list, int] | None:
        """(instructions, Layout parameter offset) of persistent kernel `key` in `cell`'s cubin."""
        return self._kernels(cell).get(key)

    def _kernels(self, cell: str) -> dict:
        if cell not in self._sass:
            cubin = os.path.join(self.cubins, f"{cell}.cubin")
            run = lambda flag: subprocess.run([self.cuobjdump, flag, cubin], capture_output=True, text=True,  # noqa: E731
                                              check=True).stdout
            funcs = sass_path.parse(run("-sass"))
            offsets = sass_path.param_offsets(run("-elf"))
            names = [n for n in funcs if "persistent_kernel" in n and 1 in offsets.get(n, {})]
            self._sass[cell] = {k: (funcs[n], offsets[n][1]) for n, (k, _) in self.demangle(names).items()}
        return self._sass[cell]

    def counts(self, key: str, cell: str, layout: dict) -> dict | None:
        """The counts of kernel `key` ("persistent|<pass>|<cell>|<dtype>", in `cell`'s cubin)
        walked for `layout`; None if the cubin holds no such kernel."""
        wk = walk_key(layout)
        have = self.paths.setdefault(key, {})
        if wk not in have:
            found = self._kernels(cell).get(key)
            if found is None:
                return None
            have[wk] = walk(found[0], found[1], layout, steps_per_trip(key))
            with open(self.path + ".tmp", "w") as f:
                json.dump(self.paths, f, indent=1)
            os.replace(self.path + ".tmp", self.path)
        return have[wk]
