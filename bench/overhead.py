"""Serving overhead: the end-to-end EmbedStream with a near-free model (1 layer, 32 wide, 224 px).

With the forward pass nearly free, what the server spends per item is mostly the serving path's
own cost: gRPC, asyncio, thread hand-offs, decoding and tokenising. "Nearly" is not "not at all":
the model thread (`model-0`, which also runs the forward's torch ops) is reported apart, and the
serving path is the rest. Reported per item: the whole server process's CPU time
(/proc/<pid>/stat), the model thread's, the rest (server minus model thread), the busiest thread
other than the model thread (/proc/<pid>/task/*/stat: the serving path's single-thread cap, since
one thread can never go faster than one core) and the event loop's (the main thread), next to
the CPU of decoding and preprocessing the same images (tokenising the same texts) alone,
measured in the same run.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

import torch

from clip_grpc.model.encoder import Encoder
from clip_grpc.model.images import decode_image
from clip_grpc.model.loading import load_model
from clip_grpc.model.texts import TextTokenizer

from . import grpc_stream, machine, models, processes
from .inputs import photo_like_jpeg, sentence

MODEL = "near-free"
IMAGE_SIDE = 224  # the model's input size: what is left is decoding and normalising, no resize
NO_LIMIT = 1 << 40
MODEL_THREAD = "model-"  # the engine's model thread, named in the OS (engine.name_os_thread)
# The server's settings on CUDA, where the forward's CPU side is one thread launching kernels:
# torch's intra-op threads woken for the near-free model's tiny ops doubled the model thread's
# CPU and took the cores from the serving path (BENCHMARKS.md). --server-args come after, so
# they can say otherwise.
NEAR_FREE_SERVER_FLAGS = ["--torch-threads", "1"]


def make_inputs(count: int) -> tuple[list[bytes], list[str]]:
    return ([photo_like_jpeg(i, IMAGE_SIDE, IMAGE_SIDE) for i in range(count)],
            [sentence(i) for i in range(count)])


def cpu_alone(step, inputs, min_seconds: float = 1.0) -> float:
    """This thread's CPU seconds per call of step, over inputs repeated for min_seconds."""
    step(inputs[0])
    calls, started, cpu_started = 0, time.perf_counter(), time.thread_time()
    while calls < len(inputs) or time.perf_counter() - started < min_seconds:
        step(inputs[calls % len(inputs)])
        calls += 1
    return (time.thread_time() - cpu_started) / calls


def cpu_alone_at_once(step, inputs, threads: int) -> float:
    """cpu_alone on `threads` threads at the same time, averaged: what the same work costs per
    call when the cores run it side by side (shared caches and memory, a busy neighbour), as
    the server's preprocess threads do."""
    with ThreadPoolExecutor(threads) as pool:
        runs = [pool.submit(cpu_alone, step, inputs) for _ in range(threads)]
        return statistics.mean(run.result() for run in runs)


def preprocessing_alone(folder, images: list[bytes], texts: list[str], jpeg_draft: bool,
                        per_message: int, device: str = "cpu") -> dict:
    """us of CPU per item, one thread: decode + EXIF + RGB + normalise (on CUDA the server
    stops at uint8 pixels: so does this), and tokenise as the server does (one batch call for
    a message's texts); and the same on every core at once ("<kind>_at_once", as many threads
    as the server's preprocess pool)."""
    # One thread, as in the server (python -m clip_grpc sets this): the Rust tokenizer's own
    # pool would spend CPU that this thread's clock does not see.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    loaded = load_model(folder, "cpu", "fp32")
    # Builds no batch: only says which pixels a server on `device` prepares.
    encoder = Encoder(loaded, takes_uint8=Encoder.takes_uint8_on(torch.device(device)))
    draft = loaded.image_transform.draft_size if jpeg_draft else None
    tokenize = TextTokenizer(loaded.tokenizer, loaded.context_length)
    messages = [texts[k : k + per_message] for k in range(0, len(texts), per_message)]

    def prepare(data: bytes):
        return encoder.pixels(decode_image(data, NO_LIMIT, NO_LIMIT, draft))

    cores = os.cpu_count() or 1
    return {
        "image": 1e6 * cpu_alone(prepare, images),
        "text": 1e6 * cpu_alone(tokenize.many, messages) / per_message,
        "image_at_once": 1e6 * cpu_alone_at_once(prepare, images, cores),
        "text_at_once": 1e6 * cpu_alone_at_once(tokenize.many, messages, cores) / per_message,
    }


