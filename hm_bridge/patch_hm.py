"""``python -m hm_bridge patch-hm HM_DIR``: put the codecnn luma filter into a user's HM 16.x checkout.

It copies the headers of ``HEADERS`` (the luma filter's ``cnnw.h``, which includes ``cnnw_format.h``,
``cnnw_buffer.h``, ``cnnw_profile.h``, ``cnnw_simd.h``, ``cnnw_layers.h``, ``cnnw_conv.h``, ``cnnw_tiles.h`` and
``cnnw_model.h``; ``codecnn_signal.h``, ``codecnn_hm.h``; and the mode network's ``cnnw_modenet.h``,
``cnnw_modenet_int16.h`` and ``codecnn_modes_hm.h``) into ``source/Lib/TLibCommon`` (already on HM's include
path, so no build file changes) and edits, each line marked ``// codecnn hm_bridge``:

* ``TEncGOP.cpp``: after SAO, before the picture's slices are written (and so before the PSNR and before
  the picture serves as a reference), a call to ``codecnn_hm::filterLumaEncoder``: it filters the
  reconstruction as the encoder decides against the original (``--CnnSignal``: always on, per picture, per
  CTU) and queues the picture's payload for its slice header; when it fails (the model cannot be loaded, or
  filtering fails) the line prints the message and stops HM; the same call after deblocking and before SAO
  acts instead when ``--CnnBeforeSao=1``;
* ``TEncTop.cpp``: the PPS's ``slice_segment_header_extension_present_flag`` set when a model is given;
* ``TEncCavlc.cpp``: the slice header's extension bytes written from the queued payload (HM wrote none);
* ``TDecCAVLC.cpp``: the extension bytes HM reads and ignored kept for the picture;
* ``TDecGop.cpp``: after SAO in ``filterPicture``, ``codecnn_hm::filterLumaDecoder`` follows the payload (and
  the same call before SAO, which acts when the stream's header places the filter there);
* ``TAppEncCfg.cpp``: the options ``--CnnModel`` (the model path; empty = off), ``--CnnSignal``,
  ``--CnnBeforeSao`` and the others of ``ENC_OPTION``;
  ``TAppDecCfg.cpp``: ``--CnnModel``.

and, for the mode network in the encoder's intra search (encoder only; the decoder is untouched):

* ``TEncSearch.cpp``: before ``estIntraPredLumaQT``'s rough mode decision loop, ``codecnn_modes::pruneRmd`` (the
  network's top k plus the MPMs are the modes the loop evaluates; the full-RD count reduced), and in the loop
  the line that skips the other modes;
* ``TAppEncCfg.cpp``: ``--CnnModeModel``, ``--CnnModeK``, ``--CnnModeMinSize``, ``--CnnModeRd``, and after the
  options are parsed (before encoding) ``codecnn_modes::prepare``, which stops HM with one line on a bad option
  or model.

It is idempotent: it first takes out what any hm_bridge put in (marked lines are removed, replaced lines
restored from the original they keep in their marker) and then applies this version's edits, and writes a
file only when that changes it (so a second run does not make HM rebuild). It refuses, changing nothing,
when an expected line is not found. Nothing of HM is stored in codecnn: only these lines.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from codecnn.errors import CodecnnError

MARK = "// codecnn hm_bridge"
WAS = " (was: "  # a replaced line's marker keeps the original line: MARK + WAS + original + ")"
CPP = Path(__file__).resolve().parent / "cpp"
HEADERS = (
    *("cnnw_format.h", "cnnw_buffer.h", "cnnw_profile.h", "cnnw_simd.h", "cnnw_layers.h", "cnnw_conv.h"),
    *("cnnw_tiles.h", "cnnw_model.h", "cnnw.h", "codecnn_signal.h", "codecnn_hm.h"),
    *("cnnw_modenet.h", "cnnw_modenet_int16.h", "codecnn_modes_hm.h"),
)
INCLUDE = f'#include "TLibCommon/codecnn_hm.h"  {MARK}'
MODES_INCLUDE = f'#include "TLibCommon/codecnn_modes_hm.h"  {MARK}'
_REC = "pcPic->getPicYuvRec()"
_ARGS = (
    f"{_REC}->getAddr(COMPONENT_Y), {_REC}->getStride(COMPONENT_Y), {_REC}->getWidth(COMPONENT_Y), "
    f"{_REC}->getHeight(COMPONENT_Y), pcSlice->getSPS()->getBitDepth(CHANNEL_TYPE_LUMA), "
    "pcPic->getSlice(0)->getSliceQp()"
)
_CTU = "static_cast<int>(pcSlice->getSPS()->getMaxCUWidth())"
_INTER = "pcPic->getSlice(0)->getSliceType() != I_SLICE"
_STOP = '{ std::fprintf(stderr, "\\nERROR: codecnn: %s\\n", cnnError.c_str()); std::exit(EXIT_FAILURE); }'


def _enc_call(stage: bool) -> str:
    """The encoder's call at one stage (true: after deblocking, before SAO; false: after SAO): it acts at the
    stage --CnnBeforeSao names and returns at the other."""
    return (
        "{ std::string cnnError; if (!codecnn_hm::filterLumaEncoder("
        f"{_ARGS}, pcPic->getPicYuvOrg()->getAddr(COMPONENT_Y), pcPic->getPicYuvOrg()->getStride(COMPONENT_Y), "
        f"{_CTU}, pcPic->getPOC(), pcPic->getSlice(0)->isIRAP(), {_INTER}, pcPic->getSlice(0)->getLambdas()[0], "
        "static_cast<int>(pcPic->getSlice(0)->getTLayer()), static_cast<int>(pcSlice->getSPS()->getMaxTLayers()), "
        f"{'true' if stage else 'false'}, cnnError)) "
        f"{_STOP} }}  {MARK}"
    )


def _dec_call(stage: bool) -> str:
    """The decoder's call at one stage: it follows the picture's payload at the stage the stream's header names."""
    return (
        f"{{ std::string cnnError; if (!codecnn_hm::filterLumaDecoder({_ARGS}, {_CTU}, pcPic->getPOC(), {_INTER}, "
        f"pcPic->getSlice(0)->getPPS()->getSliceHeaderExtensionPresentFlag(), {'true' if stage else 'false'}, "
        f"cnnError)) {_STOP} }}  {MARK}"
    )


