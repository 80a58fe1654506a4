"""`python -m bench.sweep`: server settings side by side, in interleaved rounds (A B C A B C ...)
so that a noisy shared machine hits every setting alike. Reports the median of the rounds.

    python -m bench.sweep --model vit-b32 \\
        --variant "default:" --variant "wait1:--max-wait-ms 1" \\
        --variant "omp1:OMP_NUM_THREADS=1 --preprocess-workers 1"

A variant is NAME:SETTINGS; SETTINGS are server flags, and NAME=VALUE words set its environment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import statistics
import sys
import time

from . import machine, models, report
from .__main__ import server_runs
from .inputs import make_inputs


def parse_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
    name, _, settings = text.partition(":")
    words = shlex.split(settings)
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    flags = [w for w in words if not ("=" in w and not w.startswith("-"))]
    return name, flags, env


def headline(stream: dict, rest: dict) -> dict:
    row = {f"{kind}_items_per_s": stream[kind]["items_per_s"] for kind in ("image", "text")}
    row.update({f"{kind}_p50_ms": stream[kind]["p50_ms"] for kind in ("image", "text")})
    row.update({f"{kind}_server_cpu_ms": stream[kind]["server_cpu_ms_per_item"]
                for kind in ("image", "text")})
    for name, run in rest.get("runs", {}).items():
        row[f"{name} p50_ms"] = run["p50_ms"]
        row[f"{name} requests_per_s"] = run["requests"] / run["seconds"]
    return row


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit-b32")
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--items-per-message", type=int, default=8)
    parser.add_argument("--messages-in-flight", type=int, default=2)
    parser.add_argument("--rest-concurrency", default="1")
    parser.add_argument("--skip-rest", action="store_true")
    parser.add_argument("--inputs", type=int, default=64)
    parser.add_argument("--label", default="sweep", help="name of the JSON file in bench/results")
    args = parser.parse_args(argv)
    args.rest_concurrency = [int(c) for c in args.rest_concurrency.split(",")]
    variants = [parse_variant(v) for v in args.variant]
    folder, description = models.resolve(args.model)
    images, texts = make_inputs(args.inputs)
    run = {"when": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:],
           "machine": machine.describe(), "model": args.model, "rounds": {}}
    print(f"machine: {machine.one_line(run['machine'])}\nmodel: {description}", flush=True)
    for round_index in range(args.rounds):
        for name, flags, env in variants:
            print(f"\n-- round {round_index + 1}, {name}: {env} {flags}; "
                  f"load {machine.load_average()[0]:.2f}", flush=True)
            stream, rest = await server_runs(folder, flags, env, images, texts, args, None)
            run["rounds"].setdefault(name, []).append(headline(stream, rest))
    run["median"] = {name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
                     for name, rounds in run["rounds"].items()}
    print("\nmedians over rounds:")
    for name, row in run["median"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    report.RESULTS.mkdir(exist_ok=True)
    path = report.RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.label}.json"
    path.write_text(json.dumps(run, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the children on SIGTERM too
    sys.exit(asyncio.run(main()))
