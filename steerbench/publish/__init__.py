"""The publishing floor: the leaderboard (loading results, Markdown tables, the HTML page,
plots, the README tables) and submissions. Reads results; never runs a model."""
