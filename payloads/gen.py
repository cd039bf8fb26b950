"""The payload generator: ``python -m payloads.gen synthesize|build``.

* ``synthesize [--out DIR]`` writes the synthetic test images
  (default ``payloads/images``);
* ``build [--images DIR] [--out DIR] [--size 224|original]`` writes each
  image's REST bodies, ``<id>.instances.json`` and ``<id>.b64.json``, plus an
  ``index.json``, for curl, ``hey``, ``ab`` or any other client. The default
  output is a cache folder, ``<canary home>/payloads/<content hash>/``: built
  once, reused while the images, labels and size are the same.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson

from canary.commandline import ArgumentParser
from canary.conventions import canary_home, parse_payload_size
from canary.errors import CanaryError, PayloadError
from payloads.library import DEFAULT_SIZE, FORMATS, IMAGES_DIR, load_payloads
from payloads.synth import synthesize

__all__ = ["INDEX_FILE", "build_bodies", "cache_dir", "main"]

INDEX_FILE = "index.json"


def cache_dir() -> Path:
    """``$CANARY_HOME/payloads`` (default ``./.canary/payloads``)."""
    return canary_home() / "payloads"


def build_bodies(
    images_dir: Path | None = None, out: Path | None = None, *, size: int | None = DEFAULT_SIZE
) -> Path:
    """Write the REST bodies of every payload; returns the folder.

    With ``out`` None the folder is ``cache_dir()/<content hash>``, and an
    existing complete one is reused as is. The folder is written beside its
    final place and renamed into it, so a reader never sees half of it.
    """
    payloads = load_payloads(images_dir, size=size)
    target = Path(out) if out is not None else cache_dir() / payloads.digest[:16]
    index = {
        "digest": payloads.digest,
        "size": size,
        "images_dir": str(payloads.images_dir),
        "payloads": [
            {
                "id": p.id,
                "image": p.image.name,
                "label": p.label,
                "label_name": p.label_name,
                "shape": list(p.pixels.shape),
                "bodies": {fmt: f"{p.id}.{fmt}.json" for fmt in FORMATS},
                "sha256": dict(p.digests),
            }
            for p in payloads
        ],
    }
    if out is None and _complete(target, payloads.digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        for payload in payloads:
            for fmt in FORMATS:
                (staging / f"{payload.id}.{fmt}.json").write_bytes(payload.body(fmt))
        (staging / INDEX_FILE).write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2) + b"\n")
        if target.exists():
            if out is None and _complete(target, payloads.digest):
                return target  # another process built it meanwhile
            shutil.rmtree(target)
        os.rename(staging, target)
    except OSError as error:
        raise PayloadError(f"cannot write payload bodies to {target}: {error}") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(folder: Path, digest: str) -> bool:
    try:
        index = orjson.loads((folder / INDEX_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(index, dict) and index.get("digest") == digest


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m payloads.gen",
        description="Write the synthetic test images or the REST request bodies.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synthesize", help="write the synthetic test images")
    synth.add_argument(
        "--out", type=Path, default=IMAGES_DIR, help=f"folder (default {IMAGES_DIR})"
    )
    build = sub.add_parser("build", help="write the REST request bodies of every image")
    build.add_argument(
        "--images", type=Path, default=None, help=f"images folder (default {IMAGES_DIR})"
    )
    build.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: a cache folder by content hash)",
    )
    build.add_argument(
        "--size",
        type=lambda text: parse_payload_size(text, option="--size"),
        default=DEFAULT_SIZE,
        help="resize the instances pixels to SIZE x SIZE (default 224), or 'original'",
    )
    try:
        args = parser.parse_args(argv)
        if args.command == "synthesize":
            for path in synthesize(args.out):
                print(path)
        else:
            print(build_bodies(args.images, args.out, size=args.size))
    except CanaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
