"""BFCL evaluation: run any Teacher on BFCL entries and score them with BFCL's own checkers.

``data`` loads a pinned BFCL version, ``runner`` talks to the model (prompt or FC mode,
BFCL's multi-turn loop), ``scoring`` calls BFCL's checkers, ``report`` writes the paper's
columns, ``replay`` is the ground-truth model used by the fidelity tests, ``cli`` is
``magnet eval bfcl``.
"""
