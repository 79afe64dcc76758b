"""The critical path of one recurrence step, read from a kernel's SASS (`cuobjdump -sass`).

Method (benchmarks/NOTES.md, "Critical path read from the compiled code", has a worked example):

1. The step loop. Every backward branch `BRA target` (target below the branch) closes a
   loop [target, branch]. The step loop is the outermost such loop whose body holds a
   tensor-core instruction (HMMA/HGMMA): the time loop is the only loop around the
   recurrent matmul (k-chunk and pass loops sit inside it, set-up loops hold no matmul).
   A kernel with no such loop (the per-step kernels: one launch per step) is one step.
2. The path. The instructions reachable from the loop head inside the loop, walked in
   address order. A forward branch whose predicate follows from known kernel parameters
   (`known_guards`: e.g. the CUDA layout's tier) and immediates is resolved; any other is
   walked on both sides (an upper bound over its paths); code placed out of line past the
   loop (timeouts, `BRA.DIV` slow paths) is not followed. A poll (an innermost loop around
   a one-word strong load or an atomic, with no MMA) runs once (the flag is ready at the
   first look, the floor), or not at all when a branch before it jumps past it (a rotated
   `if not ready: do poll while not ready`); a poll written `while (!ready) { re-poll }`,
   whose first loads precede the loop, leaves at its readiness test (the first branch out
   of the loop on a value derived from a flag load), so its re-polls and what is reached
   only past that test (a timeout report) are not on the path. Other inner loops run `inner_trips` times
   (innermost) or `outer_trips` (around those); default once.
3. Dependent round trips. A warp issues in order and stalls at the first instruction
   that reads a register a load has not yet written (or at DEPBAR for cp.async). So a
   global load (LDG, LD, LDGSTS, ATOM/ATOMG) issued after such a stall depends on the
   load waited for: its depth is 1 + the deepest load waited for so far. The walk repeats
   the body three times; round trips per step = the growth of that depth over the last
   repetition (loads prefetched for the next step count where they are waited for).
   A round trip is a flag round trip if the load is an atomic or a one-word strong load
   (flags, counters; exchanged data moves in 64/128-bit or cp.async loads), else an L2
   round trip.
4. Barriers per step: BAR.SYNC/BAR.RED (CTA), UCGABAR_WAIT (cluster). Instructions per
   warp per step: every instruction on the path but NOP. Dependent mma chain: the
   longest chain of HMMA/HGMMA linked by registers within one repetition.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNC = re.compile(r"Function : ([\w$.]+)")
_REG = re.compile(r"\b(U?R)(\d+|Z)(?:\.(64|128|reuse))*\b|\b(U?P)([0-6T])\b")
_CONST = re.compile(r"c\[0x0\]\[(0x[0-9a-f]+)\]")
# opcodes whose operands are all read (no destination register)
_NO_DEST = ("ST", "STG", "STS", "STL", "RED", "REDG", "BAR", "BRA", "MEMBAR", "LDGSTS", "CCTL", "EXIT", "DEPBAR",
            "LDGDEPBAR", "BSSY", "BSYNC", "WARPSYNC", "NOP", "RET", "CALL", "YIELD", "ERRBAR", "CGAERRBAR",
            "UCGABAR_ARV", "UCGABAR_WAIT", "FENCE", "ARRIVES", "SYNCS", "STSM", "BPT", "JMP", "BREAK", "KILL")
_TWO_PRED_DEST = ("ISETP", "UISETP", "FSETP", "DSETP", "HSETP2", "PLOP3", "UPLOP3", "PSETP", "LOP3", "VOTE")
GLOBAL_LOADS = ("LDG", "LD", "LDGSTS", "ATOMG", "ATOM")
MMA = ("HMMA", "HGMMA", "IMMA", "DMMA")


@dataclass
class Inst:
    addr: int
    guard: str | None      # "P0", "!P0", None
    op: str                # full opcode with modifiers, e.g. "LDG.E.STRONG.GPU"
    operands: list

    @property
    def base(self) -> str:
        return self.op.split(".")[0]

    def is_global_load(self) -> bool:
        return self.base in GLOBAL_LOADS

    def is_strong_load(self) -> bool:
        """A load that may observe another SM's release: strong (volatile/relaxed/acquire) or atomic."""
        return self.is_global_load() and (self.base.startswith("ATOM") or ".STRONG" in self.op
                                          or ".SYS" in self.op or ".MMIO" in self.op)

    def branch_target(self) -> int | None:
        if self.base != "BRA":
            return None
        for o in reversed(self.operands):
            if re.fullmatch(r"0x[0-9a-f]+", o):
                return int(o, 16)
        return None


