"""Render deploy/ (a kustomize base and overlays) without the kustomize binary, for the tests.

Only the part of kustomize the manifests use, and anything else is an error rather than a
guess, so that what the tests validate is what `kubectl apply -k` applies:

- a kustomization's `resources` (YAML files, or folders holding a kustomization.yaml), `images`
  (`name` with `newName` and/or `newTag`) and `patches` (`path` only: a strategic-merge patch that
  names its target by apiVersion, kind and metadata.name);
- strategic merge as the Kubernetes API defines it for the fields we patch: maps merge, a null
  deletes the key, `$patch: delete` on a whole patch deletes the object; a list merges item by item
  on its API merge key (MERGE_KEYS) or is replaced (REPLACED_LISTS). A patch that touches any
  other list fails, naming it: add the field's merge key from the API reference to the table.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}
# Field name -> the key its items merge on (patchMergeKey in the Kubernetes API).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    # A container's ports merge on containerPort, a Service's on port.
    "ports": ("containerPort", "port"),
}
# Lists without a merge key: a patch replaces them whole (metrics: a HorizontalPodAutoscaler's).
REPLACED_LISTS = {"tolerations", "args", "command", "metrics"}


class RenderError(ValueError):
    pass


def load_documents(path: Path) -> list[dict]:
    with path.open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc is not None]


def render(folder: Path) -> list[dict]:
    """The objects a kustomization folder builds, in resource order."""
    kustomization = _load_kustomization(folder)
    objects: list[dict] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        objects.extend(render(path) if path.is_dir() else load_documents(path))
    for entry in kustomization.get("patches", []):
        if set(entry) != {"path"}:
            raise RenderError(f"{folder}: patches entries take only `path`, got {sorted(entry)}")
        for patch in load_documents(folder / entry["path"]):
            objects = _apply_patch(objects, patch, folder / entry["path"])
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    return objects


def _load_kustomization(folder: Path) -> dict:
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{folder}: no kustomization.yaml")
    kustomization = yaml.safe_load(path.read_text())
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise RenderError(f"{path}: unsupported keys {sorted(unknown)}")
    return kustomization


def _identity(obj: dict) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def _apply_patch(objects: list[dict], patch: dict, source: Path) -> list[dict]:
    patch = dict(patch)
    delete = patch.pop("$patch", None)
    if delete not in (None, "delete"):
        raise RenderError(f"{source}: unsupported $patch: {delete}")
    matches = [i for i, obj in enumerate(objects) if _identity(obj) == _identity(patch)]
    if len(matches) != 1:
        raise RenderError(f"{source}: {'/'.join(_identity(patch))} matches {len(matches)} objects")
    index = matches[0]
    if delete:
        return objects[:index] + objects[index + 1:]
    merged = strategic_merge(objects[index], patch, str(source))
    return objects[:index] + [merged] + objects[index + 1:]


def strategic_merge(base: Any, patch: Any, where: str) -> Any:
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"{where}: unsupported directive {key}")
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, list):
            merged[key] = _merge_list(key, merged.get(key, []), value, f"{where}.{key}")
        elif key in merged:
            merged[key] = strategic_merge(merged[key], value, f"{where}.{key}")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_list(field: str, base: list, patch: list, where: str) -> list:
    if field in REPLACED_LISTS:
        return copy.deepcopy(patch)
    keys = MERGE_KEYS.get(field)
    keys = (keys,) if isinstance(keys, str) else keys or ()
    key = next((k for k in keys if all(k in item for item in base + patch)), None)
    if key is None:
        raise RenderError(f"{where}: a patch of this list needs its merge key in MERGE_KEYS")
    # kustomize's order: the patch's items (merged into their base items) first, in the patch's
    # order, then the base items the patch leaves alone.
    originals = {item[key]: item for item in base}
    merged = [
        strategic_merge(originals[item[key]], item, f"{where}[{item[key]}]")
        if item[key] in originals else copy.deepcopy(item)
        for item in patch
    ]
    patched = {item[key] for item in patch}
    return merged + [copy.deepcopy(item) for item in base if item[key] not in patched]


def _set_image(objects: list[dict], image: dict) -> None:
    unknown = set(image) - {"name", "newName", "newTag"}
    if unknown:
        raise RenderError(f"images: unsupported keys {sorted(unknown)}")
    found = False
    for obj in objects:
        for container in _containers(obj):
            name, tag = split_image(container["image"])
            if name == image["name"]:
                found = True
                tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    if not found:
        raise RenderError(f"images: no container uses {image['name']}")


def split_image(reference: str) -> tuple[str, str]:
    """("registry:5000/name", "tag") of "registry:5000/name:tag"; a digest is not supported."""
    if "@" in reference:
        raise RenderError(f"images: digests are not supported ({reference})")
    name, colon, tag = reference.rpartition(":")
    if not colon or "/" in tag:
        return reference, ""
    return name, tag


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])
