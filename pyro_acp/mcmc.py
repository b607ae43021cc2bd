"""Reference MCMC over partitions (public names of :mod:`pyro_acp.reference`): collapsed Gibbs with
split-merge moves, its ``pyro.infer.MCMC`` kernel, and NUTS with enumeration."""

from pyro_acp.reference.gibbs import CollapsedGibbs, gibbs
from pyro_acp.reference.nuts import nuts, stick_breaking_mixture

__all__ = ["CollapsedGibbs", "gibbs", "nuts", "stick_breaking_mixture"]
