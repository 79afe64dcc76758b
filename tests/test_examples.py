"""The examples as integration tests: examples/char_lm.py, sequence_classify.py, captioning.py
(with and without --attention) and gradient_flow.py, called in-process through their
main(argv) -> metrics, in --quick / --toy mode, seeds fixed."""
import math
import pathlib
import re
import sys

import pytest
import torch
import torch.nn.functional as F

import fusedrnn
from support.example_scripts import load_example, one_thread, torch_threads  # noqa: F401 (one_thread: autouse fixture)

char_lm = load_example("char_lm")
sequence_classify = load_example("sequence_classify")
captioning = load_example("captioning")
gradient_flow = load_example("gradient_flow")
seq2seq = load_example("seq2seq")  # its own tests: tests/test_example_seq2seq.py; here its command line

QUIET = ["--no-progress"]


def test_examples_run_without_tqdm_printing_plain_progress_lines(monkeypatch, capsys):
    """tqdm comes with the `examples` extra; without it the bar degrades to plain lines on
    stderr (one per --log-every steps and the last step's), and --no-progress prints none."""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # `import tqdm` now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    quick = ["--quick", "--steps", "20", "--log-every", "10", "--test-size", "20", "--backend", "reference"]
    sequence_classify.main(quick)
    lines = [line for line in capsys.readouterr().err.splitlines() if " steps, " in line]
    assert [line.split(" ")[0] for line in lines] == ["10/20", "20/20"], lines
    assert all("step/s" in line for line in lines) and "loss=" in lines[0]
    sequence_classify.main(quick + QUIET)
    assert " steps, " not in capsys.readouterr().err


# -- char_lm -----------------------------------------------------------------------------

@pytest.mark.parametrize("cell, backend", [("lstm", "auto"), ("gru", "reference"), ("rnn", "reference")])
def test_hello_model_spells_hello(cell, backend):
    m = char_lm.main(["--toy", "--cell", cell, "--backend", backend, "--steps", "100",
                      "--sample", "4", "--prime", "h", "--temperature", "0", *QUIET])
    assert m["vocab"] == "ehlo"
    assert m["sample"] == "hello"  # greedy, each output fed back in
    assert m["final_loss"] < 0.05 < m["uniform_loss"]
    assert m["model"].rnn.backend == backend
    # low temperature sampling (not greedy) spells it too
    g = torch.Generator().manual_seed(1)
    assert char_lm.sample(m["model"], m["vocab"], "h", 4, temperature=0.1, generator=g) == "hello"


