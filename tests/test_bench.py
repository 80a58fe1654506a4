"""The benchmark harness's own logic (the measurements themselves run with `python -m bench`)."""

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from bench import report
from bench.__main__ import median_of, window_seconds
from bench.inputs import photo_like_jpeg, sentence
from bench.rest import seed_002_form
from bench.stats import summarize
from rest_bridge.multipart import parse_form


def test_photos_are_deterministic_640x480_jpegs_of_photo_size():
    data = photo_like_jpeg(3)
    assert data == photo_like_jpeg(3) and data != photo_like_jpeg(4)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (640, 480)
    assert 40_000 < len(data) < 200_000  # textured like a photo, not a flat synthetic picture


def test_sentences_have_5_to_20_words_and_are_deterministic():
    counts = {len(sentence(i).split()) for i in range(200)}
    assert min(counts) == 5 and max(counts) == 20
    assert sentence(7) == sentence(7) != sentence(8)


def test_summary_percentiles_and_rate():
    summary = summarize(items=400, seconds=2.0, latencies_s=[i / 1000 for i in range(1, 101)])
    assert summary.items_per_s == 200
    assert summary.p50_ms == pytest.approx(50.5) and summary.p99_ms == pytest.approx(99.01)
    with pytest.raises(ValueError, match="no request completed"):
        summarize(0, 1.0, [])


def test_median_of_rounds_goes_through_nested_results():
    rounds = [{"a": {"x": 1.0, "rows": [{"v": 3}]}, "name": "m"},
              {"a": {"x": 5.0, "rows": [{"v": 1}]}, "name": "m"},
              {"a": {"x": 2.0, "rows": [{"v": 2}]}, "name": "m"}]
    assert median_of(rounds) == {"a": {"x": 2.0, "rows": [{"v": 2}]}, "name": "m"}


def test_windows_stretch_to_hold_enough_batches():
    args = SimpleNamespace(seconds=12.0, batch_limits={"image": 32, "text": 512}, min_batches=15)
    slow = {"image": {"ceiling_items_per_s": 16.0}}  # 2 s per batch
    fast = {"image": {"ceiling_items_per_s": 10_000.0}}
    assert window_seconds(args, slow, "image") == pytest.approx(30.0)
    assert window_seconds(args, fast, "image") == 12.0
    assert window_seconds(args, None, "image") == 12.0
    texts = {"text": {"ceiling_items_per_s": 128.0}}  # 4 s per batch of 512 texts
    assert window_seconds(args, texts, "text") == pytest.approx(60.0)


def test_the_seed_002_form_is_what_the_bridge_reads():
    content_type, body = seed_002_form(b"\xff\xd8jpeg bytes", "a photo of a dog")
    items = parse_form(content_type, body, max_fields=16)
    assert sorted((item.kind, item.form_id) for item in items) == [("image", "1"), ("text", "1")]
    assert {item.text for item in items} >= {"a photo of a dog"}


def test_markdown_sections_are_replaced_and_hand_written_text_kept(tmp_path, monkeypatch):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\nintro\n{report.RESULTS_BEGIN}\n{report.RESULTS_END}\nnotes\n")
    monkeypatch.setattr(report, "BENCHMARKS_MD", path)
    monkeypatch.setattr(report, "model_section", lambda result, machine, when: result["text"])
    def run(text, flags=()):
        result = {"model": "demo", "text": text, "server_flags": list(flags), "server_env": {}}
        report.update_markdown({"models": [result], "machine": {}, "when": "now"})

    run("first run\n")
    run("bf16 run\n", ["--dtype", "bf16"])
    run("second run\n")
    content = path.read_text()
    assert "second run" in content and "first run" not in content
    assert "bf16 run" in content  # other settings of the same model keep their own section
    assert content.startswith("# Benchmarks\nintro\n") and content.endswith("notes\n")
    assert content.index("second run") < content.index(report.RESULTS_END)


def test_thread_cpu_times_cover_this_process_threads():
    import os
    import threading

    from bench.processes import thread_cpu_seconds, thread_names

    threads = thread_cpu_seconds(os.getpid())
    assert threading.get_native_id() in threads and all(v >= 0 for v in threads.values())
    assert os.getpid() in thread_names(os.getpid())