def parse(sass: str) -> dict[str, list[Inst]]:
    """{function name: instructions in address order} of `cuobjdump -sass` text."""
    out: dict[str, list[Inst]] = {}
    cur = None
    for line in sass.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = out.setdefault(m.group(1), [])
            continue
        m = _LINE.search(line)
        if m is None or cur is None:
            continue
        text = m.group(2).strip()
        if not text:
            continue
        guard = None
        if text.startswith("@"):
            guard, text = text[1:].split(None, 1)
        parts = text.split(None, 1)
        ops = [o.strip() for o in _split_operands(parts[1])] if len(parts) > 1 else []
        cur.append(Inst(int(m.group(1), 16), guard, parts[0], ops))
    return out


def _split_operands(s: str) -> list[str]:
    out, depth, tok = [], 0, ""
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(tok)
            tok = ""
        else:
            tok += ch
    if tok.strip():
        out.append(tok)
    return out


def _width(inst: Inst, idx: int) -> int:
    """Registers an operand covers (wide loads, stores and mma fragments)."""
    mods = inst.op.split(".")
    if inst.base in MMA:
        acc = 4 if "F32" in mods or inst.base == "HGMMA" else 2
        return (acc, 4, 2, acc)[idx] if idx < 4 else 1
    if "128" in mods:
        return 4
    if "64" in mods:
        return 2
    return 1


def regs(inst: Inst, idx: int) -> list[str]:
    """Register names (R.., UR.., P.., UP..) that operand idx touches; RZ/PT excluded."""
    out = []
    w = _width(inst, idx)
    for m in _REG.finditer(inst.operands[idx]):
        if m.group(1):
            if m.group(2) == "Z":
                continue
            n = int(m.group(2))
            wide = 2 if m.group(3) == "64" or ".64" in m.group(0) else 1
            out += [f"{m.group(1)}{n + i}" for i in range(max(w if idx == _data_idx(inst, idx) else 1, wide))]
        elif m.group(5) != "T":
            out.append(f"{m.group(4)}{m.group(5)}")
    return out


def _data_idx(inst: Inst, idx: int) -> int:
    """The operand index whose width follows the opcode (loads: 0, stores: the data)."""
    if inst.base in MMA:
        return idx
    if inst.base in ("ST", "STG", "STS", "STL", "RED", "REDG"):
        return 1
    return 0


def dests(inst: Inst) -> list[str]:
    if inst.base in _NO_DEST or not inst.operands:
        return []
    n = 2 if inst.base in _TWO_PRED_DEST and inst.base not in ("LOP3",) else 1
    out = []
    for i in range(min(n, len(inst.operands))):
        out += regs(inst, i)
    return out


def sources(inst: Inst) -> list[str]:
    first = 0 if inst.base in _NO_DEST else (2 if inst.base in _TWO_PRED_DEST and inst.base != "LOP3" else 1)
    out = []
    for i in range(first, len(inst.operands)):
        out += regs(inst, i)
    if inst.guard:
        out.append(inst.guard.lstrip("!"))
    return out


# --- known values: registers and predicates defined once, from parameters and immediates --

_CMP = {"EQ": lambda a, b: a == b, "NE": lambda a, b: a != b, "LT": lambda a, b: a < b,
        "LE": lambda a, b: a <= b, "GT": lambda a, b: a > b, "GE": lambda a, b: a >= b}