def test_checkpoint_loads_into_plain_torch_lstm(tmp_path):
    path = tmp_path / "lm.pt"
    m = char_lm.main(["--quick", "--layers", "2", "--steps", "30", "--backend", "reference",
                      "--checkpoint", str(path), *QUIET])
    assert m["final_loss"] < m["uniform_loss"] - 0.5  # it learned something on the Zen text
    ckpt = torch.load(path, weights_only=False)
    config = ckpt["config"]
    V = len(config["vocab"])
    plain = torch.nn.LSTM(V, config["hidden"], config["layers"], batch_first=True)
    plain.load_state_dict(ckpt["rnn"])  # strict: the keys are exactly torch.nn's
    assert list(ckpt["rnn"]) == list(plain.state_dict())
    fused = m["model"].rnn
    assert fused.backend == "reference"
    x = F.one_hot(torch.randint(0, V, (3, 17), generator=torch.Generator().manual_seed(0)), V).float()
    with torch.no_grad():
        (y_f, (h_f, c_f)), (y_p, (h_p, c_p)) = fused(x), plain(x)
    torch.testing.assert_close(y_f, y_p, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((h_f, c_f), (h_p, c_p), rtol=1e-5, atol=1e-5)
    # the whole model rebuilt on plain torch.nn modules gives the same logits
    plain_model = char_lm.build_model(config, torch_modules=True)
    plain_model.load_state_dict(ckpt["model"])
    idx = x.argmax(-1)
    with torch.no_grad():
        torch.testing.assert_close(plain_model(idx)[0], m["model"](idx)[0], rtol=1e-5, atol=1e-5)


def test_resume_continues_exactly(tmp_path):
    common = ["--quick", "--cell", "gru", *QUIET]
    straight = char_lm.main([*common, "--steps", "14"])
    path = tmp_path / "lm.pt"
    first = char_lm.main([*common, "--steps", "6", "--checkpoint", str(path)])  # stops mid-epoch
    second = char_lm.main([*common, "--steps", "14", "--checkpoint", str(path), "--resume"])
    assert first["steps"] == 6 and second["steps"] == 14 and len(second["losses"]) == 8
    assert first["losses"] == pytest.approx(straight["losses"][:6], rel=1e-6)
    assert second["losses"] == pytest.approx(straight["losses"][6:], rel=1e-5)


def test_gradient_clipping_is_active_on_an_exploding_rnn():
    exploding = ["--quick", "--cell", "rnn", "--nonlinearity", "relu", "--init-scale", "4", *QUIET]
    m = char_lm.main([*exploding, "--steps", "15", "--clip", "1"])
    assert m["max_grad_norm"] > 100 * m["clip"]  # measured pre-clip norm: it explodes
    assert m["clipped_steps"] >= 1
    assert m["max_grad_norm_after_clip"] <= m["clip"] * (1 + 1e-4)  # and clip_grad_norm_ capped it
    assert all(math.isfinite(x) for x in m["losses"])
    # the logged norm is the pre-clip one: the first update is the same with clipping off
    unclipped = char_lm.main([*exploding, "--steps", "1", "--clip", "0"])
    assert unclipped["grad_norms"][0] == pytest.approx(m["grad_norms"][0], rel=1e-5)
    # a well-behaved setting stays far below
    tame = char_lm.main(["--quick", "--cell", "rnn", "--steps", "1", "--clip", "1", *QUIET])
    assert tame["max_grad_norm"] < 10


@pytest.mark.parametrize("k1, k2", [(4, 4), (3, 7), (5, 2), (4, 8)])
def test_truncated_bptt_windows(k1, k2):
    """Each update: forward values as in one untruncated pass; loss on the new steps inside the
    window; gradient through exactly the last k2 steps (compared with a direct computation)."""
    torch.manual_seed(0)
    V, T = 5, 21
    config = {"vocab": "abcde", "cell": "lstm", "hidden": 6, "layers": 2, "nonlinearity": "tanh", "dropout": 0.0}
    model = char_lm.build_model(config, backend="reference")
    data = torch.randint(0, V, (2, T + 1))
    x, y = data[:, :-1], data[:, 1:]
    ends = list(range(k1, T, k1)) + [T]
    with torch.no_grad():
        full_logits, _ = model(x)
    carry, pos = None, 0
    for i, t in enumerate(ends):
        prev = ends[i - 1] if i else 0
        next_t = ends[i + 1] if i + 1 < len(ends) else t
        model.zero_grad()
        loss, carry, pos = char_lm.tbptt_update(model, x, y, carry, pos, prev, t, next_t, k2)
        loss.backward()
        got = [p.grad.clone() for p in model.parameters()]
        w = max(0, t - k2)
        n = min(t - prev, t - w)
        # direct: state at w from a no-grad pass, then the window with a graph
        model.zero_grad()
        with torch.no_grad():
            state = model(x[:, :w])[1] if w else None
        logits, _ = model(x[:, w:t], state)
        want_loss = F.cross_entropy(logits[:, -n:].reshape(-1, V), y[:, t - n:t].reshape(-1))
        want_loss.backward()
        torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-6)
        ref = F.cross_entropy(full_logits[:, t - n:t].reshape(-1, V), y[:, t - n:t].reshape(-1))
        torch.testing.assert_close(loss.detach(), ref, rtol=1e-5, atol=1e-6)
        for g, p in zip(got, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
        # the carried state is the untruncated one at its position, detached
        assert pos == min(max(next_t - k2, w), t)  # the next window's start (t at the last chunk)
        assert (carry is None) == (pos == 0)
        if carry is not None:
            assert not carry[0].requires_grad
            with torch.no_grad():
                _, (h, c) = model(x[:, :pos])
            torch.testing.assert_close(carry, (h, c), rtol=1e-5, atol=1e-6)


# -- sequence_classify -------------------------------------------------------------------

def test_classifier_beats_chance():
    m = sequence_classify.main(["--quick", "--steps", "100", *QUIET])
    assert m["chance"] == 0.5
    assert m["accuracy"] >= 0.9
    model = m["model"]
    assert model.rnn.bidirectional and model.rnn.num_layers == 2 and model.rnn.mode == "GRU"


def test_classifier_reference_backend_and_padding_invariance():
    m = sequence_classify.main(["--quick", "--steps", "60", "--backend", "reference", *QUIET])
    assert m["accuracy"] >= 0.75
    model = m["model"].eval()
    assert model.rnn.backend == "reference"
    gen = torch.Generator().manual_seed(123)
    x, lengths, labels = sequence_classify.make_batch(6, 4, 12, 8, gen)
    assert len(set(lengths.tolist())) > 1  # unsorted, variable lengths
    with torch.no_grad():
        batched = model(x, lengths)
        alone = torch.cat([model(x[i:i + 1, :lengths[i]], lengths[i:i + 1]) for i in range(len(x))])
        garbage = x.clone()
        for i in range(len(x)):
            garbage[i, lengths[i]:] = 7  # padding content must not matter
        torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(garbage, lengths), batched, rtol=1e-6, atol=1e-6)


