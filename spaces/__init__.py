"""Search spaces: candidate operators, the space registry, the weight-sharing supernet and FLOPs."""
