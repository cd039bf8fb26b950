"""Version discovery, status and hot swap of the model manager (in process)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from canary.errors import ServingError
from serving.registry import ModelManager, State, scan_versions
from serving.status import Code, RequestError


def test_scan_ignores_temporaries_and_incomplete_versions(tmp_path: Path, serving_store: Path) -> None:
    shutil.copytree(serving_store / "resnet50" / "1", tmp_path / "4")
    (tmp_path / "7").mkdir()  # no saved_model.pb yet
    (tmp_path / ".9.tmp-1-abc").mkdir()
    (tmp_path / "latest").mkdir()
    assert scan_versions(tmp_path) == [4]
    assert scan_versions(tmp_path / "missing") == []


@pytest.mark.parametrize(("make", "fragment"), [(False, "Could not find base path"), (True, "No versions of servable")])
def test_missing_models_fail_with_a_hint(tmp_path: Path, make: bool, fragment: str) -> None:
    base = tmp_path / "base"
    if make:
        base.mkdir()
    manager = ModelManager("m", base, shown_base_path="/models/m")
    with pytest.raises(ServingError, match=fragment) as caught:
        manager.load_initial()
    assert "/models/m" in str(caught.value)


def test_hot_swap_to_a_newer_version(tmp_path: Path, serving_store: Path) -> None:
    base = tmp_path / "m"
    shutil.copytree(serving_store / "resnet50" / "1", base / "1")
    manager = ModelManager("m", base, warmup=False)
    first = manager.load_initial()
    assert first.version == 1
    assert [(s.version, s.state) for s in manager.status("m")] == [(1, State.AVAILABLE)]
    image = {"input_image": np.full((1, 224, 224, 3), 100.0, np.float32)}
    before, _ = first.run(first.signature(""), image)

    manager.poll_once()  # nothing new: no change
    assert manager.current is first

    shutil.copytree(serving_store / "resnet101" / "1", base / "2")
    manager.poll_once()
    current = manager.resolve("m")
    assert current.version == 2
    assert [(s.version, s.state) for s in manager.status("m")] == [(2, State.AVAILABLE), (1, State.END)]
    after, _ = current.run(current.signature("serving_default"), image)
    assert np.abs(before["probabilities"] - after["probabilities"]).sum() > 0.5
    with pytest.raises(RequestError) as caught:
        manager.resolve("m", version=1)
    assert caught.value.code is Code.NOT_FOUND

    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"garbage")
    manager.poll_once()  # a broken version is reported, not served
    assert manager.resolve("m").version == 2
    (broken,) = manager.status("m", 3)
    assert broken.state is State.END
    assert broken.error is not None and "saved_model.pb" in broken.error.message
    manager.poll_once()  # and not retried on every poll
    assert manager.resolve("m").version == 2


@pytest.mark.parametrize(
    ("name", "version", "label", "code", "fragment"),
    [
        ("other", None, None, Code.NOT_FOUND, "Latest(other)"),
        ("m", 9, None, Code.NOT_FOUND, "Specific(m, 9)"),
        ("m", None, "stable", Code.INVALID_ARGUMENT, "Unrecognized servable version label: stable"),
    ],
)
def test_resolve_errors(
    serving_store: Path, name: str, version: int | None, label: str | None, code: Code, fragment: str
) -> None:
    manager = ModelManager("m", serving_store / "resnet50", warmup=False)
    manager.load_initial()
    with pytest.raises(RequestError) as caught:
        manager.resolve(name, version, label)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_a_version_linked_from_outside_the_base_path_is_not_a_version(tmp_path: Path, serving_store: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    shutil.copytree(serving_store / "resnet50" / "1", outside / "3")
    shutil.copytree(serving_store / "resnet50" / "1", base / "1")
    (base / "3").symlink_to(outside / "3")
    assert scan_versions(base) == [1]