# encoder: filter as decided against the original, the payload queued for the picture's slice header
ENC_CALL, ENC_CALL_BEFORE_SAO = _enc_call(False), _enc_call(True)
# decoder: follow the picture's payload (read from its slice header)
DEC_CALL, DEC_CALL_BEFORE_SAO = _dec_call(False), _dec_call(True)
PPS_FLAG = f"pps.setSliceHeaderExtensionPresentFlag(codecnn_hm::extensionPresent());  {MARK}"
EXT_WRITE = (
    "{ const std::vector<unsigned char> cnnExt = codecnn_hm::takeExtension(pcSlice->getPOC(), "
    "pcSlice->getSliceSegmentCurStartCtuTsAddr() == 0); "
    'WRITE_UVLC(UInt(cnnExt.size()), "slice_segment_header_extension_length"); '
    "for (size_t cnnI = 0; cnnI < cnnExt.size(); ++cnnI) { "
    'WRITE_CODE(cnnExt[cnnI], 8, "slice_segment_header_extension_data_byte"); } }'
)
EXT_READ = (
    'READ_CODE(8,ignored,"slice_segment_header_extension_data_byte"); '
    "codecnn_hm::receiveExtensionByte(pcSlice->getPOC(), i, ignored);"
)
_MODEL_OPTION = (
    '("CnnModel", codecnn_hm::modelPath(), std::string(""), "codecnn .cnnw luma filter applied after SAO (hm_bridge)")'
    '("CnnInterModel", codecnn_hm::interModelPath(), std::string(""), "codecnn: a second .cnnw model for the P '
    'and B pictures (hm_bridge)")'
)
ENC_OPTION = (
    f'{_MODEL_OPTION}("CnnSignal", codecnn_hm::signalMode(), 2, "codecnn: 0 filter every picture, 1 decide per '
    f'picture (on/off, residual scale), 2 also per CTU; signalled in the slice header (hm_bridge)")'
    '("CnnBeforeSao", codecnn_hm::beforeSao(), 0, "codecnn: 1 the filter runs after deblocking and before SAO, 0 '
    'after SAO; signalled in the header, the decoder follows (hm_bridge)")'
    '("CnnQpSearch", codecnn_hm::qpSearch(), 1, "codecnn: 1 the encoder picks the QP the network is given per '
    'picture (signalled), 0 the slice QP (hm_bridge)")'
    '("CnnPropagation", codecnn_hm::propagation(), 0.0, "codecnn: rho, a reference picture\'s distortion counts '
    '1 + rho x (2^(layers below it) - 1) times in the decision (hm_bridge)")'
    '("CnnRecordInput", codecnn_hm::recordPath(), std::string(""), "codecnn: write every picture as it enters '
    f'the filter to this I420 file, by POC (closed-loop training data; hm_bridge)")  {MARK}'
)
DEC_OPTION = f"{_MODEL_OPTION}  {MARK}"

