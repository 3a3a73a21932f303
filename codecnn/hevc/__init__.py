"""HEVC maths codecnn needs without an encoder: slice-header syntax (:mod:`.syntax`), luma intra
prediction bit-exact with HM (:mod:`.intra`) and the compiled frame labeller of intra modes
(:mod:`.intra_labels`, kernel in :mod:`._intra_kernel`)."""
