"""`python -m bench`: model-only ceiling, gRPC EmbedStream and REST bridge, in one run."""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import shlex
import signal
import statistics
import sys
import time

import torch

from clip_grpc.config import ServerConfig, batch_limits
from clip_grpc.model.encoder import Encoder
from clip_grpc.model.loading import load_model

from . import (
    grpc_stream,
    machine,
    model_only,
    models,
    overhead,
    processes,
    report,
    rest,
    serialization,
)
from . import stages as stage_costs
from .inputs import make_inputs


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",")]
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError("distinct counts of at least 1, comma separated")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--model", action="append",
                        help="demo, vit-b32 or a model folder; repeat for several "
                             "(default: demo and vit-b32)")
    parser.add_argument("--device", default="cpu",
                        help="where the server and the model-only runs put the model: cpu, "
                             "cuda or cuda:N (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (a smoke test; numbers are rough)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of model-only then end to end; medians are reported")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="measured seconds of each end-to-end run, stretched to hold "
                             "--min-batches full batches")
    parser.add_argument("--min-batches", type=int, default=15,
                        help="answers arrive a batch at a time: fewer batches per window would "
                             "make items/s jump")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--model-seconds", type=float, default=4.0,
                        help="seconds of model-only batches at each batch size")
    parser.add_argument("--batch-sizes", default=None,
                        help="model-only batch sizes, comma separated (default: 1, 8 and the "
                             "server's image and text batch limits)")
    parser.add_argument("--streams", type=int, default=4, help="concurrent EmbedStream calls")
    parser.add_argument("--items-per-message", type=int, default=8)
    parser.add_argument("--messages-in-flight", type=int, default=2, help="per stream")
    parser.add_argument("--rest-concurrency", default="1,16",
                        help="REST (and unary gRPC) concurrency levels, comma separated")
    parser.add_argument("--server-args", default="",
                        help="extra flags for `python -m clip_grpc`, e.g. '--jpeg-decode draft'")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="environment for the server process, e.g. OMP_NUM_THREADS=1")
    parser.add_argument("--inputs", type=int, default=64, help="distinct images and texts")
    parser.add_argument("--skip-rest", action="store_true")
    parser.add_argument("--overhead-seconds", type=float, default=10.0,
                        help="measured seconds of each serving-overhead run")
    parser.add_argument("--overhead-workers", type=_counts, default=[1, 2],
                        help="server --workers settings measured side by side in the "
                        "serving-overhead section, comma separated (default: 1,2)")
    parser.add_argument("--skip-overhead", action="store_true",
                        help="leave out the serving-overhead section (near-free model)")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the serving-overhead section")
    parser.add_argument("--skip-serialisation", action="store_true")
    parser.add_argument("--no-markdown", action="store_true",
                        help="write the JSON only, leave BENCHMARKS.md alone")
    args = parser.parse_args(argv)
    args.model = args.model or ["demo", "vit-b32"]
    if args.quick:
        args.seconds, args.warmup_seconds, args.model_seconds, args.rounds = 3.0, 1.0, 1.0, 1
        args.overhead_seconds = 3.0
        args.min_batches = 2
        args.inputs = min(args.inputs, 32)
    args.server_flags = shlex.split(args.server_args)
    args.server_env = dict(pair.split("=", 1) for pair in args.server_env)
    server_config = _server_config(args.server_flags)
    check_device(parser, args.device)
    args.batch_limits = batch_limits(server_config, args.device)  # per modality, as the server
    # The model-only ceiling runs the model as the server does: same dtype, limits and compile.
    args.dtype, args.compile = server_config.dtype, server_config.compile
    args.jpeg_draft = server_config.jpeg_decode == "draft"
    given = args.batch_sizes and sorted({int(b) for b in args.batch_sizes.split(",")})
    args.batch_sizes = {kind: given or sorted({1, 8, limit})
                        for kind, limit in args.batch_limits.items()}
    args.rest_concurrency = [int(c) for c in args.rest_concurrency.split(",")]
    return args


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError:
        parser.error(f"--device {device!r} is not a device name (cpu, cuda or cuda:N)")
    if kind not in ("cpu", "cuda"):
        parser.error(f"--device {device!r}: the bench runs on cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device}: torch {torch.__version__} sees no CUDA device here")


def _server_config(flags: list[str]) -> ServerConfig:
    """The configuration the server will run with (to learn its batch limits)."""
    from clip_grpc.config import parse_args as server_parse_args

    return server_parse_args(flags, environ={})


def _load_note() -> str:
    load = machine.load_average()
    return f"1-min load {load[0]:.2f}" if load else "load unknown"


def window_seconds(args, ceiling: dict | None, kind: str) -> float:
    """args.seconds, stretched so that the window holds args.min_batches full batches."""
    if ceiling is None:
        return args.seconds
    batch_seconds = args.batch_limits[kind] / ceiling[kind]["ceiling_items_per_s"]
    return max(args.seconds, args.min_batches * batch_seconds)


