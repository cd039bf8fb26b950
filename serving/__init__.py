"""A TensorFlow-Serving-compatible model server and the model exporter.

* :mod:`serving.export` — ``export_model`` / ``ensure_models`` write ResNet50
  and ResNet101 (or tiny test stand-ins) as SavedModels into a model store;
  ``python -m serving.export --store DIR [--tiny]``.
* :mod:`serving.server` — ``python -m serving.server`` takes
  tensorflow_model_server's flags and serves REST and gRPC.

Importing this package is cheap: TensorFlow loads only when a model is
built or served.
"""

from __future__ import annotations

from serving.export import ensure_models, export_model

__all__ = ["ensure_models", "export_model"]
