"""examples/seq2seq.py on a CUDA device through the kernel backends: trained and decoded with its
bidirectional encoder over packed sentences and its decoder cells on each fused backend, it
reaches the quality tests/test_example_seq2seq.py asks of the CPU run; and on the trained model
the kernel backends translate like the reference backend, with garbage in the padding or not.

Skipped without CUDA; a fused backend that cannot run here fails with its reason.
"""
import os
import sys

import pytest
import torch

from fusedrnn import backends

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = torch.device("cuda")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from support.example_scripts import load_example  # noqa: E402  (tests/ on the path first)

seq2seq = load_example("seq2seq")
words = load_example("number_words")


def use_backend(model, name: str) -> None:
    model.encoder.backend = name
    for cell in model.cells:
        cell.backend = name


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_seq2seq_learns_and_translates_like_the_reference_on_a_kernel_backend(backend):
    reason = backends.why_not(backend, DEV, "lstm", torch.float32, 32)
    if reason is not None:
        pytest.fail(f"backend {backend!r} cannot run on this GPU: {reason}")
    m = seq2seq.main(["--quick", "--backend", backend, "--device", "cuda", "--show", "0", "--plot", "",
                      "--no-progress"])
    assert m["greedy_exact"] >= 0.9 and m["greedy_bleu"] >= 0.95
    assert m["beam_logprob"] >= m["greedy_logprob"] - 1e-5
    model = m["model"].eval()
    src, lengths, _ = words.encode_numbers(m["test_numbers"][:64], "words", m["source_vocab"], m["target_vocab"])
    src, lengths = src.to(DEV), lengths.to(DEV)
    garbage = src.clone()
    garbage[garbage == words.PAD] = 3  # a real word in every padded position
    fused = seq2seq.greedy(model, src, lengths, m["max_len"])
    fused_garbage = seq2seq.greedy(model, garbage, lengths, m["max_len"])
    use_backend(model, "reference")
    ref = seq2seq.greedy(model, src, lengths, m["max_len"])
    for got in (fused, fused_garbage):
        assert torch.equal(got.tokens, ref.tokens)
        torch.testing.assert_close(got.logprob, ref.logprob, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.attention, ref.attention, rtol=1e-4, atol=1e-4)
