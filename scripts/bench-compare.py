#!/usr/bin/env python3
"""Runs one benchmark with two builds back to back and prints the ratio.

These machines are noisy, so a figure means little alone: this runs the same
benchmark with a baseline build and a new build, alternating (base, new, base,
new, ...), each run in a fresh scratch database, and prints every figure of
both sides (the mean over rounds) with new/base beside it.

    scripts/bench-compare.py \
        --base "/path/to/old/taskledger bench" \
        --new  "target/release/taskledger-bench" \
        --rounds 2 -- append --writers 16,64 --batch 1 --seconds 5

Each side is a command line (split like a shell would, no shell involved) to
which `--database-url URL` and the arguments after `--` are added. Lines the
benchmark prints as `label key=number key=number ...` are compared figure by
figure, matched by their label and non-figure keys (writers=16, batch=1,
connections=64). For figures ending in `_per_s` higher is better; for
`_ms` and `seconds` lower is better; the last column says which side won.

Standard library only; needs `psql` on PATH to drop the scratch databases.
"""

import argparse
import re
import shlex
import subprocess
import sys
import time
from collections import OrderedDict

FIGURE = re.compile(r"([a-z0-9_]+)=([0-9]+(?:\.[0-9]+)?)")
# Keys that name the case rather than measure it.
CASE_KEYS = {"writers", "batch", "connections", "samples", "events", "projection", "slots", "parallel"}


def parse(output):
    """{case label: {figure: value}} from a benchmark's standard output."""
    figures = OrderedDict()
    for line in output.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        pairs = FIGURE.findall(line)
        if not pairs:
            continue
        # The words before the first figure's key name the line (e.g. "POST /v1/tasks").
        before_first_key = line.split("=", 1)[0]
        label = before_first_key.rsplit(" ", 1)[0] if " " in before_first_key else ""
        case = [label] + [f"{key}={value}" for key, value in pairs if key in CASE_KEYS]
        measured = {key: float(value) for key, value in pairs if key not in CASE_KEYS}
        if measured:
            figures.setdefault(" ".join(part for part in case if part), {}).update(measured)
    return figures


def run(side, command, args, database_base, round_number):
    database = f"tl_bench_{side}_{round_number}_{int(time.time())}"
    url = f"{database_base.rstrip('/').rsplit('/', 1)[0]}/{database}"
    argv = shlex.split(command) + ["--database-url", url] + args
    print(f"bench-compare: round {round_number} {side}: {' '.join(argv)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    finally:
        subprocess.run(
            ["psql", "-q", database_base, "-c", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'],
            check=False,
            stdout=subprocess.DEVNULL,
        )
    if done.returncode != 0:
        sys.exit(f"bench-compare: the {side} run failed (exit {done.returncode})")
    return parse(done.stdout)


def mean(values):
    return sum(values) / len(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the baseline's bench command")
    parser.add_argument("--new", required=True, help="the new build's bench command")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating")
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a database on the server to use; scratch databases are made beside it",
    )
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- then the benchmark and its flags")
    options = parser.parse_args()
    args = options.bench[1:] if options.bench[:1] == ["--"] else options.bench
    if not args:
        parser.error("name the benchmark after --, e.g. -- append --seconds 5")

    results = {"base": [], "new": []}
    for round_number in range(1, options.rounds + 1):
        for side in ("base", "new"):
            command = options.base if side == "base" else options.new
            results[side].append(run(side, command, args, options.database_url, round_number))

    print(f"# bench-compare {' '.join(args)}: mean of {options.rounds} alternating runs per side")
    print(f"{'case':<44} {'figure':<16} {'base':>10} {'new':>10} {'new/base':>9}  better")
    for case in results["base"][0]:
        for figure in results["base"][0][case]:
            base = [r[case][figure] for r in results["base"] if figure in r.get(case, {})]
            new = [r[case][figure] for r in results["new"] if figure in r.get(case, {})]
            if not base or not new:
                continue
            b, n = mean(base), mean(new)
            ratio = n / b if b else float("nan")
            if figure.endswith("_per_s"):
                better = "new" if n > b else "base"
            elif figure.endswith("_ms") or figure == "seconds":
                better = "new" if n < b else "base"
            else:
                better = ""
            print(f"{case:<44} {figure:<16} {b:>10.2f} {n:>10.2f} {ratio:>9.3f}  {better}")


if __name__ == "__main__":
    main()
