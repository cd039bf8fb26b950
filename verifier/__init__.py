"""``verify-split`` and ``canary report``: verdicts and reports over a run directory.

The statistics are the ground's (:mod:`canary.stats`), the run directory is
read through :mod:`canary.rundir`; this package decides what to judge and
writes what was found:

* :mod:`verifier.resolve` — which expectation per protocol x group, and which subset is stable
* :mod:`verifier.crosscheck` — fingerprint counts against Envoy's / Prometheus' counters
* :mod:`verifier.latency`, :mod:`verifier.accuracy` — the Kayenta-style latency judge, accuracy
* :mod:`verifier.verify` — :func:`~verifier.verify.verify_run`, the one function behind the commands
* :mod:`verifier.report_json`, :mod:`verifier.report_junit`, :mod:`verifier.report_html`,
  :mod:`verifier.report_console`, :mod:`verifier.report_files` — the writers
"""
