#!/usr/bin/env python3
"""Builds gpu-check.sh's one table from its rows' `influx-cli ... --json` objects (standard library only).

  python3 bench/gpu_table.py RESULTS/rows.tsv

rows.tsv has one line per row: name, bars, the row's JSON file, and its exit status (or 'skipped'). bars is
KIND[:KEY=VALUE,...]; KIND says how to read the row's JSON, the keys are the issue's bars to judge it by:
  forward  ratio (ours / PyTorch, at most), products and attention (TFLOP/s from --profile, at least)
  train    kept_s, recompute_s, host_s (seconds per step, at most), recompute_gb, host_gb (peak GB with recomputation,
           and with it and --offload-checkpoints, at most)
  edit     s (seconds per image, at most)
  parity   rel (largest relative L2 over every tensor, at most); without it: the manifest's tolerances
  check    pytorch_flux_forward.py --check's own line: its rel L2 against its dtype's tolerance
  doctor   influx-cli doctor: kernels the driver built; a sub-row for each family that spills registers or fails
  run      the command's exit status alone
A row without bars shows its figures and '-' in ok?; one that failed, timed out or was skipped says so.
"""
import json
import sys

COLUMNS = ("row", "ours", "baseline", "ratio or figure", "bar", "ok?")


def gb(n):
    if n is None:
        return "-"
    return "%.1f GB" % (n / 1e9) if n >= 1e9 else "%.0f MB" % (n / 1e6)


def ms(v):
    return "-" if v is None else ("%.0f ms" % v if v >= 100 else "%.1f ms" % v)


def judge(value, bar, at_most=True):
    if bar is None:
        return "-"
    if value is None:
        return "no figure"
    return "yes" if (value <= bar if at_most else value >= bar) else "NO"


def forward_rows(name, result, bars):
    b = result["benchmark"]
    base = b.get("baseline") or {}
    ratio = b.get("ratio")
    rows = [(name, "%s, %s" % (ms(b["medianMs"]), gb(b.get("peakDeviceBytes"))),
             "%s, %s" % (ms(base["medianMs"]), gb(base.get("peakBytes"))) if base.get("medianMs") else (base.get("error") or "-"),
             "%.2f× time" % ratio if ratio is not None else "-",
             "≤ %s×" % bars["ratio"] if "ratio" in bars else "-", judge(ratio, limit(bars, "ratio")))]
    achieved = result.get("achieved") or {}
    for what in ("products", "attention"):
        rate = achieved.get(what)
        if rate is None and what not in bars:
            continue
        tflops = rate["teraflopsPerSecond"] if rate else None
        rows.append(("  " + what, "-" if tflops is None else "%.0f TFLOP/s" % tflops, "-",
                     "-" if rate is None else "%.0f ms" % (rate["seconds"] * 1e3),
                     "≥ %s TFLOP/s" % bars[what] if what in bars else "-", judge(tflops, limit(bars, what), at_most=False)))
    return rows


def train_rows(name, result, bars):
    b = result["benchmark"]
    if "comparison" not in b:  # data-parallel runs report their own shape
        return [(name, "see its log", "-", "-", "-", "-")]
    rows = []
    for step in b["comparison"]:
        # "no", "per block", or "per block, host" (--offload-checkpoints)
        kind = {"no": "kept", "per block": "recompute"}.get(step["recompute"], "host")
        seconds = step["stepMs"] / 1e3
        ours = "%.3f s, %s" % (seconds, gb(step["peakBytes"]))
        theirs = ("%.3f s, %s" % (step["baselineMs"] / 1e3, gb(step.get("baselinePeakBytes"))) if step.get("baselineMs") is not None
                  else step.get("baselineError") or ((b.get("baseline") or {}).get("error")) or "-")
        bar_text, ok = [], []
        if kind + "_s" in bars:
            bar_text.append("≤ %s s" % bars[kind + "_s"])
            ok.append(judge(seconds, limit(bars, kind + "_s")))
        if kind + "_gb" in bars:
            bar_text.append("≤ %s GB" % bars[kind + "_gb"])
            ok.append(judge(step["peakBytes"] / 1e9, limit(bars, kind + "_gb")))
        rows.append(("%s (%s)" % (name, kind), ours, theirs, "%.2f× time" % step["ratio"] if step.get("ratio") is not None else "-",
                     ", ".join(bar_text) or "-", "NO" if "NO" in ok else ("yes" if ok else "-")))
    return rows


