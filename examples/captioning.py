"""Image captioning: a small conv net's features initialise an LSTM decoder (fusedrnn.LSTMCell).

    python examples/captioning.py --quick            # one shape per image: "big red circle"
    python examples/captioning.py                    # two shapes: "red circle left of blue square"
    python examples/captioning.py --attention --maps attention.png   # soft attention, and its maps

One-to-many, the way introductory lectures on recurrent networks caption images: a CNN
encodes the image, its features become the decoder's initial state (h0, c0 of every layer),
and the decoder emits one word at a time. The images are drawn by the script itself — circles,
squares and triangles in four colours on a noisy background (two sizes with --objects 1; two
shapes side by side or one above the other with --objects 2; a row of three named left to
right with --objects 3) — so every caption is determined by the picture and the task is
learnable in seconds to minutes on a CPU.

Training uses teacher forcing: the decoder is `fusedrnn.LSTM` run over the whole reference
caption in one call ([<bos>, w1, w2, ...] in, [w1, w2, ..., <eos>] out). Captions are then
sampled greedily one token at a time through `fusedrnn.LSTMCell`s that hold the very same
parameters (a cell per layer, weight_ih/weight_hh/biases shared with the LSTM's layer):
embed the last token, step every layer, take the argmax, feed it back. With --graph (GPU) the
whole step — embedding, cells, head, argmax — is captured once with fusedrnn.CapturedStep and
replayed per token.

With --attention the decoder is the one "show, attend and tell" describes: at every step the
top layer's previous h scores each cell of the conv feature grid (examples/soft_attention.py),
the softmax-weighted mean of the cells' features (the context) joins the word embedding in the
first LSTMCell's input, and the context also feeds the output. Training then steps the cells one
word at a time (the context depends on the previous step), and --maps saves the weights of a
few held-out images' steps as a picture.

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
from soft_attention import SoftAttention, annotations, save_attention_maps  # examples/soft_attention.py

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


def pair_centres(vertical, r, S: int, uniform):
    """((x, y) of the first shape, (x, y) of the second), each (n,), for "left of" (vertical 0) or
    "above" (1). Along the relation's axis the first lies in the left / top half, the second in
    the other, at least 2r apart (no overlap); across it they are at most r/2 apart. So the
    relation is the axis of the larger offset: the picture always decides "left of" vs "above"."""
    along, across = uniform(r + 1, S / 2 - r), uniform(r + 1, S - r - 1)
    along2 = uniform(S / 2 + r, S - r - 1)
    across2 = (across + uniform(-r / 2, r / 2)).clamp(r + 1, S - r - 1)
    first = (torch.where(vertical == 1, across, along), torch.where(vertical == 1, along, across))
    second = (torch.where(vertical == 1, across2, along2), torch.where(vertical == 1, along2, across2))
    return first, second


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
    elif objects == 3:
        # a row of three named left to right ("red circle left of blue square left of green
        # triangle"), each at its own height, centres at least 2r apart across (no overlap)
        r = torch.full((n,), 0.1 * S)
        slack = S - 2 - 6 * r  # the room left when they stand 2r apart
        offsets = torch.stack([uniform(torch.zeros(n), slack) for _ in range(3)], 1).sort(1).values
        colours = [colour, pick(len(COLOURS)), pick(len(COLOURS))]
        shapes = [shape, pick(len(SHAPES)), pick(len(SHAPES))]
        for k in range(3):
            cx, cy = r + 1 + 2 * k * r + offsets[:, k], uniform(r + 1, S - r - 1)
            _paint(images, _masks(shapes[k], cx, cy, r, S), colours[k])
        words = [[names[c0], SHAPES[s0], "left", "of", names[c1], SHAPES[s1], "left", "of", names[c2], SHAPES[s2]]
                 for c0, s0, c1, s1, c2, s2 in zip(*(t.tolist() for pair in zip(colours, shapes) for t in pair))]
    else:
        colour2, shape2, vertical = pick(len(COLOURS)), pick(len(SHAPES)), pick(2)
        r = torch.full((n,), 0.17 * S)
        first, second = pair_centres(vertical, r, S, uniform)
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
        self.build_decoder(embed, hidden, layers, backend)
        self.head = nn.Linear(hidden, len(WORDS))

    def build_decoder(self, embed: int, hidden: int, layers: int, backend: str) -> None:
        """The recurrent part (created between the embedding and the head, so that a seed gives
        every model the same conv net, embedding and initial-state layer)."""
        self.lstm = fusedrnn.LSTM(embed, hidden, layers, batch_first=True, backend=backend)

    def initial_state(self, images, maps=None):
        """(h0, c0), each (layers, N, hidden), from the image features (`maps`: self.cnn(images))."""
        maps = self.cnn(images) if maps is None else maps
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

    def decoder(self, images):
        """(step, initial state) for greedy decoding: step(tokens (N,), state) -> (next tokens, state)."""
        return decode_step(self, self.cells()), self.initial_state(images)


class AttentionCaptioner(Captioner):
    """The same conv net, initial state, embedding and head; the decoder steps fusedrnn.LSTMCells
    whose input is [word embedding, context], the context being soft attention over the conv
    feature grid queried by the top layer's previous h (examples/soft_attention.py). As in "show,
    attend and tell", the context also enters the output: logits = head(h_t) + W_c context_t."""

    def build_decoder(self, embed: int, hidden: int, layers: int, backend: str) -> None:
        features = 32 + 2  # the conv net's channels and the grid cell's (x, y)
        self.attention = SoftAttention(features, hidden, hidden)
        self.context_out = nn.Linear(features, len(WORDS), bias=False)  # the context reaches the logits too
        self.decoder_cells = nn.ModuleList(
            fusedrnn.LSTMCell(embed + features if k == 0 else hidden, hidden, backend=backend) for k in range(layers))

    def cells(self) -> list:
        return list(self.decoder_cells)

    def encode(self, images):
        """(initial state, memory): memory = (keys, values) of the feature grid for the attention."""
        maps = self.cnn(images)
        values = annotations(maps)
        return self.initial_state(images, maps), (self.attention.keys(values), values)

    def step(self, emb, state, memory):
        """One decoding step: (logits (N, V), new state, attention weights (N, P))."""
        context, weights = self.attention(*memory, state[0][-1])
        inp, hs, cs = torch.cat([emb, context], 1), [], []
        for k, cell in enumerate(self.decoder_cells):
            h, c = cell(inp, (state[0][k], state[1][k]))
            hs.append(h)
            cs.append(c)
            inp = h
        return self.head(inp) + self.context_out(context), (torch.stack(hs), torch.stack(cs)), weights

    def forward(self, images, captions):
        """Teacher forcing, one LSTMCell step per word (the context depends on the previous h)."""
        inp = self.embed(torch.cat([torch.full_like(captions[:, :1], BOS), captions[:, :-1]], 1))
        state, memory = self.encode(images)
        logits = []
        for t in range(captions.shape[1]):
            out, state, _ = self.step(inp[:, t], state, memory)
            logits.append(out)
        return torch.stack(logits, 1)

    def decoder(self, images):
        state, memory = self.encode(images)

        def step(tokens, state):
            logits, state, _ = self.step(self.embed(tokens), state, memory)
            return logits.argmax(-1), state
        return step, state

    @torch.no_grad()
    def attend(self, images, max_len: int):
        """Greedy captions (N, max_len) and the attention weights of each step (N, max_len, P)."""
        state, memory = self.encode(images)
        tokens = torch.full((len(images),), BOS, dtype=torch.long, device=images.device)
        out, weights = [], []
        for _ in range(max_len):
            logits, state, w = self.step(self.embed(tokens), state, memory)
            tokens = logits.argmax(-1)
            out.append(tokens)
            weights.append(w)
        return torch.stack(out, 1), torch.stack(weights, 1)


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
    step, state = model.decoder(images)
    tokens = torch.full((len(images),), BOS, dtype=torch.long, device=images.device)
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
    p.add_argument("--objects", type=int, choices=(1, 2, 3),
                   help=f"shapes per image: 1 (caption: size colour shape), 2 (colour shape left of / "
                        f"above colour shape) or 3 (a row named left to right: colour shape left of colour "
                        f"shape left of colour shape; use --image-size 32) ({mode_defaults('objects')})")
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
    p.add_argument("--attention", action="store_true",
                   help="soft attention over the conv feature grid at every decoding step, its context "
                        "fed into the LSTMCell's input (trained one cell step per word)")
    p.add_argument("--maps", metavar="PATH",
                   help="with --attention: save the attention maps of a few held-out images as a PNG "
                        "(needs matplotlib; default: no picture)")
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
    kind = AttentionCaptioner if args.attention else Captioner
    model = kind(args.image_size, args.hidden, args.embed, args.layers, args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"captioning: {args.objects} shape(s) per {args.image_size}x{args.image_size} image, vocabulary "
          f"{len(WORDS)}, conv net -> {'soft attention + ' if args.attention else ''}LSTM {args.layers}x{args.hidden}, "
          f"device {device}")
    first = model.cells()[0]
    print(fusedrnn.explain(first, torch.zeros(2, first.input_size, device=device)))

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
          f"{', soft attention' if args.attention else ''}{', CUDA graph' if args.graph else ''})")
    for got, want in list(zip(sampled, metrics["truth"]))[:args.show]:
        print(f"  {'ok ' if got == want else 'BAD'} {got!r:40} truth {want!r}")
    if args.attention:
        metrics.update(attention_report(model, test_images, test_captions, args))
    return metrics


def attention_report(model: AttentionCaptioner, images, captions, args) -> dict:
    """The attention weights of the held-out images' greedy decoding, and their picture (--maps)."""
    model.eval()
    tokens, weights = model.attend(images, captions.shape[1])
    model.train()
    g = args.image_size // 4
    words = captions != PAD  # the steps that emit a word of the reference caption or its <eos>
    peak = float(weights.amax(-1)[words].mean())
    print(f"attention over the {g}x{g} feature grid: mean largest weight per step {peak:.3f} "
          f"(uniform {1 / g ** 2:.3f})")
    out = {"attention": weights, "attention_grid": (g, g), "attention_tokens": tokens, "attention_peak": peak,
           "maps_saved": False}
    if args.maps:
        n = min(4, len(images))
        words = [text(row).split() for row in tokens[:n].tolist()]
        out["maps_saved"] = save_attention_maps(args.maps, images[:n], words, weights[:n], (g, g))
        print(f"attention maps: {args.maps}" if out["maps_saved"] else
              "attention maps: matplotlib is not installed, no picture written")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