def known_guards(insts: list[Inst], params: dict[int, int]) -> dict[int, bool]:
    """{instruction index: value of its guard predicate} where that value follows from
    `params` ({constant-bank offset: 32-bit value}) and immediates: LDC/ULDC/MOV/IMAD.MOV and
    ISETP/UISETP are evaluated forward through the control-flow graph (a register keeps its
    value into a basic block when every path into the block that the walk has seen agrees on
    it, iterated to a fixed point: a layout field loaded before the step loop is known in
    every block of it), plus registers defined once in the function (valid everywhere)."""
    ndef: dict[str, int] = {}
    for i in insts:
        for r in dests(i):
            ndef[r] = ndef.get(r, 0) + 1
    index = {i.addr: n for n, i in enumerate(insts)}
    joins = {index[t] for i in insts if (t := i.branch_target()) is not None and t in index}
    glob: dict[str, int | bool] = {"PT": True, "UPT": True}
    val: dict[str, int | bool] = dict(glob)

    def operand(o: str):
        o = o.strip()
        neg = o.startswith("!")
        o = o.lstrip("!")
        if o in ("RZ", "URZ"):
            return 0
        if o in ("PT", "UPT"):
            return not neg
        m = _CONST.fullmatch(o)
        if m:
            return params.get(int(m.group(1), 16))
        if re.fullmatch(r"-?0x[0-9a-f]+|-?\d+", o):
            return int(o, 0)
        v = val.get(o)
        if v is None:
            return None
        return (not v) if neg and isinstance(v, bool) else v

    def evaluate(i: Inst):
        mods = i.op.split(".")
        if i.base in ("LDC", "ULDC") and len(i.operands) == 2 and "64" in mods:  # two words: a list
            m = _CONST.fullmatch(i.operands[1].strip())
            return [params.get(int(m.group(1), 16)), params.get(int(m.group(1), 16) + 4)] if m else None
        if i.base in ("LDC", "ULDC", "MOV", "UMOV") and len(i.operands) == 2 and "64" not in mods:
            return operand(i.operands[1])
        if i.base == "IMAD" and "MOV" in mods and len(i.operands) == 4 and operand(i.operands[1]) == 0:
            return operand(i.operands[3])
        if i.base in ("ISETP", "UISETP") and "EX" not in mods and len(i.operands) == 5:
            cmp = next((c for c in mods if c in _CMP), None)
            a, b, c = operand(i.operands[2]), operand(i.operands[3]), operand(i.operands[4])
            if cmp is None or a is None or b is None or c is None:
                return None
            if "U32" in mods:
                a, b = a & 0xFFFFFFFF, b & 0xFFFFFFFF
            r = _CMP[cmp](a, b)
            return bool((r and c) if "AND" in mods else (r or c) if "OR" in mods else (r != c))
        return None

    def assigned(i: Inst) -> list:
        """Issue `i` on `val`: its destinations forgotten, then set where known; [(register, value)]."""
        ds = dests(i)
        v = evaluate(i) if not i.guard else None
        for d in ds:
            val.pop(d, None)
        vs = v if isinstance(v, list) else [v]
        out = [(d, x) for d, x in zip(ds, vs) if x is not None]
        for d, x in out:
            val[d] = x
        return out

    # the registers defined once: their one value holds everywhere (a use follows its definition)
    for n, i in enumerate(insts):
        if n in joins:
            val = dict(glob)
        for d, v in assigned(i):
            if ndef.get(d) == 1:
                glob[d] = v
    # basic blocks: [start, end); successors: the branch target, and the next block unless an
    # unguarded branch, exit or return ends the block; a call (a subroutine of the function)
    # may write any register: past it only the registers defined once are known. An indirect
    # jump (BRX/JMX) has targets the scan does not know: then only those are trusted anywhere.
    ends_block = ("BRA", "EXIT", "RET")
    if any(i.base in ("BRX", "JMX") for i in insts):
        blocks_in = None
    else:
        starts = sorted({0} | joins | {n + 1 for n, i in enumerate(insts)
                                       if i.base in ends_block and n + 1 < len(insts)})
        ends = starts[1:] + [len(insts)]
        succ: dict[int, list[int]] = {}
        for a, b in zip(starts, ends):
            last = insts[b - 1]
            t = last.branch_target()
            out = [index[t]] if t is not None and t in index else []
            unconditional = last.guard is None and ".DIV" not in last.op and not any(
                re.fullmatch(r"!?U?P[0-6]", o.strip()) for o in last.operands)
            if b < len(insts) and not (last.base in ends_block and unconditional):
                out.append(b)
            succ[a] = out
        end_of = dict(zip(starts, ends))
        blocks_in: dict[int, dict] | None = {0: dict(glob)}
        todo = [0]
        while todo:
            a = todo.pop()
            val = dict(blocks_in[a])
            for n in range(a, end_of[a]):
                i = insts[n]
                if i.base == "CALL":
                    val = dict(glob)
                assigned(i)
            for b in succ[a]:
                seen = blocks_in.get(b)
                merged = dict(val) if seen is None else {k: x for k, x in seen.items() if val.get(k, None) == x
                                                         and type(val.get(k)) is type(x)}
                merged.update(glob)
                if seen is None or merged != seen:
                    blocks_in[b] = merged
                    todo.append(b)
    guards: dict[int, bool] = {}
    val = dict(glob)
    for n, i in enumerate(insts):
        if n == 0 or n in joins or (n > 0 and insts[n - 1].base in ("BRA", "EXIT", "RET")):
            val = dict(glob) if blocks_in is None else dict(blocks_in.get(n, glob))
        if i.base == "CALL":
            val = dict(glob)
        if i.guard:
            g = val.get(i.guard.lstrip("!"))
            if isinstance(g, bool):
                guards[n] = (not g) if i.guard.startswith("!") else g
        assigned(i)
    return guards


