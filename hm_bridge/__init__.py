"""hm_bridge: carry a trained codecnn network into the HEVC reference software (HM).

A versioned weight format (:mod:`.format`), its export from a checkpoint (:mod:`.export`), the int16
fixed-point rules and their integer Python twin (:mod:`.fixed`), header-only C++11 inference for float
and int16 (``cpp/cnnw.h``) with the HM glue (``cpp/codecnn_hm.h``, inserted by :mod:`.patch_hm`), and
PSNR gains measured on HM's own outputs (:mod:`.gain`).
"""
