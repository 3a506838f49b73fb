// Register-blocked CPU micro-kernels of the CSM style-modulated 1x1 convolution (see style_conv.cpp).
//
// A 1x1 convolution of one image is the GEMM  out (rows x P) = A (rows x k) . B (k x P)  with the
// pixels P as the long, contiguous dimension. Channel counts in DDIF are small (k = 4 ... 256), a
// shape where a general BLAS spends much of its time packing; here each output block of
// MB rows x (NB * V) pixels lives in MB * NB vector registers while the k-loop streams one
// (k x NB * V) slab of B (in L1) against a packed copy of A, and the modulation (or the backward
// products) is applied to the registers before the single store. Every large tensor is thus read or
// written exactly once.
//
// The code is written once with GCC / Clang vector extensions (`vector_size`) and is force-inlined
// into thin per-ISA entry points (`target("avx512f")`, `target("avx2,fma")`, baseline); the
// compiler emits the matching instructions for each, and the best one is picked at run time.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if !(defined(__GNUC__) || defined(__clang__))
#error "csrc/style_conv_cpu_kernel.h needs the GCC / Clang vector extensions"
#endif

#define DDIF_ALWAYS_INLINE inline __attribute__((always_inline))

// Wide vector types are passed only between force-inlined functions, so the ABI note is moot.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ddif_ext {
namespace cpu {

template <typename T, int V>
struct VecOf {
  typedef T type __attribute__((vector_size(V * sizeof(T))));
};

template <typename VT, typename T>
DDIF_ALWAYS_INLINE VT load(const T* p) {
  if constexpr (std::is_same_v<VT, T>) {
    return *p;
  } else {
    VT v;
    __builtin_memcpy(&v, p, sizeof(VT));  // an unaligned vector load
    return v;
  }
}

template <typename VT, typename T>
DDIF_ALWAYS_INLINE void store(T* p, VT v) {
  if constexpr (std::is_same_v<VT, T>) {
    *p = v;
  } else {
    __builtin_memcpy(p, &v, sizeof(VT));
  }
}

template <typename VT, typename T>
DDIF_ALWAYS_INLINE VT splat(T x) {
  if constexpr (std::is_same_v<VT, T>) {
    return x;
  } else {
    return VT{} + x;
  }
}

// What happens to a block of GEMM results (conv values, bias included) before it is stored.
enum class Epilogue : int {
  kModulate,     // out0 = conv * (1 + in0) + in1; out1 = conv if given  (forward: in0 = scale, in1 = shift)
  kStore,        // out0 = conv                                         (backward: grad_x = W^T gm)
  kGradScaleGm,  // out0 = in0 * conv;  out1 = in0 * (1 + in1)          (backward: in0 = g, in1 = scale)
};

// One tile: rows x n outputs of A (packed) . B, plus the epilogue's operands. Every matrix is
// row-major with its own leading dimension (the image's pixel count, or a scratch buffer's width).
template <typename T>
struct TileArgs {
  const T* a_packed = nullptr;  // ceil(rows / MB) blocks, each (k x MB): a_packed[(blk * k + kk) * MB + r]
  const T* row_bias = nullptr;  // ceil(rows / MB) * MB entries (zero padded), or nullptr
  int64_t rows = 0;
  int64_t k = 0;
  const T* b = nullptr;
  int64_t ldb = 0;
  int64_t n = 0;
  const T* in0 = nullptr;
  int64_t ld_in0 = 0;
  const T* in1 = nullptr;
  int64_t ld_in1 = 0;
  T* out0 = nullptr;  // may be nullptr for kGradScaleGm (grad_scale not wanted)
  int64_t ld_out0 = 0;
  T* out1 = nullptr;  // kModulate: the conv kept for backward; kGradScaleGm: gm. Either may be nullptr
  int64_t ld_out1 = 0;
};

template <Epilogue E, typename VT, typename T>
DDIF_ALWAYS_INLINE void apply_epilogue(VT conv, const TileArgs<T>& a, int64_t row, int64_t p) {
  if constexpr (E == Epilogue::kModulate) {
    const VT s = load<VT>(a.in0 + row * a.ld_in0 + p);
    const VT t = load<VT>(a.in1 + row * a.ld_in1 + p);
    store<VT>(a.out0 + row * a.ld_out0 + p, conv * (splat<VT>(T(1)) + s) + t);
    if (a.out1) store<VT>(a.out1 + row * a.ld_out1 + p, conv);
  } else if constexpr (E == Epilogue::kStore) {
    store<VT>(a.out0 + row * a.ld_out0 + p, conv);
  } else {
    const VT g = load<VT>(a.in0 + row * a.ld_in0 + p);
    if (a.out0) store<VT>(a.out0 + row * a.ld_out0 + p, g * conv);
    if (a.out1) {
      const VT s = load<VT>(a.in1 + row * a.ld_in1 + p);
      store<VT>(a.out1 + row * a.ld_out1 + p, g * (splat<VT>(T(1)) + s));
    }
  }
}

// out = epilogue(A . B + bias) for one tile; V lanes per vector, MB rows x NB vectors per block.
template <typename T, int V, int MB, int NB, Epilogue E>
DDIF_ALWAYS_INLINE void gemm_tile(const TileArgs<T>& a) {
  using VT = typename VecOf<T, V>::type;
  constexpr int64_t PB = int64_t(V) * NB;
  const int64_t n_main = a.n / PB * PB;
  const int64_t blocks = (a.rows + MB - 1) / MB;
  // Row blocks outermost: the block's packed A (k x MB) stays in L1 and the epilogue walks MB rows of
  // each output / modulation map sequentially (few, prefetch-friendly streams); B is re-read from L2.
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const T* ap = a.a_packed + blk * a.k * MB;
    for (int64_t p = 0; p < n_main; p += PB) {
      const T* bp = a.b + p;
      VT acc[MB][NB];
#pragma GCC unroll 16
      for (int r = 0; r < MB; ++r) {
        const T b0 = a.row_bias ? a.row_bias[blk * MB + r] : T(0);
#pragma GCC unroll 4
        for (int c = 0; c < NB; ++c) acc[r][c] = splat<VT>(b0);
      }
      for (int64_t kk = 0; kk < a.k; ++kk) {
        VT bv[NB];
#pragma GCC unroll 4
        for (int c = 0; c < NB; ++c) bv[c] = load<VT>(bp + kk * a.ldb + c * V);
#pragma GCC unroll 16
        for (int r = 0; r < MB; ++r) {
          const VT av = splat<VT>(ap[kk * MB + r]);
#pragma GCC unroll 4
          for (int c = 0; c < NB; ++c) acc[r][c] += av * bv[c];
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < MB; ++r) {
        const int64_t row = blk * MB + r;
        if (row >= a.rows) break;  // padded rows of the last block
#pragma GCC unroll 4
        for (int c = 0; c < NB; ++c) apply_epilogue<E, VT, T>(acc[r][c], a, row, p + c * V);
      }
    }
  }
  // Pixels left over after the last full block (fewer than NB * V): plain scalar code.
  for (int64_t row = 0; row < a.rows && n_main < a.n; ++row) {
    const T* ap = a.a_packed + (row / MB) * a.k * MB + row % MB;
    const T b0 = a.row_bias ? a.row_bias[row] : T(0);
    for (int64_t p = n_main; p < a.n; ++p) {
      T conv = b0;
      for (int64_t kk = 0; kk < a.k; ++kk) conv += ap[kk * MB] * a.b[kk * a.ldb + p];
      apply_epilogue<E, T, T>(conv, a, row, p);
    }
  }
}

// gm = g * (1 + scale) without the convolution (when grad_scale is not wanted).
template <typename T, int V>
DDIF_ALWAYS_INLINE void grad_modulation_tile(const T* g, int64_t ldg, const T* scale, int64_t lds, T* gm,
                                             int64_t ldgm, int64_t rows, int64_t n) {
  using VT = typename VecOf<T, V>::type;
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * ldg;
    const T* sr = scale + r * lds;
    T* out = gm + r * ldgm;
    int64_t p = 0;
    for (; p + V <= n; p += V) {
      store<VT>(out + p, load<VT>(gr + p) * (splat<VT>(T(1)) + load<VT>(sr + p)));
    }
    for (; p < n; ++p) out[p] = gr[p] * (T(1) + sr[p]);
  }
}

