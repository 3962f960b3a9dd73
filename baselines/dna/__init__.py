"""DNA (Li et al., CVPR 2020): the method, its teacher, its blocks, their ratings and the traversal."""

from baselines.dna.method import DNA, DNAOptions

__all__ = ["DNA", "DNAOptions"]