async def measure_kind(kind: str, target: str, server: processes.Child, images, texts,
                       load: grpc_stream.StreamLoad) -> dict:
    count = max(2 * load.streams * load.messages_in_flight, len(images) // load.items_per_message)
    requests = grpc_stream.messages(kind, images, texts, load.items_per_message, count)
    await grpc_stream.drive(target, requests, load, load.warmup_seconds, require_answers=False)
    embedded = await processes.embedded_by_worker(server.metrics_url)
    before = {"process": server.cpu_seconds(), "threads": server.thread_cpu_seconds(),
              "client": time.process_time()}
    after = {}

    def window_end():
        after.update(process=server.cpu_seconds(), threads=server.thread_cpu_seconds(),
                     client=time.process_time())

    row = await grpc_stream.drive(target, requests, load, load.seconds, window_end)
    per_item = 1e6 / row["items"]
    by_thread = {tid: cpu - before["threads"].get(tid, 0.0)
                 for tid, cpu in after["threads"].items()}
    done = {worker: count - embedded.get(worker, 0.0)
            for worker, count in (await processes.embedded_by_worker(server.metrics_url)).items()}
    return {
        "items_per_s": row["items_per_s"],
        "p50_ms": row["p50_ms"],
        **split_cpu(after["process"] - before["process"], by_thread, server.thread_names(),
                    server.pids(), per_item),
        "client_cpu_us": (after["client"] - before["client"]) * per_item,
        # Each worker's share of the items (SO_REUSEPORT spreads connections, one per stream).
        "worker_shares": "/".join(f"{100 * done[w] / (sum(done.values()) or 1):.0f}"
                                  for w in sorted(done)),
    }


def _bare(name: str) -> str:
    """A thread's name without its worker's prefix ("w1/model-0" -> "model-0")."""
    return name.rpartition("/")[2]


def split_cpu(process_s: float, by_thread: dict[int, float], names: dict[int, str],
              loops: Collection[int], per_item: float) -> dict:
    """The server's CPU in a window (seconds, by thread id), as us per item (per_item: 1e6 /
    items): in all, on the model threads, the rest (the serving path), and the busiest thread of
    the rest (`loops`: the main threads, the event loops; a --workers server has one each)."""
    def is_model(tid: int) -> bool:
        return _bare(names.get(tid, "")).startswith(MODEL_THREAD)

    model_s = sum(cpu for tid, cpu in by_thread.items() if is_model(tid))
    serving = {tid: cpu for tid, cpu in by_thread.items() if not is_model(tid)}
    busiest = max(serving, key=serving.get)
    name = names.get(busiest, str(busiest))
    if busiest in loops:
        name = name.rpartition("/")[0] + "/event loop" if "/" in name else "event loop"
    return {
        "server_cpu_us": process_s * per_item, "model_thread_us": model_s * per_item,
        "serving_cpu_us": (process_s - model_s) * per_item,
        "busiest_thread_us": serving[busiest] * per_item, "busiest_thread": name,
        "event_loop_us": sum(by_thread.get(tid, 0.0) for tid in loops) * per_item,
    }


def median_rows(rounds: list[dict]) -> dict:
    first = rounds[0]
    merged = {key: (statistics.median(r[key] for r in rounds) if isinstance(value, float)
                    else value) for key, value in first.items()}
    merged["busiest_thread"] = statistics.mode(r["busiest_thread"] for r in rounds)
    return merged


async def run(args) -> dict:
    folder, description = models.resolve(MODEL)
    images, texts = make_inputs(args.inputs)
    load = grpc_stream.StreamLoad(args.streams, args.items_per_message, args.messages_in_flight,
                                  args.overhead_seconds, args.warmup_seconds)
    load_start = machine.load_average()
    print(f"\n== serving overhead: {description}; load {load_start}", flush=True)
    server_flags = [*NEAR_FREE_SERVER_FLAGS, *args.server_flags]
    servers = {}  # workers -> (child, target), all started before the first round
    rounds = []
    try:
        for workers in args.overhead_workers:
            flags = [*server_flags, *(["--workers", str(workers)] if workers > 1 else [])]
            servers[workers] = await processes.start_server(folder, flags, args.server_env,
                                                            args.device)
        for index in range(args.rounds):
            alone = preprocessing_alone(folder, images, texts, args.jpeg_draft,
                                        args.items_per_message, args.device)
            result = {}
            for kind in ("image", "text"):
                for workers, (server, target) in servers.items():
                    row = await measure_kind(kind, target, server, images, texts, load)
                    row["alone_us"] = alone[kind]
                    row["alone_at_once_us"] = alone[f"{kind}_at_once"]
                    row["server_vs_alone"] = row["server_cpu_us"] / alone[kind]
                    row["serving_vs_alone"] = row["serving_cpu_us"] / alone[kind]
                    name = kind if workers == 1 else f"{kind}, {workers} workers"
                    result[name] = row
                    print(f"  round {index + 1} {name:17}: {row['items_per_s']:8.0f} items/s, "
                          f"server CPU {row['server_cpu_us']:7.0f} us/item = model thread "
                          f"{row['model_thread_us']:.0f} + serving {row['serving_cpu_us']:.0f} "
                          f"({row['serving_vs_alone']:.2f}x alone: {alone[kind]:.0f}; at once "
                          f"{row['alone_at_once_us']:.0f}), busiest "
                          f"other thread {row['busiest_thread_us']:.0f} "
                          f"({row['busiest_thread']}), event loop {row['event_loop_us']:.0f}, "
                          f"worker shares {row['worker_shares']}", flush=True)
            rounds.append(result)
    finally:
        for server, _ in servers.values():
            server.stop()
    return {
        "model": MODEL, "description": description, "device": args.device,
        "server_flags": args.server_flags,  # the section's key: what --server-args added
        "fixed_server_flags": NEAR_FREE_SERVER_FLAGS,
        "server_env": args.server_env, "rounds": len(rounds),
        "load_average": {"start": load_start, "end": machine.load_average()},
        "stream_load": {"streams": load.streams, "items_per_message": load.items_per_message,
                        "messages_in_flight": load.messages_in_flight},
        "image_side": IMAGE_SIDE,
        "result": {name: median_rows([r[name] for r in rounds]) for name in rounds[0]},
        "by_round": rounds,
    }


def section(result: dict, machine_info: dict, when: str) -> str:
    settings = " ".join([*(f"{k}={v}" for k, v in result["server_env"].items()),
                         *result.get("fixed_server_flags", ()), *result["server_flags"]]
                        ) or "(defaults)"
    load, start, end = result["stream_load"], *(
        result["load_average"][k] for k in ("start", "end"))
    lines = [
        f"### Serving overhead: {result['description']}", "",
        f"{when}; {machine.one_line(machine_info)}; server settings: `{settings}`; loadavg "
        f"{' '.join(f'{v:.2f}' for v in start or ())} at start, "
        f"{' '.join(f'{v:.2f}' for v in end or ())} at end; EmbedStream, {load['streams']} "
        f"streams x {load['messages_in_flight']} messages of {load['items_per_message']} in "
        f"flight; {result['image_side']}x{result['image_side']} JPEGs, 5-20-word texts; medians "
        f"of {result['rounds']} rounds. CPU in microseconds per item. Server CPU = model "
        "thread (the near-free model's forward, not serving overhead) + serving path (every "
        "other thread); the busiest thread is the busiest of those others; \"alone\": decoding "
        "and preprocessing the same image (tokenising the same text) on one thread in the bench "
        "process, same run; \"at once\": the same on every core at the same time, as the "
        "server's preprocess threads run (the machine's own slowdown when its cores share the "
        "work).", "",
        "| kind | items/s | server CPU | model thread | serving path | busiest other thread | "
        "event loop | alone | alone, at once | serving / alone | server / alone | client CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, row in result["result"].items():
        lines.append(
            f"| {kind} | {row['items_per_s']:,.0f} | {row['server_cpu_us']:,.0f} | "
            f"{row['model_thread_us']:,.0f} | {row['serving_cpu_us']:,.0f} | "
            f"{row['busiest_thread_us']:,.0f} ({row['busiest_thread']}) | "
            f"{row['event_loop_us']:,.0f} | {row['alone_us']:,.0f} | "
            f"{row['alone_at_once_us']:,.0f} | "
            f"**{row['serving_vs_alone']:.2f}** | {row['server_vs_alone']:.2f} | "
            f"{row['client_cpu_us']:,.0f} |")
    return "\n".join(lines) + "\n"
