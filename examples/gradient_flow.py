"""Vanishing and exploding gradients: ‖∂L/∂h_t‖ against t for fusedrnn's RNN (tanh, relu), LSTM and GRU.

    python examples/gradient_flow.py --plot gradient_flow.png
    python examples/gradient_flow.py --quick

The task is long-range by construction: a sequence of T random symbols (one-hot, plus a flag
channel set at t = 0), and the label is the *first* symbol, read from the last step's output
only. So the loss L at step T-1 depends on the input at t = 0 only through the recurrence, and
‖∂L/∂h_t‖ says how much of the learning signal reaches step t. On the same batch, for each model:

- vanilla RNN, tanh, torch's init: the gradient shrinks by a roughly constant factor per step
  (vanishing: ∂h_t/∂h_{t-1} = diag(tanh') W_hh, with W_hh's spectral radius about 0.58);
- vanilla RNN, relu, W_hh scaled ×4 at init (--relu-scale): it grows backwards (exploding);
- LSTM: the cell state's path is additive, c_t = f ⊙ c_{t-1} + i ⊙ g, so ∂c_t/∂c_{t-1} = diag(f)
  with no weight matrix and no squashing derivative on it: the forget gate alone sets the decay.
  At torch's init f ≈ σ(0) = 0.5 and the gradient still decays about as fast as the tanh RNN's;
  with the forget gate's bias raised by 1 (--forget-bias, the usual remedy) it decays far slower;
- GRU: h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}, an additive path gated by z (≈ 0.5 at init).

∂L/∂h_t is the *total* derivative: every path from h_t to L. A fused module's output sequence
does not give it (y.retain_grad() on a whole-sequence output yields only L's direct dependence
on y_t, zero before the last step: the recurrence runs inside the module), so the measurement
runs the same module one step per call (T = 1, state carried) and retains each step's state.
Then every model is trained on the task with and without gradient clipping (Adam,
--clip), logging the pre-clip gradient norm and the norm of the update actually applied.

`main(argv) -> dict` returns the metrics, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from torch import nn

import example_cli as cli  # examples/example_cli.py: the options every example has
import fusedrnn
from example_progress import progress  # examples/example_progress.py: tqdm, else plain lines

# name: (module class, nonlinearity); the relu RNN's W_hh and the "lstm+1" forget bias are set in build()
MODELS = {"rnn-tanh": ("RNN", "tanh"), "rnn-relu": ("RNN", "relu"), "lstm": ("LSTM", None),
          "lstm+fb": ("LSTM", None), "gru": ("GRU", None)}

# values used when an option is not given: (normal run, --quick)
DEFAULTS = {"length": (50, 30), "hidden": (32, 32), "steps": (300, 60), "batch_size": (64, 32)}


def make_batch(n: int, T: int, symbols: int, gen: torch.Generator):
    """(x (n, T, symbols + 1), labels (n,)): random symbols, a flag channel at t = 0, label = the first symbol."""
    s = torch.randint(0, symbols, (n, T), generator=gen)
    x = F.one_hot(s, symbols + 1).float()
    x[:, 0, symbols] = 1.0
    return x, s[:, 0]


class Model(nn.Module):
    """One fusedrnn recurrent layer and a linear read-out of its last step."""

    def __init__(self, name: str, symbols: int, hidden: int, backend: str, relu_scale: float, forget_bias: float):
        super().__init__()
        kind, nonlinearity = MODELS[name]
        extra = {"nonlinearity": nonlinearity} if nonlinearity else {}
        self.rnn = getattr(fusedrnn, kind)(symbols + 1, hidden, batch_first=True, backend=backend, **extra)
        self.head = nn.Linear(hidden, symbols)
        with torch.no_grad():
            if name == "rnn-relu":
                self.rnn.weight_hh_l0.mul_(relu_scale)
            if name == "lstm+fb":  # gates i, f, g, o: the f rows of the recurrent bias
                self.rnn.bias_hh_l0[hidden:2 * hidden] += forget_bias

    def forward(self, x):
        """Logits (N, symbols) from the whole sequence in one module call (how it is trained)."""
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def hidden_gradients(model: Model, x, labels) -> dict:
    """‖∂L/∂h_t‖ for t = 0..T-1 (and ‖∂L/∂c_t‖ for an LSTM), the total derivatives: the module
    runs one step per call with the state carried, each step's state retained by autograd.
    Also returns the loss and the parameters' gradients (for checking against one whole-sequence call)."""
    model.zero_grad(set_to_none=True)
    state, hs, cs = None, [], []
    for t in range(x.shape[1]):
        _, state = model.rnn(x[:, t:t + 1], state)
        h, c = state if isinstance(state, tuple) else (state, None)
        for s, keep in ((h, hs), (c, cs)):
            if s is not None:
                s.retain_grad()
                keep.append(s)
    loss = F.cross_entropy(model.head(hs[-1][-1]), labels)
    loss.backward()
    norm = lambda s: 0.0 if s.grad is None else s.grad[-1].norm().item()  # noqa: E731  (the top layer's)
    out = {"h": [norm(h) for h in hs], "loss": loss.item(),
           "param_grads": [p.grad.clone() for p in model.parameters()]}
    if cs:
        out["c"] = [norm(c) for c in cs[:-1]]  # c_{T-1} reaches no loss (only h_{T-1} is read)
    model.zero_grad(set_to_none=True)
    return out


