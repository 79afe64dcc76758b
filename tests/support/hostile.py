"""Hostile inputs drawn by hypothesis (layouts, aliasing, lengths, NaN/±inf) and the checks that run
one example through a backend; tests/test_hostile_properties.py and the emulated CUDA tests use them."""
import torch
from hypothesis import HealthCheck
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from support import strided_args
from support.parity import make_pair
from support.sequence_oracle import assert_same_values, each_sequence_alone

FIXTURE_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
CELLS = ["lstm", "gru", "rnn_tanh", "rnn_relu"]
VALUES = [float("nan"), float("inf"), -float("inf")]


@st.composite
def hostile_modules(draw):
    cell = draw(st.sampled_from(CELLS))
    hx = draw(st.sampled_from(["none", "plain", "transposed", "batch-expanded", "h0-is-c0", "shares-x"]))
    return dict(
        cell=cell, I=draw(st.integers(1, 3)), H=draw(st.integers(1, 4)), layers=draw(st.integers(1, 2)),
        bidir=draw(st.booleans()), batch_first=draw(st.booleans()), T=draw(st.integers(1, 4)),
        B=draw(st.integers(1, 3)), kind=draw(st.sampled_from(["padded", "sorted", "unsorted"])), hx=hx,
        x_layout="plain" if hx == "shares-x" else draw(st.sampled_from(["plain", "permuted", "step-strided",
                                                                        "batch-expanded"])),
        poison=draw(st.sampled_from(["none", "x", "h0", "c0"])), value=draw(st.sampled_from(VALUES)),
        where=draw(st.integers(0, 10**6)), seed=draw(st.integers(0, 2**16)))


def make_leaves(c, dtype):
    """x, h, c leaves (float64 values, then `dtype`), one value poisoned as drawn. With
    "shares-x" the x leaf is one flat buffer holding the input and then h0."""
    g = torch.Generator().manual_seed(c["seed"])
    T, B, I, H = c["T"], c["B"], c["I"], c["H"]
    LD = c["layers"] * (2 if c["bidir"] else 1)
    x_shape = {"plain": (T, B, I), "permuted": (B, I, T), "step-strided": (2 * T, B, I),
               "batch-expanded": (T, 1, I)}[c["x_layout"]]
    h_shape = {"transposed": (LD, H, B), "batch-expanded": (LD, 1, H)}.get(c["hx"], (LD, B, H))
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    h = torch.randn(h_shape, generator=g, dtype=torch.float64)
    cc = torch.randn(LD, B, H, generator=g, dtype=torch.float64)
    used = {"x": x, "h0": h if c["hx"] != "none" else None,
            "c0": cc if c["cell"] == "lstm" and c["hx"] not in ("none", "h0-is-c0") else None}
    victim = used.get(c["poison"])
    if victim is not None:
        victim.view(-1)[c["where"] % victim.numel()] = c["value"]
    if c["hx"] == "shares-x":
        x = torch.cat([x.reshape(-1), h.reshape(-1)])
    return [t.to(dtype).requires_grad_() for t in (x, h, cc)]


def build_inputs(c, x_leaf, h_leaf, c_leaf):
    """The module's (input, hx) as views of the leaves, in the layouts the example draws."""
    T, B, I, H = c["T"], c["B"], c["I"], c["H"]
    if c["hx"] == "shares-x":
        x, h_leaf = x_leaf[:T * B * I].view(T, B, I), x_leaf[T * B * I:].view(-1, B, H)
    elif c["x_layout"] == "permuted":
        x = x_leaf.permute(2, 0, 1)       # leaf (B, I, T): batch and features strided
    elif c["x_layout"] == "step-strided":
        x = x_leaf[::2]                  # leaf (2T, B, I)
    elif c["x_layout"] == "batch-expanded":
        x = x_leaf.expand(T, B, I)        # leaf (T, 1, I): stride 0 over the batch
    else:
        x = x_leaf
    if c["batch_first"] and c["kind"] == "padded":
        x = x.transpose(0, 1)
    hx = None
    if c["hx"] != "none":
        h = {"transposed": lambda: h_leaf.transpose(1, 2),
             "batch-expanded": lambda: h_leaf.expand(-1, B, -1)}.get(c["hx"], lambda: h_leaf)()
        hx = (h, h if c["hx"] == "h0-is-c0" else c_leaf) if c["cell"] == "lstm" else h
    if c["kind"] != "padded":
        g = torch.Generator().manual_seed(c["seed"])
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        if c["kind"] == "sorted":
            lengths = lengths.sort(descending=True).values
        x = pack_padded_sequence(x, lengths, enforce_sorted=c["kind"] == "sorted")
    return x, hx


