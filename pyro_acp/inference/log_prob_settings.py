"""Which log-probability estimator :func:`pyro_acp.infer` uses, by data-set size (the options of
:func:`pyro_acp.inference.log_prob.log_prob_estimate`: anchors per cluster, z draws, the order budget and
the z proposal), and what reweighting raises them to.
"""

from __future__ import annotations

from typing import Any

from pyro_acp.validation import check_positive_int

#: the log-probability estimator by data-set size (first row whose bound N does not exceed): exact anchors and
#: cluster orders where they are affordable, fewer as N grows so that infer at N = 200 with 100 samples takes
#: about 2 s on a 2-core CPU (benchmarks/log_prob_calibration.py, benchmarks/bench_infer.py). Above 40 points
#: z from the prior alone (1 draw) left log q 12 nats low on average at N = 100; the prior/encoder mixture with
#: 4 draws about 2 (benchmarks/check_frame_log_q.py, docs/benchmarks.md)
LOG_PROB_SETTINGS = (
    (12, {"num_anchors": None, "num_z": 4, "num_orders": 16, "z_proposal": "mixture"}),
    (40, {"num_anchors": 8, "num_z": 4, "num_orders": 8, "z_proposal": "mixture"}),
    (None, {"num_anchors": 3, "num_z": 4, "num_orders": 2, "z_proposal": "mixture"}),
)
#: with reweight=True, at least these, by size as above (the noise of log q enters the weights directly; at small N
#: all orders and anchors are summed in every sampling frame: a close-cluster set, N = 7, 2,000 samples: TV to
#: exact 0.515 raw -> 0.047 reweighted; 16 z draws and budget 256 give 0.045 at 6.4x the time)
REWEIGHT_SETTINGS = (
    (12, {"num_anchors": None, "num_z": 8, "num_orders": 64, "z_proposal": "mixture"}),
    (None, {"num_anchors": 10, "num_z": 8, "num_orders": 16, "z_proposal": "mixture"}),
)
#: with reweight=True, partitions whose log q has a standard error above this (nats) are estimated further
REWEIGHT_REFINE_TO = 0.25
#: and, where the importance weights' numerators are known (``refine_target``), only as many of them as it
#: takes, in order of their share of the weight times their error, for the rest to carry at most this much
#: weight x nats (sum_p w_p SE_p, about twice the TV the rest's noise can move; the shares pessimistic,
#: q lowered by two of its errors): refining partitions that carry no weight cost 3-4x the whole estimate at
#: N = 7 and moved the TV to the exact posterior by < 0.001 (benchmarks/refine_by_weight.py)
REWEIGHT_REFINE_MASS = 0.005
AUTO = "auto"
#: each refinement round multiplies the z draws by this
REFINE_Z_FACTOR = 8


def log_prob_settings(num_points: int, *, reweight: bool = False, **given: Any) -> dict[str, Any]:
    """The estimator options (``num_anchors``, ``num_z``, ``num_orders``) infer uses for an N-point data set:
    :data:`LOG_PROB_SETTINGS` for N, raised to :data:`REWEIGHT_SETTINGS` when reweighting (which also refines
    estimates whose error exceeds :data:`REWEIGHT_REFINE_TO`), and any option given (not "auto") as given."""
    settings = _for_size(LOG_PROB_SETTINGS, num_points)
    if reweight:
        settings["refine_to"] = REWEIGHT_REFINE_TO
        floor = _for_size(REWEIGHT_SETTINGS, num_points)
        settings["num_z"] = max(settings["num_z"], floor["num_z"])
        settings["num_orders"] = max(settings["num_orders"], floor["num_orders"])
        settings["z_proposal"] = floor["z_proposal"]
        if settings["num_anchors"] is not None:
            settings["num_anchors"] = None if floor["num_anchors"] is None else max(settings["num_anchors"],
                                                                                    floor["num_anchors"])
    for name, value in given.items():
        if isinstance(value, str) and value == AUTO:
            continue
        if name == "z_proposal":
            settings[name] = value
        elif name == "num_anchors" and value is None:
            settings[name] = None
        else:
            settings[name] = check_positive_int(value, name)
    return settings


def _for_size(table: tuple, num_points: int) -> dict[str, Any]:
    return next(dict(options) for bound, options in table if bound is None or num_points <= bound)
