"""Turn a `pytest benchmarks/ --benchmark-json=FILE` run into the tables and the plot of
docs/performance.md.

    python benchmarks/make_report.py FILE [FILE...] [--doc docs/performance.md] [--plot docs/performance_stream.png]
        [--marker bench]

With several files (e.g. the streaming and the whole-file suites run one after the other),
a later file's workload replaces an earlier one of the same name.

The tables replace what lies between `<!-- bench:begin -->` and `<!-- bench:end -->` in
the doc, the rest of which is written by hand (`--marker NAME`: between `<!-- NAME:begin -->`
and `<!-- NAME:end -->`, so one doc can hold several runs, e.g. one per thread count); every
number comes from the JSON, i.e. from one run in which all implementations were measured
interleaved on the same machine.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _workloads(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "impls" in info:
            out.append(info)
    return out


def _ratio(v: float) -> str:
    return f"{v:.2f}x" if v == v else "n/a"


def stream_table(w: dict[str, Any]) -> list[str]:
    rows = [f"**{w['workload']}**", "",
            "| implementation | encode p50 | decode p50 | total p50 | total p90 | total p99 | p99/p50 | RTF | "
            "total p50 vs ours | codes |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in w["impls"].items():
        bad, bad10 = int(s.get("code_mismatch_frames", 0)), int(s.get("code_mismatch_frames_first_10s", 0))
        if name == "ours":
            codes = "-"
        elif "weights_mb" in s:  # the weight-read floor: no codec, no codes
            codes = f"none: reads the {s['weights_mb']:.0f} MB of weights a frame reads"
        elif bad == 0:
            codes = f"equal, all {int(s['frames'])} frames"
        else:
            codes = f"{bad} of {int(s['frames'])} frames differ ({bad10} in the first 10 s)"
        rows.append(f"| {name} | {s['encode_p50_ms']:.1f} ms | {s['decode_p50_ms']:.1f} ms | "
                    f"{s['total_p50_ms']:.1f} ms | {s['total_p90_ms']:.1f} ms | {s['total_p99_ms']:.1f} ms | "
                    f"{s['p99_over_p50']:.2f} | {s['rtf']:.2f} | {_ratio(s['ratio_vs_ours'])} | {codes} |")
    return rows + [""]


def whole_table(ws: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for w in ws:
        for n in w["impls"]:
            if n not in names:
                names.append(n)
    head = "| workload | " + " | ".join(names) + " |"
    rows = ["**Whole file** (median seconds per call; ms per 80 ms frame; ratio = impl / ours)", "",
            head, "|---|" + "---|" * len(names)]
    for w in ws:
        cells = []
        for n in names:
            s = w["impls"].get(n)
            if s is None:
                cells.append("-")
                continue
            cell = f"{s['median_s']:.2f} s ({s['ms_per_frame']:.1f} ms/frame, {_ratio(s['ratio_vs_ours'])})"
            if "per_frame_60s_over_10s" in s:
                cell += f", 60 s/10 s per frame {s['per_frame_60s_over_10s']:.2f}"
            if s.get("codes_equal") == 0:
                frac = s.get("codes_differing_frac")
                cell += ", CODES DIFFER" if frac is None else f", CODES DIFFER ({frac:.2%} of codes)"
                if "tie_frames" in s:
                    cell += (f": {s['tie_frames']} frame(s), each a rounding-level tie "
                             f"(relative distance gap <= {s['tie_max_rel_gap']:.1e})")
            cells.append(cell)
        rows.append(f"| {w['workload']} | " + " | ".join(cells) + " |")
    return rows + [""]


def memory_table(w: dict[str, Any]) -> list[str]:
    rows = [f"**{w['workload']}** (fresh process each; peak RSS = VmHWM)", "",
            "| implementation | RSS after load | peak RSS | growth | peak vs ours |", "|---|---|---|---|---|"]
    for name, s in w["impls"].items():
        rows.append(f"| {name} | {s['rss_model_mb']:.0f} MB | {s['rss_peak_mb']:.0f} MB | "
                    f"{s['growth_mb']:.0f} MB | {_ratio(s['ratio_vs_ours'])} |")
    return rows + [""]


def render(data: dict[str, Any]) -> str:
    ws = _workloads(data)
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", "?")
    lines = [f"Run(s) ending {data.get('datetime', '?')}: {cpu}, Python {mi.get('python_version', '?')}; "
             f"{data.get('_threads', 'default')} torch threads.", ""]
    for kind in ("stream", "speedups"):  # the streamed runs first, however the files were merged
        lines += [row for w in ws if w["workload"].startswith(kind) for row in stream_table(w)]
    whole = [w for w in ws if w["workload"].startswith("whole-file")]
    if whole:
        lines += whole_table(whole)
    for w in ws:
        if w["workload"].startswith("peak memory"):
            lines += memory_table(w)
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = [w for w in _workloads(data) if w["workload"].startswith("stream")]
    if not ws:
        return
    w = ws[0]
    names = list(w["impls"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = range(len(names))
    enc = [w["impls"][n]["encode_p50_ms"] for n in names]
    dec = [w["impls"][n]["decode_p50_ms"] for n in names]
    p99 = [w["impls"][n]["total_p99_ms"] for n in names]
    ax.bar(x, enc, label="encode (median)")
    ax.bar(x, dec, bottom=enc, label="decode (median)")
    ax.scatter(list(x), p99, color="black", marker="_", s=400, label="encode+decode p99", zorder=3)
    ax.axhline(80, color="red", linestyle="--", linewidth=1, label="80 ms = real time")
    ax.set_xticks(list(x), names, rotation=15)
    ax.set_ylabel("ms per 80 ms frame")
    ax.set_title("Mimi streaming, full size, batch 1, one frame per call (same run)")
    ax.set_ylim(0, max(p99) * 1.35)
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_files", type=Path, nargs="+")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "performance.md")
    ap.add_argument("--plot", type=Path, default=ROOT / "docs" / "performance_stream.png")
    ap.add_argument("--threads", default="default", help="torch threads the run used (for the text)")
    ap.add_argument("--marker", default="bench", help="the doc's block to replace: <!-- MARKER:begin/end -->")
    args = ap.parse_args()
    begin, end = f"<!-- {args.marker}:begin -->", f"<!-- {args.marker}:end -->"
    data = json.loads(args.json_files[0].read_text())
    for extra in args.json_files[1:]:
        more = json.loads(extra.read_text())
        data["datetime"] = f"{data.get('datetime', '?')} and {more.get('datetime', '?')}"
        names = {b.get("extra_info", {}).get("workload") for b in more["benchmarks"]}
        data["benchmarks"] = [b for b in data["benchmarks"]
                              if b.get("extra_info", {}).get("workload") not in names] + more["benchmarks"]
    data["_threads"] = args.threads
    block = f"{begin}\n{render(data)}\n{end}"
    doc = args.doc.read_text() if args.doc.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in doc:
        doc += f"\n{begin}\n{end}\n"
    doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _m: block, doc, flags=re.S)
    args.doc.write_text(doc)
    plot(data, args.plot)
    print(f"wrote {args.doc} and {args.plot}")


if __name__ == "__main__":
    main()