def _guard_value(inst: Inst, known: bool | None) -> bool | None:
    """Whether a branch is taken: True / False, or None (not known). known: its guard's value."""
    if inst.base == "BRA" and ".DIV" in inst.op:
        return False  # taken only by a divergent warp (an out-of-line slow path): the floor assumes none
    if inst.base == "BRA" and any(re.fullmatch(r"!?U?P[0-6T]", o.strip()) for o in inst.operands):
        return None  # a second predicate operand: not resolved
    if inst.guard is None:
        return True
    return known


def _taint_sources(inst: Inst) -> list[str]:
    """The registers an instruction reads, for following a value (VOTE reads its last operand)."""
    if inst.base == "VOTE":
        return (regs(inst, len(inst.operands) - 1) if inst.operands else []) + \
            ([inst.guard.lstrip("!")] if inst.guard else [])
    return sources(inst)  # the guard included: a write under a derived predicate is derived


def _taint_dests(inst: Inst) -> list[str]:
    if inst.base == "VOTE":
        return [r for i in range(len(inst.operands) - 1) for r in regs(inst, i)]
    return dests(inst)


def _flag_derived(insts: list[Inst], lo: int, hi: int, flags: set) -> dict[int, set]:
    """{instruction index: registers holding a value derived from a flag load when it issues},
    over [lo, hi] in address order, twice (values carried around a loop): a flag load's result
    is derived; so is whatever an instruction computes from a derived value; an unpredicated
    write of values not derived clears it."""
    derived: set = set()
    out: dict[int, set] = {}
    for _ in range(2):
        for n in range(lo, hi + 1):
            i = insts[n]
            out[n] = set(derived)
            ds = _taint_dests(i)
            if n in flags or any(r in derived for r in _taint_sources(i)):
                derived.update(ds)
            elif not i.guard:
                derived.difference_update(ds)
    return out


# --- the step loop and the walk -------------------------------------------------------

def loops(insts: list[Inst]) -> list[tuple[int, int]]:
    """(first index, backward-branch index) of every loop."""
    index = {i.addr: n for n, i in enumerate(insts)}
    out = []
    for n, i in enumerate(insts):
        t = i.branch_target()
        if t is not None and t <= i.addr and t in index:
            out.append((index[t], n))
    return out


def step_loop(insts: list[Inst]) -> tuple[int, int] | None:
    """The time loop: the outermost loop whose body holds an MMA (None: no loop around one)."""
    cands = [(a, b) for a, b in loops(insts) if any(insts[k].base in MMA for k in range(a, b + 1))]
    if not cands:
        return None
    return max(cands, key=lambda ab: ab[1] - ab[0])


