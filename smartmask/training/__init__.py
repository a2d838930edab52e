"""Training data for SmartMask: Eq. 5 guidance (`guidance`) and the (S~_k, T_obj, T_context) → A_{k+1} samples of
Eq. 1 drawn from a dataset version in the lake (`samples`). Pure numpy/scipy/pyarrow: no torch, Prefect or Ray here."""
