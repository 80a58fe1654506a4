"""clip_grpc.integrations.ray.EmbedBatch: batches as Ray Data and Spark hand them over (against
an in-process server), and a real local Ray Data job with two actors against two replica
processes."""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from clip_grpc.client import Client, ItemFailedError, Text
from clip_grpc.client.results import vector
from clip_grpc.integrations.ray import EmbedBatch
from clip_grpc.v1 import clip_pb2, clip_pb2_grpc
from tests.conftest import image_bytes
from tests.replicas import replicas

REPO = Path(__file__).resolve().parent.parent


async def off_loop(function, *args):
    """A blocking call, off the event loop that serves the in-process test server."""
    return await asyncio.to_thread(function, *args)


async def embedded(target: str, items: list, **kwargs) -> np.ndarray:
    async with Client(target) as client:
        return await client.aencode(items, **kwargs)


async def test_a_numpy_batch_gets_embeddings_and_per_row_errors(clip_server, tmp_path):
    photo = tmp_path / "red.png"
    photo.write_bytes(image_bytes())
    items = np.array(["a red circle", str(photo), None, b"not an image", 7], dtype=object)
    batch = {"id": np.array(["a", "b", "c", "d", "e"]), "item": items}
    embed = EmbedBatch(clip_server.target, id_column="id")
    out = await off_loop(embed, batch)
    await off_loop(embed.close)

    assert out["id"] is batch["id"] and out["item"] is items  # the input columns are kept
    vectors, reasons = out["embedding"], out["embedding_error"]
    assert vectors.dtype == np.float32 and vectors.shape[0] == 5
    expected = await embedded(clip_server.target, ["a red circle", str(photo)])
    np.testing.assert_allclose(vectors[:2], expected, atol=1e-6)
    assert list(reasons[:2]) == [None, None]
    assert np.isnan(vectors[2:]).all()
    assert reasons[2] == "INVALID_ARGUMENT: no value (null)"
    assert reasons[3].startswith("INVALID_ARGUMENT: ")  # the server could not decode it
    assert reasons[4] == "INVALID_ARGUMENT: expected a text, image bytes or a path, got int"


async def test_a_pandas_batch_of_texts(clip_server):
    frame = pd.DataFrame({"id": [10, 11, 12], "caption": ["a cat", "a dog", float("nan")]})
    embed = EmbedBatch(clip_server.target, column="caption", kind="text",
                       output_column="vector", error_column="why")  # fmt: skip
    out = await off_loop(embed, frame)
    await off_loop(embed.close)
    assert list(out.columns) == ["id", "caption", "vector", "why"]
    assert "vector" not in frame.columns  # the input frame is not changed
    expected = await embedded(clip_server.target, [Text("a cat"), Text("a dog")])
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out["vector"])
    np.testing.assert_allclose(np.stack(out["vector"][:2]), expected, atol=1e-6)
    assert np.isnan(out["vector"][2]).all()
    assert out["why"].isna().tolist() == [True, True, False]  # pandas' null, whatever its dtype
    assert out["why"][2] == "INVALID_ARGUMENT: no value (null)"


async def test_kind_text_does_not_read_a_file_name_as_an_image(clip_server, tmp_path):
    photo = str(tmp_path / "red.png")
    Path(photo).write_bytes(image_bytes())
    outputs = {}
    for kind in ("text", "image"):
        embed = EmbedBatch(clip_server.target, kind=kind)
        outputs[kind] = await off_loop(embed, {"item": np.array([photo, "nowhere.png"])})
        await off_loop(embed.close)
    as_text, as_image = outputs["text"], outputs["image"]
    expected = await embedded(clip_server.target, [Text(photo), Text("nowhere.png"), photo])
    np.testing.assert_allclose(as_text["embedding"], expected[:2], atol=1e-6)
    np.testing.assert_allclose(as_image["embedding"][0], expected[2], atol=1e-6)
    assert as_image["embedding_error"][1].startswith("NOT_FOUND: ")


async def test_errors_raise_names_the_row_id(clip_server):
    embed = EmbedBatch(clip_server.target, id_column="key", errors="raise")
    batch = {"key": np.array(["k1", "k2", "k3"]), "item": np.array(["ok", None, None])}
    with pytest.raises(ItemFailedError, match=r"item 1 \(id 'k2'\) \(item\): INVALID_ARGUMENT"):
        await off_loop(embed, batch)
    out = await off_loop(embed, {"key": np.array(["k1"]), "item": np.array(["fine"])})
    assert "embedding_error" not in out and out["embedding"].shape[0] == 1
    await off_loop(embed.close)


async def test_an_empty_batch_and_a_batch_of_only_failures(clip_server):
    embed = EmbedBatch(clip_server.target)
    async with Client(clip_server.target) as client:
        dim = (await client.ainfo()).embedding_dim
    empty = await off_loop(embed, {"item": np.array([], dtype=object)})
    assert empty["embedding"].shape == (0, dim)
    out = await off_loop(embed, {"item": np.array([None, None], dtype=object)})
    assert out["embedding"].shape == (2, dim) and np.isnan(out["embedding"]).all()
    await off_loop(embed.close)


