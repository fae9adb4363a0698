"""Graph optimisations, run between lowering and quantization: drop no-ops,
then fold affines and fuse clamps into their producers until nothing
changes (a clamp fused into a conv lets the scalar affine after it fold
too: MobileNetV3's hard sigmoid relu6(x + 3) / 6 becomes one conv), then
run what is left of the affines as 1x1 depthwise convolutions."""
from .fold_batchnorm import as_depthwise, fold_affines
from .fuse_activation import fuse_activations
from .remove_identity import remove_identities


def optimise(graph):
    remove_identities(graph)
    while fold_affines(graph) | fuse_activations(graph):
        pass
    as_depthwise(graph)
    fuse_activations(graph)
    return graph
