"""The roof: the command-line entry points and the orchestration that strings the layers together.

* :mod:`commands.cli` — the ``canary`` command (one library call per subcommand)
* :mod:`commands.verify_split` — the ``verify-split`` command
* :mod:`commands.console` — the one console set-up and error handling every command shares
* :mod:`commands.demo` — ``canary demo``: the walkthrough on the local mesh
* :mod:`commands.traffic` — a small threaded REST/gRPC sender the demo uses

Only this package may import every layer.
"""