# -- captioning --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def captioned():
    """One quick run on the reference backend: training through fusedrnn.LSTM, sampling through
    fusedrnn.LSTMCell (the fused cell path, on the CPU)."""
    with torch_threads(1):
        return captioning.main(["--quick", "--backend", "reference", "--show", "0", *QUIET])


def test_captioner_learns_to_caption_held_out_images(captioned):
    m = captioned
    assert m["final_loss"] < 0.2 * m["uniform_loss"]
    assert m["exact_match"] >= 0.8 and m["word_accuracy"] >= 0.9  # measured 92.5%, 98.1% (examples/README.md)
    assert len(set(m["truth"])) > 12  # many different captions, not one memorised
    assert all(len(c.split()) == 3 for c in m["truth"])


def test_captions_are_sampled_through_cells_holding_the_lstms_parameters(captioned):
    model = captioned["model"].eval()
    cells = model.cells()
    assert all(type(c) is fusedrnn.LSTMCell and c.backend == "reference" for c in cells)
    assert cells[0].weight_hh is model.lstm.weight_hh_l0 and cells[0].bias_ih is model.lstm.bias_ih_l0
    # greedy decoding with the sequence module (one T=1 call per token) picks the same tokens
    images, captions = captioning.make_batch(16, 1, 16, torch.Generator().manual_seed(5))
    with torch.no_grad():
        state, tokens, by_module = model.initial_state(images), torch.full((16, 1), captioning.BOS), []
        for _ in range(captions.shape[1]):
            y, state = model.lstm(model.embed(tokens), state)
            tokens = model.head(y).argmax(-1)
            by_module.append(tokens[:, 0])
    assert torch.equal(captioning.sample(model, images, captions.shape[1]), torch.stack(by_module, 1))


def test_two_shape_images_decide_their_relation():
    """'left of': the centres are further apart in x than in y, 'above' the other way round, and
    never closer than 2r along the relation (no overlap): no picture fits both captions."""
    gen = torch.Generator().manual_seed(0)
    n, S = 4000, 24
    uniform = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=gen)  # noqa: E731
    vertical, r = torch.randint(0, 2, (n,), generator=gen), torch.full((n,), 0.17 * S)
    (x1, y1), (x2, y2) = captioning.pair_centres(vertical, r, S, uniform)
    along, across = torch.where(vertical == 1, y2 - y1, x2 - x1), torch.where(vertical == 1, x2 - x1, y2 - y1)
    assert (along >= 2 * r - 1e-5).all() and (across.abs() <= r / 2 + 1e-5).all()
    for x in (x1, y1, x2, y2):
        assert (x >= r + 1 - 1e-5).all() and (x <= S - r - 1 + 1e-5).all()  # inside the image
    images, captions = captioning.make_batch(8, 2, S, torch.Generator().manual_seed(1))
    assert {len(captioning.text(c).split()) for c in captions.tolist()} <= {5, 6}


def test_three_shape_images_are_named_left_to_right():
    images, captions = captioning.make_batch(64, 3, 32, torch.Generator().manual_seed(2))
    words = [captioning.text(c).split() for c in captions.tolist()]
    assert all(len(w) == 10 and w[2:4] == w[6:8] == ["left", "of"] for w in words)
    # the leftmost painted pixel has the first named colour
    rgb = torch.tensor(list(captioning.COLOURS.values()))
    for image, w in zip(images, words):
        painted = (image.unsqueeze(0) - rgb.view(-1, 3, 1, 1)).abs().amax(1) < 1e-6  # (colours, S, S)
        columns = [int(painted[k].any(0).nonzero().min()) if painted[k].any() else 99 for k in range(len(rgb))]
        assert list(captioning.COLOURS)[columns.index(min(columns))] == w[0]


def test_captioning_graph_flag_needs_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: tests/gpu runs --graph")
    with pytest.raises(SystemExit, match="--graph .* needs a CUDA device"):
        captioning.main(["--quick", "--graph", *QUIET])


# -- captioning --attention --------------------------------------------------------------