def test_the_overhead_section_reports_cpu_per_item_and_the_ratio_to_preprocessing_alone():
    from bench.overhead import section

    row = {"items_per_s": 700.0, "server_cpu_us": 1500.0, "model_thread_us": 300.0,
           "serving_cpu_us": 1200.0, "busiest_thread_us": 400.0,
           "busiest_thread": "preprocess_0", "event_loop_us": 110.0, "alone_us": 1000.0,
           "alone_at_once_us": 1250.0, "serving_vs_alone": 1.2, "server_vs_alone": 1.5,
           "client_cpu_us": 30.0}
    result = {"description": "near-free", "server_flags": ["--workers", "2"],
              "fixed_server_flags": ["--torch-threads", "1"], "server_env": {}, "rounds": 2,
              "load_average": {"start": (1.0, 1.0, 1.0), "end": (2.0, 2.0, 2.0)},
              "stream_load": {"streams": 4, "items_per_message": 8, "messages_in_flight": 2},
              "image_side": 224, "result": {"image": row, "text": row}}
    text = section(result, {"cpu": "x", "cores": 2, "torch": "t"}, "now")
    assert ("| image | 700 | 1,500 | 300 | 1,200 | 400 (preprocess_0) | 110 | 1,000 | 1,250 | "
            "**1.20** | 1.50 | 30 |") in text
    assert "loadavg 1.00 1.00 1.00 at start" in text
    assert "server settings: `--torch-threads 1 --workers 2`" in text
    # the section's key names only what --server-args added, so it stays one section
    assert report.section_key({**result, "model": "serving-overhead"}) == (
        "model=serving-overhead --workers 2")


def test_work_alone_at_once_runs_on_that_many_threads_and_averages_their_cpu():
    import threading

    from bench.overhead import cpu_alone_at_once

    seen = set()

    def step(n: int) -> int:
        seen.add(threading.get_native_id())
        return sum(range(n))

    per_call = cpu_alone_at_once(step, [20_000] * 50, threads=3)
    assert len(seen) == 3 and threading.get_native_id() not in seen
    assert 0 < per_call < 0.1


def test_the_model_thread_is_counted_apart_from_the_serving_path():
    from bench.overhead import split_cpu

    # pid 10 is the event loop; the model thread is the busiest but is not serving overhead
    by_thread = {10: 0.2, 11: 0.3, 12: 0.9, 13: 0.1}
    names = {10: "python", 11: "preprocess-0", 12: "model-0", 13: "event_engine"}
    split = split_cpu(1.6, by_thread, names, loops={10}, per_item=1e6 / 1000)  # 1,000 items
    assert split.pop("busiest_thread") == "preprocess-0"
    assert split == pytest.approx({"server_cpu_us": 1600, "model_thread_us": 900,
                                   "serving_cpu_us": 700, "busiest_thread_us": 300,
                                   "event_loop_us": 200})
    split = split_cpu(1.6, {**by_thread, 11: 0.05}, names, loops={10}, per_item=1.0)
    assert split["busiest_thread"] == "event loop" and split["busiest_thread_us"] == 0.2


def test_the_bench_runs_on_cpu_unless_told_and_sizes_batches_per_modality():
    from bench.__main__ import parse_args

    args = parse_args([])
    assert args.device == "cpu"
    assert args.batch_sizes == {"image": [1, 8, 32], "text": [1, 8, 32]}
    args = parse_args(["--server-args", "--max-text-batch-size 64", "--batch-sizes", "2,4"])
    assert args.batch_limits == {"image": 32, "text": 64}
    assert args.batch_sizes == {"image": [2, 4], "text": [2, 4]}


def test_a_cuda_bench_uses_the_gpu_limits_and_refuses_a_machine_without_one(monkeypatch, capsys):
    import torch

    from bench.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--device", "cuda"])  # no GPU on this machine
    assert "sees no CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--device", "tpu9"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    args = parse_args(["--device", "cuda:0"])
    assert args.batch_sizes == {"image": [1, 8, 128], "text": [1, 8, 512]}


def test_the_server_is_started_on_the_bench_device(tmp_path):
    from bench.processes import server_command

    command = server_command(tmp_path, 5000, ["--compile"], "cuda")
    assert command[command.index("--device") + 1] == "cuda" and command[-1] == "--compile"


