"""Reference MCMC samplers over partitions: collapsed Gibbs (with split-merge) and NUTS with enumeration."""

from .gibbs import CollapsedGibbs, gibbs
from .nuts import nuts, stick_breaking_mixture

__all__ = ["CollapsedGibbs", "gibbs", "nuts", "stick_breaking_mixture"]