@pytest.fixture(scope="module")
def attended(tmp_path_factory):
    """The quick run of `captioned` with --attention: same seed, so the same held-out images."""
    maps = tmp_path_factory.mktemp("attention") / "maps.png"
    with torch_threads(1):
        return captioning.main(["--quick", "--attention", "--backend", "reference", "--show", "0",
                                "--maps", str(maps), *QUIET]) | {"maps_path": maps}


def test_attention_captioner_is_scored_on_the_baselines_held_out_images(captioned, attended):
    assert attended["truth"] == captioned["truth"]  # the same images and captions, in order
    assert len(attended["sampled"]) == len(captioned["sampled"])
    assert attended["final_loss"] < 0.2 * attended["uniform_loss"]
    # the baseline's thresholds; measured 87.5% and 96.9% (examples/README.md)
    assert attended["exact_match"] >= 0.8 and attended["word_accuracy"] >= 0.9


def test_attention_weights_are_a_distribution_over_the_feature_grid(attended):
    weights, (gh, gw) = attended["attention"], attended["attention_grid"]
    assert (gh, gw) == (4, 4)  # 16x16 images, two 2x2 poolings
    assert weights.shape == (len(attended["truth"]), 4, gh * gw)  # (images, steps, grid cells)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2]), rtol=0, atol=1e-5)
    # it attends: each step's largest weight is far above uniform's 1/16 (measured 0.200, examples/README.md)
    assert attended["attention_peak"] == pytest.approx(float(weights.amax(-1).mean()))  # 4 steps, all words/<eos>
    assert attended["attention_peak"] > 2 / (gh * gw)
    # the weights belong to the decoding that produced the scored captions
    assert [captioning.text(t) for t in attended["attention_tokens"].tolist()] == attended["sampled"]


def test_attention_decoder_steps_lstm_cells_whose_input_holds_the_context(attended):
    model = attended["model"].eval()
    cells = model.cells()
    assert isinstance(model, captioning.AttentionCaptioner) and not hasattr(model, "lstm")
    assert all(type(c) is fusedrnn.LSTMCell and c.backend == "reference" for c in cells)
    assert cells[0].input_size == model.embed.embedding_dim + 32 + 2  # word, conv channels, (x, y)
    images, captions = captioning.make_batch(8, 1, 16, torch.Generator().manual_seed(5))
    with torch.no_grad():
        # teacher forcing with the greedy captions as input reproduces the greedy decoding
        greedy = captioning.sample(model, images, captions.shape[1])
        assert torch.equal(model(images, greedy).argmax(-1), greedy)
        # the context matters: the same step with another image's features gives other logits
        state, memory = model.encode(images)
        emb = model.embed(torch.full((8,), captioning.BOS))
        swapped = tuple(m.roll(1, 0) for m in memory)
        assert not torch.allclose(model.step(emb, state, memory)[0], model.step(emb, state, swapped)[0])


def test_attention_maps_are_saved_as_png(attended):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert attended["maps_saved"] is False and not attended["maps_path"].exists()
        return
    assert attended["maps_saved"] is True
    assert attended["maps_path"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- gradient_flow -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    plot = tmp_path_factory.mktemp("flow") / "flow.png"
    with torch_threads(1):
        return gradient_flow.main(["--quick", "--backend", "reference", "--plot", str(plot), *QUIET])


def test_gradients_vanish_in_the_tanh_rnn_explode_in_the_relu_rnn_and_last_in_the_lstm(flow):
    r, T = {name: res["init"] for name, res in flow["results"].items()}, flow["length"]
    ratio = gradient_flow.ratio  # ‖∂L/∂h_0‖ / ‖∂L/∂h_T-1‖; measured values in examples/README.md
    assert all(len(g["h"]) == T for g in r.values())
    assert all(m.rnn.backend == "reference" for m in (res["model"] for res in flow["results"].values()))
    tanh = r["rnn-tanh"]["h"]
    assert ratio(tanh) < 1e-6  # measured 8.1e-09
    assert all(a < b for a, b in zip(tanh, tanh[1:]))  # shrinking at every step back
    assert ratio(r["rnn-relu"]["h"]) > 1e3  # W_hh x4: measured 1.7e+06
    assert ratio(r["lstm+fb"]["h"]) > 1e3 * ratio(tanh)  # measured 6.6e-04
    assert ratio(r["lstm+fb"]["c"]) > ratio(r["lstm+fb"]["h"])  # the cell's additive path decays slowest
    assert ratio(r["lstm"]["h"]) > ratio(tanh)  # torch's init, f ≈ 0.5: measured 1.8e-07, barely better
    assert ratio(r["gru"]["h"]) > ratio(tanh)


def test_clipping_bounds_the_total_gradient_norm(flow):
    clip = flow["clip"]
    for name, res in flow["results"].items():
        clipped, unclipped = res["clipped"], res["unclipped"]
        for pre, post in zip(clipped["grad_norms"], clipped["clipped_norms"]):
            assert post <= clip * (1 + 1e-5)
            assert post == pytest.approx(min(pre, clip), rel=1e-4)
        assert unclipped["clipped_norms"] == pytest.approx(unclipped["grad_norms"], rel=1e-4)
        # the same init and batches: the first update's gradient is the same in both runs
        assert clipped["grad_norms"][0] == pytest.approx(unclipped["grad_norms"][0], rel=1e-5)
    relu = flow["results"]["rnn-relu"]["clipped"]
    assert max(relu["grad_norms"]) > 1e3 * clip  # the exploding RNN's pre-clip norm (measured 3.3e+05)
    assert all(math.isfinite(x) for x in relu["losses"])
    if flow["plot_saved"]:
        assert pathlib.Path(flow["plot"]).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["rnn-tanh", "lstm"])
