"""Just enough of the H.265 bitstream syntax to read back the QP every slice was coded with.

An encoder's log says which QP it meant to use; the bitstream says which one it used. The slice QP is
``26 + init_qp_minus26 (PPS) + slice_qp_delta (slice header)`` (H.265 7.4.7.1); when the PPS also
disables ``cu_qp_delta``, every CU of the slice is coded at that QP. References are to the clauses of
ITU-T H.265 (v4+). Only what precedes ``slice_qp_delta`` is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# nal_unit_type values (Table 7-1)
VPS, SPS, PPS = 32, 33, 34
IDR_W_RADL, IDR_N_LP = 19, 20
FIRST_IRAP, LAST_IRAP = 16, 23
SLICE_B, SLICE_P, SLICE_I = 0, 1, 2


class BitReader:
    """MSB-first bit reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def split_nal_units(stream: bytes) -> list[bytes]:
    """Annex-B byte stream -> NAL units (header included, start codes removed)."""
    out = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        j = stream.find(b"\x00\x00\x01", start)
        end = len(stream) if j < 0 else j
        nal = stream[start:end]
        if j >= 0:
            nal = nal.rstrip(b"\x00")  # trailing_zero_8bits / the leading zero of a 4-byte start code
        if nal:
            out.append(nal)
        i = j
    return out


