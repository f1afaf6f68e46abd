"""Summarises and plots a soak run's samples (bench/soak.sh).

Reads the CSV the soak writes (elapsed_s, rss_mib, cpu_s, lag_s, rows_read, rows_archived),
prints whether resident memory stayed within 10 % after warm-up and whether the watermark lag
stayed steady, and draws memory and lag over time into a PNG.

    python3 bench/soak_report.py soak.csv soak.png
"""

import csv
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def number(text):
    return float(text) if text else None


def main(samples_path, plot_path):
    with open(samples_path) as samples:
        rows = [
            {key: number(value) for key, value in row.items()}
            for row in csv.DictReader(samples)
        ]
    if len(rows) < 3:
        sys.exit(f"{samples_path}: only {len(rows)} samples, too few to judge")
    end = rows[-1]["elapsed_s"]
    # Warm-up: the first fifth of the run, and at least five minutes when the run is long
    # enough (the detectors' buffers and the live views' history fill over their first minutes).
    warm_up = min(max(end / 5, 300), end / 2)
    steady = [row for row in rows if row["elapsed_s"] >= warm_up]
    rss = [row["rss_mib"] for row in steady]
    lags = [row["lag_s"] for row in steady if row["lag_s"] is not None]
    first, last = steady[0], steady[-1]
    span = last["elapsed_s"] - first["elapsed_s"]
    rows_per_s = (last["rows_read"] - first["rows_read"]) / span if span else 0
    archived_per_s = (last["rows_archived"] - first["rows_archived"]) / span if span else 0
    cpu = (last["cpu_s"] - first["cpu_s"]) / span if span else 0
    low, high = min(rss), max(rss)
    growth = (high - low) / low * 100
    # Memory's trend: the mean of the last quarter against the first quarter of the steady part.
    quarter = max(len(rss) // 4, 1)
    trend = (statistics.mean(rss[-quarter:]) / statistics.mean(rss[:quarter]) - 1) * 100
    lag_quarter = max(len(lags) // 4, 1)
    print(f"samples: {len(rows)} over {end / 60:.1f} min; steady from {warm_up / 60:.1f} min")
    print(f"rows read: {rows_per_s:,.0f}/s, archived to Parquet: {archived_per_s:,.0f}/s, "
          f"engine CPU: {cpu:.2f} cores")
    print(f"resident memory after warm-up: {low:.0f}–{high:.0f} MiB (spread {growth:.1f} %, "
          f"last quarter against first {trend:+.1f} %) — "
          + ("flat within 10 %" if growth <= 10 else "NOT flat within 10 %"))
    print(f"watermark lag after warm-up: median {statistics.median(lags):.2f} s, "
          f"max {max(lags):.2f} s; first quarter median "
          f"{statistics.median(lags[:lag_quarter]):.2f} s, last quarter "
          f"{statistics.median(lags[-lag_quarter:]):.2f} s")

    minutes = [row["elapsed_s"] / 60 for row in rows]
    figure, (memory_axis, lag_axis) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    memory_axis.plot(minutes, [row["rss_mib"] for row in rows], color="tab:blue")
    memory_axis.axvline(warm_up / 60, color="grey", linestyle=":", label="end of warm-up")
    memory_axis.set_ylabel("resident memory (MiB)")
    memory_axis.set_ylim(bottom=0)
    memory_axis.legend(loc="lower right")
    memory_axis.set_title(f"Soak: {rows_per_s:,.0f} readings/s, Parquet archive, live subscribers")
    lag_axis.plot(minutes, [row["lag_s"] for row in rows], color="tab:orange")
    lag_axis.set_ylabel("watermark lag (s)")
    lag_axis.set_xlabel("minutes")
    lag_axis.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(plot_path, dpi=100)
    print(f"plot: {plot_path}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