def run(module, c, dtype):
    """Outputs and the gradients of the leaves and every parameter, for a fixed cotangent."""
    leaves = make_leaves(c, dtype)
    x, hx = build_inputs(c, *leaves)
    y, hidden = module(x, hx)
    outs = [y.data if isinstance(y, PackedSequence) else y] + (list(hidden) if isinstance(hidden, tuple) else [hidden])
    g = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype)).sum() for o in outs)
    wrt = leaves + list(module.parameters())
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    grads = [gr if gr is not None else torch.zeros_like(w) for gr, w in zip(grads, wrt)]
    return [t.detach().double() for t in outs + grads]


def max_finite_err(got, truth):
    errs = [(a - b)[torch.isfinite(a) & torch.isfinite(b)].abs() for a, b in zip(got, truth)]
    return max((e.max().item() for e in errs if e.numel()), default=0.0)


def check_module_example(c, backend):
    dtype = torch.float64 if backend == "reference" else torch.float32
    torch.manual_seed(c["seed"])
    ours, ref = make_pair(c["cell"], c["I"], c["H"], backend=backend, dtype=dtype, num_layers=c["layers"],
                          bidirectional=c["bidir"], batch_first=c["batch_first"])
    got = run(ours, c, dtype)
    want = run(ref, c, dtype)  # torch.nn in the same dtype: the NaN/inf positions to reproduce
    pairs = [(f"tensor {i}", a, b) for i, (a, b) in enumerate(zip(got, want))]
    if dtype == torch.float64:
        assert_same_values(pairs, atol=1e-9)
        return
    for kind in (torch.isnan, torch.isposinf, torch.isneginf):
        for name, a, b in pairs:
            assert torch.equal(kind(a), kind(b)), (name, kind.__name__)
    truth = run(ref.double(), c, torch.float64)
    err_ours, err_torch = max_finite_err(got, truth), max_finite_err(want, truth)
    assert err_ours <= 2 * err_torch + 1e-5, (err_ours, err_torch)


def short_sequence_state(cell, state, value):
    """An example the issue found: a packed batch whose short sequence (length 1 of 3) starts
    from a non-finite state; seed 0 draws lengths [3, 1], `where` 4 is (layer 0, sequence 1, unit 0)."""
    return dict(cell=cell, I=3, H=4, layers=1, bidir=False, batch_first=False, T=3, B=2, kind="sorted",
                hx="plain", x_layout="plain", poison=state, value=value, where=4, seed=0)


ISSUE_EXAMPLES = [short_sequence_state("lstm", "c0", float("inf")),
                  short_sequence_state("rnn_relu", "h0", float("inf"))]


@st.composite
def hostile_recurrences(draw):
    names = strided_args.ARGS + strided_args.GRADS
    return dict(cell=draw(st.sampled_from(CELLS)), reverse=draw(st.booleans()),
                layouts={k: draw(st.sampled_from(["plain", "strided", "expanded"])) for k in names},
                lengths=draw(st.lists(st.integers(1, strided_args.T), min_size=strided_args.B,
                                      max_size=strided_args.B)),
                poison=draw(st.sampled_from(["padded gx", "h0 of short sequences", "c0 of short sequences"])),
                value=draw(st.sampled_from(VALUES)), seed=draw(st.integers(0, 2**16)))


def check_recurrence_example(c, backend):
    T = strided_args.T
    base = strided_args.case(c["cell"], c["reverse"], {}, seed=c["seed"])  # contiguous, float32
    base = {k: (v.double() if v is not None and v.is_floating_point() else v) for k, v in base.items()}
    base["lengths"] = torch.tensor(c["lengths"], dtype=torch.int32)
    if c["layouts"]["lengths"] == "expanded":
        base["lengths"][:] = base["lengths"][0]  # what the stride-0 view will hold
    state = {"h0 of short sequences": "h0", "c0 of short sequences": "c0"}.get(c["poison"])
    for b, L in enumerate(base["lengths"].tolist()):
        if c["poison"] == "padded gx":
            base["gx"][L:, b] = c["value"]
        elif L < T and base.get(state) is not None:
            base[state][b, 0] = c["value"]
    g = torch.Generator().manual_seed(0)
    dtype = torch.float64 if backend == "reference" else torch.float32
    views = {k: (strided_args.strided(v.to(dtype) if v.is_floating_point() else v, c["layouts"][k], g)
                 if v is not None else None) for k, v in base.items()}
    truth = {k: (v.contiguous().double() if v is not None and v.is_floating_point() else v)
             for k, v in views.items()}  # the values the views really hold
    got = strided_args.run(c["cell"], views, backend, c["reverse"])
    n_out = 3 if c["cell"] == "lstm" else 2
    cots = [truth[k] for k in strided_args.GRADS[:n_out]]
    want_out, want_grads = each_sequence_alone(c["cell"], {k: truth[k] for k in strided_args.ARGS[:5]},
                                               truth["lengths"].long(), c["reverse"], cotangents=cots)
    names = ["y", "hT", "cT"][:n_out] + [f"d{k}" for k in want_grads]
    assert_same_values([(n, a.double(), b) for n, a, b in zip(names, got, want_out + list(want_grads.values()))],
                       atol=1e-9 if dtype == torch.float64 else 1e-4)
