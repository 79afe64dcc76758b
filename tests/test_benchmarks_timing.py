"""The timing loop and the executor with a fake clock: interleaving, untimed preparation,
failures, the CUDA-event timer's bookkeeping, and that a WRONG provider is never timed."""
import types

import pytest
import torch

from benchmarks import stats, providers, suite, timing
from benchmarks.shapes import Case


class FakeClock:
    def __init__(self):
        self.now = 0.0   # ms


class FakeTimer:
    """A timer on the fake clock, with the HostTimer interface."""
    description = "fake"

    def __init__(self, clock):
        self.clock, self.syncs = clock, 0

    def sync(self):
        self.syncs += 1

    def start(self):
        return self.clock.now

    def stop(self, token):
        return self.clock.now - token

    def elapsed_ms(self, handle):
        return handle

    def check(self):
        pass


class FakeRunner:
    def __init__(self, name, clock, log, cost_ms, prepare_ms=100.0, fail_at=None):
        self.name, self.clock, self.log, self.cost, self.prep, self.fail_at = name, clock, log, cost_ms, prepare_ms, fail_at
        self.calls = 0

    def prepare(self):
        self.clock.now += self.prep         # must not be counted
        return object()

    def run(self, args):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError(f"{self.name} broke")
        self.log.append(self.name)
        self.clock.now += self.cost[self.calls % len(self.cost)] if isinstance(self.cost, list) else self.cost


def test_interleaved_medians_exclude_preparation():
    clock, log = FakeClock(), []
    runners = {"a": FakeRunner("a", clock, log, 2.0), "b": FakeRunner("b", clock, log, [5.0, 7.0])}
    times, errors = timing.bench_interleaved(runners, FakeTimer(clock), warmup=2, reps=4)
    assert errors == {}
    assert times["a"] == [2.0] * 4
    assert sorted(times["b"]) == [5.0, 5.0, 7.0, 7.0]
    assert runners["a"].calls == 6 and runners["b"].calls == 6   # 2 warm-up + 4 timed


def test_interleaving_rotates_who_goes_first():
    clock, log = FakeClock(), []
    runners = {n: FakeRunner(n, clock, log, 1.0) for n in "xyz"}
    timing.bench_interleaved(runners, FakeTimer(clock), warmup=0, reps=3)
    assert log == list("xyz") + list("yzx") + list("zxy")


def test_divide_by_steps():
    clock = FakeClock()
    times, _ = timing.bench_interleaved({"d": FakeRunner("d", clock, [], 64.0)}, FakeTimer(clock), 0, 2, divide_by=32)
    assert times["d"] == [2.0, 2.0]


def test_a_failing_runner_is_reported_and_not_timed():
    clock, log = FakeClock(), []
    runners = {"ok": FakeRunner("ok", clock, log, 1.0), "warm": FakeRunner("warm", clock, log, 1.0, fail_at=1),
               "late": FakeRunner("late", clock, log, 1.0, fail_at=3)}
    times, errors = timing.bench_interleaved(runners, FakeTimer(clock), warmup=1, reps=3)
    assert set(times) == {"ok"} and len(times["ok"]) == 3
    assert errors["warm"].startswith("warm-up failed: RuntimeError: warm broke")
    assert errors["late"].startswith("failed in repetition 1")


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        timing.bench_interleaved({}, FakeTimer(FakeClock()), warmup=0, reps=0)


def test_cuda_event_timer_bookkeeping(monkeypatch):
    """CudaEventTimer with torch.cuda.Event/synchronize replaced by fakes on a fake clock."""
    clock = FakeClock()

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self):
            self.t = clock.now

        def elapsed_time(self, other):
            return other.t - self.t

    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: syncs.append(clock.now))
    timer = timing.CudaEventTimer()
    runners = {"a": FakeRunner("a", clock, [], 3.0), "b": FakeRunner("b", clock, [], 1.5)}
    times, errors = timing.bench_interleaved(runners, timer, warmup=1, reps=5)
    assert errors == {} and times == {"a": [3.0] * 5, "b": [1.5] * 5}
    assert len(syncs) >= 10   # synchronised before every timed call, outside the timed region