# encoder only, the intra search: the mode network's top k and the MPMs as the RMD's candidates, fewer full RDs
MODES_PRUNE = (
    "Bool cnnAllowed[35]; Int cnnMpm[3] = {-1, -1, -1}; "
    "pcCU->getIntraDirPredictor(uiPartOffset, cnnMpm, COMPONENT_Y); "
    "numModesForFullRD = codecnn_modes::pruneRmd(piOrg, Int(uiStride), Int(puRect.width), Int(puRect.height), "
    "getPredictorPtr(COMPONENT_Y, false), sps.getBitDepth(CHANNEL_TYPE_LUMA), Int(pcCU->getQP(0)), "
    "Int(pcCU->getCUPelX() + puRect.x0), Int(pcCU->getCUPelY() + puRect.y0), Int(sps.getPicWidthInLumaSamples()), "
    "Int(sps.getPicHeightInLumaSamples()), Int(sps.getMaxCUWidth()), cnnMpm, numModesForFullRD, cnnAllowed);  "
    f"{MARK}"
)
MODES_SKIP = f"if (!cnnAllowed[uiMode]) continue;  {MARK}"
MODES_OPTION = (
    '("CnnModeModel", codecnn_modes::modelPath(), std::string(""), "codecnn: .cnnw mode network pruning the intra '
    'rough mode decision (hm_bridge)")'
    '("CnnModeK", codecnn_modes::topK(), 10, "codecnn: the mode network\'s top K modes (1..35) and the MPMs go '
    'through the rough mode decision")'
    '("CnnModeMinSize", codecnn_modes::minSize(), 4, "codecnn: the mode network prunes blocks of this size and '
    'larger (4, 8, 16, 32)")'
    '("CnnModeRd", codecnn_modes::rdCount(), 0, "codecnn: at most N full-RD intra candidates (0: HM\'s 8 for 4x4 '
    f'and 8x8, 3 above)")  {MARK}'
)
MODES_PREPARE = (
    "{ std::string cnnError; if (!codecnn_modes::prepare(cnnError, codecnn_hm::modelPath(), "
    f"codecnn_hm::interModelPath())) {_STOP} }}  {MARK}"
)


@dataclass(frozen=True)
class Edit:
    file: str  # relative to source/
    after_include: str  # the include line the codecnn include goes after
    anchor: str  # regex of the line the edit goes before (or replaces)
    context: str  # regex that must occur before the anchor (the anchor is its first match after it)
    line: str  # what to insert before the anchor (indented like it), or the anchor's replacement
    replace: bool = False
    include: str = INCLUDE  # the include line the file needs for it


