"""A TensorFlow-Serving-compatible model server: ``python -m serving.server``.

Takes tensorflow_model_server's flags (see :mod:`serving.flags`)::

    python -m serving.server --model_name=image_classifier \\
        --model_base_path=/models/resnet50 --port=8500 --rest_api_port=8501

and serves the versions under the base path that the version policy picks
(the newest one by default, as TF Serving's "latest") over gRPC
(PredictionService, ModelService) and REST, in one asyncio event loop, with
inference in a small thread pool. ``--model_config_file`` (TF Serving's
ModelServerConfig in text format, see :mod:`serving.model_config`) serves
several models instead, each with its version policy and version labels;
``--model_name``/``--model_base_path`` are then not used, and
``--model_config_file_poll_wait_seconds`` > 0 re-reads the file that often
(a file that does not parse, or a config TF Serving would refuse, is logged
and the config in force kept). Every ``--file_system_poll_wait_seconds``
each model's base path is scanned for new and removed versions.

As TF Serving does, it opens its ports only once every model's first version
is AVAILABLE (REST first, then gRPC, so a tcpSocket readiness probe on the
gRPC port means both answer). SIGTERM or SIGINT stops accepting, lets
requests in flight finish, and exits 0.

Exit codes: 0 after a clean shutdown, 1 when a model cannot be loaded or a
port cannot be bound, 2 for bad flags or a bad model config file. Listens on
``$CANARY_BIND_HOST`` (default 127.0.0.1: the local mesh is loopback only).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from canary.errors import ServingError
from serving.flags import FlagError, ServerFlags, flag_help, map_container_path, parse_flags
from serving.metrics import PROMETHEUS_PATH, Metrics
from serving.model_config import ModelConfigError, ServerConfig, parse_config_text, single_model
from serving.served_models import ServedModels
from serving.status import RequestError

__all__ = ["BIND_HOST_ENV", "main", "serve"]

BIND_HOST_ENV = "CANARY_BIND_HOST"
_GRPC_MAX_SEND = 2**31 - 1  # TF Serving: SetMaxMessageSize(kint32max); receiving follows --canary_max_request_bytes
_SHUTDOWN_GRACE_S = 10.0

log = logging.getLogger("serving.server")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, serve until SIGTERM/SIGINT; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "-help") for a in args):
        print(flag_help())
        return 0
    try:
        flags = parse_flags(args)
        if flags.version:
            print("TensorFlow ModelServer: canary (TF Serving-compatible)")
            return 0
        config = _model_config(flags)
        metrics_path = _metrics_path(flags.monitoring_config_file)
    except FlagError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname).1s %(name)s] %(message)s", stream=sys.stderr
    )
    _keep_freed_memory()
    if flags.ignored:
        log.info("accepted for compatibility with tensorflow_model_server, ignored here: %s",
                 ", ".join(f"--{name}" for name in flags.ignored))
    try:
        return asyncio.run(serve(flags, config, metrics_path=metrics_path))
    except FlagError as error:  # a model config TF Serving would refuse
        log.error("%s", error)
        return error.exit_code
    except ServingError as error:
        log.error("%s", error)
        return 1


def _model_config(flags: ServerFlags) -> ServerConfig:
    """The models to serve: ``--model_config_file`` when given (TF Serving's server.cc), else the one model."""
    if not flags.model_config_file:
        return single_model(flags.model_name, flags.model_base_path)
    return read_model_config(flags.model_config_file)


def read_model_config(container_path: str) -> ServerConfig:
    """Read and parse a ModelServerConfig text file (a container path); ModelConfigError (exit 2) if bad."""
    local = map_container_path(container_path)
    try:
        text = local.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        shown = container_path if str(local) == container_path else f"{container_path} (local {local})"
        raise ModelConfigError(f"cannot read --model_config_file {shown}: {reason}") from error
    return parse_config_text(text, container_path)


async def serve(flags: ServerFlags, config: ServerConfig, *, metrics_path: str = PROMETHEUS_PATH) -> int:
    """Load the models, serve REST and gRPC until a stop signal; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loader")
    workers = flags.rest_api_num_threads if flags.rest_api_num_threads > 0 else min(16, max(2, os.cpu_count() or 2))
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")
    try:
        models = ServedModels(
            config,
            map_path=map_container_path,
            tags=flags.saved_model_tags,
            warmup=flags.enable_model_warmup,
            allow_unavailable_labels=flags.allow_version_labels_for_unavailable_models,
        )
        models.check()  # fail fast, before TensorFlow takes seconds to import
        _configure_tensorflow(flags)
        loading: asyncio.Future[Any] = loop.run_in_executor(loader, models.load_initial)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("stopped before the model finished loading")
            loading.cancel()
            return 0
        stopping.cancel()
        loading.result()  # raises ServingError when a model cannot be loaded
        return await _run_servers(flags, models, executor, loader, stop, metrics_path)
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        loader.shutdown(wait=False, cancel_futures=True)


async def _run_servers(
    flags: ServerFlags,
    models: ServedModels,
    executor: ThreadPoolExecutor,
    loader: ThreadPoolExecutor,
    stop: asyncio.Event,
    metrics_path: str,
) -> int:
    import grpc
    from aiohttp import web

    from serving.grpc_service import add_services
    from serving.rest import RestApi

    host = os.environ.get(BIND_HOST_ENV, "127.0.0.1")
    metrics = Metrics()
    runner: web.AppRunner | None = None
    if flags.rest_api_port:
        rest = RestApi(
            models,
            metrics,
            executor,
            timeout_ms=flags.rest_api_timeout_in_ms,
            cors=flags.rest_api_enable_cors_support,
            metrics_path=metrics_path,
            max_request_bytes=flags.canary_max_request_bytes,
            check_method_name=flags.enable_signature_method_name_check,
        )
        runner = web.AppRunner(rest.app(), handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, flags.rest_api_port, reuse_port=False).start()
        except OSError as error:
            await runner.cleanup()
            raise ServingError(f"cannot listen on {host}:{flags.rest_api_port} for REST: {error.strerror}") from error
        log.info("Exporting HTTP/REST API at:%s:%d ...", host, flags.rest_api_port)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", _GRPC_MAX_SEND),
            ("grpc.max_receive_message_length", flags.canary_max_request_bytes),
            ("grpc.so_reuseport", 0),  # a port clash must fail, not share the port
        ]
    )
    frozen = [models.generation]  # the served versions the frozen heap holds (every reload re-freezes)

    async def reload(config: ServerConfig) -> None:  # HandleReloadConfigRequest, beside the pollers
        try:
            await asyncio.get_running_loop().run_in_executor(loader, models.reload, config)
        finally:
            _refreeze_if_changed(models, frozen)

    add_services(
        server,
        models,
        metrics,
        executor,
        check_method_name=flags.enable_signature_method_name_check,
        tensor_content=flags.enable_serialization_as_tensor_content,
        reload=reload,
    )
    try:
        grpc_port = server.add_insecure_port(f"{host}:{flags.port}")
        if flags.grpc_socket_path:
            server.add_insecure_port(f"unix:{flags.grpc_socket_path}")
    except RuntimeError as error:
        if runner is not None:
            await runner.cleanup()
        raise ServingError(f"cannot listen on {host}:{flags.port} for gRPC: {error}") from error
    await server.start()
    log.info("Running gRPC ModelServer at %s:%d ...", host, grpc_port)
    _freeze_heap()
    pollers = [asyncio.create_task(_poll(models, loader, flags.file_system_poll_wait_seconds, frozen))]
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        pollers.append(
            asyncio.create_task(
                _poll_config(
                    models, loader, flags.model_config_file, flags.model_config_file_poll_wait_seconds, frozen
                )
            )
        )
    await stop.wait()
    log.info("shutting down: finishing requests in flight")
    for poller in pollers:
        poller.cancel()
    for poller in pollers:
        with contextlib.suppress(asyncio.CancelledError):
            await poller
    await asyncio.gather(
        server.stop(_SHUTDOWN_GRACE_S),
        runner.cleanup() if runner is not None else asyncio.sleep(0),
    )
    log.info("stopped")
    return 0


async def _poll(models: ServedModels, loader: ThreadPoolExecutor, seconds: int, frozen: list[int]) -> None:
    """Look for new and removed versions every ``seconds`` (TF Serving: 0 or less polls no more)."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            await loop.run_in_executor(loader, models.poll_once)
        except Exception:  # keep polling whatever one scan ran into
            log.exception("looking for new versions failed")
            continue
        _refreeze_if_changed(models, frozen)


async def _poll_config(
    models: ServedModels, loader: ThreadPoolExecutor, path: str, seconds: int, frozen: list[int]
) -> None:
    """Re-read ``--model_config_file`` every ``seconds`` and apply it (TF Serving's
    ``PollFilesystemAndReloadConfig``: a file that does not parse or a config refused is logged, and
    the config in force kept)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(seconds)
        try:
            config = read_model_config(path)
        except FlagError as error:
            log.error("Failed to read ModelServerConfig file: %s", error)
            continue
        try:
            await loop.run_in_executor(loader, models.reload, config)
        except RequestError as error:
            log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error.message)
        except Exception:  # keep polling whatever one reload ran into
            log.exception("reloading --model_config_file %s failed", path)
        _refreeze_if_changed(models, frozen)


def _refreeze_if_changed(models: ServedModels, frozen: list[int]) -> None:
    """Re-freeze the heap when the served versions changed (a poll, a reload, a HandleReloadConfigRequest)."""
    if models.generation != frozen[0]:
        frozen[0] = models.generation
        gc.unfreeze()  # let the replaced versions be collected, then freeze the new ones
        _freeze_heap()


def _configure_tensorflow(flags: ServerFlags) -> None:
    import tensorflow as tf

    intra = flags.tensorflow_intra_op_parallelism or flags.tensorflow_session_parallelism
    inter = flags.tensorflow_inter_op_parallelism or flags.tensorflow_session_parallelism
    with contextlib.suppress(RuntimeError):  # already initialised: keep what is set
        if intra > 0:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter > 0:
            tf.config.threading.set_inter_op_parallelism_threads(inter)


def _metrics_path(config_file: str) -> str:
    """The Prometheus path from a monitoring config (``prometheus_config { path: ... }``).

    Metrics are always exported; the file only moves them.
    """
    if not config_file:
        return PROMETHEUS_PATH
    try:
        text = map_container_path(config_file).read_text()
    except OSError as error:
        raise FlagError(f"cannot read --monitoring_config_file {config_file}: {error.strerror}") from error
    match = re.search(r'path\s*:\s*"([^"]*)"', text)
    return match.group(1) if match and match.group(1) else PROMETHEUS_PATH


def _keep_freed_memory() -> None:
    """Let glibc reuse freed memory instead of returning it to the OS.

    A JSON image request allocates a few large temporaries; once TensorFlow
    runs in the process, glibc hands those back to the kernel after every
    request and page-faults them in again on the next: about half of the
    decoding time for a 224x224x3 body. Raising the mmap and trim thresholds
    keeps them in the heap.

    The mmap threshold stays at 8 MiB, above any temporary of a single image
    (a 600x512 photo's are under 4 MiB) but below those of a large body: a
    worker thread's heap never shrinks under this trim threshold, so only
    memory that was mmapped goes back to the kernel after a large request
    (``serving.limits.release_memory`` trims the rest).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 8 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)


def _freeze_heap() -> None:
    """Hide everything alive now (TensorFlow, the model) from the garbage collector.

    TensorFlow leaves millions of long-lived Python objects; without this every
    full collection walks them all, and parsing one JSON image (hundreds of
    thousands of new lists) triggers several: 5x slower requests.
    """
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