async def test_bad_settings_and_batches_are_refused_clearly(clip_server):
    for settings, words in ((dict(kind="video"), "kind"), (dict(errors="skip"), "errors"),
                            (dict(column="embedding"), "differ"),
                            (dict(parallel_streams=0), "parallel_streams")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            EmbedBatch(clip_server.target, **settings)
    with pytest.raises(TypeError, match="unexpected keyword"):
        EmbedBatch(clip_server.target, batchsize=3)  # a Client option misspelt: at once
    embed = EmbedBatch(clip_server.target, column="path")
    with pytest.raises(KeyError, match=r"no column 'path'; its columns: \['item'\]"):
        await off_loop(embed, {"item": np.array(["x"])})
    with pytest.raises(TypeError, match="dict of numpy arrays or a pandas DataFrame"):
        await off_loop(embed, [{"path": "x"}])
    await off_loop(embed.close)


async def test_it_pickles_without_its_client_and_makes_a_new_one(clip_server):
    # What Spark does with the function given to mapInPandas.
    embed = EmbedBatch(clip_server.target, column="text", kind="text", batch_size=4)
    await off_loop(embed, {"text": np.array(["warm the first client up"])})
    copy = pickle.loads(pickle.dumps(embed))
    assert copy._client is not embed._client and copy._client.batch_size == 4
    out = await off_loop(copy, pd.DataFrame({"text": ["a", "b", "c", "d", "e"]}))
    assert np.isfinite(np.stack(out["embedding"])).all()
    await off_loop(embed.close)
    await off_loop(copy.close)


def test_the_integration_imports_neither_ray_nor_pandas():
    script = ("import sys, clip_grpc.integrations.ray; "
              "print(sorted({'ray', 'pandas', 'torch'} & set(sys.modules)))")  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=environment)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---- a real Ray Data job --------------------------------------------------------------------

ROWS = 2000


def dataset_rows(folder: Path) -> list[dict]:
    """ROWS rows: mostly texts, every 10th an image path (20 distinct PNGs), one undecodable
    image file and one null."""
    paths = []
    for n in range(20):
        path = folder / f"image-{n}.png"
        path.write_bytes(image_bytes(color=(12 * n, 255 - 12 * n, 90), size=(20 + n, 30)))
        paths.append(str(path))
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    rows = []
    for i in range(ROWS):
        item = paths[(i // 10) % 20] if i % 10 == 3 else f"caption {i}: a photo of thing {i % 97}"
        rows.append({"id": f"row-{i}", "item": item})
    rows[1234]["item"], rows[1500]["item"] = str(broken), None
    return rows


def reference_embeddings(target: str, inputs: list[str]) -> dict[str, np.ndarray]:
    """Each input through unary Embed calls on one replica (not through the Client)."""
    found = {}
    with grpc.insecure_channel(target) as channel:
        stub = clip_pb2_grpc.ClipServiceStub(channel)
        for start in range(0, len(inputs), 64):
            chunk = inputs[start : start + 64]
            items = [clip_pb2.Item(id=str(n), image=Path(value).read_bytes())
                     if value.endswith(".png") else clip_pb2.Item(id=str(n), text=value)
                     for n, value in enumerate(chunk)]  # fmt: skip
            response = stub.Embed(clip_pb2.EmbedRequest(items=items), timeout=120)
            for value, result in zip(chunk, response.results, strict=True):
                found[value] = vector(result.embedding)
    return found


def ray_processes() -> list[str]:
    """Command lines of this process's descendants that belong to Ray."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        commands[int(entry.name)] = command
    ours, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= more
        grew = bool(more)
    return [commands[pid] for pid in ours - {os.getpid()}
            if "ray" in commands[pid] and "clip_grpc" not in commands[pid]]  # fmt: skip


async def test_a_ray_data_job_with_two_actors_over_two_replicas(tiny_clip_dir, tmp_path,
                                                                monkeypatch):  # fmt: skip
    import ray

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")  # Ray would report usage over the network
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the actors import this checkout
    rows = dataset_rows(tmp_path)
    async with replicas(tiny_clip_dir, tmp_path, 2) as pair:
        targets = ",".join(replica.target for replica in pair)
        started = time.monotonic()
        # Its own short temp folder (Ray's socket paths must stay under 108 bytes), removed after.
        ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 2**20,
                 log_to_driver=False, _node_ip_address="127.0.0.1", _temp_dir=ray_dir)  # fmt: skip
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            dataset = ray.data.from_items(rows, override_num_blocks=8).map_batches(
                EmbedBatch,
                fn_constructor_kwargs=dict(target=targets, id_column="id", batch_size=16),
                compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5, batch_size=100,
            )  # fmt: skip
            out = dataset.take_all()
        finally:
            ray.shutdown()
            shutil.rmtree(ray_dir, ignore_errors=True)
        took = time.monotonic() - started
        inputs = sorted({row["item"] for row in rows if row["item"] is not None})
        reference = reference_embeddings(pair[0].target, [v for v in inputs if "broken" not in v])
        streams = [len(replica.rpcs("EmbedStream")) for replica in pair]
    print(f"ray job: {ROWS} rows in {took:.1f} s, streams per replica {streams}")

    assert sorted(row["id"] for row in out) == sorted(row["id"] for row in rows)  # each once
    given = {row["id"]: row["item"] for row in rows}
    failed = {}
    for row in out:
        assert row["item"] == given[row["id"]]  # the embedding stayed in its input's row
        if row["embedding_error"] is None:
            np.testing.assert_allclose(row["embedding"], reference[row["item"]], atol=1e-5)
        else:
            assert np.isnan(row["embedding"]).all()
            failed[row["id"]] = row["embedding_error"]
    assert sorted(failed) == ["row-1234", "row-1500"], failed
    assert failed["row-1234"].startswith("INVALID_ARGUMENT: ")
    assert failed["row-1500"] == "INVALID_ARGUMENT: no value (null)"
    assert all(count > 0 for count in streams), streams  # both replicas had work
    deadline = time.monotonic() + 60
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(), ray_processes()
