"""Just enough of the H.265 bitstream syntax to say, for every picture, what it is: its slice type, its
picture order count (display position), its temporal layer, the QP it was coded with and its size.

An encoder's log says which QP it meant to use; the bitstream says which one it used. The slice QP is
``26 + init_qp_minus26 (PPS) + slice_qp_delta (slice header)`` (H.265 7.4.7.1); when the PPS also
disables ``cu_qp_delta``, every CU of the slice is coded at that QP. References are to the clauses of
ITU-T H.265 (v4+). Slice headers are parsed up to ``slice_qp_delta`` for I, P and B slices (reference
picture sets, weighted prediction tables, collocated picture); ``ref_pic_lists_modification`` is not
(no encoder codecnn drives writes it), and a stream that uses it is refused by name.

:func:`access_units` cuts a stream into pictures (7.4.2.4.4) in coding order, with each one's byte range:
the sizes of all access units add up to the stream's size, whatever the coding order, and
:func:`display_order` puts them in output order (POC within each coded video sequence).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# nal_unit_type values (Table 7-1)
VPS, SPS, PPS = 32, 33, 34
IDR_W_RADL, IDR_N_LP = 19, 20
BLA_W_LP, BLA_N_LP, CRA_NUT = 16, 18, 21
FIRST_IRAP, LAST_IRAP = 16, 23
RADL_N, RASL_R = 6, 9  # RADL_N, RADL_R, RASL_N, RASL_R are 6..9
AUD, EOS, EOB, FD, PREFIX_SEI, SUFFIX_SEI = 35, 36, 37, 38, 39, 40
SLICE_B, SLICE_P, SLICE_I = 0, 1, 2
SLICE_TYPE_NAMES = {SLICE_B: "B", SLICE_P: "P", SLICE_I: "I"}


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
    return [nal for _, nal in nal_units(stream)]


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


def _pred_weight_table(r: BitReader, sps: Sps, slice_type: int, refs: tuple[int, int]) -> None:
    """Skip pred_weight_table() (7.3.6.3) of a single-layer stream."""
    chroma = sps.chroma_format_idc != 0 and not sps.separate_colour_plane
    r.ue()  # luma_log2_weight_denom
    if chroma:
        r.se()
    for n in refs[: 2 if slice_type == SLICE_B else 1]:
        luma = [r.u(1) for _ in range(n)]
        chroma_flags = [r.u(1) for _ in range(n)] if chroma else [0] * n
        for lf, cf in zip(luma, chroma_flags, strict=True):
            if lf:
                r.se(), r.se()
            if cf:
                for _ in range(4):
                    r.se()


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
    cabac_init_present: bool = False
    num_ref_idx_default: tuple[int, int] = (1, 1)
    weighted_pred: bool = False
    weighted_bipred: bool = False
    lists_modification: bool = False


def parse_pps(data: bytes) -> tuple[int, Pps]:
    r = BitReader(rbsp(data)[2:])
    pps_id, sps_id = r.ue(), r.ue()
    dep, out_flag, extra = r.u(1), r.u(1), r.u(3)
    r.u(1)  # sign_data_hiding
    cabac_init_present = bool(r.u(1))
    refs = (r.ue() + 1, r.ue() + 1)
    init_qp = 26 + r.se()
    r.u(2)  # constrained_intra_pred, transform_skip
    cu_qp_delta = bool(r.u(1))
    if cu_qp_delta:
        r.ue()
    r.se(), r.se()  # pps_cb_qp_offset, pps_cr_qp_offset
    r.u(1)  # pps_slice_chroma_qp_offsets_present
    weighted_pred, weighted_bipred = bool(r.u(1)), bool(r.u(1))
    r.u(1)  # transquant_bypass
    tiles = r.u(1)
    r.u(1)  # entropy_coding_sync
    if tiles:
        cols, rows = r.ue(), r.ue()
        if not r.u(1):  # uniform_spacing
            for _ in range(cols + rows):
                r.ue()
        r.u(1)
    r.u(1)  # loop_filter_across_slices
    if r.u(1):  # deblocking_filter_control_present
        r.u(1)
        if not r.u(1):
            r.se(), r.se()
    if r.u(1):  # pps_scaling_list_data_present
        _scaling_list_data(r)
    lists_modification = bool(r.u(1))
    return pps_id, Pps(
        sps_id,
        bool(dep),
        bool(out_flag),
        extra,
        init_qp,
        cu_qp_delta,
        cabac_init_present,
        refs,
        weighted_pred,
        weighted_bipred,
        lists_modification,
    )


@dataclass(frozen=True)
class SliceInfo:
    """What a slice segment header says about one slice: NAL type, slice type, QP and POC LSBs."""

    nal_type: int
    slice_type: int
    qp: int
    first_in_picture: bool
    cu_qp_delta_enabled: bool
    bit_depth: int
    temporal_id: int = 0
    poc_lsb: int = 0
    log2_max_poc_lsb: int = 4


def slice_qps(stream: bytes) -> list[SliceInfo]:
    """Every independent slice segment of an Annex-B stream, in stream order."""
    spss: dict[int, Sps] = {}
    ppss: dict[int, Pps] = {}
    out = []
    for _, nal in nal_units(stream):
        info = _parse_nal(nal, spss, ppss)
        if info is not None:
            out.append(info)
    return out


def nal_units(stream: bytes) -> list[tuple[int, bytes]]:
    """Annex-B byte stream -> (offset of its start code, NAL unit) pairs. The offset counts the
    ``zero_byte`` of a 4-byte start code (and any zero bytes before it) as the unit's own, so the byte
    ranges between consecutive offsets tile the stream."""
    out = []
    i = stream.find(b"\x00\x00\x01")
    begin = 0
    while i >= 0:
        start = i + 3
        j = stream.find(b"\x00\x00\x01", start)
        end = len(stream) if j < 0 else j
        nal = stream[start:end]
        if j >= 0:
            nal = nal.rstrip(b"\x00")
        if nal:
            out.append((begin, nal))
        begin = start + len(nal)
        i = j
    return out


def _parse_nal(nal: bytes, spss: dict, ppss: dict) -> SliceInfo | None:
    nut = (nal[0] >> 1) & 0x3F
    if nut == SPS:
        k, v = parse_sps(nal)
        spss[k] = v
    elif nut == PPS:
        k, v = parse_pps(nal)
        ppss[k] = v
    elif nut < 32:
        return _slice_header(nal, nut, spss, ppss)
    return None


@dataclass(frozen=True)
class AccessUnit:
    """One coded picture: its place in coding order, its byte size in the stream (parameter sets and SEI
    in front of it included, as HM counts them), and what its first slice says."""

    coding_index: int
    nbytes: int
    poc: int
    slice_type: int
    qp: int
    temporal_id: int
    nal_type: int
    cvs: int  # index of the coded video sequence (a new one at every IDR/BLA, or a CRA that starts the stream)
    cu_qp_delta_enabled: bool
    bit_depth: int


def access_units(stream: bytes) -> list[AccessUnit]:
    """The pictures of an Annex-B stream in coding order, with POCs derived as H.265 8.3.1 does."""
    spss: dict[int, Sps] = {}
    ppss: dict[int, Pps] = {}
    starts: list[int] = []  # byte offset where each access unit begins
    firsts: list[SliceInfo] = []
    pending: int | None = None  # offset of the first non-VCL unit since the last picture's slices
    for off, nal in nal_units(stream):
        nut = (nal[0] >> 1) & 0x3F
        info = _parse_nal(nal, spss, ppss)
        if nut < 32:
            if info is not None and info.first_in_picture:
                starts.append(off if pending is None else pending)
                firsts.append(info)
            pending = None
        elif nut not in (SUFFIX_SEI, EOS, EOB, FD) or not firsts:
            # VPS/SPS/PPS/AUD/prefix SEI (and reserved types) open the next access unit (7.4.2.4.4)
            if pending is None:
                pending = off
    if not firsts:
        return []
    ends = starts[1:] + [len(stream)]
    out = []
    prev_tid0_poc, cvs = 0, -1
    for k, (info, a, b) in enumerate(zip(firsts, starts, ends, strict=True)):
        max_lsb = 1 << info.log2_max_poc_lsb
        irap_start = info.nal_type in (IDR_W_RADL, IDR_N_LP) or BLA_W_LP <= info.nal_type <= BLA_N_LP
        if irap_start or (k == 0 and FIRST_IRAP <= info.nal_type <= LAST_IRAP):
            cvs += 1
            msb = 0
        else:
            prev_lsb, prev_msb = prev_tid0_poc & (max_lsb - 1), prev_tid0_poc - (prev_tid0_poc & (max_lsb - 1))
            if info.poc_lsb < prev_lsb and prev_lsb - info.poc_lsb >= max_lsb // 2:
                msb = prev_msb + max_lsb
            elif info.poc_lsb > prev_lsb and info.poc_lsb - prev_lsb > max_lsb // 2:
                msb = prev_msb - max_lsb
            else:
                msb = prev_msb
        poc = 0 if info.nal_type in (IDR_W_RADL, IDR_N_LP) else msb + info.poc_lsb
        sub_layer_non_ref = info.nal_type <= 14 and info.nal_type % 2 == 0
        if info.temporal_id == 0 and not (RADL_N <= info.nal_type <= RASL_R) and not sub_layer_non_ref:
            prev_tid0_poc = poc
        out.append(
            AccessUnit(
                k,
                b - a,
                poc,
                info.slice_type,
                info.qp,
                info.temporal_id,
                info.nal_type,
                max(cvs, 0),
                info.cu_qp_delta_enabled,
                info.bit_depth,
            )
        )
    return out


def display_order(units: list[AccessUnit]) -> list[AccessUnit]:
    """Access units in output order: by coded video sequence, then POC."""
    return sorted(units, key=lambda u: (u.cvs, u.poc))


def _slice_header(nal: bytes, nut: int, spss: dict, ppss: dict) -> SliceInfo | None:
    temporal_id = (nal[1] & 7) - 1
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
    poc_lsb, tmvp = 0, False
    if nut not in (IDR_W_RADL, IDR_N_LP):
        poc_lsb = r.u(sps.log2_max_poc_lsb)
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
            tmvp = bool(r.u(1))
    if sps.sao:
        r.u(1)
        if sps.chroma_format_idc != 0 and not sps.separate_colour_plane:
            r.u(1)
    if slice_type in (SLICE_P, SLICE_B):
        refs = list(pps.num_ref_idx_default)
        if r.u(1):  # num_ref_idx_active_override_flag
            refs[0] = r.ue() + 1
            if slice_type == SLICE_B:
                refs[1] = r.ue() + 1
        if slice_type == SLICE_P:
            refs[1] = 0
        if pps.lists_modification:
            raise ValueError("ref_pic_lists_modification is not parsed (lists_modification_present_flag = 1)")
        if slice_type == SLICE_B:
            r.u(1)  # mvd_l1_zero_flag
        if pps.cabac_init_present:
            r.u(1)
        if tmvp:
            from_l0 = r.u(1) if slice_type == SLICE_B else 1
            if refs[0 if from_l0 else 1] > 1:
                r.ue()  # collocated_ref_idx
        if (pps.weighted_pred and slice_type == SLICE_P) or (pps.weighted_bipred and slice_type == SLICE_B):
            _pred_weight_table(r, sps, slice_type, (refs[0], refs[1]))
        r.ue()  # five_minus_max_num_merge_cand
    elif slice_type != SLICE_I:
        raise ValueError(f"slice_type {slice_type} is not 0 (B), 1 (P) or 2 (I)")
    qp = pps.init_qp + r.se()
    return SliceInfo(
        nut, slice_type, qp, first, pps.cu_qp_delta, sps.bit_depth_luma, temporal_id, poc_lsb, sps.log2_max_poc_lsb
    )
