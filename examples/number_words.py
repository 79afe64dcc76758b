"""The translation task of examples/seq2seq.py: numbers written in two made-up languages.

The source language says a number from the largest place down, a multiplier word after its
digit (and no digit when it is one):  347 = "ki mo du sa hu"  (3 ×100, 4 ×10, 7),
1010 = "ri sa",  0 = "nol".
The target language says it from the units up, the groups joined by "e", with a word of its own
for each multiple of ten:  347 = "set e kvart e tre cen",  1010 = "dek e mil".
So the order of the groups is reversed, and a word-for-word translation that keeps the source
order (monotone_target) is right only when a number has a single group: the model has to learn
where to look. `target="digits"` asks for the digit string instead (347 = "3 4 7", 1010 =
"1 0 1 0"): monotone, but the zeros of missing places must be written.
"""
from __future__ import annotations

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")

SOURCE_DIGITS = ("nol", "an", "bo", "ki", "du", "fe", "ga", "hu", "jo", "lu")
SOURCE_PLACES = (None, "sa", "mo", "ri")                    # ×10, ×100, ×1000
TARGET_DIGITS = ("nul", "un", "di", "tre", "kva", "pen", "sei", "set", "ok", "nov")
TARGET_TENS = (None, "dek", "vint", "trent", "kvart", "pent", "sesk", "setk", "okt", "nonk")
TARGET_PLACES = (None, None, "cen", "mil")                  # ×100, ×1000 (tens have their own words)
TARGETS = ("words", "digits")


def _places(n: int) -> list[tuple[int, int]]:
    """(place, digit) of n's non-zero digits, largest place first; n < 10000."""
    return [(p, n // 10 ** p % 10) for p in (3, 2, 1, 0) if n // 10 ** p % 10]


def source_words(n: int) -> list[str]:
    if n == 0:
        return [SOURCE_DIGITS[0]]
    out = []
    for p, d in _places(n):
        out += [SOURCE_DIGITS[d]] if p == 0 else ([SOURCE_DIGITS[d]] if d > 1 else []) + [SOURCE_PLACES[p]]
    return out


def _target_groups(n: int) -> list[list[str]]:
    """The target language's word groups of n, largest place first."""
    groups = []
    for p, d in _places(n):
        if p == 0:
            groups.append([TARGET_DIGITS[d]])
        elif p == 1:
            groups.append([TARGET_TENS[d]])
        else:
            groups.append(([TARGET_DIGITS[d]] if d > 1 else []) + [TARGET_PLACES[p]])
    return groups


def _join(groups: list[list[str]]) -> list[str]:
    out = []
    for i, g in enumerate(groups):
        out += (["e"] if i else []) + g
    return out


def target_words(n: int, target: str = "words") -> list[str]:
    if target == "digits":
        return list(str(n))
    return [TARGET_DIGITS[0]] if n == 0 else _join(_target_groups(n)[::-1])


def monotone_target(n: int) -> list[str]:
    """The word-for-word translation that keeps the source's order of groups (the baseline a
    model without reordering would reach)."""
    return [TARGET_DIGITS[0]] if n == 0 else _join(_target_groups(n))


class Vocab:
    """Words <-> indices; 0, 1, 2 are <pad>, <bos>, <eos>."""

    def __init__(self, words):
        self.words = [*SPECIALS, *sorted(set(words) - set(SPECIALS))]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: list[str]) -> list[int]:
        return [self.index[w] for w in words]

    def decode(self, ids) -> list[str]:
        """The words of ids up to the first <eos> (padding and <bos> dropped)."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.words[i])
        return out


def vocabularies(target: str) -> tuple[Vocab, Vocab]:
    source = Vocab([w for w in SOURCE_DIGITS + SOURCE_PLACES if w])
    if target == "digits":
        return source, Vocab(list("0123456789"))
    return source, Vocab([w for w in TARGET_DIGITS + TARGET_TENS + TARGET_PLACES if w] + ["e"])


def pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded (N, longest) with PAD, lengths (N,))."""
    lengths = torch.tensor([len(r) for r in rows])
    out = torch.full((len(rows), int(lengths.max())), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out, lengths


def encode_numbers(numbers, target: str, source_vocab: Vocab, target_vocab: Vocab):
    """(source (N, S) padded, source lengths (N,), target (N, T) ending in <eos>, padded)."""
    src, lengths = pad([source_vocab.encode(source_words(n)) for n in numbers])
    tgt, _ = pad([target_vocab.encode(target_words(n, target)) + [EOS] for n in numbers])
    return src, lengths, tgt


def split_numbers(largest: int, test_size: int, gen: torch.Generator) -> tuple[list[int], list[int]]:
    """(training numbers, held-out numbers): a random disjoint split of 0..largest."""
    order = torch.randperm(largest + 1, generator=gen).tolist()
    return order[test_size:], order[:test_size]
