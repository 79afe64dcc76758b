"""examples/seq2seq.py (translation with attention), its task (number_words.py) and its BLEU
(bleu.py): BLEU on hand-checked cases, the two made-up languages, the attention and the packed
encoder on an untrained model, and one --quick run that must really learn the task."""
import math
import pathlib
import sys
from collections import Counter

import pytest
import torch

from support.example_scripts import load_example, one_thread, torch_threads  # noqa: F401 (one_thread: autouse fixture)

seq2seq = load_example("seq2seq")
bleu = load_example("bleu")
words = load_example("number_words")

QUIET = ["--no-progress", "--device", "cpu"]  # the checks below build their inputs on the CPU


# -- BLEU on cases checked by hand -------------------------------------------------------

def _bleu(hyps, refs):
    return bleu.corpus_bleu([h.split() for h in hyps], [r.split() for r in refs])


def test_bleu_identical_corpus_is_one():
    b = _bleu(["a b c d e", "x y z w"], ["a b c d e", "x y z w"])
    assert b["bleu"] == 1.0 and b["brevity_penalty"] == 1.0 and b["precisions"] == [1.0] * 4


def test_bleu_one_word_wrong_at_the_end():
    # 1-grams 4/5, 2-grams 3/4, 3-grams 2/3, 4-grams 1/2: product 1/5; same length, no penalty
    b = _bleu(["a b c d e"], ["a b c d f"])
    assert b["precisions"] == pytest.approx([4 / 5, 3 / 4, 2 / 3, 1 / 2], abs=0)
    assert b["bleu"] == pytest.approx(0.2 ** 0.25, rel=1e-12)


def test_bleu_brevity_penalty_only_for_short_output():
    short = _bleu(["a b c d"], ["a b c d e f"])  # every n-gram right, c=4 < r=6
    assert short["precisions"] == [1.0] * 4
    assert short["bleu"] == pytest.approx(math.exp(1 - 6 / 4), rel=1e-12)
    long = _bleu(["a b c d e f"], ["a b c d"])  # c=6 > r=4: no penalty, precisions 4/6 3/5 2/4 1/3
    assert long["brevity_penalty"] == 1.0
    assert long["bleu"] == pytest.approx((4 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-12)


def test_bleu_clips_repeated_words_and_a_zero_precision_gives_zero():
    b = _bleu(["the the the the the the the"], ["the cat is on the mat"])
    assert b["matches"][0] == 2 and b["totals"][0] == 7  # "the" counted at most twice
    assert b["matches"][1] == 0 and b["bleu"] == 0.0


def test_bleu_pools_counts_over_the_corpus():
    # sentence 1 perfect; sentence 2 (one word wrong at the end) has no matching 4-gram, so its own
    # BLEU is 0 and the mean of sentence scores 0.5; pooled: 7/8, 5/6, 3/4, 1/2
    b = _bleu(["a b c d", "x y z w"], ["a b c d", "x y z q"])
    assert b["matches"] == [7, 5, 3, 1] and b["totals"] == [8, 6, 4, 2]
    assert b["bleu"] == pytest.approx((7 / 8 * 5 / 6 * 3 / 4 * 1 / 2) ** 0.25, rel=1e-12)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        _bleu(["a", "b"], ["a"])


# -- the task ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, source, target, digits", [
    (347, "ki mo du sa hu", "set e kvart e tre cen", "3 4 7"),
    (1010, "ri sa", "dek e mil", "1 0 1 0"),
    (2005, "bo ri fe", "pen e di mil", "2 0 0 5"),
    (111, "mo sa an", "un e dek e cen", "1 1 1"),
    (40, "du sa", "kvart", "4 0"),
    (0, "nol", "nul", "0"),
])
def test_number_words(n, source, target, digits):
    assert " ".join(words.source_words(n)) == source
    assert " ".join(words.target_words(n, "words")) == target
    assert " ".join(words.target_words(n, "digits")) == digits


def test_every_number_has_its_own_sentences_and_word_for_word_keeps_the_source_order():
    assert len({tuple(words.source_words(n)) for n in range(10000)}) == 10000
    assert len({tuple(words.target_words(n)) for n in range(10000)}) == 10000
    assert " ".join(words.monotone_target(347)) == "tre cen e kvart e set"
    assert words.monotone_target(300) == words.target_words(300)  # one group: order does not matter


# -- the model's pieces, untrained -------------------------------------------------------

def _batch(numbers, target="words"):
    src_vocab, tgt_vocab = words.vocabularies(target)
    return (*words.encode_numbers(numbers, target, src_vocab, tgt_vocab), src_vocab, tgt_vocab)


NUMBERS = [7, 9031, 40, 1234, 300, 58]  # unsorted lengths 1..7


@pytest.mark.parametrize("kind", ["additive", "dot"])
def test_attention_weights_sum_to_one_and_padding_gets_none(kind):
    torch.manual_seed(0)
    src, lengths, tgt, sv, tv = _batch(NUMBERS)
    model = seq2seq.Translator(len(sv), len(tv), 8, 7, 2, kind, "reference").eval()
    with torch.no_grad():
        _, attn = model(src, lengths, tgt)  # (N, T, S)
    assert len(set(lengths.tolist())) > 3
    pad = torch.arange(src.shape[1]) >= lengths.unsqueeze(1)  # (N, S)
    assert torch.all(attn.masked_select(pad.unsqueeze(1).expand_as(attn)) == 0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]), rtol=0, atol=1e-6)