def test_a_gpu_run_gets_its_own_section_naming_the_device():
    rows = [{"batch_size": 1, "items_per_s": 10.0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0}]
    stream = {"items_per_s": 9.0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0,
              "ratio_to_model_only": 0.9, "ratio_by_round": [0.9]}
    cells = {"forward": 1.0}
    result = {"model": "vit-l14", "description": "d", "server_flags": [], "server_env": {},
              "load_note": "", "rounds": 1, "rest": {"skipped": "--skip-rest"},
              "stream_load": {"streams": 4, "items_per_message": 8, "messages_in_flight": 2},
              "model_only": {k: {"by_batch_size": rows} for k in ("image", "text")},
              "grpc_stream": {"image": stream, "text": stream},
              "breakdown": {"image": cells, "text": cells}}
    on_cpu = report.model_section({**result, "device": "cpu"}, {"cpu": "x", "cores": 2,
                                                                 "torch": "t"}, "now")
    assert on_cpu.startswith("### vit-l14: d")
    gpu = {**result, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "dtype": "bf16"}
    text = report.model_section(gpu, {"cpu": "x", "cores": 2, "torch": "t"}, "now")
    assert text.startswith("### vit-l14 on cuda (NVIDIA H100 80GB HBM3, bf16): d")
    assert "| model-only images, batch 1 (latency per batch) | 10.0 |" in text
    assert report.section_key(gpu) == "model=vit-l14 device=cuda"
    assert report.section_key({**result, "device": "cpu"}) == "model=vit-l14"


def test_model_busy_comes_from_the_servers_forward_seconds_and_batch_sizes():
    from bench.__main__ import model_busy
    from bench.processes import parse_batch_totals
    from clip_grpc.metrics import ServerMetrics

    def scrape(metrics):
        from prometheus_client import generate_latest
        return parse_batch_totals(generate_latest(metrics.registry).decode())

    metrics = ServerMetrics({"image": 32, "text": 32})
    metrics.batch_done("image", 4, 0.5)
    before = scrape(metrics)
    metrics.batch_done("image", 32, 3.0)
    metrics.batch_done("image", 16, 1.5)
    metrics.batch_done("text", 8, 0.25)
    after = scrape(metrics)
    assert before["image"] == {"forward_s": 0.5, "batches": 1, "items": 4, "workers": 1}
    busy = model_busy(before["image"], after["image"], seconds=5.0)
    assert busy == pytest.approx({"model_busy": 0.9, "mean_batch": 24.0})
    assert model_busy(before["text"], after["text"], 1.0) == pytest.approx(
        {"model_busy": 0.25, "mean_batch": 8.0})


def test_model_busy_of_a_workers_server_is_the_mean_over_its_workers():
    from prometheus_client import generate_latest

    from bench.__main__ import model_busy
    from bench.processes import parse_batch_totals
    from clip_grpc.metrics import ServerMetrics
    from clip_grpc.worker_metrics import merged, worker_families
    from tests.test_workers import ListCollector

    def scrape(*workers):
        texts = [generate_latest(m.registry).decode() for m in workers]
        families = merged(f for i, t in enumerate(texts) for f in worker_families(t, i))
        return parse_batch_totals(generate_latest(ListCollector(families)).decode())

    first, second = (ServerMetrics({"text": 32, "image": 32}) for _ in range(2))
    before = scrape(first, second)
    first.batch_done("text", 8, 1.0)
    second.batch_done("text", 24, 3.0)
    after = scrape(first, second)
    assert after["text"]["workers"] == 2 and after["text"]["items"] == 32
    assert model_busy(before["text"], after["text"], seconds=4.0) == pytest.approx(
        {"model_busy": 0.5, "mean_batch": 16.0})


def test_the_grpc_floor_serves_every_item_and_counts_its_cpu():
    import asyncio

    from bench import grpc_floor

    rows = asyncio.run(grpc_floor.measure(per_message=8, seconds=0.5))
    assert [row["kind"] for row in rows] == ["text", "image"]
    for row in rows:
        assert row["items_per_s"] > 0
        assert 0 < row["event_loop_us"] <= row["server_cpu_us"]
