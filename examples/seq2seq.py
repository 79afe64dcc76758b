"""Sequence to sequence with attention: a bidirectional fusedrnn.LSTM encoder, a decoder of fusedrnn.LSTMCells.

    python examples/seq2seq.py --quick           # numbers 0-999, a small model (seconds)
    python examples/seq2seq.py                   # numbers 0-9999

Machine translation in the encoder-decoder form of introductory lectures on recurrent networks,
on a task the script makes itself (examples/number_words.py): numbers written in one made-up
language, largest place first ("ki mo du sa hu" = 347), to be translated into another that says
them from the units up ("set e kvart e tre cen"), or into digits with --target digits.

The source sentences, padded, go through pack_padded_sequence(enforce_sorted=False) into a
bidirectional fusedrnn.LSTM, so padding never enters the recurrence; its top layer's final states
of both directions initialise the decoder. The decoder steps fusedrnn.LSTMCells one target word at
a time: at each step the top cell's h attends over the encoder's outputs (additive attention,
Bahdanau et al., or --attention dot, Luong et al.'s "general" score; padded positions get weight
zero), the context and h make the attentional vector that predicts the word and is fed to the
first cell at the next step (input feeding). Training is teacher forcing; held-out sentences are
then translated greedily and with beam search, and scored by exact match and corpus BLEU
(examples/bleu.py). The attention weights of a few sentences are drawn as a heat map (PNG, when
matplotlib is installed).

`main(argv) -> dict` returns the metrics, so tests call it in-process.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import example_cli as cli  # examples/example_cli.py: the options every example has
import fusedrnn
import number_words as data  # examples/number_words.py: the two made-up languages
from bleu import corpus_bleu  # examples/bleu.py
from example_progress import progress  # examples/example_progress.py: tqdm, else plain lines
from number_words import BOS, EOS, PAD

# values used when an option is not given: (normal run, --quick)
DEFAULTS = {"largest": (9999, 999), "embed": (32, 16), "hidden": (96, 32), "steps": (1500, 250),
            "batch_size": (64, 32), "test_size": (1000, 200)}


# -- the model --------------------------------------------------------------------------

class Memory(NamedTuple):
    """What the decoder attends over, batch first: encoder outputs (N, S, 2H), their projection
    for the score, U k (N, S, H), and which positions are real words (N, S)."""
    values: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor

    def select(self, index: torch.Tensor) -> "Memory":
        return Memory(*(t.index_select(0, index) for t in self))


class Attention(nn.Module):
    """Weights over the source positions for a decoder state q: softmax over s of score(q, k_s),
    additive  v . tanh(W q + U k_s)  or dot  q . (U k_s); masked positions get weight 0."""

    def __init__(self, kind: str, query_size: int, key_size: int):
        super().__init__()
        self.kind = kind
        self.project = nn.Linear(key_size, query_size, bias=False)  # U, applied once per sentence
        if kind == "additive":
            self.query = nn.Linear(query_size, query_size)
            self.v = nn.Linear(query_size, 1, bias=False)

    def forward(self, q: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """(context (N, 2H), weights (N, S)) for queries q (N, H)."""
        if self.kind == "additive":
            scores = self.v(torch.tanh(memory.keys + self.query(q).unsqueeze(1))).squeeze(-1)
        else:
            scores = (memory.keys @ q.unsqueeze(-1)).squeeze(-1)
        weights = scores.masked_fill(~memory.mask, float("-inf")).softmax(-1)
        return (weights.unsqueeze(1) @ memory.values).squeeze(1), weights


class Translator(nn.Module):
    def __init__(self, source_vocab: int, target_vocab: int, embed: int, hidden: int, layers: int,
                 attention: str, backend: str):
        super().__init__()
        self.layers, self.hidden = layers, hidden
        self.source_embed = nn.Embedding(source_vocab, embed, padding_idx=PAD)
        self.encoder = fusedrnn.LSTM(embed, hidden, layers, batch_first=True, bidirectional=True, backend=backend)
        self.bridge = nn.Linear(2 * hidden, 2 * layers * hidden)  # encoder's final states -> (h0, c0) per layer
        self.target_embed = nn.Embedding(target_vocab, embed, padding_idx=PAD)
        # the first cell reads the word and the previous attentional vector (input feeding)
        self.cells = nn.ModuleList(fusedrnn.LSTMCell(embed + hidden if k == 0 else hidden, hidden, backend=backend)
                                   for k in range(layers))
        self.attention = Attention(attention, hidden, 2 * hidden)
        self.combine = nn.Linear(3 * hidden, hidden)
        self.head = nn.Linear(hidden, target_vocab)

    def encode(self, source: torch.Tensor, lengths: torch.Tensor):
        """(Memory, the decoder's initial state) of padded source sentences (N, S)."""
        packed = pack_padded_sequence(self.source_embed(source), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        out, (h_n, _) = self.encoder(packed)
        values, _ = pad_packed_sequence(out, batch_first=True, total_length=source.shape[1])
        mask = torch.arange(source.shape[1], device=source.device) < lengths.to(source.device).unsqueeze(1)
        # h_n is in the input's order: the top layer's forward state at each sentence's own last
        # word and its backward state at the first
        s = self.bridge(torch.cat([h_n[-2], h_n[-1]], -1)).view(-1, 2, self.layers, self.hidden).transpose(0, 2)
        h0, c0 = torch.tanh(s[:, 0]).contiguous(), s[:, 1].contiguous()  # (layers, N, H) each
        feed = h0.new_zeros(h0.shape[1:])
        return Memory(values, self.attention.project(values), mask), (h0, c0, feed)

    def step(self, tokens: torch.Tensor, state, memory: Memory):
        """One target word: (log-probabilities (N, V) of the next word, new state, attention (N, S))."""
        h, c, feed = state
        inp, hs, cs = torch.cat([self.target_embed(tokens), feed], -1), [], []
        for k, cell in enumerate(self.cells):
            hk, ck = cell(inp, (h[k], c[k]))
            hs.append(hk)
            cs.append(ck)
            inp = hk
        context, weights = self.attention(inp, memory)
        feed = torch.tanh(self.combine(torch.cat([inp, context], -1)))
        return F.log_softmax(self.head(feed), -1), (torch.stack(hs), torch.stack(cs), feed), weights

    def forward(self, source, lengths, target):
        """Teacher forcing: (log-probabilities (N, T, V) of target (N, T) given <bos> + target[:, :-1],
        attention (N, T, S))."""
        memory, state = self.encode(source, lengths)
        inp = torch.cat([torch.full_like(target[:, :1], BOS), target[:, :-1]], 1)
        out, attn = [], []
        for t in range(target.shape[1]):
            logp, state, weights = self.step(inp[:, t], state, memory)
            out.append(logp)
            attn.append(weights)
        return torch.stack(out, 1), torch.stack(attn, 1)


def reorder(state, index: torch.Tensor):
    h, c, feed = state
    return h.index_select(1, index), c.index_select(1, index), feed.index_select(0, index)


# -- decoding ---------------------------------------------------------------------------

class Translation(NamedTuple):
    tokens: torch.Tensor     # (N, T) word indices, <eos> then <pad> after the end
    logprob: torch.Tensor    # (N,) the model's log-probability of tokens, up to and including <eos>
    attention: torch.Tensor  # (N, T, S) the weights each output word was predicted with


@torch.no_grad()
def greedy(model: Translator, source, lengths, max_len: int) -> Translation:
    """The most likely word at each step, fed back in."""
    memory, state = model.encode(source, lengths)
    N = len(source)
    tokens = torch.full((N,), BOS, dtype=torch.long, device=source.device)
    done = torch.zeros(N, dtype=torch.bool, device=source.device)
    score, out, attn = torch.zeros(N, device=source.device), [], []
    for _ in range(max_len):
        logp, state, weights = model.step(tokens, state, memory)
        tokens = logp.argmax(-1)
        score += logp.gather(1, tokens.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
        tokens = tokens.masked_fill(done, PAD)
        out.append(tokens)
        attn.append(weights)
        done |= tokens == EOS
        if done.all():
            break
    return Translation(torch.stack(out, 1), score, torch.stack(attn, 1))


@torch.no_grad()
def beam_search(model: Translator, source, lengths, beam: int, max_len: int) -> Translation:
    """The `beam` most likely prefixes kept at each step (scored by their summed log-probability,
    no length normalisation); a prefix ending in <eos> is finished and keeps its score. Returns the
    best hypothesis per sentence. beam=1 is greedy decoding."""
    memory, state = model.encode(source, lengths)
    N, K, dev = len(source), beam, source.device
    flat = torch.arange(N, device=dev).repeat_interleave(K)
    memory, state = memory.select(flat), reorder(state, flat)
    # one live hypothesis at first, so the first step does not pick the same word K times
    scores = torch.full((N, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    tokens = torch.full((N * K,), BOS, dtype=torch.long, device=dev)
    done = torch.zeros(N, K, dtype=torch.bool, device=dev)
    seqs = torch.zeros(N, K, 0, dtype=torch.long, device=dev)
    attn = torch.zeros(N, K, 0, memory.values.shape[1], device=dev)
    rows = torch.arange(N, device=dev).unsqueeze(1)
    for _ in range(max_len):
        logp, state, weights = model.step(tokens, state, memory)
        V = logp.shape[-1]
        logp = logp.view(N, K, V)
        # a finished hypothesis has one continuation, <pad>, that leaves its score as it is
        finished = torch.full((V,), float("-inf"), device=dev)
        finished[PAD] = 0.0
        logp = torch.where(done.unsqueeze(-1), finished, logp)
        scores, best = (scores.unsqueeze(-1) + logp).view(N, K * V).topk(K, -1)
        origin, word = best // V, best % V
        seqs = torch.cat([seqs[rows, origin], word.unsqueeze(-1)], -1)
        attn = torch.cat([attn[rows, origin], weights.view(N, K, -1)[rows, origin].unsqueeze(2)], 2)
        done = done[rows, origin] | (word == EOS)
        state = reorder(state, (rows * K + origin).view(-1))
        tokens = word.view(-1)
        if done.all():
            break
    top = scores.argmax(-1)
    return Translation(seqs[torch.arange(N), top], scores[torch.arange(N), top], attn[torch.arange(N), top])


@torch.no_grad()
def sequence_logprob(model: Translator, source, lengths, tokens) -> torch.Tensor:
    """(N,) the model's log-probability of output tokens (N, T), up to and including the first <eos>."""
    logp, _ = model(source, lengths, tokens)
    picked = logp.gather(2, tokens.unsqueeze(-1)).squeeze(-1)
    after_eos = (tokens == EOS).long().cumsum(1) - (tokens == EOS).long() > 0
    return picked.masked_fill(after_eos, 0.0).sum(1)


def evaluate(model, source, lengths, references, target_vocab, decode, batch: int = 250):
    """(exact-match rate, corpus_bleu's dict, mean log-probability, hypotheses (word lists),
    Translation per batch)."""
    model.eval()
    hypotheses, logprobs, parts = [], [], []
    for i in range(0, len(source), batch):
        t = decode(model, source[i:i + batch], lengths[i:i + batch])
        hypotheses += [target_vocab.decode(row) for row in t.tokens.tolist()]
        logprobs.append(t.logprob)
        parts.append(t)
    model.train()
    exact = sum(h == r for h, r in zip(hypotheses, references)) / len(references)
    return exact, corpus_bleu(hypotheses, references), float(torch.cat(logprobs).mean()), hypotheses, parts


def bleu_text(bleu: dict) -> str:
    if bleu["totals"][-1] == 0:  # no 4-grams at all (digits of numbers below 1000): BLEU-4 says nothing
        return "BLEU n/a (no output has 4 words)"
    return f"BLEU {100 * bleu['bleu']:.1f}"


# -- the picture ------------------------------------------------------------------------

def heat_map_examples(t: Translation, numbers, lengths, target_vocab) -> list:
    """(title, source words, output words, weights) of the first len(numbers) sentences of t."""
    shown = []
    for i, n in enumerate(numbers[:len(t.tokens)]):
        row = t.tokens[i].tolist()
        end = row.index(EOS) + 1 if EOS in row else len(row)  # the words output, <eos> included
        shown.append((str(n), data.source_words(n), [target_vocab.words[x] for x in row[:end]],
                      t.attention[i, :end, :int(lengths[i])].cpu()))
    return shown


def plot_attention(path: str, examples) -> bool:
    """A heat map per (title, source words, output words, weights (T, S)) example, side by side,
    saved as a PNG; False (and nothing written) without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(3.2 * len(examples), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (title, src, out, weights) in zip(fig.subplots(1, len(examples), squeeze=False)[0], examples):
        ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src)), src, rotation=60, fontsize=8)
        ax.set_yticks(range(len(out)), out, fontsize=8)
        ax.set_xlabel("source")
        ax.set_title(title, fontsize=9)
    fig.axes[0].set_ylabel("output (greedy)")
    fig.savefig(path, dpi=120)
    return True


# -- command line -----------------------------------------------------------------------

def mode_defaults(name: str) -> str:
    return cli.defaults_text(DEFAULTS, name)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=data.TARGETS, default="words",
                   help="translate into the second made-up language (reordered) or into digits (default: %(default)s)")
    p.add_argument("--largest", type=int, help=f"numbers 0..N, at most 9999 ({mode_defaults('largest')})")
    p.add_argument("--attention", choices=("additive", "dot"), default="additive",
                   help="score of the attention: additive (Bahdanau) or dot (Luong's general) (default: %(default)s)")
    p.add_argument("--embed", type=int, help=f"word embedding size ({mode_defaults('embed')})")
    p.add_argument("--hidden", type=int,
                   help=f"hidden units of each encoder direction and of the decoder cells ({mode_defaults('hidden')})")
    p.add_argument("--layers", type=int, default=1,
                   help="encoder layers, and decoder cells per step (default: %(default)s)")
    p.add_argument("--steps", type=int, help=f"optimizer updates ({mode_defaults('steps')})")
    p.add_argument("--batch-size", type=int, help=f"sentences per update ({mode_defaults('batch_size')})")
    p.add_argument("--test-size", type=int,
                   help=f"held-out numbers, never trained on ({mode_defaults('test_size')})")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--beam", type=int, default=5, help="beam width of beam search (default: %(default)s)")
    p.add_argument("--plot", default="seq2seq_attention.png", metavar="PATH",
                   help="where to save the attention heat maps, '' for none (default: %(default)s)")
    p.add_argument("--plot-examples", type=int, default=4, metavar="N",
                   help="held-out sentences in the heat map (default: %(default)s)")
    p.add_argument("--show", type=int, default=4, metavar="N",
                   help="held-out translations to print (default: %(default)s)")
    cli.add_common_options(p, "fusedrnn backend of the encoder and the decoder cells",
                           "numbers up to 999, small model, 250 steps (what the tests run)")
    return p


def parse_args(argv):
    p = build_parser()
    args = cli.parse(p, argv, DEFAULTS)
    if not 9 <= args.largest <= 9999:
        p.error("--largest must be between 9 and 9999")
    if not 1 <= args.test_size <= args.largest // 2:
        p.error("--test-size must be between 1 and half of --largest (the rest is trained on)")
    if args.beam < 1:
        p.error("--beam must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = cli.start(args)
    gen = torch.Generator().manual_seed(args.seed)
    train_numbers, test_numbers = data.split_numbers(args.largest, args.test_size, gen)
    source_vocab, target_vocab = data.vocabularies(args.target)
    test = [t.to(device) for t in data.encode_numbers(test_numbers, args.target, source_vocab, target_vocab)]
    references = [data.target_words(n, args.target) for n in test_numbers]
    max_len = max(len(data.target_words(n, args.target)) for n in range(args.largest + 1)) + 3
    model = Translator(len(source_vocab), len(target_vocab), args.embed, args.hidden, args.layers, args.attention,
                       args.backend).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    print(f"seq2seq: numbers 0-{args.largest} into {args.target} ({len(train_numbers)} trained on, "
          f"{len(test_numbers)} held out), bidirectional LSTM {args.layers}x{args.hidden} -> "
          f"{args.attention} attention -> {args.layers} LSTMCell(s), device {device}")
    print(fusedrnn.explain(model.encoder, model.source_embed(test[0][:2])))
    print(fusedrnn.explain(model.cells[0], torch.zeros(2, model.cells[0].input_size, device=device)))

    train = torch.tensor(train_numbers)
    bar = progress(range(args.steps), disable=args.no_progress, dynamic_ncols=True)
    losses, words, t0 = [], 0, time.perf_counter()
    for step in bar:
        pick = train[torch.randint(0, len(train), (args.batch_size,), generator=gen)].tolist()
        source, lengths, target = (t.to(device) for t in data.encode_numbers(pick, args.target, source_vocab,
                                                                                  target_vocab))
        logp, _ = model(source, lengths, target)
        loss = F.nll_loss(logp.reshape(-1, logp.shape[-1]), target.reshape(-1), ignore_index=PAD)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        losses.append(loss.item())
        words += int((target != PAD).sum())
        if (step + 1) % args.log_every == 0:
            recent = losses[-args.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}",
                            words_s=f"{words / (time.perf_counter() - t0):.0f}", refresh=False)
    elapsed = time.perf_counter() - t0

    run_greedy = lambda m, s, n: greedy(m, s, n, max_len)  # noqa: E731
    run_beam = lambda m, s, n: beam_search(m, s, n, args.beam, max_len)  # noqa: E731
    g_exact, g_bleu, g_logprob, g_hyp, g_parts = evaluate(model, test[0], test[1], references, target_vocab,
                                                          run_greedy)
    b_exact, b_bleu, b_logprob, b_hyp, _ = evaluate(model, test[0], test[1], references, target_vocab, run_beam)
    monotone = [data.monotone_target(n) for n in test_numbers] if args.target == "words" else None
    tail = losses[-max(1, len(losses) // 10):]
    metrics = {"greedy_exact": g_exact, "greedy_bleu": g_bleu["bleu"], "greedy_logprob": g_logprob,
               "beam_exact": b_exact, "beam_bleu": b_bleu["bleu"], "beam_logprob": b_logprob, "beam": args.beam,
               "monotone_exact": (sum(m == r for m, r in zip(monotone, references)) / len(references)
                                  if monotone else None),
               "monotone_bleu": corpus_bleu(monotone, references)["bleu"] if monotone else None,
               "final_loss": sum(tail) / len(tail), "losses": losses, "steps": args.steps,
               "words_per_s": words / elapsed, "greedy": g_hyp, "beam_hypotheses": b_hyp, "references": references,
               "test_numbers": test_numbers, "max_len": max_len, "model": model, "device": str(device),
               "source_vocab": source_vocab, "target_vocab": target_vocab, "plot": None}
    print(f"step {args.steps}: loss {metrics['final_loss']:.3f}, {metrics['words_per_s']:.0f} target words/s; "
          f"held-out ({len(test_numbers)} numbers):")
    print(f"  greedy:        {g_exact:.1%} exact, {bleu_text(g_bleu)}, mean log-prob {g_logprob:.3f}")
    print(f"  beam {args.beam:<2}:       {b_exact:.1%} exact, {bleu_text(b_bleu)}, mean log-prob {b_logprob:.3f}")
    if monotone:
        print(f"  word for word: {metrics['monotone_exact']:.1%} exact, BLEU {100 * metrics['monotone_bleu']:.1f} "
              f"(the source's order kept)")
    for n, hyp, ref in list(zip(test_numbers, g_hyp, references))[:args.show]:
        print(f"  {'ok ' if hyp == ref else 'BAD'} {' '.join(data.source_words(n))!r:28} -> {' '.join(hyp)!r:32} "
              f"truth {' '.join(ref)!r}")

    if args.plot and args.plot_examples > 0:
        shown = heat_map_examples(g_parts[0], test_numbers[:args.plot_examples], test[1], target_vocab)
        if plot_attention(args.plot, shown):
            metrics["plot"] = args.plot
            print(f"attention heat maps of {len(shown)} held-out sentences: {args.plot}")
        else:
            print("matplotlib is not installed: no attention heat map drawn (pip install matplotlib)")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
