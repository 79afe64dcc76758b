"""Image captioning: a small conv net's features initialise an LSTM decoder (fusedrnn.LSTMCell).

    python examples/captioning.py --quick            # one shape per image: "big red circle"
    python examples/captioning.py                    # two shapes: "red circle left of blue square"

One-to-many, the way introductory lectures on recurrent networks caption images: a CNN
encodes the image, its features become the decoder's initial state (h0, c0 of every layer),
and the decoder emits one word at a time. The images are drawn by the script itself — circles,
squares and triangles in four colours on a noisy background (two sizes with --objects 1; two
shapes side by side or one above the other with --objects 2) — so every caption is determined
by the picture and the task is learnable in seconds to minutes on a CPU.

Training uses teacher forcing: the decoder is `fusedrnn.LSTM` run over the whole reference
caption in one call ([<bos>, w1, w2, ...] in, [w1, w2, ..., <eos>] out). Captions are then
sampled greedily one token at a time through `fusedrnn.LSTMCell`s that hold the very same
parameters (a cell per layer, weight_ih/weight_hh/biases shared with the LSTM's layer):
embed the last token, step every layer, take the argmax, feed it back. With --graph (GPU) the
whole step — embedding, cells, head, argmax — is captured once with fusedrnn.CapturedStep and
replayed per token.

`main(argv) -> dict` returns the metrics, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import example_cli as cli  # examples/example_cli.py: the options every example has
import fusedrnn
from example_progress import progress  # examples/example_progress.py: tqdm, else plain lines

PAD, BOS, EOS = 0, 1, 2
SIZES = ("big", "small")
COLOURS = {"red": (1.0, 0.15, 0.1), "green": (0.1, 0.85, 0.2), "blue": (0.2, 0.3, 1.0), "yellow": (1.0, 0.9, 0.1)}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("left of", "above")
WORDS = ["<pad>", "<bos>", "<eos>", *SIZES, *COLOURS, *SHAPES, "left", "of", "above"]
INDEX = {w: i for i, w in enumerate(WORDS)}

# values used when an option is not given: (normal run, --quick)
DEFAULTS = {"objects": (2, 1), "image_size": (24, 16), "hidden": (96, 32), "steps": (1500, 300),
            "batch_size": (64, 32), "test_size": (500, 200)}


# -- the synthetic data ------------------------------------------------------------------

def _masks(shape: torch.Tensor, cx, cy, r, S: int) -> torch.Tensor:
    """(N, S, S) bool: pixels inside each image's shape (0 circle, 1 square, 2 triangle)."""
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32), indexing="ij")
    dx, dy = xs - cx.view(-1, 1, 1), ys - cy.view(-1, 1, 1)
    r = r.view(-1, 1, 1)
    circle = dx * dx + dy * dy <= r * r
    square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.6 * (dy + r))  # pointing up
    return torch.stack([circle, square, triangle], 1)[torch.arange(len(shape)), shape]


def _paint(images, mask, colour) -> None:
    rgb = torch.tensor(list(COLOURS.values()))[colour]  # (N, 3)
    images.copy_(torch.where(mask.unsqueeze(1), rgb.view(-1, 3, 1, 1), images))


def make_batch(n: int, objects: int, S: int, gen: torch.Generator):
    """(images (n, 3, S, S), captions (n, L) word indices ending in <eos>, padded)."""
    images = 0.08 * torch.randn(n, 3, S, S, generator=gen)
    pick = lambda k: torch.randint(0, k, (n,), generator=gen)  # noqa: E731
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    colour, shape = pick(len(COLOURS)), pick(len(SHAPES))
    names = list(COLOURS)
    if objects == 1:
        size = pick(2)
        r = torch.where(size == 0, 0.36 * S, 0.22 * S)
        cx, cy = uniform(r + 1, S - r - 1), uniform(r + 1, S - r - 1)
        _paint(images, _masks(shape, cx, cy, r, S), colour)
        words = [[SIZES[a], names[b], SHAPES[c]] for a, b, c in zip(size.tolist(), colour.tolist(), shape.tolist())]
    else:
        colour2, shape2, vertical = pick(len(COLOURS)), pick(len(SHAPES)), pick(2)
        r = torch.full((n,), 0.17 * S)
        along, across = uniform(r + 1, S / 2 - 1), uniform(r + 1, S - r - 1)   # first shape: left / top half
        along2, across2 = uniform(S / 2 + 1, S - r - 1), uniform(r + 1, S - r - 1)
        first = (torch.where(vertical == 1, across, along), torch.where(vertical == 1, along, across))
        second = (torch.where(vertical == 1, across2, along2), torch.where(vertical == 1, along2, across2))
        _paint(images, _masks(shape, *first, r, S), colour)
        _paint(images, _masks(shape2, *second, r, S), colour2)
        words = [[names[a], SHAPES[b], *RELATIONS[v].split(), names[c], SHAPES[d]]
                 for a, b, v, c, d in zip(colour.tolist(), shape.tolist(), vertical.tolist(), colour2.tolist(),
                                          shape2.tolist())]
    L = max(len(w) for w in words) + 1
    captions = torch.full((n, L), PAD, dtype=torch.long)
    for i, w in enumerate(words):
        captions[i, :len(w) + 1] = torch.tensor([INDEX[x] for x in w] + [EOS])
    return images, captions


