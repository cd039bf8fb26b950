"""The published walkthroughs' own artifacts, where a development checkout has them.

They lie in ``../shared/fixtures/seed`` beside this project's development
checkout (or ``$CANARY_SEED_FIXTURES``) and nowhere in a user's clone: a test
may cross-check against them when they are there, and never needs them.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = Path(os.environ.get("CANARY_SEED_FIXTURES", REPO.parent / "shared" / "fixtures" / "seed"))
GKE_BODY = SEED / "gcp-request-body.json"


def gke_body() -> bytes:
    """The GKE walkthrough's request body: the published file when it is there, else the same
    bytes built from the bundled photo (tests/payloads checks the two are equal where both exist)."""
    if GKE_BODY.is_file():
        return GKE_BODY.read_bytes()
    from payloads import load_payloads

    return bytes(load_payloads().get("grace_hopper").rest_body["b64"])
