"""What the examples' command lines share: the common options (--clip, --backend, --device,
--seed, --threads, --quick, --no-progress, --log-every), defaults that depend on the mode (--quick,
char_lm's --toy), and applying device, threads and seed at the start of a run."""
from __future__ import annotations

import argparse

import torch

import fusedrnn


def defaults_text(defaults: dict, name: str, modes=("quick",)) -> str:
    """The help text's default of an option whose default depends on the mode, from
    defaults[name] = (normal run, value with --modes[0], with --modes[1], ...)."""
    normal, *others = defaults[name]
    return "; ".join([f"default {normal}", *(f"with --{mode} {value}" for mode, value in zip(modes, others))])


def parse(p: argparse.ArgumentParser, argv, defaults: dict, modes=("quick",)) -> argparse.Namespace:
    """p.parse_args(argv), with the options not given set to their value in the mode: defaults[name]
    = (normal run, value with --modes[0], with --modes[1], ...); the last mode given wins."""
    args = p.parse_args(argv)
    column = max([i + 1 for i, mode in enumerate(modes) if getattr(args, mode)], default=0)
    for name, values in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, values[column])
    return args


def add_common_options(p: argparse.ArgumentParser, backend_help: str, quick_help: str) -> None:
    p.add_argument("--clip", type=float, default=1.0,
                   help="clip_grad_norm_ max norm, 0 for no clipping (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=fusedrnn.BACKENDS,
                   help=f"{backend_help} (default: %(default)s)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads; 0 keeps torch's default (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-every", type=int, default=10, metavar="N",
                   help="update the progress bar's loss every N steps (default: %(default)s)")


def start(args: argparse.Namespace) -> torch.device:
    """Applies --threads and --seed; returns --device, else cuda when there is one, else cpu."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
