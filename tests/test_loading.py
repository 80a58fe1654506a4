"""Loading model folders and zips, and refusing broken ones clearly."""

import contextlib
import json
import shutil
import tempfile
import zipfile

import pytest
import torch

from clip_grpc.errors import ModelLoadError
from clip_grpc.model.loading import load_model, pick_dtype


def test_loads_a_clip_folder(tiny_clip):
    assert tiny_clip.family == "clip"
    assert tiny_clip.context_length == 77 and tiny_clip.embedding_dim == 16
    assert tiny_clip.tokenizer("a photo of a cat").input_ids == [
        49406, 320, 1125, 539, 320, 2368, 49407
    ]


def test_loads_a_siglip_folder(tiny_siglip_dir):
    loaded = load_model(tiny_siglip_dir, device="cpu", dtype="fp32")
    assert loaded.family == "siglip" and loaded.context_length == 64


def test_loads_a_zip_with_a_top_level_folder(tiny_clip_dir, tmp_path):
    archive = tmp_path / "clip-vit-large-patch14.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in tiny_clip_dir.iterdir():
            zipped.write(path, f"clip-vit-large-patch14/{path.name}")
    loaded = load_model(archive, device="cpu")
    assert loaded.name == "clip-vit-large-patch14" and loaded.embedding_dim == 16


def test_missing_files_are_all_named(tiny_clip_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir, broken)
    for name in ("model.safetensors", "vocab.json", "preprocessor_config.json"):
        (broken / name).unlink()
    with pytest.raises(ModelLoadError) as caught:
        load_model(broken, device="cpu")
    for words in ("weights", "tokenizer files", "preprocessor_config.json"):
        assert words in str(caught.value)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere", device="cpu")


def test_an_unsupported_model_type_is_refused(tiny_clip_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_clip_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="'bert' is not supported"):
        load_model(other, device="cpu")


def test_a_broken_tokenizer_is_refused(tiny_clip_dir, tmp_path):
    broken = tmp_path / "broken-tokenizer"
    shutil.copytree(tiny_clip_dir, broken)
    (broken / "vocab.json").write_text(json.dumps({"a": 0, "b": 1}))
    (broken / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_model(broken, device="cpu")


def test_a_bad_zip_is_refused(tmp_path):
    archive = tmp_path / "model.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a readable zip"):
        load_model(archive, device="cpu")


def test_cuda_without_a_gpu_is_a_clear_error(tiny_clip_dir, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        load_model(tiny_clip_dir, device="cuda")


@pytest.mark.parametrize(("device", "native_bf16", "expected"), [
    ("cpu", True, torch.float32),  # the GPU probe is not asked on CPU
    ("cuda", True, torch.bfloat16),
    ("cuda:1", False, torch.float16),
])
def test_auto_dtype_is_fp32_on_cpu_and_bf16_on_gpus_that_have_it(
        monkeypatch, device, native_bf16, expected):
    asked = []

    def probe(including_emulation=True):
        asked.append(including_emulation)
        return native_bf16 or including_emulation  # emulated bf16 must not count

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", probe)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    assert pick_dtype("auto", torch.device(device)) == expected
    assert asked == ([] if device == "cpu" else [False])
    assert pick_dtype("fp16", torch.device(device)) == torch.float16  # asked for: kept


@pytest.mark.parametrize("escape", ["../evil.txt", "model/../../evil.txt", "ABSOLUTE"])
def test_a_zip_with_paths_that_climb_out_is_refused_and_writes_nothing(
    tiny_clip_dir, tmp_path, monkeypatch, escape
):
    outside = tmp_path / "outside"
    outside.mkdir()
    unpack_to = tmp_path / "temp"  # where load_model makes its extraction folder
    unpack_to.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(unpack_to))
    member = str(outside / "evil.txt") if escape == "ABSOLUTE" else escape
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in tiny_clip_dir.iterdir():  # a complete model, and one member that escapes
            zipped.write(path, f"model/{path.name}")
        zipped.writestr(member, "overwritten")
    assert member in zipfile.ZipFile(archive).namelist()  # the archive really holds it
    with pytest.raises(ModelLoadError, match="unsafe path in zip") as caught:
        load_model(archive, device="cpu")
    assert member in str(caught.value) and str(archive) in str(caught.value)
    # Refused before anything was extracted: not the escaping member, not the model's files.
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [archive]
