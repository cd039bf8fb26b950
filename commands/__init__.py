"""The roof: the command-line entry points and the orchestration that strings the layers together.

* :mod:`commands.cli` — the ``canary`` command (one library call per subcommand)
* :mod:`commands.verify_split` — the ``verify-split`` command
* :mod:`commands.console` — the one console set-up and error handling every command shares
* :mod:`commands.steps` — one verified step: apply manifests, load until decided, judge
* :mod:`commands.demo` — ``canary demo``: both walkthroughs on the local mesh, every step verified
* :mod:`commands.rollout` — ``canary rollout``: progressive delivery with gates and rollback
* :mod:`commands.sequence_output` — the terminal side of demo and rollout

Only this package may import every layer.
"""
