"""The in-loop signalling of ``hm_bridge/cpp/codecnn_signal.h``, read in Python (tests and analysis).

The payload rides in a picture's first slice segment header extension: an optional 4-byte header
(``0x00``, version/placement/mode, model id; version 3's placement bit 0x04: the filter runs before SAO)
and the picture's parameters (versions 2 and 3: the QP index ``q``, the network given slice QP + 4 (q - 5),
the scale ``k`` = 20 + 4 s, over 64; version 1: ``k`` alone; optional per-CTU flags: version 3 a flag per
group of 2^g x 2^g CTUs after 2 bits g, versions 1 and 2 one per CTU); a filtered sample is
``clip(x + floor((k * (f - x) + 32) / 64))``. Keep this file and the C++ header in step: the C++ is what HM
runs, this is its twin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VERSION = 3  # what the encoder writes; versions 1 and 2 are still read
VERSIONS = (1, 2, 3)
SCALE_SHIFT = 6
QP_STEP, QP_SAME = 4, 5  # version 2: the network's QP = slice QP + QP_STEP * (q - QP_SAME), clipped to 0..51
SCALE_BASE, SCALE_STEP = 20, 4  # version 2: k = SCALE_BASE + SCALE_STEP * s
MODES = ("always", "picture", "ctu")  # codecnn_signal.h Mode: 0, 1, 2
MODE_BITS, BEFORE_SAO = 0x03, 0x04  # the header's byte 1, low nibble: mode, and (version 3) the placement bit
HEADER_BYTES = 4
GROUP_BITS, GROUP_LOGS = 2, 3  # version 3: the flags start with g (2 bits); groups of 2^g x 2^g CTUs, g < 3


@dataclass(frozen=True)
class Payload:
    """One picture's payload: the header's fields when it has one, and the picture's parameters."""

    mode: int | None  # the header's mode, None without a header
    model_id: int | None
    on: bool | None  # None: no parameters in the payload (off in modes 1 and 2, on in mode 0)
    k: int = 0
    ctu: tuple[int, ...] = ()  # per-CTU flags (a group's flag on each of its CTUs), () = every CTU
    q: int = QP_SAME  # version 2's QP index (version 1: always QP_SAME, the slice QP)
    version: int | None = None  # the header's version, None without a header
    group: int = 0  # version 3: the flags' g (groups of 2^g x 2^g CTUs)
    before_sao: bool | None = None  # the header's placement (True: before SAO), None without a header


def net_qp(slice_qp: int, q: int) -> int:
    """The QP the network is given for QP index ``q`` (codecnn_signal.h ``qpFor``)."""
    return max(0, min(51, slice_qp + QP_STEP * (q - QP_SAME)))


def parse_payload(data: bytes, width: int, height: int, block: int, version: int = VERSION) -> Payload:
    """Read one payload as the decoder does (codecnn_signal.h ``parse``), without the stream's state:
    ``version`` is the stream's (its header's, which a header in ``data`` overrides)."""
    mode = model_id = head = before = None
    at = 0
    if data[:1] == b"\x00":
        field = data[1] & 0x0F if len(data) > 1 else 0
        place = BEFORE_SAO if len(data) > 1 and data[1] >> 4 >= 3 else 0  # the placement bit: version 3
        if len(data) < HEADER_BYTES or data[1] >> 4 not in VERSIONS or field & ~place > 2:
            raise ValueError("a codecnn payload of another version")
        mode, model_id, at = field & MODE_BITS, int.from_bytes(data[2:4], "big"), HEADER_BYTES
        head, version, before = data[1] >> 4, data[1] >> 4, bool(field & BEFORE_SAO)
    if at == len(data):
        return Payload(mode, model_id, None, version=head, before_sao=before)
    flags = bool(data[at] & 0x80)
    k = data[at] & 0x7F if version == 1 else SCALE_BASE + SCALE_STEP * (data[at] & 0x0F)
    q = QP_SAME if version == 1 else (data[at] >> 4) & 0x07
    cols, rows = -(-width // block), -(-height // block)
    grouped = version >= 3
    g = data[at + 1] >> (8 - GROUP_BITS) if grouped and flags and len(data) > at + 1 else 0
    groups = -(-cols // (1 << g)) * -(-rows // (1 << g))
    nbits = (GROUP_BITS + groups) if grouped else cols * rows
    if data[at] & 0x7F == 0 or g >= GROUP_LOGS or len(data) != at + 1 + (-(-nbits // 8) if flags else 0):
        raise ValueError("codecnn parameters that do not fit the picture")
    ctu: tuple[int, ...] = ()
    if flags:
        bits = np.unpackbits(np.frombuffer(data[at + 1 :], np.uint8))
        if bits[nbits:].any():  # the bits after the last flag are zero as every encoder writes them
            raise ValueError("codecnn parameters that do not fit the picture (padding bits set)")
        b = np.arange(cols * rows)
        index = (b // cols >> g) * -(-cols // (1 << g)) + (b % cols >> g) + GROUP_BITS if grouped else b
        ctu = tuple(int(v) for v in bits[index])
    return Payload(mode, model_id, True, k, ctu, q, head, g, before)


def blend(rec: np.ndarray, filtered: np.ndarray, k: int, bit_depth: int) -> np.ndarray:
    """``clip(x + floor((k * (f - x) + 32) / 64))``: the scaled residual, as the C++ computes it."""
    x = rec.astype(np.int64)
    d = (k * (filtered.astype(np.int64) - x) + (1 << (SCALE_SHIFT - 1))) >> SCALE_SHIFT  # numpy >> floors
    return np.clip(x + d, 0, (1 << bit_depth) - 1).astype(rec.dtype)


def apply_payload(rec: np.ndarray, filtered: np.ndarray, p: Payload, block: int, bit_depth: int) -> np.ndarray:
    """The decoder's picture for a parsed payload (parameters present: blended on the CTUs that are on)."""
    if not p.on:
        return rec.copy()
    out = blend(rec, filtered, p.k, bit_depth)
    if p.ctu:
        h, w = rec.shape
        cols = -(-w // block)
        for b, on in enumerate(p.ctu):
            if not on:
                y, x = (b // cols) * block, (b % cols) * block
                out[y : y + block, x : x + block] = rec[y : y + block, x : x + block]
    return out
