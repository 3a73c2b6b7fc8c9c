"""Where a profiled step's time goes: the busiest operations of a `jax.profiler` trace.

    python -m benchmarks.trace_summary TRACE_DIR [--top 20]

`jax.profiler.trace(TRACE_DIR)` writes `plugins/profile/<run>/<host>.trace.json.gz` (Chrome's
trace-event format) beside the xplane protobuf that TensorBoard and XProf read. This reads the
newest such file with the standard library only, sums the duration of every complete event
("ph": "X") by process (a device such as "/device:GPU:0", or the host) and event name (a GPU
kernel, an XLA fusion, a Python frame), and reports each process's busiest names with their
share of that process's summed time. Nested events (a Python frame and the calls inside it) are
each counted, so shares compare names within a process; they do not add up to wall time.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
from pathlib import Path


def newest_trace(trace_dir: Path) -> Path:
    traces = sorted(Path(trace_dir).glob("plugins/profile/*/*.trace.json.gz"))
    if not traces:
        raise FileNotFoundError(f"no plugins/profile/*/*.trace.json.gz under {trace_dir}")
    return max(traces, key=lambda path: path.stat().st_mtime)


def summarize(trace_dir: Path, top: int = 20) -> dict:
    """{"trace": path, "processes": {name: {"busy_ms", "events", "top": [{name, ms, share}]}}}
    for the newest trace under `trace_dir`; processes busiest first."""
    path = newest_trace(trace_dir)
    with gzip.open(path, "rt") as file:
        trace = json.load(file)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {
        event["pid"]: event["args"]["name"]
        for event in events
        if event.get("ph") == "M" and event.get("name") == "process_name"
    }
    busy: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: collections.Counter = collections.Counter()
    for event in events:
        if event.get("ph") != "X":
            continue
        process = names.get(event["pid"], str(event["pid"]))
        busy[process][event["name"]] += float(event.get("dur", 0.0))  # microseconds
        counts[process] += 1
    processes = {}
    for process, durations in sorted(busy.items(), key=lambda item: -sum(item[1].values())):
        total = sum(durations.values())
        processes[process] = {
            "busy_ms": round(total / 1e3, 3),
            "events": counts[process],
            "top": [
                {"name": name, "ms": round(us / 1e3, 3), "share": round(us / total, 4)}
                for name, us in durations.most_common(top)
            ],
        }
    return {"trace": str(path), "processes": processes}


def format_summary(summary: dict) -> str:
    lines = [f"trace: {summary['trace']}"]
    for process, entry in summary["processes"].items():
        lines.append(f"\n{process}: {entry['busy_ms']:.1f} ms in {entry['events']} events")
        lines += [
            f"  {row['share']:7.1%} {row['ms']:10.2f} ms  {row['name'][:100]}"
            for row in entry["top"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace_dir", help="the directory given to jax.profiler.trace")
    parser.add_argument("--top", type=int, default=20, help="names shown per process")
    args = parser.parse_args(argv)
    print(format_summary(summarize(Path(args.trace_dir), args.top)))


if __name__ == "__main__":
    main()