EDITS = (
    Edit(
        "Lib/TLibEncoder/TEncGOP.cpp",
        '#include "TEncGOP.h"',
        r"^\s*std::size_t binCountsInNalUnits\s*=",
        r"m_pcSAO->SAOProcess\(",
        ENC_CALL,
    ),
    Edit(
        "Lib/TLibEncoder/TEncGOP.cpp",
        '#include "TEncGOP.h"',
        r"^\s*if \(pcSlice->getSPS\(\)->getUseSAO\(\)\)\s*$",
        r"xCreatePerPictureSEIMessages\(iGOPid",
        ENC_CALL_BEFORE_SAO,
    ),
    Edit(
        "Lib/TLibEncoder/TEncTop.cpp",
        '#include "TEncTop.h"',
        r"^\s*xInitPPSforTiles\(pps\);",
        r"TEncTop::xInitPPS\(",
        PPS_FLAG,
    ),
    Edit(
        "Lib/TLibEncoder/TEncCavlc.cpp",
        '#include "TEncCavlc.h"',
        r'^\s*WRITE_UVLC\(0,\s*"slice_segment_header_extension_length"\);',
        r"getSliceHeaderExtensionPresentFlag\(\)\)",
        EXT_WRITE,
        replace=True,
    ),
    Edit(
        "Lib/TLibDecoder/TDecCAVLC.cpp",
        '#include "TDecCAVLC.h"',
        r'^\s*READ_CODE\(8,\s*ignored,\s*"slice_segment_header_extension_data_byte"\);',
        r'READ_UVLC\(uiCode,\s*"slice_segment_header_extension_length"\);',
        EXT_READ,
        replace=True,
    ),
    Edit(
        "Lib/TLibDecoder/TDecGop.cpp",
        '#include "TDecGop.h"',
        r"^\s*pcPic->compressMotion\(\);\s*$",
        r"m_pcSAO->SAOProcess\(pcPic\);",
        DEC_CALL,
    ),
    Edit(
        "Lib/TLibDecoder/TDecGop.cpp",
        '#include "TDecGop.h"',
        r"^\s*if\( pcSlice->getSPS\(\)->getUseSAO\(\) \)\s*$",
        r"m_pcLoopFilter->loopFilterPic\( pcPic \);",
        DEC_CALL_BEFORE_SAO,
    ),
    Edit(
        "App/TAppEncoder/TAppEncCfg.cpp",
        '#include "TAppEncCfg.h"',
        r'^\s*\("ReconFile,o",',
        r"addOptions\(\)",
        ENC_OPTION,
    ),
    Edit(
        "App/TAppDecoder/TAppDecCfg.cpp",
        '#include "TAppDecCfg.h"',
        r'^\s*\("ReconFile,o",',
        r"addOptions\(\)",
        DEC_OPTION,
    ),
    Edit(
        "Lib/TLibEncoder/TEncSearch.cpp",
        '#include "TEncSearch.h"',
        r"^\s*for\( Int modeIdx = 0; modeIdx < numModesAvailable; modeIdx\+\+ \)",
        r"distParam\.bApplyWeight = false;",
        MODES_PRUNE,
        include=MODES_INCLUDE,
    ),
    Edit(
        "Lib/TLibEncoder/TEncSearch.cpp",
        '#include "TEncSearch.h"',
        r"^\s*Distortion uiSad  = 0;",
        r"UInt\s+uiMode = modeIdx;",
        MODES_SKIP,
        include=MODES_INCLUDE,
    ),
    Edit(
        "App/TAppEncoder/TAppEncCfg.cpp",
        '#include "TAppEncCfg.h"',
        r'^\s*\("ReconFile,o",',
        r"addOptions\(\)",
        MODES_OPTION,
        include=MODES_INCLUDE,
    ),
    Edit(
        "App/TAppEncoder/TAppEncCfg.cpp",
        '#include "TAppEncCfg.h"',
        r"^\s*xCheckParameter\(\);",
        r"TAppEncCfg::parseCfg\(",
        MODES_PREPARE,
        include=MODES_INCLUDE,
    ),
)


def _unpatch(lines: list[str]) -> list[str]:
    """The lines as HM had them: lines any hm_bridge inserted dropped, lines it replaced restored."""
    out = []
    for ln in lines:
        if MARK not in ln:
            out.append(ln)
        elif MARK + WAS in ln:
            indent = re.match(r"^\s*", ln).group(0)
            out.append(indent + ln.split(MARK + WAS, 1)[1][:-1])
    return out