def text(tokens) -> str:
    out = []
    for t in tokens:
        if t == EOS:
            break
        out.append(WORDS[t])
    return " ".join(out)


# -- the model --------------------------------------------------------------------------

class Captioner(nn.Module):
    def __init__(self, S: int, hidden: int, embed: int, layers: int, backend: str):
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        # what is in the picture (the feature maps' maxima) and where (the coarse map itself)
        self.init_state = nn.Linear(32 + 32 * (S // 4) ** 2, 2 * layers * hidden)
        self.embed = nn.Embedding(len(WORDS), embed)
        self.lstm = fusedrnn.LSTM(embed, hidden, layers, batch_first=True, backend=backend)
        self.head = nn.Linear(hidden, len(WORDS))

    def initial_state(self, images):
        """(h0, c0), each (layers, N, hidden), from the image features."""
        maps = self.cnn(images)
        features = torch.cat([maps.amax((2, 3)), maps.flatten(1)], 1)
        s = self.init_state(features).view(-1, 2, self.layers, self.hidden)
        # h0 in tanh's range as every later h is; c0 unsquashed: the cell state carries what the
        # image says to the later words, and its gradient reaches the conv net undamped
        return torch.tanh(s[:, 0]).transpose(0, 1).contiguous(), s[:, 1].transpose(0, 1).contiguous()

    def forward(self, images, captions):
        """Teacher forcing: logits (N, L, V) for captions (N, L), given <bos> + captions[:, :-1]."""
        inp = torch.cat([torch.full_like(captions[:, :1], BOS), captions[:, :-1]], 1)
        y, _ = self.lstm(self.embed(inp), self.initial_state(images))
        return self.head(y)

    def cells(self) -> list:
        """One fusedrnn.LSTMCell per layer holding this LSTM's parameters (the same tensors, not
        copies): what the decoder is made of one step at a time."""
        out = []
        for k in range(self.layers):
            cell = fusedrnn.LSTMCell(self.lstm.input_size if k == 0 else self.hidden, self.hidden,
                                     backend=self.lstm.backend, device="meta")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                setattr(cell, name, getattr(self.lstm, f"{name}_l{k}"))
            out.append(cell)
        return out


def decode_step(model: Captioner, cells: list):
    """step(tokens (N,), (h, c) each (layers, N, hidden)) -> (next tokens (N,), new state): greedy."""
    def step(tokens, state):
        inp, hs, cs = model.embed(tokens), [], []
        for k, cell in enumerate(cells):
            h, c = cell(inp, (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
            inp = h
        return model.head(inp).argmax(-1), (torch.stack(hs), torch.stack(cs))
    return step


@torch.no_grad()
def sample(model: Captioner, images, max_len: int, graph: bool = False) -> torch.Tensor:
    """Greedy captions (N, max_len), one token at a time through the LSTM's cells."""
    model.eval()
    step = decode_step(model, model.cells())
    tokens = torch.full((len(images),), BOS, dtype=torch.long, device=images.device)
    state = model.initial_state(images)
    if graph:
        step = fusedrnn.CapturedStep(step, tokens, state)  # replayed per token; it carries the state
    out = []
    for _ in range(max_len):
        if graph:
            tokens = step(tokens).clone()
        else:
            tokens, state = step(tokens, state)
        out.append(tokens)
    model.train()
    return torch.stack(out, 1)


def caption_accuracy(model, images, captions, graph: bool = False, batch: int = 250) -> tuple[float, float, list]:
    """(exact-match rate, word accuracy, sampled captions) on held-out images."""
    exact, right, total, sampled = 0, 0, 0, []
    for i in range(0, len(images), batch):
        want = captions[i:i + batch]
        got = sample(model, images[i:i + batch], want.shape[1], graph)
        valid = want != PAD
        right += int(((got == want) & valid).sum())
        total += int(valid.sum())
        exact += int(((got == want) | ~valid).all(1).sum())
        sampled += [text(row) for row in got.tolist()]
    return exact / len(images), right / total, sampled


# -- command line -----------------------------------------------------------------------

def mode_defaults(name: str) -> str:
    return cli.defaults_text(DEFAULTS, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, choices=(1, 2),
                   help=f"shapes per image: 1 (caption: size colour shape) or 2 (colour shape left of / "
                        f"above colour shape) ({mode_defaults('objects')})")
    p.add_argument("--image-size", type=int,
                   help=f"image side in pixels, a multiple of 4 ({mode_defaults('image_size')})")
    p.add_argument("--hidden", type=int, help=f"LSTM hidden units per layer ({mode_defaults('hidden')})")
    p.add_argument("--embed", type=int, default=16, help="word embedding size (default: %(default)s)")
    p.add_argument("--layers", type=int, default=1,
                   help="stacked LSTM layers, i.e. cells per step (default: %(default)s)")
    p.add_argument("--steps", type=int, help=f"optimizer updates ({mode_defaults('steps')})")
    p.add_argument("--batch-size", type=int, help=f"images per update ({mode_defaults('batch_size')})")
    p.add_argument("--test-size", type=int, help=f"held-out images for the accuracy ({mode_defaults('test_size')})")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--graph", action="store_true",
                   help="sample through a CUDA graph of the whole decode step (fusedrnn.CapturedStep; needs a GPU)")
    p.add_argument("--show", type=int, default=4, metavar="N", help="held-out captions to print (default: %(default)s)")
    cli.add_common_options(p, "fusedrnn backend of the LSTM and its cells",
                           "one shape per image, tiny model, 300 steps (what the tests run)")
    return p


def parse_args(argv):
    p = build_parser()
    args = cli.parse(p, argv, DEFAULTS)
    if args.image_size < 12 or args.image_size % 4:
        p.error("--image-size must be a multiple of 4, at least 12")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = cli.start(args)
    if args.graph and device.type != "cuda":
        raise SystemExit("captioning: --graph captures the decode step in a CUDA graph and needs a CUDA device")
    gen = torch.Generator().manual_seed(args.seed)
    test_images, test_captions = (t.to(device) for t in make_batch(args.test_size, args.objects, args.image_size, gen))
    model = Captioner(args.image_size, args.hidden, args.embed, args.layers, args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"captioning: {args.objects} shape(s) per {args.image_size}x{args.image_size} image, vocabulary "
          f"{len(WORDS)}, conv net -> LSTM {args.layers}x{args.hidden}, device {device}")
    step_input = model.embed(test_captions[:2, 0])
    print(fusedrnn.explain(model.cells()[0], step_input))

    bar = progress(range(args.steps), disable=args.no_progress, dynamic_ncols=True)
    losses, t0 = [], time.perf_counter()
    for step in bar:
        images, captions = (t.to(device) for t in make_batch(args.batch_size, args.objects, args.image_size, gen))
        logits = model(images, captions)
        loss = F.cross_entropy(logits.reshape(-1, len(WORDS)), captions.reshape(-1), ignore_index=PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % args.log_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-args.log_every:]) / len(losses[-args.log_every:]):.3f}", refresh=False)
    elapsed = time.perf_counter() - t0
    exact, words, sampled = caption_accuracy(model, test_images, test_captions, args.graph)
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {"exact_match": exact, "word_accuracy": words, "final_loss": sum(tail) / len(tail),
               "uniform_loss": math.log(len(WORDS)), "losses": losses, "steps": args.steps,
               "images_per_s": args.steps * args.batch_size / elapsed, "sampled": sampled,
               "truth": [text(c) for c in test_captions.tolist()], "model": model, "device": str(device)}
    print(f"step {args.steps}: loss {metrics['final_loss']:.3f} (uniform {metrics['uniform_loss']:.3f}), "
          f"{metrics['images_per_s']:.0f} images/s; held-out: {exact:.1%} captions exact, {words:.1%} words right "
          f"({args.test_size} images, greedy, one token at a time through fusedrnn.LSTMCell"
          f"{', CUDA graph' if args.graph else ''})")
    for got, want in list(zip(sampled, metrics["truth"]))[:args.show]:
        print(f"  {'ok ' if got == want else 'BAD'} {got!r:40} truth {want!r}")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