def test_a_kernel_timeout_fails_the_runner_whose_call_timed_out(monkeypatch):
    """The CUDA timer checks fusedrnn's timeout reports after each call (synchronising outside
    the timed region), so the runner whose kernel timed out fails and the others are timed."""
    from fusedrnn.ops import timeouts
    clock, timed_out = FakeClock(), []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self):
            self.t = clock.now

        def elapsed_time(self, other):
            return other.t - self.t

    def check(block=False):
        assert block  # waits for every launch so far
        if timed_out:
            timed_out.clear()
            raise RuntimeError("fusedrnn triton: a grid barrier timed out in the lstm forward")

    class TimingOut(FakeRunner):
        def run(self, args):
            super().run(args)
            if self.calls == 3:
                timed_out.append(self.name)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(timeouts, "check", check)
    runners = {"a": TimingOut("a", clock, [], 3.0), "b": FakeRunner("b", clock, [], 1.5)}
    times, errors = timing.bench_interleaved(runners, timing.CudaEventTimer(), warmup=1, reps=4)
    assert list(errors) == ["a"] and "failed in repetition 1: RuntimeError" in errors["a"], errors
    assert "timed out" in errors["a"] and times == {"b": [1.5] * 4}


# -- the executor: a wrong provider is marked and never timed ----------------------------------------

def _settings(provs, **kw):
    return suite.Settings(device=torch.device("cpu"), dtypes=["fp32"], modes=["fw", "fwbw"], providers=provs,
                          warmup=0, reps=2, baseline="torch-cpu", baseline_fp16=None, **kw)


def test_wrong_result_is_marked_and_never_timed(monkeypatch):
    real_build = providers.build
    broken = providers.Provider("broken", "torch")

    def build(provider, case, state_dict, dtype, device):
        module = real_build(provider, case, state_dict, dtype, device)
        if provider.name == "broken":
            with torch.no_grad():
                module.weight_hh_l0.mul_(1.5)
        return module
    monkeypatch.setattr(providers, "build", build)
    clock = FakeClock()
    ran = []
    real_runner = suite.workload.CaseRunner

    class CountingRunner(real_runner):
        def run(self, args):
            ran.append(self.module)
            clock.now += 1.0
            super().run(args)
    monkeypatch.setattr(suite.workload, "CaseRunner", CountingRunner)
    case = Case("layer", "lstm", "lstm", 2, 5, 8, 8)
    rows = suite.run_case(case, _settings([providers.PROVIDERS["torch-cpu"], broken]), FakeTimer(clock))
    by = {(r["provider"], r["mode"]): r for r in rows}
    for mode in ("fw", "fwbw"):
        assert by["broken", mode]["status"] == "WRONG"
        assert by["broken", mode]["median_ms"] is None and "not timed" in by["broken", mode]["note"]
        assert by["broken", mode]["max_rel_err"] > by["broken", mode]["tol"]
        assert by["torch-cpu", mode]["status"] == "ok" and by["torch-cpu", mode]["median_ms"] == 1.0
    assert len(ran) == 4   # only torch-cpu: 2 modes x 2 repetitions


def test_fixed_dtype_provider_and_fp16_baseline():
    """A 'cudnn-fp16'-like provider runs in its own dtype, gives the fp16 speedup column, and
    is left out of a run in its own dtype (the baseline is that row)."""
    low = providers.Provider("torch-bf16", "torch", fixed_dtype="bf16", baseline=True)
    ref = providers.PROVIDERS["fusedrnn-reference"]
    settings = _settings([providers.PROVIDERS["torch-cpu"], low, ref])
    settings.dtypes, settings.baseline_fp16 = ["fp32", "bf16"], "torch-bf16"
    plan = [(Case("layer", "gru", "gru", 2, 4, 8, 8), True, None)]
    rows = suite.run_all(plan, settings, timing.HostTimer())
    seen = {(r["provider"], r["dtype"], r["mode"]): r for r in rows}
    assert seen["torch-bf16", "fp32", "fw"]["provider_dtype"] == "bf16"
    assert ("torch-bf16", "bf16", "fw") not in seen
    for key, row in seen.items():
        assert row["status"] == "ok", (key, row["note"])
        assert row["speedup_vs_fp16"] is None and row["speedup_vs_baseline"] is None   # CPU: never speedups
    stats.attach_speedups(rows, "torch-cpu", "torch-bf16", "bf16")                       # the arithmetic itself
    for key, row in seen.items():
        assert row["speedup_vs_fp16"] is not None and row["speedup_vs_baseline"] is not None
    assert seen["torch-cpu", "bf16", "fw"]["speedup_vs_fp16"] == pytest.approx(1.0)   # its own fp16 baseline