// grad_scale = g * conv (conv kept by the forward), and gm = g * (1 + scale) when gm is given.
template <typename T, int V>
DDIF_ALWAYS_INLINE void grad_from_kept_conv_tile(const T* g, int64_t ldg, const T* scale, int64_t lds, const T* conv,
                                                 int64_t ldc, T* grad_scale, int64_t ldgs, T* gm, int64_t ldgm,
                                                 int64_t rows, int64_t n) {
  using VT = typename VecOf<T, V>::type;
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * ldg;
    const T* sr = scale + r * lds;
    const T* cr = conv + r * ldc;
    T* gsr = grad_scale + r * ldgs;
    int64_t p = 0;
    for (; p + V <= n; p += V) store<VT>(gsr + p, load<VT>(gr + p) * load<VT>(cr + p));
    for (; p < n; ++p) gsr[p] = gr[p] * cr[p];
  }
  if (gm) grad_modulation_tile<T, V>(g, ldg, scale, lds, gm, ldgm, rows, n);
}

// sums[r] += sum_p m[r, p]
template <typename T, int V>
DDIF_ALWAYS_INLINE void add_row_sums(const T* m, int64_t ld, int64_t rows, int64_t n, T* sums) {
  using VT = typename VecOf<T, V>::type;
  for (int64_t r = 0; r < rows; ++r) {
    const T* row = m + r * ld;
    VT acc = splat<VT>(T(0));
    int64_t p = 0;
    for (; p + V <= n; p += V) acc += load<VT>(row + p);
    T total = 0;
    for (int l = 0; l < V; ++l) total += acc[l];
    for (; p < n; ++p) total += row[p];
    sums[r] += total;
  }
}