async def stream_runs(target: str, server: processes.Child, images, texts, args,
                      ceiling: dict | None = None) -> dict:
    load = grpc_stream.StreamLoad(args.streams, args.items_per_message, args.messages_in_flight,
                                  args.seconds, args.warmup_seconds)
    count = max(2 * load.streams * load.messages_in_flight, len(images) // load.items_per_message)
    results = {}
    for kind in ("image", "text"):
        requests = grpc_stream.messages(kind, images, texts, load.items_per_message, count)
        await grpc_stream.drive(target, requests, load, load.warmup_seconds,
                                require_answers=False)
        batches = await processes.model_busy_totals(server.metrics_url)
        cpu = {"server": server.cpu_seconds(), "client": time.process_time()}
        at_end = {}

        def window_end(at_end=at_end):
            at_end.update(server=server.cpu_seconds(), client=time.process_time(),
                          batches=asyncio.ensure_future(
                              processes.model_busy_totals(server.metrics_url)))

        seconds = window_seconds(args, ceiling, kind)
        row = await grpc_stream.drive(target, requests, load, seconds, window_end)
        for side in ("server", "client"):
            row[f"{side}_cpu_ms_per_item"] = (at_end[side] - cpu[side]) * 1000 / row["items"]
        row.update(model_busy(batches[kind], (await at_end["batches"])[kind], seconds))
        print(f"  EmbedStream {kind:5}: {row['items_per_s']:9.1f} items/s, p50 "
              f"{row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms per message, server CPU "
              f"{row['server_cpu_ms_per_item']:.2f} ms/item, model busy "
              f"{row['model_busy']:.2f} of the window, mean batch {row['mean_batch']:.1f}",
              flush=True)
        results[kind] = row
    return results


def model_busy(before: dict, after: dict, seconds: float) -> dict:
    """How busy the server's model was in a window: its forward seconds over the window's (the
    batches finished in it; 1.0 = never idle; the mean over a --workers server's models) and
    the mean size of those batches."""
    batches = after["batches"] - before["batches"]
    busy_s = (after["forward_s"] - before["forward_s"]) / after.get("workers", 1)
    return {"model_busy": busy_s / seconds,
            "mean_batch": (after["items"] - before["items"]) / batches if batches else 0.0}


async def rest_runs(target: str, images, texts, model_only_result: dict | None, args) -> dict:
    if importlib.util.find_spec("rest_bridge.__main__") is None:
        message = "rest_bridge is not in this checkout yet (python -m rest_bridge)"
        print(f"  REST bridge: skipped, {message}", flush=True)
        return {"skipped": message}
    bridge, base_url = await processes.start_bridge(target)
    runs = {}
    try:
        for concurrency in args.rest_concurrency:
            for name, load in ((f"REST /syte_test/clip, concurrency {concurrency}",
                                rest.rest_load(base_url, images, texts, concurrency, args.seconds,
                                               args.warmup_seconds)),
                               (f"gRPC Embed, concurrency {concurrency}",
                                rest.grpc_unary_load(target, images, texts, concurrency,
                                                     args.seconds, args.warmup_seconds))):
                bridge_cpu = bridge.cpu_seconds()
                runs[name] = row = await load
                if name.startswith("REST"):
                    row["bridge_cpu_ms_per_request"] = (
                        (bridge.cpu_seconds() - bridge_cpu) * 1000 / row["sent"])
                print(f"  {name}: {row['requests'] / row['seconds']:.1f} requests/s, p50 "
                      f"{row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms" + (
                          f", bridge CPU {row['bridge_cpu_ms_per_request']:.2f} ms/request"
                          if "bridge_cpu_ms_per_request" in row else ""), flush=True)
    finally:
        bridge.stop()
    result = {"runs": runs}
    if 1 in args.rest_concurrency:
        rest_p50 = runs["REST /syte_test/clip, concurrency 1"]["p50_ms"]
        result["bridge_overhead_ms_c1"] = rest_p50 - runs["gRPC Embed, concurrency 1"]["p50_ms"]
        if model_only_result:
            forward_ms = sum(model_only_result[kind]["by_batch_size"][0]["p50_ms"]
                             for kind in ("image", "text"))
            result["beyond_forward_ms_c1"] = rest_p50 - forward_ms
        print(f"  REST bridge adds {result['bridge_overhead_ms_c1']:.2f} ms per request at "
              f"concurrency 1 (target <= 3 ms)", flush=True)
    return result


def breakdown(steps: dict, ceiling: dict, stream: dict) -> dict:
    """Server CPU ms per item, step by step, and what is left for gRPC, asyncio and threads."""
    table = {}
    for kind in ("image", "text"):
        forward = ceiling[kind]["by_batch_size"][-1]["cpu_ms_per_item"]
        listed = {
            "decode or tokenise": steps["decode_ms" if kind == "image" else "tokenise_ms"],
            "resize + normalise": steps["resize_normalise_ms"] if kind == "image" else None,
            "forward": forward,
            "serialise": steps["serialise_ms"],
        }
        server_total = stream[kind]["server_cpu_ms_per_item"]
        table[kind] = {
            **listed,
            "gRPC, asyncio, threads (rest)": server_total - sum(v or 0 for v in listed.values()),
            "server CPU total": server_total,
            "client CPU": stream[kind]["client_cpu_ms_per_item"],
            "wall per item": 1000 / stream[kind]["items_per_s"],
        }
    return table


async def server_runs(folder, server_flags: list[str], env: dict, images, texts, args,
                      ceiling: dict | None) -> tuple[dict, dict]:
    """EmbedStream (images, then texts) and, unless skipped, REST and unary gRPC."""
    server, target = await processes.start_server(folder, server_flags, env)
    try:
        stream = await stream_runs(target, server, images, texts, args)
        rest_result = ({"skipped": "--skip-rest"} if args.skip_rest
                       else await rest_runs(target, images, texts, ceiling, args))
    finally:
        server.stop()
    return stream, rest_result


def median_of(rounds: list[dict]) -> dict:
    """Key by key, the median of the rounds' numbers (nested dicts and lists alike)."""
    first = rounds[0]
    if isinstance(first, dict):
        return {key: median_of([r[key] for r in rounds]) for key in first}
    if isinstance(first, list):
        return [median_of(list(column)) for column in zip(*rounds, strict=True)]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(rounds)
    return first


async def bench_model(name: str, args, images: list[bytes], texts: list[str]) -> dict:
    """Rounds of (model-only, then end to end), so both see the same machine load; then the
    step costs and the REST bridge once."""
    folder, description = models.resolve(name)
    device_name = machine.device_name(args.device)
    print(f"\n== {name}: {description} ({folder}) on {args.device} ({device_name}); "
          f"{_load_note()}", flush=True)
    load_note = f"{_load_note()} at start"
    loaded = load_model(folder, args.device, args.dtype)
    dtype_name = loaded.dtype_name  # what auto chose on this device
    encoder = Encoder(loaded, args.batch_limits, args.compile)
    encoder.warm_up()  # --compile: every batch size, before anything is timed
    pixels, token_ids = model_only.preprocess(encoder, images, texts)
    server, target = await processes.start_server(folder, args.server_flags, args.server_env,
                                                  args.device)
    rounds = []
    try:
        for index in range(args.rounds):
            print(f"  -- round {index + 1} of {args.rounds}; {_load_note()}", flush=True)
            ceiling = model_only.forward_ceiling(encoder, pixels, token_ids, args.batch_sizes,
                                                 args.model_seconds)
            stream = await stream_runs(target, server, images, texts, args, ceiling)
            ratios = {kind: stream[kind]["items_per_s"] / ceiling[kind]["ceiling_items_per_s"]
                      for kind in ("image", "text")}
            print("  end-to-end / model-only: " + ", ".join(
                f"{kind}s {ratio:.2f}" for kind, ratio in ratios.items()), flush=True)
            rounds.append({"model_only": ceiling, "grpc_stream": stream, "ratios": ratios})
        steps = stage_costs.measure(encoder, images, texts, args.jpeg_draft)
        print("  steps alone (ms per item): " + ", ".join(
            f"{k} {v:.3f}" for k, v in steps.items()), flush=True)
        del loaded, encoder, pixels, token_ids
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the bench's copy of the model leaves the GPU to the server
        ceiling = median_of([r["model_only"] for r in rounds])
        rest_result = ({"skipped": "--skip-rest"} if args.skip_rest
                       else await rest_runs(target, images, texts, ceiling, args))
    finally:
        server.stop()
    stream = median_of([r["grpc_stream"] for r in rounds])
    for kind in ("image", "text"):
        stream[kind]["ratio_to_model_only"] = statistics.median(
            r["ratios"][kind] for r in rounds)
        stream[kind]["ratio_by_round"] = [round(r["ratios"][kind], 3) for r in rounds]
    return {
        "model": name, "description": description, "folder": str(folder),
        "device": args.device, "device_name": device_name, "dtype": dtype_name,
        "server_flags": args.server_flags, "server_env": args.server_env,
        "load_note": f"{load_note}, {_load_note()} at end", "rounds": len(rounds),
        "stream_load": {"streams": args.streams, "items_per_message": args.items_per_message,
                        "messages_in_flight": args.messages_in_flight},
        "model_only": ceiling, "steps": steps, "grpc_stream": stream, "rest": rest_result,
        "breakdown": breakdown(steps, ceiling, stream), "by_round": rounds,
    }


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = {"when": time.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:] if argv is None else argv,
           "machine": machine.describe(), "models": []}
    print(f"machine: {machine.one_line(run['machine'])}", flush=True)
    if not args.skip_overhead:
        run["overhead"] = await overhead.run(args)
    images, texts = make_inputs(args.inputs)
    for name in [] if args.overhead_only else args.model:
        run["models"].append(await bench_model(name, args, images, texts))
    if not (args.skip_serialisation or args.overhead_only):
        print("\n== embedding serialisation", flush=True)
        run["serialisation"] = serialization.run_all()
    path = report.write_json(run)
    print(f"\nresults: {path}")
    if not args.no_markdown:
        report.update_markdown(run)
        print(f"tables: {report.BENCHMARKS_MD}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the children on SIGTERM too
    sys.exit(asyncio.run(main()))
