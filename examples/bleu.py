"""Corpus BLEU (Papineni et al., 2002): one reference per sentence, n-grams 1..4, no smoothing.

    corpus_bleu([["a", "b"], ...], [["a", "c"], ...])["bleu"]   # in [0, 1]

The n-gram counts are pooled over the corpus before the precisions are taken (so it is not the
mean of sentence scores): p_n = sum of clipped n-gram matches / sum of hypothesis n-grams, where a
hypothesis n-gram counts at most as often as it occurs in its reference. BLEU = BP ·
exp(mean over n of log p_n), with the brevity penalty BP = exp(1 - r/c) when the hypotheses'
total length c is below the references' r, else 1. A p_n of zero makes BLEU zero.
"""
from __future__ import annotations

import math
from collections import Counter


def ngrams(tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(hypotheses, references, max_n: int = 4) -> dict:
    """{"bleu", "precisions" (p_1..p_max_n), "matches", "totals", "brevity_penalty",
    "hypothesis_length", "reference_length"} of token lists, one reference per hypothesis."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    c = r = 0
    for hyp, ref in zip(hypotheses, references):
        c, r = c + len(hyp), r + len(ref)
        for n in range(1, max_n + 1):
            h, want = ngrams(hyp, n), ngrams(ref, n)
            matches[n - 1] += sum(min(k, want[g]) for g, k in h.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals)]
    bp = 1.0 if c > r else (math.exp(1 - r / c) if c else 0.0)
    bleu = bp * math.exp(sum(math.log(p) for p in precisions) / max_n) if min(precisions) > 0 else 0.0
    return {"bleu": bleu, "precisions": precisions, "matches": matches, "totals": totals,
            "brevity_penalty": bp, "hypothesis_length": c, "reference_length": r}
