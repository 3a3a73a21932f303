"""Real HEVC encoders behind one interface (:class:`Encoder` -> :class:`EncodeResult`)."""

from codecnn.encoders.base import CONFIGS, STANDARD_QPS, Encoder, EncodeResult, check_qp
from codecnn.encoders.hm import HMEncoder, parse_hm_log, read_hm_log
from codecnn.encoders.settings import EncodeSettings
from codecnn.encoders.x265 import X265Encoder
from codecnn.errors import EncoderError

ENCODERS = {"x265": X265Encoder, "hm": HMEncoder}


def encoder_class(name: str) -> type[Encoder]:
    """The encoder class of a name (``x265`` or ``hm``)."""
    try:
        return ENCODERS[name]
    except KeyError:
        raise EncoderError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}") from None


def make_encoder(name: str, **kwargs) -> Encoder:
    """Build an encoder by name (``x265`` or ``hm``) from its keyword options."""
    return encoder_class(name)(**kwargs)


__all__ = [
    "CONFIGS",
    "STANDARD_QPS",
    "ENCODERS",
    "EncodeResult",
    "EncodeSettings",
    "Encoder",
    "HMEncoder",
    "X265Encoder",
    "check_qp",
    "encoder_class",
    "make_encoder",
    "parse_hm_log",
    "read_hm_log",
]