def train(model: Model, name: str, args, gen: torch.Generator, clip: float, bar, device) -> dict:
    """Adam on fresh batches; per update the loss, the pre-clip gradient norm and the applied update's norm."""
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    losses, grad_norms, clipped_norms, update_norms = [], [], [], []
    for _ in range(args.steps):
        x, labels = (t.to(device) for t in make_batch(args.batch_size, args.length, args.symbols, gen))
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norms.append(torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf).item())
        clipped_norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        before = [p.detach().clone() for p in params]
        opt.step()
        update_norms.append(math.sqrt(sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(params, before))))
        losses.append(loss.item())
        bar.update(1)
        if len(losses) % args.log_every == 0:
            bar.set_postfix(model=name, clip=clip, loss=f"{sum(losses[-args.log_every:]) / args.log_every:.3f}",
                            refresh=False)
    x, labels = (t.to(device) for t in make_batch(1000, args.length, args.symbols, gen))
    with torch.no_grad():
        accuracy = (model(x).argmax(-1) == labels).float().mean().item()
    return {"losses": losses, "grad_norms": grad_norms, "clipped_norms": clipped_norms,
            "update_norms": update_norms, "accuracy": accuracy}


def ratio(norms: list) -> float:
    """‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖."""
    return norms[0] / norms[-1]


def per_step(norms: list) -> float:
    """The geometric mean factor by which the norm changes per step going back in time."""
    r = ratio(norms)
    return r ** (1 / (len(norms) - 1)) if r > 0 else 0.0


