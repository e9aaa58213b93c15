"""FlowForge's developer tooling: the ``flowforge`` command line and the local stack.

Nothing here ships in a Lambda package; the engine lives in ``engine/`` and the handlers
in ``functions/``.
"""
