"""Character-level language model with fusedrnn (the classic "hello" exercise, grown up).

    python examples/char_lm.py --toy --sample 4 --prime h --temperature 0     # learns to spell "hello"
    python examples/char_lm.py --cell lstm --layers 2 --hidden 128 --sample 300   # the Zen of Python
    python examples/char_lm.py --text my.txt --checkpoint lm.pt                 # resumes if lm.pt exists

What it shows:
  * one-hot characters -> fusedrnn.LSTM / GRU / RNN -> Linear -> next-character logits;
  * truncated BPTT (k1, k2): every k1 new characters, backpropagate through the last k2 steps,
    carrying the *detached* hidden state from one chunk to the next (k1 == k2 is the usual case);
  * torch.nn.utils.clip_grad_norm_ against exploding gradients (the pre-clip norm is logged);
  * a progress bar with loss and tokens/s; checkpoints that resume exactly and whose `rnn`
    entry loads into a plain torch.nn.LSTM/GRU/RNN;
  * sampling one character at a time, feeding each sampled character back in (one module call
    per step, the state carried), with a temperature (0 = greedy).

Default corpus: the Zen of Python, decoded from the standard library's `this.py` (nothing is
downloaded). `main(argv) -> dict` returns the metrics, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import ast
import codecs
import importlib.util
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import example_cli as cli  # examples/example_cli.py: the options every example has
import fusedrnn
from example_progress import progress  # examples/example_progress.py: tqdm, else plain lines

CELLS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU, "rnn": fusedrnn.RNN}
TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# values used when an option is not given: (normal run, --quick, --toy)
DEFAULTS = {
    "hidden": (128, 32, 16),
    "layers": (2, 1, 1),
    "k1": (64, 32, 4),
    "k2": (None, None, None),  # None: k2 = k1
    "batch_size": (32, 8, 1),
    "steps": (2000, 300, 150),
    "lr": (3e-3, 1e-2, 3e-2),
}


def zen_of_python() -> str:
    """The Zen of Python, read from this.py's source (importing `this` would print it)."""
    path = importlib.util.find_spec("this").origin
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "s":
            return codecs.decode(node.value.value, "rot13")
    raise RuntimeError(f"no Zen text found in {path}")


# -- model -------------------------------------------------------------------------------

class CharLM(nn.Module):
    """x_t one-hot -> RNN -> y_t = W_hy h_t. `torch_modules=True` builds it on plain torch.nn."""

    def __init__(self, vocab_size: int, hidden: int, layers: int, cell: str = "lstm",
                 nonlinearity: str = "tanh", dropout: float = 0.0, backend: str = "auto",
                 torch_modules: bool = False):
        super().__init__()
        self.vocab_size = vocab_size
        kwargs = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        if torch_modules:
            self.rnn = TORCH_CELLS[cell](vocab_size, hidden, layers, batch_first=True, dropout=dropout, **kwargs)
        else:
            self.rnn = CELLS[cell](vocab_size, hidden, layers, batch_first=True, dropout=dropout,
                                   backend=backend, **kwargs)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, idx: torch.Tensor, state=None):
        x = F.one_hot(idx, self.vocab_size).to(self.head.weight.dtype)
        y, state = self.rnn(x, state)
        return self.head(y), state


def build_model(config: dict, device="cpu", backend: str = "auto", torch_modules: bool = False) -> CharLM:
    return CharLM(len(config["vocab"]), config["hidden"], config["layers"], config["cell"],
                  config["nonlinearity"], config["dropout"], backend, torch_modules).to(device)


