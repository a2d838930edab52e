"""Measuring models: held-out checks of the product path (`heldout`); the evaluation suite builds on it."""
