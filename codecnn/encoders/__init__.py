"""Real HEVC encoders behind one interface (:class:`Encoder` -> :class:`EncodeResult`)."""

from codecnn.encoders.base import CONFIGS, STANDARD_QPS, Encoder, EncodeResult, check_qp
from codecnn.encoders.hm import HMEncoder, parse_hm_log, read_hm_log
from codecnn.encoders.x265 import X265Encoder
from codecnn.errors import EncoderError

ENCODERS = {"x265": X265Encoder, "hm": HMEncoder}


def make_encoder(name: str, **kwargs) -> Encoder:
    """Build an encoder by name (``x265`` or ``hm``) from its keyword options."""
    try:
        cls = ENCODERS[name]
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}") from None
    return cls(**kwargs)


__all__ = [
    "CONFIGS",
    "STANDARD_QPS",
    "ENCODERS",
    "EncodeResult",
    "Encoder",
    "HMEncoder",
    "X265Encoder",
    "check_qp",
    "make_encoder",
    "parse_hm_log",
    "read_hm_log",
]
