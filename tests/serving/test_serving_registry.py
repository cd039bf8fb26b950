"""Version directories, version policies, hot swap, labels and config reloads (in process)."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from canary.errors import ServingError
from serving.model_config import ModelConfig, ModelConfigError, ServerConfig, VersionPolicy
from serving.registry import ModelManager, State, scan_versions, version_dirs
from serving.served_models import ServedModels
from serving.status import Code, RequestError


def states(manager: ModelManager) -> list[tuple[int, State]]:
    """(version, state), newest first."""
    return [(v, s.state) for v, s in sorted(manager.states().items(), reverse=True)]


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
    assert states(manager) == [(1, State.AVAILABLE)]
    image = {"input_image": np.full((1, 224, 224, 3), 100.0, np.float32)}
    before, _ = first.run(first.signature(""), image)

    assert manager.poll_once() is False  # nothing new: no change
    assert manager.current is first

    shutil.copytree(serving_store / "resnet101" / "1", base / "2")
    assert manager.poll_once() is True
    current = manager.servable()
    assert current is not None and current.version == 2
    assert states(manager) == [(2, State.AVAILABLE), (1, State.END)]
    after, _ = current.run(current.signature("serving_default"), image)
    assert np.abs(before["probabilities"] - after["probabilities"]).sum() > 0.5
    assert manager.servable(1) is None
    again, _ = first.run(first.signature(""), image)  # a request that resolved version 1 still runs
    np.testing.assert_array_equal(again["probabilities"], before["probabilities"])

    (base / "3").mkdir()
    (base / "3" / "saved_model.pb").write_bytes(b"garbage")
    manager.poll_once()  # a broken version is reported, not served
    assert manager.servable() is current
    broken = manager.states()[3]
    assert broken.state is State.END
    assert broken.error is not None and "saved_model.pb" in broken.error.message
    assert manager.poll_once() is False  # and not retried on every poll
    assert manager.servable() is current


@pytest.mark.parametrize(
    ("name", "version", "label", "code", "fragment"),
    [
        # TF Serving's texts: core/basic_manager.cc, model_servers/server_core.cc
        ("other", None, None, Code.NOT_FOUND, "Servable not found for request: Latest(other)"),
        ("m", 9, None, Code.NOT_FOUND, "Servable not found for request: Specific(m, 9)"),
        ("m", None, "stable", Code.INVALID_ARGUMENT, "Unrecognized servable version label: stable"),
        ("other", None, "stable", Code.INVALID_ARGUMENT, "Unrecognized servable version label: stable"),
        ("", None, None, Code.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ],
)
def test_resolve_errors(
    serving_store: Path, name: str, version: int | None, label: str | None, code: Code, fragment: str
) -> None:
    models = ServedModels(ServerConfig((ModelConfig("m", str(serving_store / "resnet50")),)), warmup=False)
    models.load_initial()
    assert models.resolve("m").version == 1
    with pytest.raises(RequestError) as caught:
        models.resolve(name, version, label)
    assert (caught.value.code, caught.value.message) == (code, fragment)


def test_a_version_linked_from_outside_the_base_path_is_not_a_version(tmp_path: Path, serving_store: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    shutil.copytree(serving_store / "resnet50" / "1", outside / "3")
    shutil.copytree(serving_store / "resnet50" / "1", base / "1")
    (base / "3").symlink_to(outside / "3")
    assert scan_versions(base) == [1]


# --- TF Serving's version directories, policies, labels and reloads, on half_plus_two ----------------


def put(store: Path, version: int, target: Path) -> Path:
    """Copy half_plus_two's version ``version`` (123: y = 0.5x + 2, 124: y = 0.5x + 3) to ``target``."""
    source = next(p for p in (store / "half_plus_two").iterdir() if p.name.isdigit() and int(p.name) == version)
    shutil.copytree(source, target)
    return target


def y(models: ServedModels, name: str, version: int | None = None, label: str | None = None) -> tuple[int, float]:
    """(version, y(1.0)) of the servable a request names."""
    servable = models.resolve(name, version, label)
    outputs, _ = servable.run(servable.signature("serving_default"), {"x": np.array([[1.0]], np.float32)})
    return servable.version, float(np.asarray(outputs["y"]).ravel()[0])


