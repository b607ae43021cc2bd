"""Amortized clusterwise guides (ACP, ACP-S, CCP) as Pyro model/guide pairs, with their encoders."""

from pyro_acp.guides.acp import ACP, ACPS
from pyro_acp.guides.ccp import CCP
from pyro_acp.guides.clusterwise import ClusterwiseGuide, StepEncoding

GUIDES = {cls.__name__: cls for cls in (ACP, ACPS, CCP)}

__all__ = ["ACP", "ACPS", "CCP", "NOC", "ClusterwiseGuide", "StepEncoding", "GUIDES"]
from pyro_acp.guides.noc import NOC as NOC  # noqa: E402  (last: NOC builds on ACP and registers in GUIDES)