def test_measured_hidden_gradients_are_the_total_derivatives(name):
    """Stepping the module one call per step computes what one whole-sequence call does (loss and
    parameter gradients), and the retained states' gradients match ∂L/∂h_t of an explicit float64
    loop; a whole-sequence output's retained gradient is zero before the last step (why it is not used)."""
    torch.manual_seed(0)
    T, H, B, K = 6, 5, 3, 4
    model = gradient_flow.Model(name, K, H, "reference", relu_scale=1.0, forget_bias=0.0)
    x, labels = gradient_flow.make_batch(B, T, K, torch.Generator().manual_seed(1))
    got = gradient_flow.hidden_gradients(model, x, labels)
    # one whole-sequence call
    y, _ = model.rnn(x)
    y.retain_grad()
    loss = F.cross_entropy(model.head(y[:, -1]), labels)
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-6)
    for g, p in zip(got["param_grads"], model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-7)
    assert y.grad[:, :-1].abs().max() == 0
    # float64: the recurrence written out, every h_t a tensor of the graph
    w = {k: v.detach().double() for k, v in model.rnn.named_parameters()}
    h = c = torch.zeros(B, H, dtype=torch.float64, requires_grad=True)  # so every h_t is in the graph
    hs = []
    for t in range(T):
        pre = x[:, t].double() @ w["weight_ih_l0"].T + w["bias_ih_l0"] + h @ w["weight_hh_l0"].T + w["bias_hh_l0"]
        if name == "lstm":
            i, f, g, o = pre.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * c.tanh()
        else:
            h = pre.tanh()
        h.retain_grad()
        hs.append(h)
    logits = F.linear(h, model.head.weight.detach().double(), model.head.bias.detach().double())
    F.cross_entropy(logits, labels).backward()
    want = [s.grad.norm().item() for s in hs]
    assert got["h"] == pytest.approx(want, rel=1e-4)


# -- command lines ----------------------------------------------------------------------

@pytest.mark.parametrize("example", [char_lm, sequence_classify, captioning, seq2seq, gradient_flow],
                         ids=["char_lm", "sequence_classify", "captioning", "seq2seq", "gradient_flow"])
def test_every_flag_has_help_and_no_empty_default(example):
    parser = example.build_parser()
    text = " ".join(parser.format_help().split())  # undo the line wrapping
    assert "default: None" not in text and "(default: False)" not in text, text
    assert not re.search(r"\(default[^()]*\) \(default", text), text  # a default said once, not twice
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"


@pytest.mark.parametrize("example, modes", [(char_lm, ([], ["--quick"], ["--toy"])),
                                            (sequence_classify, ([], ["--quick"])), (captioning, ([], ["--quick"])),
                                            (seq2seq, ([], ["--quick"])), (gradient_flow, ([], ["--quick"]))],
                         ids=["char_lm", "sequence_classify", "captioning", "seq2seq", "gradient_flow"])
def test_help_states_the_defaults_that_apply(example, modes):
    """For options whose default depends on the mode, the help names the value each mode uses."""
    helps = {a.dest: a.help for a in example.build_parser()._actions}
    for col, mode in enumerate(modes):
        args = example.parse_args(mode)
        for name, values in example.DEFAULTS.items():
            if values[col] is not None:
                assert getattr(args, name) == values[col]
                assert str(values[col]) in helps[name], (name, helps[name])
