"""codecnn: convolutional networks inside a video codec.

Data flow, one module per step: ``yuv`` (read/write raw YUV, Y4M, containers) -> ``encoders`` (real
HEVC encodes: libx265 through PyAV, or a user's HM binary) -> ``data`` (CTU datasets in HDF5) ->
models, training, metrics and reports -> ``hm_bridge`` (export to HM).
"""

__version__ = "0.1.0"