@dataclass
class PathReport:
    round_trips: int | float = 0  # dependent global round trips per step (mean; 0.5: one every two steps)
    flag_round_trips: int | float = 0  # of which polls / atomics
    barriers: int = 0             # CTA barriers per step
    cluster_barriers: int = 0
    insts_per_step: int | float = 0  # instructions one warp issues per step
    mma: int = 0                  # tensor-core instructions per step and warp
    mma_chain: int = 0            # longest dependent chain of them
    loop: tuple | None = None     # (first, last) address of the step loop; None: whole kernel
    unknown_branches: int = 0     # forward branches walked on both sides
    loads: list = field(default_factory=list)  # (address, opcode, depth in this step, flag) per global load

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("round_trips", "flag_round_trips", "barriers", "cluster_barriers",
                                              "insts_per_step", "mma", "mma_chain", "unknown_branches")}


class _Walk:
    """State of the in-order issue model over repeated walks of the step body."""

    def __init__(self):
        self.pending: dict[str, tuple[int, int]] = {}   # register -> (depth, flag depth) of its load
        self.async_groups: list[list[tuple[int, int]]] = [[]]  # cp.async groups not yet waited for
        self.wait = (0, 0)                               # deepest (depth, flag depth) waited for
        self.count = {"insts": 0, "bar": 0, "cbar": 0, "mma": 0}
        self.mma_depth: dict[str, int] = {}
        self.chain = 0
        self.loads: list = []  # (address, opcode, depth, flag) of each global load issued

    def _waited(self, d):
        self.wait = max(self.wait, d)

    def step(self, inst: Inst, flag: bool = False):
        """Issue `inst`; flag: it is a flag round trip (a poll or an atomic)."""
        if inst.base == "NOP":
            return
        c = self.count
        c["insts"] += 1
        for r in sources(inst) + dests(inst):  # a read, or a write over a pending result, stalls
            if r in self.pending:
                self._waited(self.pending.pop(r))
        if inst.base == "DEPBAR":
            m = re.search(r"SB0,\s*(0x[0-9a-f]+|\d+)", " ".join(inst.operands))
            keep = int(m.group(1), 0) if m else 0
            closed = self.async_groups[:-1]
            done = closed[:max(0, len(closed) - keep)]
            for g in done:
                for d in g:
                    self._waited(d)
            self.async_groups = closed[len(done):] + [self.async_groups[-1]]
        elif inst.base == "LDGDEPBAR":
            self.async_groups.append([])
        if inst.base in ("BAR",) and ("SYNC" in inst.op or "RED" in inst.op):
            c["bar"] += 1
        if inst.base == "UCGABAR_WAIT":
            c["cbar"] += 1
        if inst.is_global_load():
            d = (self.wait[0] + 1, self.wait[1] + (1 if flag else 0))
            self.loads.append((inst.addr, inst.op, d[0], flag))
            if inst.base == "LDGSTS":
                self.async_groups[-1].append(d)
            else:
                for r in dests(inst):
                    self.pending[r] = d
        srcs = sources(inst)
        if inst.base in MMA:
            c["mma"] += 1
            depth = 1 + max((self.mma_depth.get(r, 0) for r in srcs), default=0)
            self.chain = max(self.chain, depth)
        else:
            depth = max((self.mma_depth.get(r, 0) for r in srcs), default=0)
        for r in dests(inst):
            self.mma_depth[r] = depth