def edit_rows(name, result, bars):
    s = result["secondsPerImage"]
    return [(name, "%.2f s, %s" % (s, gb(result.get("peakDeviceBytes"))), "-", "%.3f s per step" % result["secondsPerStep"],
             "≤ %s s" % bars["s"] if "s" in bars else "-", judge(s, limit(bars, "s")))]


def parity_rows(name, result, bars):
    errors = [r["error"] for r in result["rows"] if isinstance(r["error"], (int, float)) and r["status"] != "skipped"]
    worst = max(errors) if errors else None
    counts = "%d passed, %d failed, %d skipped" % (result["passed"], result["failed"], result["skipped"])
    not_computed = [r for r in result["rows"] if not isinstance(r["error"], (int, float)) and r["status"] == "failed"]
    if "rel" in bars:
        ok = "NO" if not_computed else judge(worst, limit(bars, "rel"))
        return [(name, counts, "-", "max rel L2 %.2e" % worst if worst is not None else "-", "≤ %s" % bars["rel"], ok)]
    return [(name, counts, "-", "max rel L2 %.2e" % worst if worst is not None else "-", "manifest", "yes" if result["failed"] == 0 else "NO")]


def doctor_rows(name, result, bars):
    if not result["cuda"]:
        return [(name, "no CUDA device", "-", result["device"][:60], "-", "NO")]
    kernels = result["kernels"]
    built = sum(1 for k in kernels if k["error"] is None)
    rows = [(name, "%d/%d kernels built" % (built, len(kernels)), "-", "%.1f GB free of %.1f GB" % (result["freeBytes"] / 1e9, result["totalBytes"] / 1e9),
             "all build", "yes" if built == len(kernels) else "NO")]
    for family in result["families"]:
        if family["spilling"] or family["built"] < family["kernels"]:
            rows.append(("  " + family["family"], "%d/%d built" % (family["built"], family["kernels"]), "-",
                         "%d spill, ≤ %d registers" % (family["spilling"], family["mostRegisters"]), "-", "-"))
    return rows


READERS = {"doctor": doctor_rows, "forward": forward_rows, "train": train_rows, "edit": edit_rows, "parity": parity_rows}


def parse_bars(text):
    kind, _, rest = text.partition(":")
    bars = dict(item.split("=", 1) for item in rest.split(",") if item)
    return kind, bars


def limit(bars, key):
    return float(bars[key]) if key in bars else None


def rows_of(name, bars_text, path, status):
    if status == "skipped":
        return [(name, "-", "-", "-", "-", "skipped (out of CHECK_SECONDS)")]
    kind, bars = parse_bars(bars_text)
    try:
        with open(path) as f:
            lines = [l for l in f.read().splitlines() if l.lstrip().startswith("{")]
        report = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        report = None
    if status in ("124", "137") and report is None:
        return [(name, "-", "-", "-", "-", "TIMED OUT (ROW_SECONDS)")]
    if report is None:
        return [(name, "-", "-", "-", "-", "FAILED (status %s, no JSON)" % status)]
    if kind == "check":
        return [(name, "-", "rel L2 %.2e" % report["check_rel_l2"] if "check_rel_l2" in report else report.get("error", "-"), "-",
                 "≤ %g" % report["check_tolerance"] if "check_tolerance" in report else "-", "yes" if report.get("check_ok") else "NO")]
    error = report.get("error")
    # parity exits 1 when a tensor is beyond the manifest's tolerance; its rows still carry every error to judge
    if error and not (kind == "parity" and report.get("result")):
        return [(name, "-", "-", "-", "-", "FAILED: %s" % error.get("message", "")[:80])]
    if kind == "run":
        return [(name, "ran", "-", "%.0f s" % report.get("seconds", {}).get("total", 0), "-", "yes")]
    try:
        return READERS[kind](name, report["result"], bars)
    except (KeyError, TypeError, ValueError) as e:
        return [(name, "-", "-", "-", "-", "UNREADABLE (%s: %s)" % (type(e).__name__, e))]


def table(rows):
    widths = [max(len(str(r[i])) for r in [COLUMNS] + rows) for i in range(len(COLUMNS))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows])


def main(argv):
    if len(argv) != 2:
        print("usage: gpu_table.py RESULTS/rows.tsv", file=sys.stderr)
        return 2
    rows = []
    with open(argv[1]) as f:
        for entry in f.read().splitlines():
            if entry.strip():
                rows += rows_of(*entry.split("\t"))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
