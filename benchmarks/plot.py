"""A PNG of the speedups of a GPU run: one panel per (section, dtype, mode), one bar group
per provider that has a timed or WRONG case there, one bar per case (speedup vs the
baseline, log scale; 1 = as fast as the baseline). Cases where a provider was WRONG get a
red cross instead of a bar. matplotlib is optional; CPU runs get no plot (their timings
are not representative)."""
from __future__ import annotations

from pathlib import Path

from .report import groups


def maybe_plot(rows, meta, path: Path) -> tuple[Path | None, str]:
    """(path, "") when drawn, else (None, why not)."""
    if meta.get("device_type") != "cuda":
        return None, "CPU timings are not representative, so no speedup is plotted"
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        return None, "matplotlib is not installed (the table and the JSON have every number)"
    return plot(rows, meta, path), ""


def plot(rows, meta, path: Path) -> Path | None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    base = meta.get("baseline", "cudnn")
    panels = []
    for key, grp in groups(rows).items():
        shown = lambda r: r.get("speedup_vs_baseline") or r["status"] == "WRONG"  # noqa: E731
        provs = [p for p in dict.fromkeys(r["provider"] for r in grp)
                 if p != base and any(shown(r) for r in grp if r["provider"] == p)]
        if provs:
            panels.append((key, grp, provs))
    if not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no timed speedups in this run", ha="center", va="center")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.6 * len(panels)), squeeze=False)
    for ax, ((section, dtype, mode), grp, provs) in zip(axes[:, 0], panels):
        shown = lambda r: r.get("speedup_vs_baseline") or r["status"] == "WRONG"  # noqa: E731
        cases = list(dict.fromkeys(r["case"] for r in grp if r["provider"] in provs and shown(r)))
        width = 0.8 / max(len(cases), 1)
        cmap = plt.get_cmap("tab20")
        labelled: set[str] = set()
        for gi, prov in enumerate(provs):
            by_case = {r["case"]: r for r in grp if r["provider"] == prov}
            for ci, case in enumerate(cases):
                x = gi - 0.4 + width * (ci + 0.5)
                r = by_case.get(case)
                if r is None:
                    continue
                if r["status"] == "WRONG":
                    ax.plot([x], [1.0], marker="x", color="red", markersize=9, linestyle="none")
                elif r.get("speedup_vs_baseline"):
                    ax.bar(x, r["speedup_vs_baseline"], width, color=cmap(ci % 20),
                           label=None if case in labelled else case)
                    labelled.add(case)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(provs)), provs)
        ax.set_xlim(-0.5, len(provs) - 0.5)
        ax.set_ylabel(f"speedup vs {base}")
        ax.set_title(f"{section}, {dtype}, {mode} — {meta.get('card', '')}, {meta.get('date', '')[:10]}", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
