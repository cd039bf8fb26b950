"""No TensorFlow or CUDA start-up noise on the terminal of a command that imports TensorFlow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

NOISE = re.compile(
    r"tensorflow|cuda|cudnn|cublas|onednn|absl|InitializeLog|^[IWEF]\d{4} ", re.IGNORECASE | re.MULTILINE
)


def test_export_into_a_fresh_store_prints_no_tensorflow_or_cuda_lines(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}  # the defaults a user has
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from commands.cli import main; sys.exit(main())",
         "export", "--tiny", "--store", str(store)],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert (store / "resnet50" / "1" / "saved_model.pb").is_file()  # it really exported, importing TensorFlow
    assert NOISE.findall(done.stderr) == [], done.stderr
    assert NOISE.findall(done.stdout) == [], done.stdout
