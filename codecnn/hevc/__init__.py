"""HEVC maths codecnn needs without an encoder: slice-header syntax (:mod:`.syntax`), luma intra
prediction bit-exact with HM (:mod:`.intra`) and the compiled frame labeller of intra modes
(:mod:`.intra_labels`, kernel in :mod:`._intra_kernel`)."""

HM_CTU = 64  # HM's CTU size in its cfg files (CTUSize 64): block availability follows its z-order
MAX_QP = 51  # H.265's largest luma QP at 8 bits (QpBdOffset extends it downwards at higher bit depths)
QP_SCALE = MAX_QP  # networks see the QP as QP / QP_SCALE (the RDN's QP plane, ModeNet's side input, cnnw.h)