def detach(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


# -- sampling ----------------------------------------------------------------------------

@torch.no_grad()
def sample(model: CharLM, vocab: str, prime: str, n: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> str:
    """prime + n characters; each sampled character is fed back in as the next input."""
    missing = sorted(set(prime) - set(vocab))
    if not prime or missing:
        raise ValueError(f"--prime must be non-empty and use only characters of the corpus; "
                         f"not in the vocabulary: {missing!r}")
    stoi = {c: i for i, c in enumerate(vocab)}
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    logits, state = model(torch.tensor([[stoi[c] for c in prime]], device=device))  # prime in one call
    out = list(prime)
    for i in range(n):
        last = logits[0, -1].float().cpu()
        if temperature <= 0:
            nxt = int(last.argmax())
        else:
            nxt = int(torch.multinomial(torch.softmax(last / temperature, -1), 1, generator=generator))
        out.append(vocab[nxt])
        if i + 1 < n:  # one step: the sampled character in, the carried state
            logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train(was_training)
    return "".join(out)


# -- truncated BPTT ----------------------------------------------------------------------

def epoch_layout(data: torch.Tensor, batch_size: int, k1: int, gen: torch.Generator):
    """Split the corpus into `batch_size` contiguous streams (random start offset per epoch);
    returns inputs, targets [B, L] and the chunk ends t = k1, 2k1, ..., L."""
    n = data.numel() - 1
    max_offset = min(k1, n - batch_size * k1) if n > batch_size * k1 else 0
    offset = int(torch.randint(0, max_offset + 1, (1,), generator=gen)) if max_offset > 0 else 0
    usable = n - offset
    B = max(1, min(batch_size, usable // max(1, k1)))
    L = usable // B
    x = data[offset:offset + B * L].view(B, L)
    y = data[offset + 1:offset + B * L + 1].view(B, L)
    ends = list(range(k1, L, k1)) + [L]
    return x, y, ends


def tbptt_update(model, x, y, carry, carry_pos: int, prev_end: int, t: int, next_t: int, k2: int):
    """One truncated-BPTT update over the chunk (prev_end, t].

    Forward the k1 = t - prev_end new steps, backpropagate through the last k2 steps:
    the graph starts at w = t - k2 from a detached state. With k2 > k1 the window re-runs
    the k2 - k1 steps before the chunk (as context, no loss on them); with k2 < k1 the first
    k1 - k2 new steps only advance the state (no gradient). The state at the start of the
    next window, max(0, next_t - k2), is saved detached. Returns loss, the next carried
    state and its position.
    """
    w = max(0, t - k2)
    if carry_pos < w:  # k2 < k1: advance without a graph
        with torch.no_grad():
            _, carry = model(x[:, carry_pos:w], carry)
        carry_pos = w
    assert carry_pos == w, (carry_pos, w)
    s = min(max(next_t - k2, w), t)  # split point: the next window's start
    logits, state = [], carry
    if s > w:
        out, state = model(x[:, w:s], state)
        logits.append(out)
    new_carry, new_pos = (detach(state), s) if s > w else (carry, w)
    if t > s:
        out, state = model(x[:, s:t], state)
        logits.append(out)
    n_loss = min(t - prev_end, t - w)  # the new steps that lie inside the backward window
    logits = torch.cat(logits, 1)[:, -n_loss:]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y[:, t - n_loss:t].reshape(-1))
    if t == s:  # k2 <= k1 or the last chunk: the carried state is the one at t
        new_carry, new_pos = detach(state), t
    return loss, new_carry, new_pos


def grad_norm(params) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


# -- command line ------------------------------------------------------------------------

def mode_defaults(name: str) -> str:
    return cli.defaults_text(DEFAULTS, name, ("quick", "toy"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", metavar="PATH", help="training text file (default: the Zen of Python)")
    src.add_argument("--text-literal", metavar="STR", help="train on this string")
    src.add_argument("--toy", action="store_true",
                     help="train on the word 'hello' (vocabulary e, h, l, o), the classic first RNN exercise")
    p.add_argument("--cell", choices=sorted(CELLS), default="lstm", help="recurrent cell (default: %(default)s)")
    p.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh",
                   help="activation of --cell rnn (default: %(default)s)")
    p.add_argument("--layers", type=int, help=f"stacked recurrent layers ({mode_defaults('layers')})")
    p.add_argument("--hidden", type=int, help=f"hidden units per layer ({mode_defaults('hidden')})")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout between recurrent layers (default: %(default)s)")
    p.add_argument("--init-scale", type=float, default=1.0,
                   help="multiply the recurrent weights W_hh by this after init; >1 makes gradients explode "
                        "(default: %(default)s)")
    p.add_argument("--k1", type=int,
                   help=f"truncated BPTT: new steps forwarded per update, the sequence length ({mode_defaults('k1')})")
    p.add_argument("--k2", type=int, help="truncated BPTT: steps backpropagated through (default: --k1)")
    p.add_argument("--batch-size", type=int,
                   help=f"parallel streams through the text ({mode_defaults('batch_size')})")
    p.add_argument("--steps", type=int,
                   help=f"optimizer updates in total; a resumed run continues up to this ({mode_defaults('steps')})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate ({mode_defaults('lr')})")
    p.add_argument("--checkpoint", metavar="PATH", help="save the model here at the end (and every --save-every steps)")
    p.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also save every N steps; 0 only at the end (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--sample", type=int, default=0, metavar="N",
                   help="generate N characters after training (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature, 0 for greedy (default: %(default)s)")
    p.add_argument("--prime", help="text to start sampling from (default: the corpus' first character)")
    cli.add_common_options(p, "fusedrnn backend of the recurrent layer",
                           "tiny model, a few hundred steps (what the tests run)")
    return p


def parse_args(argv):
    p = build_parser()
    args = cli.parse(p, argv, DEFAULTS, ("quick", "toy"))
    if args.k2 is None:
        args.k2 = args.k1
    for name in ("hidden", "layers", "k1", "k2", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.resume and not args.checkpoint:
        p.error("--resume needs --checkpoint")
    return args


def load_text(args) -> str:
    if args.toy:
        return "hello"
    if args.text_literal is not None:
        return args.text_literal
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            return f.read()
    return zen_of_python()


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = cli.start(args)
    text = load_text(args)
    if len(text) < 2:
        raise SystemExit("the text needs at least two characters")

    ckpt = None
    if args.resume and os.path.exists(args.checkpoint):
        ckpt = torch.load(args.checkpoint, map_location=device, weights_only=False)
        config = ckpt["config"]
        if config["vocab"] != "".join(sorted(set(text))):
            raise SystemExit(f"{args.checkpoint} was trained on another vocabulary")
    else:
        config = {"vocab": "".join(sorted(set(text))), "cell": args.cell, "hidden": args.hidden,
                  "layers": args.layers, "nonlinearity": args.nonlinearity, "dropout": args.dropout}
    vocab = config["vocab"]
    stoi = {c: i for i, c in enumerate(vocab)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)

    model = build_model(config, device, args.backend)
    if args.init_scale != 1.0 and ckpt is None:
        with torch.no_grad():
            for name, p in model.rnn.named_parameters():
                if name.startswith("weight_hh"):
                    p.mul_(args.init_scale)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)  # epoch offsets
    step, epoch, index, carry, carry_pos = 0, 0, 0, None, 0
    epoch_gen_state = gen.get_state()
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loop = ckpt["loop"]
        step, epoch, index, carry, carry_pos = (loop["step"], loop["epoch"], loop["index"],
                                                loop["carry"], loop["carry_pos"])
        epoch_gen_state = loop["epoch_gen_state"]
        torch.set_rng_state(loop["torch_rng"])
    gen.set_state(epoch_gen_state)
    x, y, ends = epoch_layout(data, args.batch_size, args.k1, gen)
    x, y = x.to(device), y.to(device)

    print(f"char_lm: {len(text)} characters, vocabulary {len(vocab)}, {config['cell']} "
          f"{config['layers']}x{config['hidden']}, {x.size(0)} streams, k1={args.k1} k2={args.k2}, "
          f"clip={args.clip}, device {device}" + (f", resumed at step {step}" if ckpt else ""))
    print(fusedrnn.explain(model.rnn, F.one_hot(x[:, :1], len(vocab)).float()))

    def save(path):
        torch.save({"config": config, "rnn": model.rnn.state_dict(), "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "loop": {"step": step, "epoch": epoch, "index": index, "carry": carry,
                             "carry_pos": carry_pos, "epoch_gen_state": epoch_gen_state,
                             "torch_rng": torch.get_rng_state()}}, path)

    bar = progress(total=args.steps, initial=step, disable=args.no_progress, dynamic_ncols=True)
    losses, pre_clip, post_clip = [], [], []
    tokens, t0 = 0, time.perf_counter()
    model.train()
    while step < args.steps:
        if index >= len(ends):  # next epoch: new offset, state reset
            epoch, index, carry, carry_pos = epoch + 1, 0, None, 0
            epoch_gen_state = gen.get_state()
            x, y, ends = epoch_layout(data, args.batch_size, args.k1, gen)
            x, y = x.to(device), y.to(device)
        prev_end = ends[index - 1] if index else 0
        t = ends[index]
        next_t = ends[index + 1] if index + 1 < len(ends) else t
        loss, carry, carry_pos = tbptt_update(model, x, y, carry, carry_pos, prev_end, t, next_t, args.k2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))  # the pre-clip norm
            post_clip.append(grad_norm(model.parameters()))
        else:
            norm = grad_norm(model.parameters())
        pre_clip.append(norm)
        opt.step()
        losses.append(loss.item())
        step, index = step + 1, index + 1
        tokens += x.size(0) * (t - prev_end)
        if step % args.log_every == 0 or step == args.steps:
            recent = losses[-args.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", grad=f"{norm:.2g}",
                            tok_s=f"{tokens / (time.perf_counter() - t0):.0f}", refresh=False)
        bar.update(1)
        if args.checkpoint and args.save_every and step % args.save_every == 0:
            save(args.checkpoint)
    bar.close()
    elapsed = time.perf_counter() - t0

    tail = losses[-max(1, len(losses) // 10):]
    metrics = {
        "steps": step,
        "final_loss": sum(tail) / len(tail) if tail else float("nan"),
        "losses": losses,
        "uniform_loss": math.log(len(vocab)),
        "grad_norms": pre_clip,  # pre-clip total norm of every update
        "max_grad_norm": max(pre_clip, default=0.0),
        "max_grad_norm_after_clip": max(post_clip, default=None),
        "clipped_steps": sum(n > args.clip for n in pre_clip) if args.clip > 0 else 0,
        "clip": args.clip,
        "tokens_per_s": tokens / elapsed if elapsed > 0 else float("nan"),
        "vocab": vocab,
        "config": config,
        "device": str(device),
        "model": model,
    }
    if losses:
        print(f"step {step}: loss {metrics['final_loss']:.3f} (uniform {metrics['uniform_loss']:.3f}), "
              f"{metrics['tokens_per_s']:.0f} tokens/s, pre-clip grad norm max {metrics['max_grad_norm']:.3g}"
              + (f", clipped {metrics['clipped_steps']}/{len(pre_clip)} updates" if args.clip > 0 else ""))
    if args.checkpoint:
        save(args.checkpoint)
        metrics["checkpoint"] = args.checkpoint
        print(f"checkpoint: {args.checkpoint}")
    if args.sample:
        prime = args.prime if args.prime is not None else text[0]
        g = torch.Generator().manual_seed(args.seed)
        metrics["sample"] = sample(model, vocab, prime, args.sample, args.temperature, g)
        print(f"sample (temperature {args.temperature}, prime {prime!r}):\n{metrics['sample']}")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
