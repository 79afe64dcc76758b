"""Many-to-one sequence classification with variable-length sequences (fusedrnn.GRU).

    python examples/sequence_classify.py                       # bidirectional 2-layer GRU
    python examples/sequence_classify.py --cell rnn --min-len 40 --max-len 60   # vanilla RNN: vanishing gradients

The task needs memory: each sequence is noise symbols with one `A` and one `B` somewhere;
the label is which of the two came first (chance: 50%). The padded batch goes through
pack_padded_sequence(..., enforce_sorted=False), so padding never enters the recurrence and
h_n is each sequence's state at its own last (forward) / first (backward) element; the
classifier reads the top layer's final states of both directions.

`main(argv) -> dict` returns the metrics, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import example_cli as cli  # examples/example_cli.py: the options every example has
import fusedrnn
from example_progress import progress  # examples/example_progress.py: tqdm, else plain lines

CELLS = {"gru": fusedrnn.GRU, "lstm": fusedrnn.LSTM, "rnn": fusedrnn.RNN}
A, B, PAD = 0, 1, 0  # symbols 0 (A) and 1 (B) are the markers, 2.. are noise; padding is never read

# values used when an option is not given: (normal run, --quick)
DEFAULTS = {"hidden": (64, 24), "steps": (1500, 200), "batch_size": (64, 32),
            "min_len": (10, 4), "max_len": (40, 12), "test_size": (2000, 500)}


def make_batch(n: int, min_len: int, max_len: int, vocab: int, gen: torch.Generator):
    """n sequences of lengths in [min_len, max_len], padded; label 1 iff A comes before B."""
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=gen)
    x = torch.randint(2, vocab, (n, max_len), generator=gen)
    labels = torch.randint(0, 2, (n,), generator=gen)
    for i in range(n):
        first, second = torch.randperm(int(lengths[i]), generator=gen)[:2].sort().values.tolist()
        x[i, first], x[i, second] = (A, B) if labels[i] else (B, A)
        x[i, lengths[i]:] = PAD
    return x, lengths, labels


class Classifier(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, cell: str, bidirectional: bool,
                 dropout: float, backend: str):
        super().__init__()
        self.vocab = vocab
        self.rnn = CELLS[cell](vocab, hidden, layers, batch_first=True, bidirectional=bidirectional,
                               dropout=dropout, backend=backend)
        self.head = nn.Sequential(nn.Linear(hidden * (2 if bidirectional else 1), hidden), nn.Tanh(),
                                  nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(x, self.vocab).float()
        packed = pack_padded_sequence(onehot, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        D = 2 if self.rnn.bidirectional else 1
        top = h_n[-D:]  # the last layer's final state of each direction, in the input's batch order
        return self.head(torch.cat(list(top), dim=-1))


@torch.no_grad()
def accuracy(model, x, lengths, labels, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        pred = model(x[i:i + batch], lengths[i:i + batch]).argmax(-1)
        correct += int((pred == labels[i:i + batch]).sum())
    model.train()
    return correct / len(x)


def mode_defaults(name: str) -> str:
    return cli.defaults_text(DEFAULTS, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", choices=sorted(CELLS), default="gru", help="recurrent cell (default: %(default)s)")
    p.add_argument("--layers", type=int, default=2, help="stacked recurrent layers (default: %(default)s)")
    p.add_argument("--hidden", type=int, help=f"hidden units per layer and direction ({mode_defaults('hidden')})")
    p.add_argument("--unidirectional", action="store_true", help="one direction instead of two")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout between recurrent layers (default: %(default)s)")
    p.add_argument("--vocab", type=int, default=8,
                   help="alphabet size: A, B and vocab-2 noise symbols (default: %(default)s)")
    p.add_argument("--min-len", type=int, help=f"shortest sequence ({mode_defaults('min_len')})")
    p.add_argument("--max-len", type=int, help=f"longest sequence ({mode_defaults('max_len')})")
    p.add_argument("--steps", type=int, help=f"optimizer updates ({mode_defaults('steps')})")
    p.add_argument("--batch-size", type=int, help=f"sequences per update ({mode_defaults('batch_size')})")
    p.add_argument("--test-size", type=int, help=f"held-out sequences for the accuracy ({mode_defaults('test_size')})")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: %(default)s)")
    cli.add_common_options(p, "fusedrnn backend of the recurrent layer",
                           "tiny model, a few hundred steps (what the tests run)")
    return p


def parse_args(argv):
    p = build_parser()
    args = cli.parse(p, argv, DEFAULTS)
    if not 2 <= args.min_len <= args.max_len:
        p.error("need 2 <= --min-len <= --max-len")
    if args.vocab < 3:
        p.error("--vocab must be at least 3")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = cli.start(args)
    gen = torch.Generator().manual_seed(args.seed)
    test = make_batch(args.test_size, args.min_len, args.max_len, args.vocab, gen)
    test = tuple(t.to(device) for t in test)
    model = Classifier(args.vocab, args.hidden, args.layers, args.cell, not args.unidirectional,
                       args.dropout, args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"sequence_classify: which came first, A or B? lengths {args.min_len}-{args.max_len}, "
          f"{'uni' if args.unidirectional else 'bi'}directional {args.layers}-layer {args.cell} "
          f"hidden {args.hidden}, device {device}")
    print(fusedrnn.explain(model.rnn, test[0][:2].float()))

    bar = progress(range(args.steps), disable=args.no_progress, dynamic_ncols=True)
    losses, tokens, t0 = [], 0, time.perf_counter()
    model.train()
    for step in bar:
        x, lengths, labels = (t.to(device) for t in make_batch(args.batch_size, args.min_len, args.max_len,
                                                                 args.vocab, gen))
        loss = F.cross_entropy(model(x, lengths), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(loss.item())
        tokens += int(lengths.sum())
        if (step + 1) % args.log_every == 0:
            recent = losses[-args.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}",
                            tok_s=f"{tokens / (time.perf_counter() - t0):.0f}", refresh=False)
    elapsed = time.perf_counter() - t0
    acc = accuracy(model, *test)
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {"accuracy": acc, "chance": 0.5, "final_loss": sum(tail) / len(tail), "losses": losses,
               "steps": args.steps, "tokens_per_s": tokens / elapsed, "device": str(device), "model": model}
    print(f"step {args.steps}: loss {metrics['final_loss']:.3f}, {metrics['tokens_per_s']:.0f} tokens/s; "
          f"held-out accuracy {acc:.1%} (chance 50.0%) on {args.test_size} sequences")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
