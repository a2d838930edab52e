"""Measuring models. The evaluation suite: frozen eval sets (`eval_set`), per-item metrics (`metrics`, `fid`,
`clip_score`, `plausibility`, the `oracle` baseline's class shapes), one item through every method (`evaluator`,
`scoring`), run aggregates with bootstrap intervals and paired differences (`intervals`, `summary`), the run folder
(`store`) and its report (`report`). Also the demo's quick held-out checks of the product path (`heldout`)."""