def rbsp(nal: bytes) -> bytes:
    """Remove emulation_prevention_three_byte (7.4.2)."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _ceil_log2(n: int) -> int:
    return max(0, (n - 1).bit_length())


def _profile_tier_level(r: BitReader, max_sub_layers_minus1: int) -> None:
    r.u(96)  # general profile/tier/level (7.3.3)
    present = [(r.u(1), r.u(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.u(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        r.u(88 * profile_present + 8 * level_present)


def _scaling_list_data(r: BitReader) -> None:
    for size_id in range(4):
        for _ in range(0, 6, 3 if size_id == 3 else 1):
            if not r.u(1):  # scaling_list_pred_mode_flag
                r.ue()
                continue
            if size_id > 1:
                r.se()
            for _ in range(min(64, 1 << (4 + (size_id << 1)))):
                r.se()


def _st_ref_pic_set(r: BitReader, idx: int, num_sets: int, sizes: list[int]) -> int:
    """Parse st_ref_pic_set(idx) (7.3.7); return its NumDeltaPocs."""
    if idx != 0 and r.u(1):  # inter_ref_pic_set_prediction_flag
        delta_idx = r.ue() + 1 if idx == num_sets else 1
        r.u(1)
        r.ue()
        n = 0
        for _ in range(sizes[idx - delta_idx] + 1):
            used = r.u(1)
            if used or r.u(1):
                n += 1
        return n
    neg, pos = r.ue(), r.ue()
    for _ in range(neg + pos):
        r.ue()
        r.u(1)
    return neg + pos


@dataclass
class Sps:
    chroma_format_idc: int
    separate_colour_plane: bool
    width: int
    height: int
    bit_depth_luma: int
    bit_depth_chroma: int
    log2_max_poc_lsb: int
    ctb_log2: int
    sao: bool
    st_rps_sizes: list[int] = field(default_factory=list)
    long_term_present: bool = False
    num_long_term_sps: int = 0
    temporal_mvp: bool = False

    @property
    def pic_size_in_ctbs(self) -> int:
        c = 1 << self.ctb_log2
        return -(-self.width // c) * -(-self.height // c)


def parse_sps(data: bytes) -> tuple[int, Sps]:
    r = BitReader(rbsp(data)[2:])
    r.u(4)
    max_sub = r.u(3)
    r.u(1)
    _profile_tier_level(r, max_sub)
    sps_id = r.ue()
    chroma = r.ue()
    sep = bool(r.u(1)) if chroma == 3 else False
    width, height = r.ue(), r.ue()
    if r.u(1):
        for _ in range(4):
            r.ue()
    bd_y, bd_c = r.ue() + 8, r.ue() + 8
    log2_poc = r.ue() + 4
    ordering_all = r.u(1)
    for _ in range(0 if ordering_all else max_sub, max_sub + 1):
        r.ue(), r.ue(), r.ue()
    min_cb = r.ue() + 3
    ctb_log2 = min_cb + r.ue()
    for _ in range(4):
        r.ue()
    if r.u(1) and r.u(1):  # scaling_list_enabled, sps_scaling_list_data_present
        _scaling_list_data(r)
    r.u(1)  # amp
    sao = bool(r.u(1))
    if r.u(1):  # pcm
        r.u(8)
        r.ue(), r.ue()
        r.u(1)
    sps = Sps(chroma, sep, width, height, bd_y, bd_c, log2_poc, ctb_log2, sao)
    num_sets = r.ue()
    for i in range(num_sets):
        sps.st_rps_sizes.append(_st_ref_pic_set(r, i, num_sets, sps.st_rps_sizes))
    sps.long_term_present = bool(r.u(1))
    if sps.long_term_present:
        sps.num_long_term_sps = r.ue()
        for _ in range(sps.num_long_term_sps):
            r.u(log2_poc)
            r.u(1)
    sps.temporal_mvp = bool(r.u(1))
    return sps_id, sps


@dataclass
class Pps:
    sps_id: int
    dependent_slices: bool
    output_flag_present: bool
    num_extra_bits: int
    init_qp: int
    cu_qp_delta: bool


def parse_pps(data: bytes) -> tuple[int, Pps]:
    r = BitReader(rbsp(data)[2:])
    pps_id, sps_id = r.ue(), r.ue()
    dep, out_flag, extra = r.u(1), r.u(1), r.u(3)
    r.u(2)
    r.ue(), r.ue()
    init_qp = 26 + r.se()
    r.u(2)  # constrained_intra_pred, transform_skip
    cu_qp_delta = bool(r.u(1))
    return pps_id, Pps(sps_id, bool(dep), bool(out_flag), extra, init_qp, cu_qp_delta)


@dataclass(frozen=True)
class SliceInfo:
    """What a slice segment header says about one slice: NAL type, slice type and QP."""

    nal_type: int
    slice_type: int
    qp: int
    first_in_picture: bool
    cu_qp_delta_enabled: bool
    bit_depth: int


def slice_qps(stream: bytes) -> list[SliceInfo]:
    """Every independent slice segment of an Annex-B stream, in stream order."""
    spss: dict[int, Sps] = {}
    ppss: dict[int, Pps] = {}
    out = []
    for nal in split_nal_units(stream):
        nut = (nal[0] >> 1) & 0x3F
        if nut == SPS:
            k, v = parse_sps(nal)
            spss[k] = v
        elif nut == PPS:
            k, v = parse_pps(nal)
            ppss[k] = v
        elif nut < 32:
            info = _slice_header(nal, nut, spss, ppss)
            if info is not None:
                out.append(info)
    return out


def _slice_header(nal: bytes, nut: int, spss: dict, ppss: dict) -> SliceInfo | None:
    r = BitReader(rbsp(nal)[2:])
    first = bool(r.u(1))
    if FIRST_IRAP <= nut <= LAST_IRAP:
        r.u(1)
    pps = ppss[r.ue()]
    sps = spss[pps.sps_id]
    if not first:
        if pps.dependent_slices and r.u(1):
            return None  # dependent slice segment: QP comes from its independent segment
        r.u(_ceil_log2(sps.pic_size_in_ctbs))
    r.u(pps.num_extra_bits)
    slice_type = r.ue()
    if pps.output_flag_present:
        r.u(1)
    if sps.separate_colour_plane:
        r.u(2)
    if nut not in (IDR_W_RADL, IDR_N_LP):
        r.u(sps.log2_max_poc_lsb)
        n = len(sps.st_rps_sizes)
        if not r.u(1):
            _st_ref_pic_set(r, n, n, sps.st_rps_sizes)
        elif n > 1:
            r.u(_ceil_log2(n))
        if sps.long_term_present:
            n_sps = r.ue() if sps.num_long_term_sps > 0 else 0
            n_pics = r.ue()
            for i in range(n_sps + n_pics):
                if i < n_sps:
                    if sps.num_long_term_sps > 1:
                        r.u(_ceil_log2(sps.num_long_term_sps))
                else:
                    r.u(sps.log2_max_poc_lsb)
                    r.u(1)
                if r.u(1):
                    r.ue()
        if sps.temporal_mvp:
            r.u(1)
    if slice_type != SLICE_I:
        raise ValueError("only I slices are parsed up to slice_qp_delta (all-intra streams)")
    if sps.sao:
        r.u(1)
        if sps.chroma_format_idc != 0 and not sps.separate_colour_plane:
            r.u(1)
    qp = pps.init_qp + r.se()
    return SliceInfo(nut, slice_type, qp, first, pps.cu_qp_delta, sps.bit_depth_luma)
