"""codecnn: convolutional networks inside a video codec.

Data flow, one package per stage: ``yuv`` (read/write raw YUV, Y4M, containers) -> ``encoders`` (real
HEVC encodes: libx265 through PyAV, or a user's HM binary) -> ``hevc`` (codec maths: slice syntax, intra
prediction and mode labels) -> ``data`` (datasets in HDF5: ``restoration`` and ``intra``) -> ``models`` ->
``train`` (one loop, a Task per kind) -> ``eval`` (metrics, inference, evaluations, reports) ->
``hm_bridge`` (export to HM).
"""

__version__ = "0.1.0"
