"""Run Triton kernels in the CPU interpreter with every program of a grid in its own
thread, so programs that wait for each other (a grid barrier, a data-flow exchange)
run on the CPU as on a GPU. A test utility: nothing in fusedrnn imports it.

Triton's interpreter keeps the current program index in one attribute of its builder
(`InterpreterBuilder.grid_idx`) and runs a grid's programs one after another in
`GridExecutor.__call__`. Inside `concurrent_programs()`:
- `grid_idx` becomes thread-local (a property over a `threading.local`);
- `GridExecutor.__call__` starts one thread per program and joins them under a
  watchdog: programs still running after `timeout_s` fail the launch with DeadlockError;
- every atomic yields the GIL afterwards, so a spinning program lets the others run;
- `InterpretedFunction.rewrite` (a jit function's source parsed and rewritten on its first
  call) runs one thread at a time: CPython 3.11's `ast.parse` is not thread-safe (programs
  calling a device function for the first time together failed with "SystemError: AST
  constructor recursion depth mismatch").
Keep the kernels' spin limits small here (a poll costs microseconds of Python).

If Triton's internals change so this cannot work, `concurrent_programs()` raises
ThreadedInterpreterUnavailable naming what is missing, and `self_test()` (a kernel whose
program 0 can finish only if program 1 runs at the same time) fails: never a silent
fallback to sequential programs.
"""
from __future__ import annotations

import contextlib
import inspect
import itertools
import threading
import time


try:
    from triton.runtime.interpreter import GridExecutor as _GridExecutor
    _SEQUENTIAL = _GridExecutor.__call__
except (ImportError, AttributeError):  # reported by _interpreter() when the runner is used
    _SEQUENTIAL = None


class ThreadedInterpreterUnavailable(RuntimeError):
    """Triton's interpreter no longer has what the threaded runner patches."""


class DeadlockError(RuntimeError):
    """Programs of an interpreted launch were still running when the watchdog fired."""


_NEEDED = ("GridExecutor", "InterpreterBuilder", "InterpreterError", "interpreter_builder", "_patch_lang",
           "_implicit_cvt", "InterpretedFunction")
_NEEDED_METHODS = {"GridExecutor": ("__call__", "_init_args_hst", "_restore_args_dev"),
                   "InterpretedFunction": ("rewrite",),
                   "InterpreterBuilder": ("set_grid_idx", "set_grid_dim", "create_atomic_rmw", "create_atomic_cas")}


def _interpreter():
    """triton.runtime.interpreter, after checking that everything patched here exists."""
    try:
        from triton.runtime import interpreter as interp
    except ImportError as e:  # pragma: no cover - depends on the installed Triton
        raise ThreadedInterpreterUnavailable(f"cannot import triton.runtime.interpreter: {e}") from e
    missing = [n for n in _NEEDED if not hasattr(interp, n)]
    missing += [f"{c}.{m}" for c, ms in _NEEDED_METHODS.items() if hasattr(interp, c)
                for m in ms if not hasattr(getattr(interp, c), m)]
    if not missing and "grid_idx" not in inspect.getsource(interp.InterpreterBuilder.set_grid_idx):
        missing.append("InterpreterBuilder.set_grid_idx no longer sets grid_idx")
    if missing:
        raise ThreadedInterpreterUnavailable(
            "Triton's interpreter internals changed; tests/support/interpreter_threads.py cannot run programs "
            f"concurrently (missing: {', '.join(missing)}). Update the utility for this Triton version.")
    return interp


def sequential_call():
    """The interpreter's own GridExecutor.__call__ (programs one after another), as it was
    when this module was imported."""
    return _SEQUENTIAL