def _plan(text: str, edits: list[Edit], name: str) -> str:
    """The edited text of one file (from HM's own lines, whatever an older hm_bridge did), or an error
    naming the missing anchor."""
    lines = _unpatch(text.split("\n"))
    for e in edits:
        ctx = [i for i, ln in enumerate(lines) if re.search(e.context, ln)]
        if not ctx:
            raise CodecnnError(f"{name}: {e.context!r} not found; this HM version is not supported by patch-hm")
        anchors = [i for i, ln in enumerate(lines) if re.search(e.anchor, ln) and i >= ctx[0]]
        if not anchors:
            raise CodecnnError(
                f"{name}: no line matching {e.anchor!r} after {e.context!r}; this HM version is not supported "
                "by patch-hm"
            )
        a = anchors[0]
        indent = re.match(r"^\s*", lines[a]).group(0)
        if e.replace:
            lines[a] = f"{indent}{e.line}  {MARK}{WAS}{lines[a].strip()})"
        else:
            lines.insert(a, indent + e.line)
    inc = [i for i, ln in enumerate(lines) if ln.strip() == edits[0].after_include]
    if len(inc) != 1:
        raise CodecnnError(
            f"{name}: the line {edits[0].after_include!r} was not found once; this HM version is not "
            "supported by patch-hm (see the README to insert the lines by hand)"
        )
    for k, include in enumerate(dict.fromkeys(e.include for e in edits)):
        lines.insert(inc[0] + 1 + k, include)
    return "\n".join(lines)


def patch_hm(hm_dir: str | os.PathLike) -> list[str]:
    """Patch an HM checkout (idempotent); returns what was done, one line per file."""
    root = Path(hm_dir)
    src = root / "source"
    if not (src / "Lib" / "TLibCommon").is_dir():
        raise CodecnnError(f"{root}: not an HM checkout (no source/Lib/TLibCommon)")
    planned = {}
    for file in dict.fromkeys(e.file for e in EDITS):
        p = src / file
        if not p.is_file():
            raise CodecnnError(f"{p}: missing; is {root} an HM 16.x checkout?")
        text = p.read_text(errors="surrogateescape")
        planned[p] = (text, _plan(text, [e for e in EDITS if e.file == file], file))  # all checked first
    done = []
    for name in HEADERS:
        dst = src / "Lib" / "TLibCommon" / name
        if dst.is_file() and dst.read_bytes() == (CPP / name).read_bytes():
            done.append(f"{dst.relative_to(root)}: up to date")  # untouched: no new mtime, no HM rebuild
            continue
        tmp = dst.with_name(name + ".codecnn-tmp")
        shutil.copy(CPP / name, tmp)
        os.replace(tmp, dst)
        done.append(f"{dst.relative_to(root)}: copied")
    for p, (old, new) in planned.items():
        if new == old:
            done.append(f"{p.relative_to(root)}: already patched")
            continue
        tmp = p.with_name(p.name + ".codecnn-tmp")
        tmp.write_text(new, errors="surrogateescape")
        os.replace(tmp, p)
        done.append(f"{p.relative_to(root)}: patched")
    return done


# HM 16.20 builds with its makefiles only (build/linux; CMake came with later HM versions), which read neither
# CXXFLAGS nor a CPPFLAGS that keeps HM's include paths: RELEASE_CPPFLAGS replaces HM's own "-O3 -Wuninitialized".
# -Wno-error: HM builds with -Werror, and newer compilers (GCC 12: class-memaccess, deprecated-copy) warn on HM's
# own code; -mavx2 -mfma: cnnw_simd.h's vector kernels (drop them for a CPU without AVX2: same int16 output, slower;
# -march=native on a CPU with AVX-512 VNNI: the same int16 output, about twice as fast, README *Speed*);
# -ffp-contract=off: no fused multiply-adds in HM's own RD costs, so HM's bitstreams stay those of a default build.
RELEASE_CPPFLAGS = "-O3 -Wuninitialized -Wno-error -mavx2 -mfma -ffp-contract=off"


def rebuild_command(hm_dir: str | os.PathLike) -> str:
    """The command that rebuilds a patched HM 16.20 checkout (README, *Export to HM*, step 3)."""
    return f'make -C {shlex.quote(str(Path(hm_dir) / "build" / "linux"))} release RELEASE_CPPFLAGS="{RELEASE_CPPFLAGS}"'
