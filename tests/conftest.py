"""Test-session settings: one torch thread. The suite's tensors are small, where a second OpenMP thread costs
more in synchronisation than it gains (a small Linear measured 12 ms with 2 threads vs 0.11 ms with 1 on a
loaded 2-core machine); data-parallel tests start their own processes. The suite itself runs in two worker processes
(pytest-xdist, ``addopts`` in pyproject.toml), one per core of the CI machine."""

import torch

torch.set_num_threads(1)
