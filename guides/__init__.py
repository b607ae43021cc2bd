"""Amortized clusterwise guides as Pyro model/guide pairs: ACP, ACP-S, CCP; NOC / NOC-S for ordered clusters."""

from pyro_acp.guides.acp import ACP, ACPS
from pyro_acp.guides.ccp import CCP
from pyro_acp.guides.clusterwise import ClusterwiseGuide, StepEncoding

GUIDES = {cls.__name__: cls for cls in (ACP, ACPS, CCP)}

__all__ = ["ACP", "ACPS", "CCP", "NOC", "NOCS", "ClusterwiseGuide", "StepEncoding", "GUIDES"]
from pyro_acp.guides.noc import NOC as NOC  # noqa: E402  (last: NOC builds on ACP and registers in GUIDES)
from pyro_acp.guides.noc import NOCS as NOCS  # noqa: E402