def analyse(insts: list[Inst], params: dict[int, int] | None = None, inner_trips: int = 1,
            outer_trips: int = 1, steps_per_trip: int = 1) -> PathReport:
    """The critical-path report of one kernel's step (module docstring). inner_trips: the
    iterations of each innermost non-poll loop inside the step loop (e.g. streamed k-chunks);
    outer_trips: of the non-poll loops around those (e.g. tiles); steps_per_trip: the
    recurrence steps one trip of the step loop runs (2 where the loop is unrolled by two).

    Every count is the steady state's mean per step over two trips of the loop, so a load
    consumed two trips after its issue (a two-deep prefetch) is half a round trip per trip:
    one L2 latency spread over the two trips it has to arrive in."""
    guards = known_guards(insts, params or {})
    rep = PathReport()
    sl = step_loop(insts)
    lo, hi = sl if sl else (0, len(insts) - 1)
    if sl:
        rep.loop = (insts[lo].addr, insts[hi].addr)
    inner = {b: a for a, b in loops(insts) if lo <= a and b < hi}
    index = {i.addr: n for n, i in enumerate(insts)}
    last = hi  # the loop's own backward branch issues every step too

    # a flag round trip: an atomic, or a strong load of one word (a counter or flag; the
    # exchanged data moves in 64/128-bit or cp.async loads)
    flags = {k for k in range(lo, last + 1) if insts[k].is_strong_load()
             and (insts[k].base.startswith("ATOM") or not {"64", "128"} & set(insts[k].op.split(".")))}
    # a poll: an innermost loop around a flag load and no MMA (runs once: the flag is assumed
    # ready); a loop around polls (e.g. over producers) is a work loop
    polls = {b for b, a in inner.items() if any(k in flags for k in range(a, b + 1))
             and not any(insts[k].base in MMA for k in range(a, b + 1))
             and not any(a < a2 and b2 < b for b2, a2 in inner.items())}
    # a rotated poll (`if not ready: do { poll } while not ready`) is skipped by a branch
    # before it to just past its back edge: with the flag ready at the first look, it never runs
    guarded = {b for b in polls if any(insts[k].branch_target() is not None
                                       and index.get(insts[k].branch_target()) == b + 1 for k in range(lo, inner[b]))}
    # a poll written `while (!ready) { re-poll }`, its first loads issued before the loop:
    # with the flag ready at the first look the loop leaves at its readiness test, the first
    # branch out of the loop on a value derived from a flag load; the re-polls and anything
    # reached only past that test (a timeout report) never run
    derived = _flag_derived(insts, lo, last, flags)
    exits = {}
    for b in polls:
        for k in range(inner[b], b):
            t = insts[k].branch_target()
            if (t is not None and t in index and not inner[b] <= index[t] <= b and insts[k].guard
                    and insts[k].guard.lstrip("!") in derived[k]):
                exits[k] = True
                break
    # instructions reachable from the loop head without leaving [lo, last], with the known
    # branches resolved (code placed out of line, past the loop, is not followed)
    reach, todo, unknown = set(), [lo], set()
    while todo:
        n = todo.pop()
        if n in reach or not lo <= n <= last:
            continue
        reach.add(n)
        i = insts[n]
        t = i.branch_target()
        g = exits.get(n, _guard_value(i, guards.get(n)))
        if t is not None and t in index:
            if g is None and index[t] > n:
                unknown.add(n)
            if g is not False and index[t] > n:
                todo.append(index[t])
            if g is True:
                continue
        if i.base == "EXIT" and g is True:
            continue
        todo.append(n + 1)
    order = sorted(reach)
    work = {b for b in inner if b not in polls}
    innermost = {b for b in work if not any(a2 > inner[b] and b2 < b for b2, a2 in inner.items() if b2 in work)}
    trips = {b: inner_trips if b in innermost else outer_trips for b in work}
    skip = {k for b in guarded for k in range(inner[b], b + 1)}

    def walk(w: _Walk, a: int, b: int):
        for n in order:
            if n < a or n > b or n in skip:
                continue
            w.step(insts[n], n in flags)
            if n in inner and inner[n] >= a:
                for _ in range(trips.get(n, 1) - 1):
                    walk(w, inner[n], n - 1)
                    w.step(insts[n])

    w = _Walk()
    marks, fresh = [], 0
    for _ in range(5):  # two trips to settle, then the mean of two more (n = 2 * steps_per_trip steps)
        w.loads = []
        walk(w, lo, last)
        marks.append((w.wait, dict(w.count), w.chain))
    # the mma chain of one step. Where a step's mmas feed the next's through registers (the
    # state converted to an operand in registers) the chain grows from trip to trip, and one
    # trip walked afresh holds its steps' chains end to end: a step's is the larger of the
    # growth per step and that chain per step (the two differ where only some of the links
    # are in registers). Where the steps meet only through shared memory, which the walk
    # does not follow, the chain does not grow, and a step's is the longest of one trip
    # walked afresh (an unrolled trip's steps: side by side, not end to end). Not told apart:
    # steps linked in registers inside a trip but only through shared memory across its back
    # edge read the trip's chain, twice a step's (an over-estimate)
    probe = copy.deepcopy(w)
    probe.mma_depth, probe.chain = {}, 0
    walk(probe, lo, last)
    fresh = probe.chain
    base = marks[3][0][0]
    rep.loads = [(a, op, d - base, f) for a, op, d, f in w.loads]
    (d1, f1), c1, _ = marks[2]
    (d2, f2), c2, chain = marks[4]
    n = 2 * steps_per_trip
    if not sl:  # one launch per step: the depth and counts of the whole kernel, walked once
        (d2, f2), (d1, f1), n = marks[0][0], (0, 0), 1
        c2, c1 = marks[0][1], {k: 0 for k in marks[0][1]}
    rep.round_trips, rep.flag_round_trips = _per_step(d2 - d1, n), _per_step(f2 - f1, n)
    rep.insts_per_step = _per_step(c2["insts"] - c1["insts"], n)
    rep.barriers, rep.cluster_barriers = _per_step(c2["bar"] - c1["bar"], n), _per_step(c2["cbar"] - c1["cbar"], n)
    rep.mma = _per_step(c2["mma"] - c1["mma"], n)
    growth = _per_step(chain - marks[2][2], n) if sl else 0
    rep.mma_chain = max(growth, _per_step(fresh, steps_per_trip)) if growth else fresh
    rep.unknown_branches = len(unknown)
    return rep