def one(name: str, base: Path, policy: VersionPolicy | None = None, **labels: int) -> ModelConfig:
    return ModelConfig(name, str(base), policy=policy or VersionPolicy(), labels=tuple(sorted(labels.items())))


def refused(call: object, *args: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_zero_padded_and_duplicate_version_directories(
    tmp_path: Path, half_plus_two_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TF Serving's test data names versions 00000123; "7" and "07" are one version, "7" wins (byte order)."""
    base = tmp_path / "m"
    put(half_plus_two_store, 123, base / "00000123")
    put(half_plus_two_store, 124, base / "7")
    put(half_plus_two_store, 123, base / "07")
    (base / "8").write_text("a file is not a version")
    warned: set[tuple[int, str, str]] = set()
    with caplog.at_level(logging.WARNING, logger="serving.registry"):
        assert version_dirs(base, warned) == {7: "7", 123: "00000123"}
        assert version_dirs(base, warned) == {7: "7", 123: "00000123"}
    assert [r.getMessage() for r in caplog.records] == [
        "Duplicate version directories detected. Version 7 will be loaded from 7, 07 will be ignored."
    ]
    models = ServedModels(ServerConfig((one("m", base, VersionPolicy("all")),)), warmup=False)
    models.load_initial()
    assert y(models, "m") == (123, 2.5)
    assert y(models, "m", 7) == (7, 3.5)  # loaded from "7" (b=3), not "07" (b=2)
    assert [(s.version, s.state) for s in models.status("m")] == [(123, State.AVAILABLE), (7, State.AVAILABLE)]


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        (VersionPolicy(), [3]),
        (VersionPolicy("latest", 2), [2, 3]),
        (VersionPolicy("all"), [1, 2, 3]),
        (VersionPolicy("specific", versions=(1, 3, 9)), [1, 3]),
    ],
    ids=["latest", "latest2", "all", "specific"],
)
def test_version_policies_serve_several_versions(
    tmp_path: Path, half_plus_two_store: Path, policy: VersionPolicy, served: list[int]
) -> None:
    base = tmp_path / "m"
    for version, source in ((1, 123), (2, 124), (3, 123)):
        put(half_plus_two_store, source, base / str(version))
    models = ServedModels(ServerConfig((one("m", base, policy),)), warmup=False)
    models.load_initial()
    answers = {1: 2.5, 2: 3.5, 3: 2.5}
    assert y(models, "m") == (max(served), answers[max(served)])  # no version: the newest AVAILABLE
    for version in (1, 2, 3):
        if version in served:
            assert y(models, "m", version) == (version, answers[version])
        else:
            error = refused(models.resolve, "m", version)
            assert (error.code, error.message) == (Code.NOT_FOUND, f"Servable not found for request: Specific(m, {version})")
    assert [(s.version, s.state) for s in models.status("m")] == [(v, State.AVAILABLE) for v in reversed(served)]
    assert (refused(models.status, "m", 9).message, refused(models.status, "x").message) == (
        "Could not find version 9 of model m",
        "Could not find any versions of model x",
    )


def test_versions_come_and_go_with_the_directories(tmp_path: Path, half_plus_two_store: Path) -> None:
    base = tmp_path / "m"
    put(half_plus_two_store, 123, base / "1")
    models = ServedModels(ServerConfig((one("m", base),)), warmup=False)
    models.load_initial()
    first = models.resolve("m")
    put(half_plus_two_store, 124, base / "2")
    assert models.poll_once() is True
    assert y(models, "m") == (2, 3.5)
    assert [(s.version, s.state) for s in models.status("m")] == [(2, State.AVAILABLE), (1, State.END)]
    outputs, _ = first.run(first.signature(""), {"x": np.array([[1.0]], np.float32)})  # a request in flight
    assert float(np.asarray(outputs["y"]).ravel()[0]) == 2.5
    shutil.rmtree(base / "2")  # the newest goes: TF Serving serves the newest left
    assert models.poll_once() is True
    assert y(models, "m") == (1, 2.5)
    assert [(s.version, s.state) for s in models.status("m")] == [(2, State.END), (1, State.AVAILABLE)]
    moved = tmp_path / "elsewhere"
    base.rename(moved)  # a base path gone (for now): keep serving, as TF Serving does
    assert models.poll_once() is False
    assert y(models, "m") == (1, 2.5)


