# Shared fused types for every kernel module (one place, as scikit-image's fused_numerics.pxd).
# float32 and float64 are computed natively; the wrappers promote everything else.

ctypedef fused floating:
    float
    double