def print_table(results: dict, T: int) -> None:
    ts = sorted({0, T // 4, T // 2, 3 * T // 4, T - 2, T - 1})
    print("‖∂L/∂h_t‖ at init (same batch):")
    print(f"  {'model':10}" + "".join(f"{'t=' + str(t):>10}" for t in ts) + f"{'h0/hT-1':>10}{'per step':>10}")
    rows = [(n, r["init"]["h"]) for n, r in results.items()]
    rows += [(f"{n} c", r["init"]["c"]) for n, r in results.items() if "c" in r["init"]]
    for name, norms in rows:
        cells = "".join(f"{norms[t]:>10.2e}" if t < len(norms) else f"{'-':>10}" for t in ts)
        print(f"  {name:10}{cells}{ratio(norms):>10.1e}{per_step(norms):>10.3f}")


def print_training(results: dict, clip: float) -> None:
    print(f"training (Adam): final loss (mean of the last 10%), held-out accuracy, largest pre-clip gradient norm, "
          f"largest applied update; clip {clip:g} vs none")
    for name, r in results.items():
        cells = []
        for key in ("clipped", "unclipped"):
            t = r[key]
            tail = t["losses"][-max(1, len(t["losses"]) // 10):]
            cells.append(f"{sum(tail) / len(tail):7.3f} {t['accuracy']:6.1%} {max(t['grad_norms']):9.2e} "
                         f"{max(t['update_norms']):8.2e}")
        print(f"  {name:9} clip: {cells[0]}   none: {cells[1]}   ‖∂L/∂h_0‖/‖∂L/∂h_T-1‖ after "
              f"(clip) {ratio(r['trained']['h']):.1e}")


def plot(path, results: dict, clip: float, symbols: int) -> bool:
    """Three panels: ‖∂L/∂h_t‖ against t at init, and with and without clipping the training loss and
    the pre-clip gradient norm. False (nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.6))
    for i, (name, r) in enumerate(results.items()):
        colour = f"C{i}"
        a.semilogy(r["init"]["h"], color=colour, label=f"{name}  ‖∂L/∂h_t‖")
        if "c" in r["init"]:
            a.semilogy(r["init"]["c"], color=colour, ls=":", label=f"{name}  ‖∂L/∂c_t‖")
        for key, ls in (("clipped", "-"), ("unclipped", "--")):
            label = f"{name}, {'clip' if key == 'clipped' else 'no clip'}"
            b.semilogy(r[key]["losses"], color=colour, ls=ls, lw=1, label=label)
            c.semilogy(r[key]["grad_norms"], color=colour, ls=ls, lw=1)
    c.axhline(clip, color="k", lw=0.8, label=f"clip {clip:g}")
    a.set(xlabel="t", ylabel="gradient norm", title="∂L/∂h_t at init (L at the last step only)")
    b.set(xlabel="update", ylabel="loss", title="training loss (log scale): clip (solid) vs none (dashed)")
    b.axhline(math.log(symbols), color="k", lw=0.8, label="chance")
    c.set(xlabel="update", ylabel="pre-clip gradient norm", title="gradient norm per update")
    a.legend(fontsize=7)
    b.legend(fontsize=6, ncol=2)
    c.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def mode_defaults(name: str) -> str:
    return cli.defaults_text(DEFAULTS, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, help=f"sequence length T ({mode_defaults('length')})")
    p.add_argument("--hidden", type=int, help=f"hidden units ({mode_defaults('hidden')})")
    p.add_argument("--symbols", type=int, default=4, help="alphabet size, the number of classes (default: %(default)s)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated subset of " + ", ".join(MODELS) + " (default: all)")
    p.add_argument("--relu-scale", type=float, default=4.0,
                   help="factor on the relu RNN's W_hh at init, which makes it explode (default: %(default)s)")
    p.add_argument("--forget-bias", type=float, default=1.0,
                   help="added to the forget gate's bias of model lstm+fb (default: %(default)s)")
    p.add_argument("--steps", type=int, help=f"training updates per model and clip setting ({mode_defaults('steps')})")
    p.add_argument("--batch-size", type=int, help=f"sequences per update and in the measured batch "
                                                  f"({mode_defaults('batch_size')})")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--plot", metavar="PATH", help="save the curves as a PNG (needs matplotlib; default: no plot)")
    cli.add_common_options(p, "fusedrnn backend of every module",
                           "shorter sequences, 60 updates per run (what the tests run)")
    return p  # --clip: the clipped runs' max norm (each model also trains unclipped)


def parse_args(argv):
    p = build_parser()
    args = cli.parse(p, argv, DEFAULTS)
    args.models = args.models.split(",")
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or args.length < 2:
        p.error(f"unknown model(s) {unknown}" if unknown else "--length must be at least 2")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = cli.start(args)
    print(f"gradient_flow: label = the first of {args.length} symbols, loss at the last step only; hidden "
          f"{args.hidden}; rnn-relu has W_hh x{args.relu_scale:g} at init, lstm+fb forget bias "
          f"+{args.forget_bias:g}; device {device}")
    x, labels = (t.to(device) for t in make_batch(args.batch_size, args.length, args.symbols,
                                                  torch.Generator().manual_seed(args.seed)))
    bar = progress(total=2 * args.steps * len(args.models), disable=args.no_progress, dynamic_ncols=True)
    results = {}
    for name in args.models:
        build = lambda: Model(name, args.symbols, args.hidden, args.backend, args.relu_scale,  # noqa: E731
                              args.forget_bias).to(device)
        torch.manual_seed(args.seed)
        model = build()
        r = {"init": hidden_gradients(model, x, labels), "model": model}
        for key, clip in (("clipped", args.clip), ("unclipped", 0.0)):
            torch.manual_seed(args.seed)
            trained = build()  # the same init as the measured model, the same batches in both runs
            r[key] = train(trained, name, args, torch.Generator().manual_seed(args.seed + 1), clip, bar, device)
            if key == "clipped":
                r["trained"] = hidden_gradients(trained, x, labels)
        results[name] = r
    bar.close()
    print_table(results, args.length)
    print_training(results, args.clip)
    saved = False
    if args.plot:
        saved = plot(args.plot, results, args.clip, args.symbols)
        print(f"plot: {args.plot}" if saved else "plot: matplotlib is not installed, no picture written")
    return {"results": results, "length": args.length, "clip": args.clip, "plot": args.plot, "plot_saved": saved,
            "x": x, "labels": labels, "device": str(device)}


if __name__ == "__main__":
    main(sys.argv[1:])
