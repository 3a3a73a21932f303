"""``python -m hm_bridge patch-hm HM_DIR``: put the codecnn luma filter into a user's HM 16.x checkout.

It copies ``cnnw.h`` and ``codecnn_hm.h`` into ``source/Lib/TLibCommon`` (already on HM's include path,
so no build file changes) and inserts, each line marked ``// codecnn hm_bridge``:

* ``TEncGOP.cpp``: after SAO, before ``pcPic->compressMotion();`` (and so before the PSNR and before the
  picture serves as a reference), a call to ``codecnn_hm::filterLumaEncoder`` on the reconstruction (with
  ``--CnnFlags``: switched per CTU against the original, the choice queued as a suffix SEI with the
  picture's other trailing SEIs); when it fails (the model cannot be loaded, or filtering fails) that line
  prints the message and stops HM;
* ``TDecGop.cpp``: at the same point of ``filterPicture``, the picture's codecnn flags SEI looked up and
  ``codecnn_hm::filterLumaDecoder`` called with it;
* ``TAppEncCfg.cpp``: the options ``--CnnModel`` (the model path; empty = off) and ``--CnnFlags``;
  ``TAppDecCfg.cpp``: ``--CnnModel``.

It is idempotent (marked lines are not inserted twice; marked lines of an older hm_bridge are brought
up to date; a file whose content would not change, the two headers included, is not rewritten, so a
second run does not make HM rebuild) and refuses, changing nothing, when an expected line is not found.
Nothing of HM is stored in codecnn: only these inserted lines.
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
CPP = Path(__file__).resolve().parent / "cpp"
INCLUDE = f'#include "TLibCommon/codecnn_hm.h"  {MARK}'
_ARGS = (
    "pcPic->getPicYuvRec()->getAddr(COMPONENT_Y), pcPic->getPicYuvRec()->getStride(COMPONENT_Y), "
    "pcPic->getPicYuvRec()->getWidth(COMPONENT_Y), pcPic->getPicYuvRec()->getHeight(COMPONENT_Y), "
    "pcSlice->getSPS()->getBitDepth(CHANNEL_TYPE_LUMA), pcPic->getSlice(0)->getSliceQp()"
)
_STOP = '{ std::fprintf(stderr, "\\nERROR: codecnn: %s\\n", cnnError.c_str()); std::exit(EXIT_FAILURE); }'
# encoder: filter (per CTU with --CnnFlags, against the original) and queue the flags' suffix SEI
ENC_CALL = (
    "{ std::string cnnError; std::vector<unsigned char> cnnFlags; if (!codecnn_hm::filterLumaEncoder("
    f"{_ARGS}, pcPic->getPicYuvOrg()->getAddr(COMPONENT_Y), pcPic->getPicYuvOrg()->getStride(COMPONENT_Y), "
    f"static_cast<int>(pcSlice->getSPS()->getMaxCUWidth()), cnnFlags, cnnError)) {_STOP} "
    "if (!cnnFlags.empty()) { SEIUserDataUnregistered *cnnSei = new SEIUserDataUnregistered(); "
    "std::memcpy(cnnSei->m_uuid_iso_iec_11578, codecnn_hm::flagsUuid(), 16); "
    "cnnSei->m_userData.assign(cnnFlags.begin(), cnnFlags.end()); trailingSeiMessages.push_back(cnnSei); } }"
    f"  {MARK}"
)
# decoder: the picture's flags SEI, if any (its suffix SEIs are read before filterPicture), then filter
DEC_CALL = (
    "{ std::string cnnError; std::vector<unsigned char> cnnFlagData; bool cnnHasFlags = false; "
    "SEIMessages cnnSeis = getSeisByType(pcPic->getSEIs(), SEI::USER_DATA_UNREGISTERED); "
    "for (SEIMessages::const_iterator cnnIt = cnnSeis.begin(); cnnIt != cnnSeis.end(); ++cnnIt) { "
    "const SEIUserDataUnregistered *cnnSei = static_cast<const SEIUserDataUnregistered *>(*cnnIt); "
    "if (std::memcmp(cnnSei->m_uuid_iso_iec_11578, codecnn_hm::flagsUuid(), 16) == 0) { "
    "cnnFlagData.assign(cnnSei->m_userData.begin(), cnnSei->m_userData.end()); cnnHasFlags = true; } } "
    f"if (!codecnn_hm::filterLumaDecoder({_ARGS}, cnnHasFlags ? &cnnFlagData : NULL, cnnError)) {_STOP} }}"
    f"  {MARK}"
)
CALL = ENC_CALL  # (the name of older versions)
_MODEL_OPTION = (
    '("CnnModel", codecnn_hm::modelPath(), std::string(""), "codecnn .cnnw luma filter applied after SAO (hm_bridge)")'
)
ENC_OPTION = (
    f'{_MODEL_OPTION}("CnnFlags", codecnn_hm::ctuFlagsEnabled(), false, "codecnn: switch the filter per CTU '
    f'against the original, signalled in a suffix SEI (hm_bridge)")  {MARK}'
)
OPTION = DEC_OPTION = f"{_MODEL_OPTION}  {MARK}"


@dataclass(frozen=True)
class Edit:
    file: str  # relative to source/
    after_include: str  # the include line the codecnn include goes after
    anchor: str  # regex of the line the second insertion goes before
    context: str  # regex that must occur (once) before the anchor
    line: str  # what to insert before the anchor (indented like it)


EDITS = (
    Edit(
        "Lib/TLibEncoder/TEncGOP.cpp",
        '#include "TEncGOP.h"',
        r"^\s*pcPic->compressMotion\(\);\s*$",
        r"cabac_zero_word_padding\(",
        ENC_CALL,
    ),
    Edit(
        "Lib/TLibDecoder/TDecGop.cpp",
        '#include "TDecGop.h"',
        r"^\s*pcPic->compressMotion\(\);\s*$",
        r"m_pcSAO->SAOProcess\(pcPic\);",
        DEC_CALL,
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
)


def _plan(text: str, e: Edit, name: str) -> str:
    """The edited text of one file, or an error naming the missing anchor."""
    lines = text.split("\n")
    if MARK in text:  # patched before: the marked lines as this version writes them
        for i, ln in enumerate(lines):
            if MARK in ln and ln.strip() != INCLUDE:
                lines[i] = re.match(r"^\s*", ln).group(0) + e.line
        return "\n".join(lines)
    inc = [i for i, ln in enumerate(lines) if ln.strip() == e.after_include]
    if len(inc) != 1:
        raise CodecnnError(
            f"{name}: the line {e.after_include!r} was not found once; this HM version is not "
            "supported by patch-hm (see the README to insert the lines by hand)"
        )
    ctx = [i for i, ln in enumerate(lines) if re.search(e.context, ln)]
    if not ctx:
        raise CodecnnError(f"{name}: {e.context!r} not found; this HM version is not supported by patch-hm")
    anchors = [i for i, ln in enumerate(lines) if re.search(e.anchor, ln) and i > ctx[0]]
    if not anchors:
        raise CodecnnError(
            f"{name}: no line matching {e.anchor!r} after {e.context!r}; this HM version is not supported by patch-hm"
        )
    a = anchors[0]
    indent = re.match(r"^\s*", lines[a]).group(0)
    lines.insert(a, indent + e.line)
    lines.insert(inc[0] + 1, INCLUDE)
    return "\n".join(lines)


def patch_hm(hm_dir: str | os.PathLike) -> list[str]:
    """Patch an HM checkout (idempotent); returns what was done, one line per file."""
    root = Path(hm_dir)
    src = root / "source"
    if not (src / "Lib" / "TLibCommon").is_dir():
        raise CodecnnError(f"{root}: not an HM checkout (no source/Lib/TLibCommon)")
    planned = {}
    for e in EDITS:
        p = src / e.file
        if not p.is_file():
            raise CodecnnError(f"{p}: missing; is {root} an HM 16.x checkout?")
        text = p.read_text(errors="surrogateescape")
        planned[p] = (text, _plan(text, e, e.file))  # every file is checked before any is written
    done = []
    for name in ("cnnw.h", "codecnn_hm.h"):
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
# own code; -mavx2 -mfma: cnnw.h's vector kernels (drop them for a CPU without AVX2: same int16 output, slower);
# -ffp-contract=off: no fused multiply-adds in HM's own RD costs, so HM's bitstreams stay those of a default build.
RELEASE_CPPFLAGS = "-O3 -Wuninitialized -Wno-error -mavx2 -mfma -ffp-contract=off"


def rebuild_command(hm_dir: str | os.PathLike) -> str:
    """The command that rebuilds a patched HM 16.20 checkout (README, *Export to HM*, step 3)."""
    return f'make -C {shlex.quote(str(Path(hm_dir) / "build" / "linux"))} release RELEASE_CPPFLAGS="{RELEASE_CPPFLAGS}"'