def test_fail_fast_checks(tmp_path: Path, half_plus_two_store: Path) -> None:
    base = put(half_plus_two_store, 123, tmp_path / "m" / "1").parent
    missing = ServedModels(ServerConfig((one("m", tmp_path / "nope"),)))
    with pytest.raises(ServingError, match=r"Could not find base path .*nope for servable m"):
        missing.check()
    specific = ServedModels(ServerConfig((one("m", base, VersionPolicy("specific", versions=(5,))),)))
    with pytest.raises(ServingError, match=r"No versions of servable m that its version policy \(specific "):
        specific.check()
    labelled = ServedModels(ServerConfig((one("m", base, stable=1),)))
    with pytest.raises(ModelConfigError) as caught:
        labelled.check()
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.message.startswith(
        "Request to assign label to version 1 of model m, which is not currently available for inference"
    )
    assert "--allow_version_labels_for_unavailable_models" in caught.value.message


def test_labels_and_reloads(tmp_path: Path, half_plus_two_store: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    put(half_plus_two_store, 123, a / "00000123")
    put(half_plus_two_store, 124, a / "00000124")
    put(half_plus_two_store, 123, b / "1")
    both = VersionPolicy("specific", versions=(123, 124))
    models = ServedModels(ServerConfig((one("a", a, both), one("b", b))), warmup=False)
    models.load_initial()
    assert y(models, "a") == (124, 3.5)

    models.reload(ServerConfig((one("a", a, both, stable=123, canary=124), one("b", b))))
    assert (y(models, "a", label="stable"), y(models, "a", label="canary")) == ((123, 2.5), (124, 3.5))
    for name in ("a", "b"):
        error = refused(models.resolve, name, None, "nope" if name == "a" else "stable")
        assert (error.code, error.message) == (
            Code.INVALID_ARGUMENT,
            f"Unrecognized servable version label: {'nope' if name == 'a' else 'stable'}",
        )

    bad_label = ServerConfig((one("a", a, both, stable=999), one("b", b)))
    error = refused(models.reload, bad_label)
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 999 of model a, which is not currently available for inference",
    )
    assert y(models, "a", label="stable") == (123, 2.5)  # the config in force is kept
    duplicate = ServerConfig((one("a", a), one("a", b)))
    error = refused(models.reload, duplicate)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, "Illegal to list model a multiple times in config list")

    models.reload(ServerConfig((one("a", a, both, stable=124, canary=124),)))  # promote; model b removed
    assert y(models, "a", label="stable") == (124, 3.5)
    error = refused(models.resolve, "b")
    assert (error.code, error.message) == (Code.NOT_FOUND, "Servable not found for request: Latest(b)")
    assert [(s.version, s.state) for s in models.status("b")] == [(1, State.END)]  # TF Serving keeps the states

    (tmp_path / "c").mkdir()
    error = refused(models.reload, ServerConfig((one("a", a, both), one("c", tmp_path / "c"))))
    assert error.code is Code.UNKNOWN
    assert error.message.startswith("1 model(s) did not become available: {{{name: c} due to error: No versions of servable c")
    assert models.labels("a") == {}  # applied: labels dropped, c configured (and retried on later polls)

    models.reload(ServerConfig((one("a", a), one("b", b))))  # b back, a down to its newest
    assert (y(models, "b"), y(models, "a")) == ((1, 2.5), (124, 3.5))
    assert [(s.version, s.state) for s in models.status("a")] == [(124, State.AVAILABLE), (123, State.END)]
    generation = models.generation
    models.reload(models.config)  # a poll of an unchanged file: the served versions stay, the heap stays frozen
    assert models.generation == generation


