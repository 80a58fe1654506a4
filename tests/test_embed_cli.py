"""clip-embed on temporary datasets: folder, text lines and JSONL; npy and parquet; resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clip_grpc.client import Client
from clip_grpc.embed_cli import in_shard, main, parse_args
from clip_grpc.embed_cli.outputs import load_embeddings
from clip_grpc.server import running_server
from tests.conftest import image_bytes, server_config
from tests.waiting import until

REPO = Path(__file__).resolve().parent.parent


def make_image_folder(root, count):
    """`count` PNG/JPEG files in nested folders, plus files clip-embed must skip or fail."""
    names = []
    for i in range(count):
        folder = root / ("b/deeper" if i % 3 == 0 else "a")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"img{i:03d}.PNG" if i % 5 == 0 else f"img{i:03d}.png"
        (folder / name).write_bytes(image_bytes(color=(i * 9 % 256, 90, 200 - i)))
        names.append(f"{folder.relative_to(root).as_posix()}/{name}")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "zz-corrupt.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    return sorted(names)


async def run_cli(*args: str) -> int:
    return await asyncio.to_thread(main, [*map(str, args), "--no-progress"])


async def test_image_folder_to_npy_then_resume(clip_server, tmp_path, capsys):
    images, out = tmp_path / "images", tmp_path / "out"
    names = make_image_folder(images, 23)
    status = await run_cli(images, "-o", out, "--server", clip_server.target, "--chunk-size", 5)
    final = capsys.readouterr().out
    assert status == 1  # one item failed
    assert "24 items, 1 errors, 0 skipped" in final and "items/s" in final
    errors = [json.loads(line) for line in (out / "_errors.jsonl").read_text().splitlines()]
    assert [(e["id"], e["code"]) for e in errors] == [("a/zz-corrupt.jpg", "INVALID_ARGUMENT")]

    ids, vectors = load_embeddings(out)
    assert sorted(ids) == names and len(set(ids)) == len(ids)
    assert sorted(p.name for p in out.glob("part-*.npy")) == [f"part-0000{i}.npy" for i in range(5)]
    with Client(clip_server.target) as client:
        expected = await asyncio.to_thread(client.encode_images, [images / i for i in ids])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    # An interrupted part (its ids file never written) and new images: only they are embedded.
    (out / "part-00004.ids.jsonl").unlink()
    names += make_new_images(images)
    status = await run_cli(images, "-o", out, "--server", clip_server.target, "--chunk-size", 5)
    assert "6 items, 1 errors, 20 skipped" in capsys.readouterr().out
    ids, vectors = load_embeddings(out)
    assert sorted(ids) == sorted(names) and len(set(ids)) == len(ids) == len(vectors)

    status = await run_cli(images, "-o", out, "--server", clip_server.target)
    assert "1 items, 1 errors, 25 skipped" in capsys.readouterr().out  # only the corrupt one


def make_new_images(root):
    (root / "c").mkdir()
    for i in range(2):
        (root / "c" / f"new{i}.png").write_bytes(image_bytes(color=(1, 2 + i, 3)))
    return [f"c/new{i}.png" for i in range(2)]


async def test_text_lines_to_parquet(clip_server, tmp_path, capsys):
    lines = ["a photo of a cat", "", "a diagram of a bridge", "   ", "ein Foto von einem Hund"]
    source, out = tmp_path / "captions.txt", tmp_path / "captions"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status = await run_cli(source, "-o", out, "--server", clip_server.target, "--format", "parquet")
    assert status == 0 and "3 items, 0 errors" in capsys.readouterr().out

    table = pq.read_table(out)  # the whole folder reads as one table
    assert table.column("id").to_pylist() == ["1", "3", "5"]
    vectors = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    with Client(clip_server.target) as client:
        expected = await asyncio.to_thread(client.encode_texts, [lines[0], lines[2], lines[4]])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)

    assert await run_cli(source, "-o", out, "--server", clip_server.target) == 2  # npy into parquet
    assert "already holds parquet parts" in capsys.readouterr().err


async def test_jsonl_with_texts_images_and_bad_lines(clip_server, tmp_path, capsys):
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "red.png").write_bytes(image_bytes((230, 20, 20)))
    rows = [
        json.dumps({"id": "caption-1", "text": "a red square"}),
        json.dumps({"id": "photo-1", "image": "pics/red.png"}),
        "{not json",
        json.dumps({"id": "both", "text": "x", "image": "pics/red.png"}),
        json.dumps({"id": "gone", "image": "pics/missing.png"}),
    ]
    source, out = tmp_path / "data.jsonl", tmp_path / "out"
    source.write_text("\n".join(rows) + "\n")
    status = await run_cli(source, "-o", out, "--server", clip_server.target)
    assert status == 1 and "5 items, 3 errors" in capsys.readouterr().out
    errors = {e["id"]: e["code"] for e in map(json.loads, (out / "_errors.jsonl").open())}
    assert errors == {"3": "INVALID_ARGUMENT", "both": "INVALID_ARGUMENT", "gone": "NOT_FOUND"}
    ids, vectors = load_embeddings(out)
    assert ids == ["caption-1", "photo-1"] and vectors.shape[0] == 2


async def test_unreachable_server_fails_clearly(tmp_path, capsys):
    source = tmp_path / "one.txt"
    source.write_text("hello\n")
    status = await run_cli(
        source, "-o", tmp_path / "out", "--server", "127.0.0.1:1", "--retries", "0"
    )
    assert status == 1 and "UNAVAILABLE" in capsys.readouterr().err


async def test_ctrl_c_keeps_what_was_embedded(clip_server, tmp_path):
    source, out = tmp_path / "many.txt", tmp_path / "out"
    source.write_text("".join(f"sentence number {i}\n" for i in range(1, 50_001)))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clip_grpc.embed_cli", str(source), "-o", str(out),
        "--server", clip_server.target, "--chunk-size", "200", "--no-progress",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await until(lambda: (out / "part-00000.ids.jsonl").exists() or process.returncode is not None)
    assert process.returncode is None, (await process.stderr.read()).decode()
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert "interrupted; run again to resume" in stderr.decode()
    ids, vectors = load_embeddings(out)
    assert 200 <= len(ids) < 50_000
    assert ids == [str(i) for i in range(1, len(ids) + 1)]  # a prefix, nothing lost or doubled
    assert vectors.shape[0] == len(ids) and np.isfinite(vectors).all()


async def test_shards_side_by_side_write_the_whole_dataset_once(
    clip_server, tiny_clip_dir, tiny_clip, tmp_path
):
    lines = [f"caption number {i}" for i in range(300)]
    source, out = tmp_path / "captions.txt", tmp_path / "out"
    source.write_text("\n".join(lines) + "\n")

    async def shard(index: int, *servers: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clip_grpc.embed_cli", str(source), "-o", str(out),
            *[arg for target in servers for arg in ("--server", target)],
            "--shard", f"{index}/3", "--parallel-streams", "2", "--chunk-size", "40",
            "--batch-size", "8", "--no-progress", "--format", "parquet",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await process.communicate()
        return process.returncode, output.decode()

    async with running_server(server_config(tiny_clip_dir), loaded=tiny_clip) as second:
        targets = (clip_server.target, second.target)
        done = await asyncio.gather(*(shard(i, *targets) for i in range(3)))
        assert [status for status, _ in done] == [0, 0, 0], done
        again = await shard(1, f"{clip_server.target},{second.target}")
        async with Client(second.target) as client:
            reference = await client.aencode_texts(lines)

    ids, vectors = load_embeddings(out)
    assert sorted(ids, key=int) == [str(n) for n in range(1, 301)]  # each line once
    for index in range(3):
        parts = sorted(out.glob(f"part-s{index}of3-*.parquet"))
        assert parts, list(out.iterdir())
        for part in parts:
            assert all(in_shard(i, (index, 3)) for i in pq.read_table(part)["id"].to_pylist())
    order = [int(i) - 1 for i in ids]
    np.testing.assert_allclose(vectors, reference[order], atol=1e-5)
    shard_one = sum(in_shard(str(n), (1, 3)) for n in range(1, 301))
    assert again[0] == 0 and f"0 items (shard 1/3), 0 errors, {shard_one} skipped" in again[1]


def test_server_shard_and_stream_flags_are_parsed(capsys):
    args = parse_args(["in.txt", "-o", "out", "--server", "a:1", "--server", "b:2,c:3"])
    assert args.server == ["a:1", "b:2", "c:3"] and args.shard is None
    args = parse_args(["in.txt", "-o", "out", "--server", "dns:///clip:50051", "--shard", "2/4"])
    assert args.server == "dns:///clip:50051" and args.shard == (2, 4)
    for bad in (["--shard", "4/4"], ["--shard", "x"], ["--parallel-streams", "0"]):
        with pytest.raises(SystemExit):
            parse_args(["in.txt", "-o", "out", *bad])
    assert "0 <= I < N" in capsys.readouterr().err
