"""pyro_acp: fast amortized Bayesian clustering with Attentive Clustering Processes, on Pyro."""

__version__ = "0.1.0"