// c[r, j] += sum_kk a[r, kk] * b[kk, j] for r < rows, j < cols (a, b, c row-major, a not packed).
// b has cols_pad columns, a multiple of V * NB, zero beyond cols. Used for grad_W += gm . x^T with
// b = x^T: the accumulators run along C_in, so no horizontal (cross-lane) sums are needed.
template <typename T, int V, int MB, int NB>
DDIF_ALWAYS_INLINE void gemm_accumulate(const T* a, int64_t lda, int64_t rows, int64_t k, const T* b, int64_t ldb,
                                        int64_t cols, int64_t cols_pad, T* c, int64_t ldc) {
  using VT = typename VecOf<T, V>::type;
  constexpr int64_t PB = int64_t(V) * NB;
  for (int64_t r0 = 0; r0 < rows; r0 += MB) {
    const T* a_row[MB];
#pragma GCC unroll 16
    for (int r = 0; r < MB; ++r) a_row[r] = a + std::min<int64_t>(r0 + r, rows - 1) * lda;  // in bounds
    for (int64_t j = 0; j < cols_pad; j += PB) {
      VT acc[MB][NB];
#pragma GCC unroll 16
      for (int r = 0; r < MB; ++r) {
#pragma GCC unroll 4
        for (int q = 0; q < NB; ++q) acc[r][q] = splat<VT>(T(0));
      }
      for (int64_t kk = 0; kk < k; ++kk) {
        VT bv[NB];
#pragma GCC unroll 4
        for (int q = 0; q < NB; ++q) bv[q] = load<VT>(b + kk * ldb + j + q * V);
#pragma GCC unroll 16
        for (int r = 0; r < MB; ++r) {
          const VT av = splat<VT>(a_row[r][kk]);
#pragma GCC unroll 4
          for (int q = 0; q < NB; ++q) acc[r][q] += av * bv[q];
        }
      }
#pragma GCC unroll 16
      for (int r = 0; r < MB; ++r) {
        if (r0 + r >= rows) break;
        T* c_row = c + (r0 + r) * ldc;
#pragma GCC unroll 4
        for (int q = 0; q < NB; ++q) {
          const int64_t col = j + q * V;
          if (col + V <= cols) {
            store<VT>(c_row + col, load<VT>(c_row + col) + acc[r][q]);
          } else {
            for (int l = 0; l < V && col + l < cols; ++l) c_row[col + l] += acc[r][q][l];
          }
        }
      }
    }
  }
}

