"""Pairwise-masking secure aggregation: SecAgg (Bonawitz et al., CCS 2017) and
SecAgg+ (Bell et al., CCS 2020), as sans-IO client and server state machines."""