def _threaded_call(interp, timeout_s: float):
    """A replacement for GridExecutor.__call__: the same steps, programs in threads."""

    def __call__(self, *args_dev, **kwargs):
        argspec = inspect.getfullargspec(self.fn)
        kwargs = {k: v for k, v in kwargs.items() if k in argspec.args}
        args_hst, kwargs_hst = self._init_args_hst(args_dev, kwargs)
        for hook in self.pre_run_hooks:
            hook(*args_hst, **kwargs_hst)
        patch_scope = interp._patch_lang(self.fn)
        alive = []
        try:
            args = inspect.getcallargs(self.fn, *args_hst, **kwargs_hst)
            args = {name: arg if name in self.constexprs else interp._implicit_cvt(arg) for name, arg in args.items()}
            grid = self.grid(args) if callable(self.grid) else self.grid
            grid = tuple(grid) + (1,) * (3 - len(grid))
            interp.interpreter_builder.set_grid_dim(*grid)
            errors = []

            def program(idx):
                try:
                    interp.interpreter_builder.set_grid_idx(*idx)
                    self.fn(**args)
                except BaseException as e:  # reported by the launching thread
                    errors.append((idx, e))

            threads = [threading.Thread(target=program, args=(idx,), daemon=True, name=f"triton-program-{idx}")
                       for idx in itertools.product(*(range(g) for g in grid))]
            for t in threads:
                t.start()
            deadline = time.monotonic() + timeout_s
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            alive = [t.name for t in threads if t.is_alive()]
            if alive:
                raise DeadlockError(f"{len(alive)} of {len(threads)} programs of {self.fn.__name__} still running "
                                    f"after {timeout_s:.0f}s (a deadlock?): {', '.join(alive[:8])}")
            if errors:
                idx, e = errors[0]
                raise interp.InterpreterError(f"program {idx}: {e!r}") from e
        finally:
            if not alive:  # threads still running keep the patched language
                patch_scope.restore()
        self._restore_args_dev(args_dev, args_hst, kwargs, kwargs_hst)

    return __call__


def _one_at_a_time(fn):
    lock = threading.Lock()

    def wrapper(*args, **kwargs):
        with lock:
            return fn(*args, **kwargs)
    return wrapper


def _yielding(fn):
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        time.sleep(0)  # let the program being waited for run
        return out
    return wrapper


@contextlib.contextmanager
def concurrent_programs(timeout_s: float = 60.0):
    """Within the block, every interpreted Triton launch runs its programs concurrently."""
    interp = _interpreter()
    builder_cls, executor_cls, fn_cls = interp.InterpreterBuilder, interp.GridExecutor, interp.InterpretedFunction
    local = threading.local()
    saved = {(builder_cls, "grid_idx"): builder_cls.__dict__.get("grid_idx"),
             (builder_cls, "create_atomic_rmw"): builder_cls.create_atomic_rmw,
             (builder_cls, "create_atomic_cas"): builder_cls.create_atomic_cas,
             (executor_cls, "__call__"): executor_cls.__call__,
             (fn_cls, "rewrite"): fn_cls.rewrite}
    instance_idx = interp.interpreter_builder.__dict__.pop("grid_idx", None)
    builder_cls.grid_idx = property(lambda self: getattr(local, "grid_idx", None),
                                    lambda self, v: setattr(local, "grid_idx", v))
    builder_cls.create_atomic_rmw = _yielding(saved[(builder_cls, "create_atomic_rmw")])
    builder_cls.create_atomic_cas = _yielding(saved[(builder_cls, "create_atomic_cas")])
    executor_cls.__call__ = _threaded_call(interp, timeout_s)
    fn_cls.rewrite = _one_at_a_time(saved[(fn_cls, "rewrite")])
    try:
        yield
    finally:
        for (cls, name), value in saved.items():
            if value is None:
                delattr(cls, name)
            else:
                setattr(cls, name, value)
        if instance_idx is not None:
            interp.interpreter_builder.grid_idx = instance_idx


def self_test(timeout_s: float = 30.0, spins: int = 100000) -> None:
    """Fail unless the programs of a launch really run at the same time and each sees
    its own program index. Call inside concurrent_programs(). `spins`: how long program 0
    waits for program 1 (ample for threads); a test that expects the failure waits less."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def handshake(p_flag, p_seen, p_ids, LIMIT: tl.constexpr):
        pid = tl.program_id(0)
        tl.store(p_ids + pid, pid + 1)
        if pid == 1:
            tl.atomic_xchg(p_flag, 1)
        else:  # program 0 can see the flag only if program 1 runs while it waits
            seen = tl.atomic_add(p_flag, 0)
            spins = 0
            while (seen == 0) & (spins < LIMIT):
                seen = tl.atomic_add(p_flag, 0)
                spins += 1
            tl.store(p_seen, seen)

    flag = torch.zeros(1, dtype=torch.int32)
    seen = torch.zeros(1, dtype=torch.int32)
    ids = torch.zeros(2, dtype=torch.int32)
    # program 0 is started first; if programs ran one after another it would spin out
    handshake[(2,)](flag, seen, ids, LIMIT=spins)
    if int(seen) != 1 or ids.tolist() != [1, 2]:
        raise ThreadedInterpreterUnavailable(
            f"the threaded interpreter did not run programs concurrently (flag seen {int(seen)}, program ids "
            f"{ids.tolist()}); Triton's interpreter changed in a way tests/support/interpreter_threads.py misses")