// dst (n x cols, leading dimension ld_dst) = src (cols x n)^T; the padding columns are left alone.
template <typename T>
DDIF_ALWAYS_INLINE void transpose_tile(const T* src, int64_t ld_src, int64_t cols, int64_t n, T* dst,
                                       int64_t ld_dst) {
  constexpr int64_t kBlock = 16;  // cache-friendly blocks on both sides
  for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
    for (int64_t p0 = 0; p0 < n; p0 += kBlock) {
      const int64_t c_end = std::min(cols, c0 + kBlock), p_end = std::min(n, p0 + kBlock);
      for (int64_t ci = c0; ci < c_end; ++ci) {
        for (int64_t p = p0; p < p_end; ++p) dst[p * ld_dst + ci] = src[ci * ld_src + p];
      }
    }
  }
}

// bfloat16 <-> float on raw bits, row by row. Rounding is to nearest even with NaN -> 0x7FC0, bit
// for bit what c10::BFloat16 does.
DDIF_ALWAYS_INLINE uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if (f != f) return 0x7FC0;
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

template <int V>
DDIF_ALWAYS_INLINE void widen_bf16_rows(const uint16_t* src, int64_t ld_src, float* dst, int64_t ld_dst,
                                        int64_t rows, int64_t n) {
  using U16 = typename VecOf<uint16_t, V>::type;
  using U32 = typename VecOf<uint32_t, V>::type;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* in = src + r * ld_src;
    float* out = dst + r * ld_dst;
    int64_t p = 0;
    for (; p + V <= n; p += V) {
      const U32 bits = __builtin_convertvector(load<U16>(in + p), U32) << 16;
      __builtin_memcpy(out + p, &bits, sizeof(U32));
    }
    for (; p < n; ++p) {
      const uint32_t bits = uint32_t(in[p]) << 16;
      __builtin_memcpy(out + p, &bits, 4);
    }
  }
}

template <int V>
DDIF_ALWAYS_INLINE void narrow_bf16_rows(const float* src, int64_t ld_src, uint16_t* dst, int64_t ld_dst,
                                         int64_t rows, int64_t n) {
  using U16 = typename VecOf<uint16_t, V>::type;
  using U32 = typename VecOf<uint32_t, V>::type;
  using F = typename VecOf<float, V>::type;
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * ld_src;
    uint16_t* out = dst + r * ld_dst;
    int64_t p = 0;
    for (; p + V <= n; p += V) {
      const F f = load<F>(in + p);
      U32 u;
      __builtin_memcpy(&u, &f, sizeof(U32));
      const U32 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
      const U32 bits = (f != f) ? splat<U32>(uint32_t(0x7FC0)) : rounded;
      store<U16>(out + p, __builtin_convertvector(bits, U16));
    }
    for (; p < n; ++p) out[p] = float_to_bf16_bits(in[p]);
  }
}

