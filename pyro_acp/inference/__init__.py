"""Inference with amortized guides: the clusterwise IWAE bound, SVI training, parallel posterior sampling,
log-probability estimates of sampled partitions, random frames of the data, and ``infer``."""