def test_time_limit_skips_the_rest():
    settings = _settings([providers.PROVIDERS["torch-cpu"]], time_limit_s=1e-9)
    rows = suite.run_all([(Case("layer", "rnn_tanh", "rnn_tanh", 2, 3, 4, 4), True, None)], settings, timing.HostTimer())
    assert rows and all(r["status"] == "skipped" and r["median_ms"] is None for r in rows)


def test_eager_provider_matches_and_respects_limits():
    eager = providers.PROVIDERS["eager"]
    case = Case("layer", "lstm", "lstm", 2, 6, 8, 8)
    settings = _settings([providers.PROVIDERS["torch-cpu"], eager], eager_max_t=4)
    rows = suite.run_case(case, settings, timing.HostTimer())
    assert {r["status"] for r in rows if r["provider"] == "eager"} == {"unsupported"}
    settings.eager_max_t = 0
    rows = suite.run_case(case, settings, timing.HostTimer())
    eager_rows = [r for r in rows if r["provider"] == "eager"]
    assert all(r["status"] == "ok" and r["median_ms"] is not None and r["max_rel_err"] < 1e-5 for r in eager_rows)
    assert providers.why_not(eager, Case("layer", "gru", "gru", 2, 6, 8, 8, layers=2), "fp32",
                             torch.device("cpu")) is not None


def test_gpu_providers_say_why_not_on_cpu():
    case = Case("layer", "lstm", "lstm", 2, 3, 4, 4)
    assert "CUDA" in providers.why_not(providers.PROVIDERS["cudnn"], case, "fp32", torch.device("cpu"))
    assert providers.why_not(providers.PROVIDERS["fusedrnn-cuda"], case, "fp32", torch.device("cpu"))


def test_cudnn_facts_of_a_gpu_row(monkeypatch):
    """The GPU-only row facts (cuDNN algorithm, TF32, observed kernels), with the device faked."""
    from benchmarks import accuracy, cudnn_algo
    case = Case("layer", "lstm", "lstm", 16, 3, 768, 768)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: types.SimpleNamespace(major=9, minor=0, multi_processor_count=132))
    seen = []
    monkeypatch.setattr(cudnn_algo, "observe", lambda call: seen.append(call()) or ["RNN_blockPersist_fp_LSTM"])
    state = providers.master_module(case).state_dict()
    oracle = accuracy.Oracle(case, state, {"x": torch.randn(16, 3, 768)}, torch.device("cpu"))
    module = providers.build(providers.PROVIDERS["torch-cpu"], case, state, "fp32", torch.device("cpu"))
    gpu = types.SimpleNamespace(type="cuda")
    facts = suite._cudnn_facts(case, "fp32", "fw", module, oracle, gpu, True)
    assert facts == {"cudnn_algo": "standard", "tf32": torch.backends.cudnn.allow_tf32,
                     "kernels": ["RNN_blockPersist_fp_LSTM"]}
    assert len(seen) == 1 and seen[0][0].shape == (16, 3, 768)          # one real call was profiled
    assert suite._cudnn_facts(case, "fp16", "fwbw", module, oracle, gpu, False) == {"cudnn_algo": "persist-static"}
    assert suite._cudnn_facts(case, "fp32", "fw", module, oracle, torch.device("cpu"), True) == {}
