"""hm_bridge: carry a trained codecnn network into the HEVC reference software (HM).

Filled by the export issue: a versioned weight format, header-only C++ inference (float and int16
fixed point, bit-exact with a Python twin), the HM hook and PSNR gains from HM's own outputs.
"""