def _per_step(total: int, n: int) -> int | float:
    """total / n: an int where it divides evenly (the usual case), else to two decimals."""
    return total // n if total % n == 0 else round(total / n, 2)


def predicted_terms(rep: PathReport, m: dict, bits: int, warps: int) -> dict:
    """The machine model's µs per step of a step with this critical path (fusedrnn.machine),
    by term: "wait" (flag round trips at flag_round_trip_us, the others at l2_latency_us),
    "sync" (each CTA and cluster barrier), "issue" (the step's instructions of one warp at
    the issue rate, warps sharing a scheduler) and "mma" (the dependent mma chain); "total"
    = wait + sync + max(issue, mma): the chain issues among the other instructions."""
    from fusedrnn import machine  # noqa: PLC0415
    clk = m["clock_ghz"] * 1e3
    link = m["mma_dep_cycles_tf32"] if bits == 32 else m["mma_dep_cycles_bf16"]  # SASS shows 3xTF32's three mmas
    t = {"wait": rep.flag_round_trips * m["flag_round_trip_us"]
         + (rep.round_trips - rep.flag_round_trips) * m["l2_latency_us"],
         "sync": rep.barriers * m["cta_sync_us"] + rep.cluster_barriers * m["cluster_barrier_us"],
         "issue": machine.issue_us(m, rep.insts_per_step, warps),
         "mma": rep.mma_chain * link / clk}
    t["total"] = t["wait"] + t["sync"] + max(t["issue"], t["mma"])
    return t


def predicted_us(rep: PathReport, m: dict, bits: int, warps: int) -> float:
    """predicted_terms(...)["total"]."""
    return predicted_terms(rep, m, bits, warps)["total"]


# --- kernel parameters (cuobjdump -elf) ------------------------------------------------

PARAM_BASE_SM90 = 0x210  # constant-bank offset of the first kernel parameter on sm_90


def param_offsets(elf: str) -> dict[str, dict[int, int]]:
    """{function: {parameter ordinal: byte offset}} from `cuobjdump -elf` (EIATTR_KPARAM_INFO)."""
    out: dict[str, dict[int, int]] = {}
    cur = None
    for line in elf.splitlines():
        m = re.match(r"^\.nv\.info\.([\w$.]+)\s*$", line.strip())
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        m = re.search(r"Ordinal\s*:\s*(0x[0-9a-f]+)\s+Offset\s*:\s*(0x[0-9a-f]+)", line)
        if m and cur is not None:
            cur[int(m.group(1), 16)] = int(m.group(2), 16)
    return out
