"""Graph optimisations, run in order between lowering and quantization."""
from .fold_batchnorm import fold_batchnorm
from .fuse_activation import fuse_activations
from .remove_identity import remove_identities

PIPELINE = (remove_identities, fold_batchnorm, fuse_activations)


def optimise(graph):
    for p in PIPELINE:
        p(graph)
    return graph
