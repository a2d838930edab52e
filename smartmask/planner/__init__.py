"""Planners: given the layout so far (S_k), the next object's name and the scene description, ranked candidate
boxes for where it goes (paper §3.3). `base` holds the interface, `load` the spec → planner function; `prior` the statistical
planner fitted on a dataset version; `llava` the LLaVA planner and its training."""
