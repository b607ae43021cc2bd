"""Reference posteriors to check amortized ones against: exact enumeration (small N), collapsed Gibbs with
split-merge moves (a ``pyro.infer.MCMC`` kernel) and NUTS on the truncated stick-breaking mixture."""
