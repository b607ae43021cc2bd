"""Data: partitions as label tensors (canonical form, enumeration, co-clustering) and padded batches of
simulated data sets with the teacher-forcing masks of every cluster step."""

from pyro_acp.data.batch import Batch

__all__ = ["Batch"]
