#!/usr/bin/env python3
"""Share of a process's perf samples whose call stack passes through given code.

    perf script -i perf-on.data | python3 bench/perf_share.py

A sample counts for a group when any frame of its stack matches the group's pattern (with
`--call-graph dwarf` the stacks are whole; with frame pointers absent only the leaf is sure).
"""
import collections
import re
import sys

GROUPS = {
    # The console: the model and its feed, the HTTP server (/metrics, SSE, API, pages).
    "console (radguard_web, axum, hyper)": re.compile(r"radguard_web::|axum::|hyper::|hyper_util::"),
    "event bus (emit, broadcast)": re.compile(r"radguard_events::EventBus::|tokio::sync::broadcast::"),
    "audit trail (radguard_audit, SQLite)": re.compile(r"radguard_audit::|sqlite3"),
    "detection (radguard_detect)": re.compile(r"radguard_detect::"),
    "relay (radguard_gateway)": re.compile(r"radguard_gateway::"),
}


def main() -> None:
    counts = collections.Counter()
    total = 0
    stack: list[str] = []

    def flush() -> None:
        nonlocal total
        if not stack:
            return
        total += 1
        text = "\n".join(stack)
        for name, pat in GROUPS.items():
            if pat.search(text):
                counts[name] += 1
        stack.clear()

    for line in sys.stdin:
        if not line.strip():
            flush()
        elif line[0].isspace():
            stack.append(line.strip())
        else:
            flush()
    flush()
    print(f"samples: {total}")
    for name in GROUPS:
        n = counts[name]
        print(f"  {name}: {n} ({100 * n / max(total, 1):.2f} %)")


if __name__ == "__main__":
    main()
