"""canary: load-test ML models behind an Istio mesh and verify the canary split."""

__version__ = "0.1.0"
