#!/usr/bin/env python3
"""Share of a process's perf samples whose call stack passes through given code.

    perf script -i perf-on.data | python3 bench/perf_share.py
    perf script -i perf-on.data | python3 bench/perf_share.py --top audit   # + the leaves there

A sample counts for a group when any frame of its stack matches the group's pattern (with
`--call-graph dwarf` the stacks are whole; with frame pointers absent only the leaf is sure).
The indented groups split the audit trail's samples (a sample may count in several of them;
"outside SQLite" and "SQLite" add up to the audit trail).
`--top WORD` also lists the most frequent leaf functions of the samples of the first group
whose name contains WORD.
"""
import collections
import re
import sys

GROUPS = {
    # The console: the model and its feed, the HTTP server (/metrics, SSE, API, pages).
    "console (radguard_web, axum, hyper)": re.compile(r"radguard_web::|axum::|hyper::|hyper_util::"),
    "event bus (emit, broadcast)": re.compile(r"radguard_events::EventBus::|tokio::sync::broadcast::"),
    "audit trail (radguard_audit, SQLite)": re.compile(r"radguard_audit::|sqlite3"),
    "  audit: SQLite (sqlite3*)": re.compile(r"sqlite3"),
    "  audit: SQLite's syncs (fsync, fdatasync)": re.compile(r"\bunixSync\b|\b(?:__)?(?:libc_)?f(?:data)?sync\b"),
    "  audit: sealing (chain::seal: JSON, SHA-256, index columns)": re.compile(r"radguard_audit::chain::seal"),
    "  audit: mapping events (mapper::Mapper::map)": re.compile(r"radguard_audit::mapper::"),
    # The store call runs in a closure of writer::run: "outside SQLite" is audit minus SQLite.
    "  audit: outside SQLite (mapping, sealing, queue, drops)": (
        re.compile(r"radguard_audit::"), re.compile(r"sqlite3")),
    "detection (radguard_detect)": re.compile(r"radguard_detect::"),
    "relay (radguard_gateway)": re.compile(r"radguard_gateway::"),
}


def main() -> None:
    top_word = None
    if "--top" in sys.argv:
        top_word = sys.argv[sys.argv.index("--top") + 1]
    top_group = next((g for g in GROUPS if top_word and top_word in g), None)
    counts = collections.Counter()
    leaves = collections.Counter()
    total = 0
    stack: list[str] = []

    def flush() -> None:
        nonlocal total
        if not stack:
            return
        total += 1
        text = "\n".join(stack)
        for name, pat in GROUPS.items():
            if isinstance(pat, tuple):
                hit = pat[0].search(text) and not pat[1].search(text)
            else:
                hit = pat.search(text)
            if hit:
                counts[name] += 1
                if name == top_group:
                    # "ADDR SYMBOL+OFF (DSO)": the symbol, without offset.
                    leaf = stack[0].split(" ", 1)[-1].rsplit(" (", 1)[0]
                    leaves[re.sub(r"\+0x[0-9a-f]+$", "", leaf)] += 1
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
    if top_group:
        print(f"most frequent leaves of '{top_group.strip()}':")
        for leaf, n in leaves.most_common(25):
            print(f"  {n:6d}  {leaf[:150]}")


if __name__ == "__main__":
    main()