def test_labels_for_versions_not_available_need_the_flag(tmp_path: Path, half_plus_two_store: Path) -> None:
    """TF Serving's UpdateModelVersionLabelMap with --allow_version_labels_for_unavailable_models: a new label
    may point anywhere, an existing one moves only to an AVAILABLE version."""
    a = tmp_path / "a"
    put(half_plus_two_store, 123, a / "123")
    put(half_plus_two_store, 124, a / "124")
    both = VersionPolicy("specific", versions=(123, 124))
    config = ServerConfig((one("a", a, both, canary=124),))
    models = ServedModels(config, warmup=False, allow_unavailable_labels=True)
    models.load_initial()
    assert y(models, "a", label="canary") == (124, 3.5)
    error = refused(models.reload, ServerConfig((one("a", a, both, canary=125),)))
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Request to assign label to version 125 of model a, which is not currently available for inference",
    )
    models.reload(ServerConfig((one("a", a, both, canary=124, next=125),)))
    error = refused(models.resolve, "a", None, "next")
    assert (error.code, error.message) == (Code.NOT_FOUND, "Servable not found for request: Specific(a, 125)")


def test_a_link_loop_named_like_a_version_stops_no_poll(
    tmp_path: Path, half_plus_two_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    put(half_plus_two_store, 123, a / "1")
    put(half_plus_two_store, 123, b / "1")
    models = ServedModels(ServerConfig((one("a", a), one("b", b))), warmup=False)
    models.load_initial()
    (a / "5").symlink_to(a / "x")  # a loop: resolving it raises RuntimeError on Python 3.11
    (a / "x").symlink_to(a / "5")
    put(half_plus_two_store, 124, b / "2")
    assert models.poll_once() is True  # model a's loop did not keep b from its new version
    assert (y(models, "a"), y(models, "b")) == ((1, 2.5), (2, 3.5))
    assert "is not a version directory" in caplog.text and "remove or fix it" in caplog.text
    c = tmp_path / "c"
    put(half_plus_two_store, 123, c / "1")
    (c / "9").symlink_to(c / "9")
    models.reload(ServerConfig((one("a", a), one("b", b), one("c", c))))  # applied whole
    assert y(models, "c") == (1, 2.5)


def test_emptying_the_config_is_refused_as_server_core_refuses_it(tmp_path: Path, half_plus_two_store: Path) -> None:
    put(half_plus_two_store, 123, tmp_path / "a" / "1")
    models = ServedModels(ServerConfig((one("a", tmp_path / "a"),)), warmup=False)
    models.load_initial()
    error = refused(models.reload, ServerConfig(None))
    assert (error.code, error.message) == (
        Code.FAILED_PRECONDITION,
        "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another.",
    )
    assert y(models, "a") == (1, 2.5)  # the config in force is kept


def test_lookups_never_fail_while_reloads_change_versions_and_labels(tmp_path: Path, half_plus_two_store: Path) -> None:
    """Managers and labels are swapped whole: a request resolving during a reload sees one config or the other."""
    import threading

    a = tmp_path / "a"
    put(half_plus_two_store, 123, a / "123")
    put(half_plus_two_store, 124, a / "124")
    both = VersionPolicy("specific", versions=(123, 124))
    configs = [
        ServerConfig((one("a", a, both, stable=123),)),
        ServerConfig((one("a", a, VersionPolicy("all"), stable=124),)),
        ServerConfig((one("a", a, both, stable=124), one("b", a, VersionPolicy("latest")))),
    ]
    models = ServedModels(ServerConfig((one("a", a, both),)), warmup=False)
    models.load_initial()
    models.reload(configs[0])
    failures: list[BaseException] = []
    done = threading.Event()
    lookups = [0]

    def lookup() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline and lookups[0] < 2_000_000:
            try:
                assert models.resolve("a").version == 124
                assert models.resolve("a", label="stable").version in (123, 124)
            except BaseException as error:  # every failure is the finding
                failures.append(error)
                return
            lookups[0] += 1

    reader = threading.Thread(target=lookup)
    reader.start()
    try:
        for round_ in range(12):
            models.reload(configs[round_ % len(configs)])
    finally:
        done.set()
        reader.join(timeout=30)
    assert not failures, failures[0]
    assert lookups[0] > 100  # the lookups really ran beside the reloads
