#!/usr/bin/env python3
"""PNG charts of the benchmark results, each figure beside its anchors.

    .venv/bin/python bench/plots.py      # redraw every chart from bench/results/*.json

The benchmarks call these functions themselves after writing their JSON; this script
redraws them all (say, after a results file was edited by hand or a style changed).
matplotlib comes with the `bench` extra and draws without a display (Agg backend).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a server; must precede pyplot
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
OURS = "#2b6cb0"  # FlowForge in every chart
ANCHOR = "#a0aec0"


def _subtitle(result: dict) -> str:
    machine = result.get("machine", {})
    when = result.get("date") or result.get("when", "")
    commit = result.get("commit", "")
    load = machine.get("load_average_at_start")
    parts = [when, f"commit {commit}" if commit else "", f"load {load}" if load else ""]
    return ", ".join(p for p in parts if p)


def _bars(ax: plt.Axes, labels: list[str], values: list[float], ours: list[bool]) -> None:
    colors = [OURS if o else ANCHOR for o in ours]
    bars = ax.barh(labels, values, color=colors)
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.tick_params(axis="y", labelsize=8)


def plot_api(result: dict, out: Path) -> None:
    """Requests per second of each API request, FlowForge beside the bare app and pgbench."""
    rows = result["results"]
    labels, values, ours = [], [], []
    for name, r in rows.items():
        labels.append(name)
        values.append(r["rps_median"])
        ours.append("bare" not in name)
        if r.get("pgbench_tps"):
            labels.append(f"  pgbench, same SQL ({name})")
            values.append(r["pgbench_tps"])
            ours.append(False)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.2))
    _bars(ax, labels, values, ours)
    ax.set_xlabel("requests/s (median of rounds)")
    ax.set_title(f"API throughput\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_worker(result: dict, out: Path) -> None:
    """Noop tasks per second: FlowForge's settings beside the peers and pgbench's ceiling."""
    labels, values, ours = [], [], []
    for row in result["processing"]:
        labels.append(f"{row['system']}: {row['setting']}")
        values.append(row["tasks_per_s"])
        ours.append(row["system"] == "FlowForge")
    fig, (ax, lat) = plt.subplots(
        2, 1, figsize=(9, 0.42 * len(labels) + 4.2), gridspec_kw={"height_ratios": [3, 1]}
    )
    _bars(ax, labels, values, ours)
    ax.set_xlabel("tasks/s (median of rounds)")
    ax.set_title(f"Worker throughput and pickup latency\n{_subtitle(result)}", fontsize=10)
    names = list(result["latency"])
    p50 = [result["latency"][n]["p50_ms"] for n in names]
    p99 = [result["latency"][n]["p99_ms"] for n in names]
    y = range(len(names))
    lat.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color=OURS)
    lat.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color=ANCHOR)
    lat.set_yticks(list(y), names, fontsize=8)
    lat.invert_yaxis()
    lat.set_xlabel("pickup latency, ms (idle worker)")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_soak(result: dict, out: Path) -> None:
    """Dead rows, sizes and claim read time over the soak, one line per run."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    series = [
        ("dead", "dead rows"),
        ("table_mb", "table size, MB"),
        ("indexes_mb", "indexes, MB"),
        ("claim_probe_ms", "claim-shaped read, ms"),
    ]
    for ax, (key, title) in zip(axes.flat, series, strict=True):
        for run, color in zip(result["runs"], (ANCHOR, OURS), strict=False):
            t = [s["t"] for s in run["samples"]]
            ax.plot(t, [s[key] for s in run["samples"]], label=run["label"], color=color)
            if key == "dead":
                # mark each autovacuum run as it shows in the counter
                prev = 0
                for s in run["samples"]:
                    if s["autovacuums"] > prev:
                        ax.axvline(s["t"], color=color, alpha=0.25, linewidth=1)
                    prev = s["autovacuums"]
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("seconds")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Soak (vertical lines: autovacuum runs)\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_scale(result: dict, out: Path) -> None:
    """Each measure on the small table beside the large one, with the paired ratio."""
    small, large = (str(n) for n in result["sizes"])
    names = list(result["results"])
    y = range(len(names))
    fig, ax = plt.subplots(figsize=(9, 0.8 * len(names) + 1.6))
    rows = [result["results"][n] for n in names]
    first = ax.barh([i - 0.2 for i in y], [r[small]["per_s_median"] for r in rows], height=0.4,
                    color=ANCHOR, label=f"{int(small):,} rows")  # fmt: skip
    second = ax.barh([i + 0.2 for i in y], [r[large]["per_s_median"] for r in rows], height=0.4,
                     color=OURS, label=f"{int(large):,} rows")  # fmt: skip
    ax.bar_label(first, labels=[f"{r[small]['per_s_median']:,.0f}" for r in rows], padding=3,
                 fontsize=8)  # fmt: skip
    ax.bar_label(second, padding=3, fontsize=8, labels=[
        f"{r[large]['per_s_median']:,.0f} ({r['large_over_small_median']:.2f}x)" for r in rows
    ])  # fmt: skip
    ax.set_yticks(list(y), names, fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.25)
    ax.set_xlabel("per second (median of rounds); in brackets: large / small, paired")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"The same requests and claim at two table sizes\n{_subtitle(result)}",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_worker_cpu(result: dict, out: Path) -> None:
    """CPU per noop task, stacked by process, one bar per isolation mode."""
    rows = result["rows"]
    parts = list(dict.fromkeys(k for r in rows for k in r["median_cpu_us_per_task"]))
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 2.6))
    left = [0.0] * len(rows)
    labels = [f"{r['isolation']} ({r['median_tasks_per_s']:,} tasks/s)" for r in rows]
    shades = plt.cm.Blues([0.9, 0.3, 0.6, 0.45])
    for i, (part, color) in enumerate(zip(parts, shades, strict=False)):
        widths = [r["median_cpu_us_per_task"].get(part, 0.0) for r in rows]
        bars = ax.barh(labels, widths, left=left, color=color, label=part)
        text = [f"{w:.1f}" if w >= 3 else "" for w in widths]
        ink = "white" if i == 0 else "black"  # readable on the darkest shade
        ax.bar_label(bars, labels=text, label_type="center", fontsize=8, color=ink)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, total in enumerate(left):
        ax.text(total + 1, y, f"{total:.1f} us", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("CPU us per noop task, by process (median of rounds)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2)
    ax.set_title(f"Where a task's CPU goes\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_write_paths(result: dict, out: Path) -> None:
    """Tasks/s PostgreSQL alone claims and finishes, by the shape of the writes."""
    names = list(result["paths"])
    values = [result["paths"][n]["tasks_per_s_median"] for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(names) + 1.6))
    _bars(ax, names, values, [n.startswith("current") for n in names])
    ax.set_xlabel("tasks/s, pgbench, 50 a statement (median of rounds)")
    ax.set_title(f"Claim and finish in PostgreSQL alone\n{_subtitle(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


PLOTS = {
    "api": plot_api,
    "worker": plot_worker,
    "soak": plot_soak,
    "scale": plot_scale,
    "worker-cpu": plot_worker_cpu,
    "write-paths": plot_write_paths,
}


def main() -> int:
    for name, plot in PLOTS.items():
        source = RESULTS / f"{name}.json"
        if source.exists():
            plot(json.loads(source.read_text()), RESULTS / f"{name}.png")
            print(f"wrote {RESULTS / f'{name}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
