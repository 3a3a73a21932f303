// cnnw.h -- dependency-free C++11 inference of codecnn networks exported as .cnnw files.
//
// The file format and the op enum are specified in hm_bridge/format.py; this reader mirrors it
// (keep the two in step: enum Op in cnnw_format.h == INPUT..HEADS there, same field order). The container
// (constants, Status, Tensor, CRC-32, JSON header, byte reader) is in cnnw_format.h, shared with the mode
// network's reader cnnw_modenet.h; a mode network's file (version 3) is refused here as such. The int16 variant
// (precision 1) follows the integer rules of hm_bridge/fixed.py exactly: its output equals that
// Python twin sample for sample.
//
// Use (e.g. from HM after SAO, on the luma plane of a TComPicYuv):
//   cnnw::Model model;
//   cnnw::Status st = model.load("model.cnnw");
//   if (!st.ok) { /* st.message says why */ }
//   if (!st.message.empty()) { /* loaded, with a warning to print (a version 1 file) */ }
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp);
//   // or with 4 threads, CTUs shared out among them (the same output samples as with one):
//   st = model.filterPlane(src, srcStride, dst, dstStride, width, height, bitDepth, qp, 128, nullptr, 4);
//
// Integrity: a version 2 file carries a CRC-32 (zlib's, as Python's zlib.crc32) of every byte after the
// checksum field (file offset 12 to the end: header, tensors, nodes). load() verifies it before reading
// anything else and refuses a mismatch ("the file is damaged ..."), so flipped bits in the weights never
// filter. checksum() gives it (HM's glue prints it at load, so encoder and decoder logs can be compared).
// Version 1 files (no checksum field) still load, with a warning in the returned Status's message.
//
// Every count, dimension, index and length read from a file is checked before use: a damaged or
// truncated file gives a Status with a message, never a crash or an out-of-bounds read. Nothing aborts.
//
// Speed: activations are planar with a zero margin around every plane (the convolutions' zero padding,
// so no padded copies and no bounds in the inner loops); int16 channels are stored in interleaved pairs
// (the operand layout of _mm256_madd_epi16 / vpdpwssd). The vector convolution computes CO output
// channels x P vectors of pixels of one output row in registers, weights pre-packed at load time.
// Threads: filterPlane's last argument shares the CTUs out among std::threads; every CTU is computed by
// the same code whichever thread runs it, so the output does not depend on the thread count (int16 and
// float alike). std::thread needs no link flag with glibc >= 2.34; older systems link with -pthread.
//
// This header only includes the others (one per concern, as SADL's; users include this one):
//   cnnw_format.h   the .cnnw container (shared with cnnw_modenet.h), the integer helpers of fixed.py
//   cnnw_buffer.h   Buf<T> (Buffer, IBuffer): C x H x W samples with zero margins; the pool of node buffers
//   cnnw_profile.h  the profile clock and NodeTime
//   cnnw_simd.h     the choice of instruction set (CNNW_AVX512, CNNW_AVX2, CNNW_SIMD) and the vector kernels
//   cnnw_layers.h   the QP plane, concat, ReLU, add and crop (namespace cnnw::layers)
//   cnnw_conv.h     the convolution: portable loops, weights packed for the vector kernels (cnnw::layers)
//   cnnw_tiles.h    a plane cut into tiles: the job of a filterPlane call, the tile fill (cnnw::tiles)
//   cnnw_model.h    class Model: load and checks, the graph runner (runTile, runTileInt), filterPlane
#ifndef CNNW_H
#define CNNW_H

#include "cnnw_buffer.h"
#include "cnnw_conv.h"
#include "cnnw_format.h"
#include "cnnw_layers.h"
#include "cnnw_model.h"
#include "cnnw_profile.h"
#include "cnnw_simd.h"
#include "cnnw_tiles.h"

#endif  // CNNW_H
