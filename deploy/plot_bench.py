"""Table and plot of deploy/bench-curve's reports (vigil-bench JSON).

Usage: plot_bench.py DIR OUT.png -- prints a Markdown table of every
devices-N.json and batch-N.json in DIR and draws events/s (accepted and
committed) and ack latency (p50, p99) against devices and batch size.
"""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(directory, prefix):
    points = []
    for path in directory.glob(f"{prefix}-*.json"):
        report = json.loads(path.read_text())
        points.append((int(path.stem.split("-")[1]), report))
    return sorted(points, key=lambda p: p[0])


def main():
    directory = pathlib.Path(sys.argv[1])
    out = pathlib.Path(sys.argv[2])
    series = {"devices": load(directory, "devices"), "batch": load(directory, "batch")}
    print("| varied | value | accepted events/s | committed rows/s | ack p50 ms | ack p99 ms | "
          "ingest->committed p99 ms | gateway CPU s | gateway peak RSS MiB | gateway / raw JetStream | writer / raw Postgres |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for varied, points in series.items():
        for value, r in points:
            gateway = next(u for u in r["usage"] if u["process"] == "gateway")
            print(f"| {varied} | {value:,} | {r['accepted_per_sec']:,.0f} | {r['committed_per_sec']:,.0f} | "
                  f"{r['ack_latency_ms']['p50']:.2f} | {r['ack_latency_ms']['p99']:.2f} | "
                  f"{r['ingest_to_committed_ms']['p99']:.0f} | {gateway['cpu_seconds']:.1f} | "
                  f"{gateway['peak_rss_mib']:.1f} | {r['gateway_ratio_to_jetstream']:.0%} | "
                  f"{r['writer_ratio_to_postgres']:.0%} |")
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for column, (varied, points) in enumerate(series.items()):
        xs = [v for v, _ in points]
        top, bottom = axes[0][column], axes[1][column]
        top.plot(xs, [r["accepted_per_sec"] for _, r in points], "o-", label="accepted events/s")
        top.plot(xs, [r["committed_per_sec"] for _, r in points], "s--", label="committed rows/s")
        top.set_xscale("log")
        top.set_xlabel(varied + (" (batch 100)" if varied == "devices" else " (10 devices)"))
        top.set_ylabel("per second")
        top.legend()
        top.grid(True, which="both", alpha=0.3)
        bottom.plot(xs, [r["ack_latency_ms"]["p50"] for _, r in points], "o-", label="ack p50")
        bottom.plot(xs, [r["ack_latency_ms"]["p99"] for _, r in points], "s--", label="ack p99")
        bottom.set_xscale("log")
        bottom.set_yscale("log")
        bottom.set_xlabel(top.get_xlabel())
        bottom.set_ylabel("ms")
        bottom.legend()
        bottom.grid(True, which="both", alpha=0.3)
    fig.suptitle("vigil ingest on one 2-core machine (deploy/bench-curve)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"\nplot: {out}")


if __name__ == "__main__":
    main()
