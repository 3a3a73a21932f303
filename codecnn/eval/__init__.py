"""Measuring networks: the one metrics module (PSNR, BD-rate), whole-picture inference, where
evaluation runs come from (fresh encodes, a dataset's bitstreams, HM's files), the restoration and
intra-mode evaluations, and the reports."""
