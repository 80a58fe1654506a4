"""Results out: a JSON file per run in bench/results/, and tables in BENCHMARKS.md."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .machine import one_line
from .overhead import section as overhead_section

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS_MD = HERE.parent / "BENCHMARKS.md"
RESULTS_BEGIN, RESULTS_END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


def write_json(run: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    names = [*(["overhead"] if run.get("overhead") else []),
             *(m["model"].replace("/", "_") for m in run["models"])]
    models = "+".join(names) or "serialisation"
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{models}.json"
    path.write_text(json.dumps(run, indent=2) + "\n")
    return path


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def model_section(result: dict, machine: dict, when: str) -> str:
    settings = " ".join([*(f"{k}={v}" for k, v in result["server_env"].items()),
                         *result["server_flags"]]) or "(defaults)"
    heading = result["model"] if settings == "(defaults)" else f"{result['model']} `{settings}`"
    device = result.get("device", "cpu")
    on = "" if device == "cpu" else f" on {device} ({result['device_name']}, {result['dtype']})"
    lines = [f"### {heading}{on}: {result['description']}", "",
             f"{when}; {one_line(machine)}; server settings: `{settings}`; "
             f"{result['load_note']}", "",
             f"Medians of {result['rounds']} rounds, each measuring model-only then end to end; "
             "the ratio is the median of the rounds' ratios (each round's in brackets).", "",
             "| measurement | items/s | p50 ms | p95 ms | p99 ms | vs model-only |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("image", "text"):
        for row in result["model_only"][kind]["by_batch_size"]:
            lines.append(f"| model-only {kind}s, batch {row['batch_size']} (latency per batch) | "
                         f"{_fmt(row['items_per_s'])} | {_fmt(row['p50_ms'], 2)} | "
                         f"{_fmt(row['p95_ms'], 2)} | {_fmt(row['p99_ms'], 2)} | |")
    load = result["stream_load"]
    for kind in ("image", "text"):
        row = result["grpc_stream"][kind]
        lines.append(
            f"| EmbedStream {kind}s, {load['streams']} streams x {load['messages_in_flight']} "
            f"messages of {load['items_per_message']} in flight (latency per message) | "
            f"{_fmt(row['items_per_s'])} | {_fmt(row['p50_ms'], 2)} | {_fmt(row['p95_ms'], 2)} | "
            f"{_fmt(row['p99_ms'], 2)} | **{row['ratio_to_model_only']:.2f}** "
            f"({', '.join(f'{r:.2f}' for r in row['ratio_by_round'])}) |")
    busy = [f"{kind}s {row['model_busy']:.2f} (mean batch {row['mean_batch']:.1f})"
            for kind, row in result["grpc_stream"].items() if "model_busy" in row]
    rest = result["rest"]
    if "skipped" in rest:
        lines.append(f"| REST bridge | skipped: {rest['skipped']} | | | | |")
    else:
        for name, row in rest["runs"].items():
            lines.append(f"| {name} (image-1 + text-1 per request) | {_fmt(row['items_per_s'])} | "
                         f"{_fmt(row['p50_ms'], 2)} | {_fmt(row['p95_ms'], 2)} | "
                         f"{_fmt(row['p99_ms'], 2)} | |")
        c1 = rest["runs"].get("REST /syte_test/clip, concurrency 1", {})
        lines += ["", f"REST bridge cost at concurrency 1 (p50 REST - p50 gRPC Embed, same two "
                      f"items): **{rest['bridge_overhead_ms_c1']:.2f} ms** per request (the "
                      f"bridge process's own CPU: {c1.get('bridge_cpu_ms_per_request', 0):.2f} "
                      f"ms per request); beyond the forward passes alone (batch-1 image + "
                      f"batch-1 text, p50): {rest.get('beyond_forward_ms_c1', 0):.2f} ms."]
    if busy:
        lines += ["", "The server's model was busy (its forward seconds over the EmbedStream "
                  "window, from its own /metrics; 1.00 = never idle): " + ", ".join(busy) + "."]
    lines += ["", "Where the time goes, server CPU ms per item (steps timed alone on one thread; "
              "forward: all torch threads, at the largest batch; the rest: the server's measured "
              "CPU per item in the EmbedStream run minus the listed steps):", "",
              "| kind | " + " | ".join(result["breakdown"]["image"]) + " |",
              "| --- |" + " ---: |" * len(result["breakdown"]["image"])]
    for kind in ("image", "text"):
        cells = [_fmt(value, 3) for value in result["breakdown"][kind].values()]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def serialisation_section(results: dict) -> str:
    lines = ["### Embedding serialisation: packed bytes vs repeated float", "",
             "Microseconds per vector, in a response of 32 vectors. build: numpy vector -> "
             "EmbedResult, as the servicer does; to numpy: the client reading the vector back.",
             "", "| protobuf backend | dim | format | build | serialise | parse | to numpy | "
             "client total | bytes |", "| --- | ---: | --- |" + " ---: |" * 6]
    for backend, by_dim in results.items():
        for dim, rows in by_dim.items():
            for name, row in rows.items():
                lines.append(
                    f"| {backend} | {dim} | {name} | {row['build_us']:.2f} | "
                    f"{row['serialise_us']:.2f} | {row['parse_us']:.2f} | {row['to_numpy_us']:.2f}"
                    f" | {row['client_total_us']:.2f} | {row['bytes_per_vector']:.0f} |")
    return "\n".join(lines) + "\n"


def _marker(key: str) -> tuple[str, str]:
    return f"<!-- bench:{key}:begin -->", f"<!-- bench:{key}:end -->"


def _replace(text: str, key: str, content: str) -> str:
    """Put content between the key's markers, adding them at the end of the results block."""
    begin, end = _marker(key)
    block = f"{begin}\n{content}{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.replace(RESULTS_END, f"{block}\n\n{RESULTS_END}")


def section_key(result: dict) -> str:
    """One section per model and non-default server settings."""
    settings = [*(f"{k}={v}" for k, v in result["server_env"].items()), *result["server_flags"]]
    device = result.get("device", "cpu")  # CPU runs keep the sections they always had
    on = [] if device == "cpu" else [f"device={device}"]
    return " ".join([f"model={result['model']}", *on, *settings])


def update_markdown(run: dict) -> None:
    text = (BENCHMARKS_MD.read_text() if BENCHMARKS_MD.is_file()
            else f"# Benchmarks\n\n{RESULTS_BEGIN}\n{RESULTS_END}\n")
    if RESULTS_BEGIN not in text:
        text += f"\n{RESULTS_BEGIN}\n{RESULTS_END}\n"
    for result in run["models"]:
        text = _replace(text, section_key(result),
                        model_section(result, run["machine"], run["when"]))
    if run.get("overhead"):
        result = run["overhead"]
        text = _replace(text, section_key({**result, "model": "serving-overhead"}),
                        overhead_section(result, run["machine"], run["when"]))
    if run.get("serialisation"):
        text = _replace(text, "serialisation", serialisation_section(run["serialisation"]))
    BENCHMARKS_MD.write_text(text)
