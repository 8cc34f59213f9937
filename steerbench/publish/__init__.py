"""The publishing floor: the leaderboard and submissions. Reads results; never runs a model.

``sources`` loads results, ``cells`` shapes them into one row per cell, ``verdicts`` decides
the rankings (pure data), ``tables``/``page``/``plots``/``readme`` render them, ``intake``
publishes and submits results, and ``leaderboard.build`` ties these together."""