def test_packed_encoder_ignores_padding_and_batch_neighbours():
    torch.manual_seed(0)
    src, lengths, tgt, sv, tv = _batch(NUMBERS)
    model = seq2seq.Translator(len(sv), len(tv), 8, 7, 2, "additive", "reference").eval()
    garbage = src.clone()
    for i, n in enumerate(lengths.tolist()):
        garbage[i, n:] = 3  # a real word in every padded position: must change nothing
    with torch.no_grad():
        logp, attn = model(src, lengths, tgt)
        torch.testing.assert_close(model(garbage, lengths, tgt), (logp, attn), rtol=0, atol=0)
        for i, n in enumerate(lengths.tolist()):  # each sentence alone, unpadded
            alone_logp, alone_attn = model(src[i:i + 1, :n], lengths[i:i + 1], tgt[i:i + 1])
            torch.testing.assert_close(alone_logp[0], logp[i], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(alone_attn[0], attn[i, :, :n], rtol=1e-5, atol=1e-6)


# -- one quick run: it must learn ---------------------------------------------------------

@pytest.fixture(scope="module")
def translated(tmp_path_factory):
    """examples/seq2seq.py --quick on the reference backend: the encoder through fusedrnn.LSTM's
    fused path, the decoder through fusedrnn.LSTMCell's, on the CPU."""
    plot = tmp_path_factory.mktemp("seq2seq") / "attention.png"
    with torch_threads(1):
        return seq2seq.main(["--quick", "--backend", "reference", "--show", "0", "--plot", str(plot), *QUIET])


def test_translates_held_out_numbers(translated):
    m = translated
    refs, numbers = m["references"], m["test_numbers"]
    # the baselines, computed here: the best constant answer (the commonest training sentence has
    # each number once, so any one sentence), and the word-for-word translation in source order
    constant = Counter(map(tuple, refs)).most_common(1)[0][1] / len(refs)
    monotone = sum(words.monotone_target(n) == r for n, r in zip(numbers, refs)) / len(refs)
    monotone_bleu = bleu.corpus_bleu([words.monotone_target(n) for n in numbers], refs)["bleu"]
    assert monotone == m["monotone_exact"] and monotone < 0.1 and constant < 0.01
    assert m["greedy_exact"] >= 0.9 > monotone + 0.5  # measured 99.5% (examples/README.md)
    assert m["beam_exact"] >= 0.9
    assert m["greedy_bleu"] >= 0.95 > monotone_bleu + 0.5
    assert m["greedy_bleu"] == pytest.approx(bleu.corpus_bleu(m["greedy"], refs)["bleu"])
    assert m["final_loss"] < 0.1
    assert m["beam_logprob"] >= m["greedy_logprob"] - 1e-6
    png = pathlib.Path(m["plot"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def _held_out(m, k=40):
    sv, tv = m["source_vocab"], m["target_vocab"]
    src, lengths, tgt = words.encode_numbers(m["test_numbers"][:k], "words", sv, tv)
    return src, lengths, tgt


def test_beam_search_scores_are_the_models_log_probabilities(translated):
    model = translated["model"].eval()
    assert model.encoder.backend == "reference" and all(c.backend == "reference" for c in model.cells)
    src, lengths, _ = _held_out(translated)
    max_len = translated["max_len"]
    g = seq2seq.greedy(model, src, lengths, max_len)
    one = seq2seq.beam_search(model, src, lengths, 1, max_len)
    assert torch.equal(one.tokens, g.tokens)  # beam 1 is greedy
    torch.testing.assert_close(one.logprob, g.logprob, rtol=1e-5, atol=1e-5)
    for t in (g, seq2seq.beam_search(model, src, lengths, 4, max_len)):
        torch.testing.assert_close(seq2seq.sequence_logprob(model, src, lengths, t.tokens), t.logprob,
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(t.attention.sum(-1)[t.tokens != words.PAD],
                                   torch.ones(int((t.tokens != words.PAD).sum())), rtol=0, atol=1e-5)


def test_wider_beam_finds_likelier_translations_on_a_half_trained_model():
    """Where greedy and beam disagree: 100 updates (about a third of the learning) on numbers up
    to 999; the wider beam must find sentences at least as likely on average, and some likelier."""
    m = seq2seq.main(["--quick", "--steps", "100", "--test-size", "100", "--show", "0", "--plot", "", *QUIET])
    model = m["model"].eval()
    src, lengths, _ = _held_out(m, 100)
    g = seq2seq.greedy(model, src, lengths, m["max_len"])
    b = seq2seq.beam_search(model, src, lengths, 5, m["max_len"])
    # the beam's own scores are the model's log-probabilities of the sentences it returns
    torch.testing.assert_close(seq2seq.sequence_logprob(model, src, lengths, b.tokens), b.logprob, rtol=1e-4, atol=1e-4)
    assert float(b.logprob.mean()) >= float(g.logprob.mean())
    assert int((b.logprob > g.logprob + 1e-4).sum()) >= 1
    assert m["beam_logprob"] >= m["greedy_logprob"]


def test_without_matplotlib_the_picture_is_skipped_and_said(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # `import matplotlib.figure` raises
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    path = tmp_path / "a.png"
    m = seq2seq.main(["--quick", "--largest", "99", "--test-size", "10", "--steps", "2", "--plot", str(path), *QUIET])
    assert m["plot"] is None and not path.exists()
    assert "matplotlib is not installed: no attention heat map drawn" in capsys.readouterr().out