// Backward of one tile (see style_conv.cpp for the formulas).
template <typename T>
struct BackwardTileArgs {
  const T* w_packed = nullptr;   // W packed for rows = c_out, k = c_in (as in the forward)
  const T* wt_packed = nullptr;  // W^T packed for rows = c_in, k = c_out
  const T* bias = nullptr;       // padded like w_packed's rows, or nullptr
  int64_t c_in = 0, c_out = 0, n = 0;
  const T* x = nullptr;
  int64_t ldx = 0;
  const T* g = nullptr;
  int64_t ldg = 0;
  const T* scale = nullptr;
  int64_t lds = 0;
  const T* conv = nullptr;  // conv (bias included) kept by the forward, or nullptr: recompute it
  int64_t ldconv = 0;
  T* grad_scale = nullptr;  // nullptr: not wanted
  int64_t ld_grad_scale = 0;
  T* gm = nullptr;  // scratch (c_out x n), nullptr when neither grad_x, grad_W nor grad_bias is wanted
  int64_t ldgm = 0;
  T* bias_sums = nullptr;  // grad_bias partial sums (c_out), or nullptr
  T* weight_sums = nullptr;  // grad_W partial sums (c_out x c_in, row-major), or nullptr
  T* x_t = nullptr;          // scratch for x^T (n x c_in_pad, zero padded), needed with weight_sums
  int64_t c_in_pad = 0;      // c_in rounded up to the kernel's pixel block (V * NB)
  T* grad_x = nullptr;     // nullptr: not wanted
  int64_t ld_grad_x = 0;
};

template <typename T, int V, int MB, int NB>
DDIF_ALWAYS_INLINE void backward_tile(const BackwardTileArgs<T>& a) {
  if (a.grad_scale && a.conv) {
    grad_from_kept_conv_tile<T, V>(a.g, a.ldg, a.scale, a.lds, a.conv, a.ldconv, a.grad_scale, a.ld_grad_scale, a.gm,
                                   a.ldgm, a.c_out, a.n);
  } else if (a.grad_scale) {
    TileArgs<T> t;
    t.a_packed = a.w_packed;
    t.row_bias = a.bias;
    t.rows = a.c_out;
    t.k = a.c_in;
    t.b = a.x;
    t.ldb = a.ldx;
    t.n = a.n;
    t.in0 = a.g;
    t.ld_in0 = a.ldg;
    t.in1 = a.scale;
    t.ld_in1 = a.lds;
    t.out0 = a.grad_scale;
    t.ld_out0 = a.ld_grad_scale;
    t.out1 = a.gm;
    t.ld_out1 = a.ldgm;
    gemm_tile<T, V, MB, NB, Epilogue::kGradScaleGm>(t);
  } else if (a.gm) {
    grad_modulation_tile<T, V>(a.g, a.ldg, a.scale, a.lds, a.gm, a.ldgm, a.c_out, a.n);
  }
  if (a.bias_sums) add_row_sums<T, V>(a.gm, a.ldgm, a.c_out, a.n, a.bias_sums);
  if (a.weight_sums) {
    transpose_tile(a.x, a.ldx, a.c_in, a.n, a.x_t, a.c_in_pad);
    gemm_accumulate<T, V, MB, NB>(a.gm, a.ldgm, a.c_out, a.n, a.x_t, a.c_in_pad, a.c_in, a.c_in_pad, a.weight_sums,
                                  a.c_in);
  }
  if (a.grad_x) {
    TileArgs<T> t;
    t.a_packed = a.wt_packed;
    t.rows = a.c_in;
    t.k = a.c_out;
    t.b = a.gm;
    t.ldb = a.ldgm;
    t.n = a.n;
    t.out0 = a.grad_x;
    t.ld_out0 = a.ld_grad_x;
    gemm_tile<T, V, MB, NB, Epilogue::kStore>(t);
  }
}

// Entry points of one instruction set.
struct KernelSet {
  const char* isa;
  int mb;           // rows per register block: the packing granularity of A
  int pixel_block;  // pixels per register block (V * NB) for float; x^T rows are padded to it
  void (*forward_f32)(const TileArgs<float>&);
  void (*forward_f64)(const TileArgs<double>&);
  void (*backward_f32)(const BackwardTileArgs<float>&);
  void (*backward_f64)(const BackwardTileArgs<double>&);
  void (*widen_bf16)(const uint16_t*, int64_t, float*, int64_t, int64_t, int64_t);
  void (*narrow_bf16)(const float*, int64_t, uint16_t*, int64_t, int64_t, int64_t);
};

// The best kernel set this CPU supports (chosen once).
const KernelSet& kernels();

}  // namespace cpu
}  // namespace ddif_ext
