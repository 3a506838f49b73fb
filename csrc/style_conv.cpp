// CPU kernels (ATen + OpenMP through at::parallel_for) of the CSM style-modulated 1x1 convolution
//     y = conv1x1(x; weight, bias) * (1 + scale) + shift
// from DDIF (Cao et al., Information Fusion 104, 2024, arXiv:2304.04774), and the registration of
// the ddif_ext operators.
//
// Why fused: eager PyTorch runs the convolution, then `1 + scale`, the multiply and the add, each a
// full pass over (B, C_out, H, W) memory (and autograd keeps the conv output for backward). Here the
// register-blocked kernels of style_conv_cpu_kernel.h apply the modulation to the GEMM results
// while they are still in registers, so every large tensor is read or written once.
//
// Backward recomputes the convolution (cheaper than storing it) and, per pixel tile of an image:
//   gm = g * (1 + scale)          gradient at the conv output, kept in an L2-sized scratch tile
//   grad_scale = g * conv         in the epilogue of the recomputed GEMM
//   grad_x = W^T gm               second register-blocked GEMM on the scratch tile
//   grad_bias += sum_p gm         grad_W += gm x^T   (per-chunk partial sums, reduced at the end)
// grad_shift is g itself and is returned by the Python wrapper without a kernel.
//
// float32 / float64 run in place on the tensors. bfloat16 / float16 tiles are widened into fp32
// scratch buffers (fp32 accumulation), computed by the fp32 kernels and rounded once on the way out.
#include "style_conv.h"
#include "style_conv_cpu_kernel.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>
#include <vector>

namespace ddif_ext {
namespace cpu {

#if defined(__x86_64__) || defined(__i386__)
#define DDIF_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#define DDIF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#endif

// Register blocks: MB rows x NB vectors. AVX-512 has 32 vector registers (8 x 2 accumulators + 2
// B vectors + 1 broadcast); AVX2 and the 16-byte baseline (SSE2 / NEON) have 16.
#define DDIF_DEFINE_KERNEL_SET(NAME, TARGET, V_F32, V_F64, MB, NB)                                              \
  TARGET void forward_##NAME##_f32(const TileArgs<float>& a) {                                                 \
    gemm_tile<float, V_F32, MB, NB, Epilogue::kModulate>(a);                                                   \
  }                                                                                                            \
  TARGET void forward_##NAME##_f64(const TileArgs<double>& a) {                                                \
    gemm_tile<double, V_F64, MB, NB, Epilogue::kModulate>(a);                                                  \
  }                                                                                                            \
  TARGET void backward_##NAME##_f32(const BackwardTileArgs<float>& a) { backward_tile<float, V_F32, MB, NB>(a); } \
  TARGET void backward_##NAME##_f64(const BackwardTileArgs<double>& a) {                                       \
    backward_tile<double, V_F64, MB, NB>(a);                                                                   \
  }                                                                                                            \
  TARGET void widen_bf16_##NAME(const uint16_t* s, int64_t lds, float* d, int64_t ldd, int64_t r, int64_t n) {  \
    widen_bf16_rows<V_F32>(s, lds, d, ldd, r, n);                                                              \
  }                                                                                                            \
  TARGET void narrow_bf16_##NAME(const float* s, int64_t lds, uint16_t* d, int64_t ldd, int64_t r, int64_t n) { \
    narrow_bf16_rows<V_F32>(s, lds, d, ldd, r, n);                                                             \
  }                                                                                                            \
  const KernelSet kernels_##NAME{#NAME,                  MB,                    V_F32 * NB,                   \
                                 &forward_##NAME##_f32, &forward_##NAME##_f64, &backward_##NAME##_f32,        \
                                 &backward_##NAME##_f64, &widen_bf16_##NAME,   &narrow_bf16_##NAME};

DDIF_DEFINE_KERNEL_SET(baseline, , 4, 2, 4, 2)
#ifdef DDIF_TARGET_AVX512
DDIF_DEFINE_KERNEL_SET(avx2, DDIF_TARGET_AVX2, 8, 4, 4, 2)
DDIF_DEFINE_KERNEL_SET(avx512, DDIF_TARGET_AVX512, 16, 8, 8, 2)
#endif

const KernelSet& kernels() {
  static const KernelSet* chosen = [] {
#ifdef DDIF_TARGET_AVX512
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
      return &kernels_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kernels_avx2;
#endif
    return &kernels_baseline;
  }();
  return *chosen;
}

}  // namespace cpu

namespace {

using cpu::BackwardTileArgs;
using cpu::TileArgs;

// Pixel tiles: a multiple of every kernel's pixel block (<= 32), small enough that a backward tile's
// scratch (gm and the widened inputs) stays in a typical per-core L2, and enough tiles to keep
// every thread busy on small images.
constexpr int64_t kTileAlign = 64;
constexpr int64_t kTileBytes = 256 * 1024;
constexpr int64_t kMaxTilePixels = 8192;
// Scratch rows are padded so that consecutive rows do not map to the same cache sets (a row
// stride of a power of two, like the image's own 65536-pixel rows, would thrash L1 / L2).
constexpr int64_t kScratchPad = 16;

int64_t tile_pixels(const CsmShape& s, int64_t acc_bytes) {
  const int64_t per_pixel = std::max<int64_t>((s.c_in + 2 * s.c_out) * acc_bytes, 1);
  int64_t t = std::min(kMaxTilePixels, kTileBytes / per_pixel);
  const int64_t threads = at::get_num_threads();
  const int64_t tiles_per_image_for_threads = (2 * threads + s.batch - 1) / s.batch;
  t = std::min(t, (s.pixels() + tiles_per_image_for_threads - 1) / tiles_per_image_for_threads);
  t = std::max<int64_t>(kTileAlign, (t + kTileAlign - 1) / kTileAlign * kTileAlign);
  return std::min<int64_t>(t, s.pixels());
}

// a (rows x k, row-major) -> blocks of mb rows, each (k x mb), zero padded:
// packed[(blk * k + kk) * mb + r] = a[blk * mb + r, kk]
template <typename T>
std::vector<T> pack_rows(const T* a, int64_t rows, int64_t k, int64_t row_stride, int64_t col_stride, int mb) {
  const int64_t blocks = (rows + mb - 1) / mb;
  std::vector<T> packed(blocks * k * mb, T(0));
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t blk = row / mb, r = row % mb;
    for (int64_t kk = 0; kk < k; ++kk) packed[(blk * k + kk) * mb + r] = a[row * row_stride + kk * col_stride];
  }
  return packed;
}

template <typename T>
std::vector<T> padded_bias(const T* bias, int64_t rows, int mb) {
  std::vector<T> padded((rows + mb - 1) / mb * mb, T(0));
  if (bias) std::copy(bias, bias + rows, padded.begin());
  return padded;
}

template <typename acc_t>
void run_forward(const TileArgs<acc_t>& a) {
  if constexpr (std::is_same_v<acc_t, float>) {
    cpu::kernels().forward_f32(a);
  } else {
    cpu::kernels().forward_f64(a);
  }
}

template <typename acc_t>
void run_backward(const BackwardTileArgs<acc_t>& a) {
  if constexpr (std::is_same_v<acc_t, float>) {
    cpu::kernels().backward_f32(a);
  } else {
    cpu::kernels().backward_f64(a);
  }
}

template <typename scalar_t, typename acc_t>
void widen_rows(const scalar_t* __restrict__ src, int64_t src_ld, acc_t* __restrict__ dst, int64_t dst_ld,
                int64_t rows, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && std::is_same_v<acc_t, float>) {
    cpu::kernels().widen_bf16(reinterpret_cast<const uint16_t*>(src), src_ld, dst, dst_ld, rows, n);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = 0; p < n; ++p) dst[r * dst_ld + p] = static_cast<acc_t>(src[r * src_ld + p]);
  }
}

template <typename scalar_t, typename acc_t>
void narrow_rows(const acc_t* __restrict__ src, int64_t src_ld, scalar_t* __restrict__ dst, int64_t dst_ld,
                 int64_t rows, int64_t n) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16> && std::is_same_v<acc_t, float>) {
    cpu::kernels().narrow_bf16(src, src_ld, reinterpret_cast<uint16_t*>(dst), dst_ld, rows, n);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t p = 0; p < n; ++p) dst[r * dst_ld + p] = static_cast<scalar_t>(src[r * src_ld + p]);
  }
}

// A pointer into the tensor (float / double) or into a widened scratch copy (reduced precision).
template <typename scalar_t, typename acc_t>
struct Operand {
  const acc_t* ptr;
  int64_t ld;
};

// Copies (and widens) a (rows x n) slab into contiguous, padded scratch.
template <typename scalar_t, typename acc_t>
Operand<scalar_t, acc_t> pack_operand(const scalar_t* src, int64_t ld, int64_t rows, int64_t n,
                                      std::vector<acc_t>& scratch, int64_t scratch_ld) {
  widen_rows(src, ld, scratch.data(), scratch_ld, rows, n);
  return {scratch.data(), scratch_ld};
}

template <typename scalar_t, typename acc_t>
Operand<scalar_t, acc_t> widen_operand(const scalar_t* src, int64_t ld, int64_t rows, int64_t n,
                                       std::vector<acc_t>& scratch, int64_t scratch_ld) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return {src, ld};
  } else {
    widen_rows(src, ld, scratch.data(), scratch_ld, rows, n);
    return {scratch.data(), scratch_ld};
  }
}

template <typename scalar_t>
void forward_impl(const CsmShape& s, const scalar_t* x, const at::opmath_type<scalar_t>* w,
                  const at::opmath_type<scalar_t>* bias, const scalar_t* scale, const scalar_t* shift, scalar_t* out,
                  scalar_t* conv) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const int mb = cpu::kernels().mb;
  const std::vector<acc_t> w_packed = pack_rows(w, s.c_out, s.c_in, s.c_in, 1, mb);
  const std::vector<acc_t> bias_padded = padded_bias(bias, s.c_out, mb);
  const int64_t P = s.pixels();
  const int64_t T = tile_pixels(s, sizeof(acc_t));
  const int64_t tiles = (P + T - 1) / T;
  const int64_t ldT = T + kScratchPad;

  at::parallel_for(0, s.batch * tiles, 1, [&](int64_t begin, int64_t end) {
    // x is always packed: the k-loop reads it once per row block, and packed it stays in L2.
    std::vector<acc_t> x_buf(s.c_in * ldT), scale_buf(direct ? 0 : s.c_out * ldT),
        shift_buf(direct ? 0 : s.c_out * ldT), out_buf(direct ? 0 : s.c_out * ldT),
        conv_buf(direct || !conv ? 0 : s.c_out * ldT);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t b = tile / tiles;
      const int64_t p0 = (tile % tiles) * T;
      const int64_t n = std::min(T, P - p0);
      const int64_t x_off = b * s.c_in * P + p0;
      const int64_t map_off = b * s.c_out * P + p0;
      TileArgs<acc_t> a;
      a.a_packed = w_packed.data();
      a.row_bias = bias_padded.data();
      a.rows = s.c_out;
      a.k = s.c_in;
      a.n = n;
      const auto xo = pack_operand(x + x_off, P, s.c_in, n, x_buf, ldT);
      const auto so = widen_operand(scale + map_off, P, s.c_out, n, scale_buf, ldT);
      const auto to = widen_operand(shift + map_off, P, s.c_out, n, shift_buf, ldT);
      a.b = xo.ptr;
      a.ldb = xo.ld;
      a.in0 = so.ptr;
      a.ld_in0 = so.ld;
      a.in1 = to.ptr;
      a.ld_in1 = to.ld;
      if constexpr (direct) {
        a.out0 = out + map_off;
        a.ld_out0 = P;
        a.out1 = conv ? conv + map_off : nullptr;
        a.ld_out1 = P;
        run_forward(a);
      } else {
        a.out0 = out_buf.data();
        a.ld_out0 = ldT;
        a.out1 = conv ? conv_buf.data() : nullptr;
        a.ld_out1 = ldT;
        run_forward(a);
        narrow_rows(out_buf.data(), ldT, out + map_off, P, s.c_out, n);
        if (conv) narrow_rows(conv_buf.data(), ldT, conv + map_off, P, s.c_out, n);
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(const CsmShape& s, const scalar_t* g, const scalar_t* x, const at::opmath_type<scalar_t>* w,
                   const at::opmath_type<scalar_t>* bias, const scalar_t* scale, const scalar_t* conv,
                   std::array<bool, 4> mask,
                   scalar_t* grad_x, at::opmath_type<scalar_t>* grad_w, at::opmath_type<scalar_t>* grad_b,
                   scalar_t* grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;
  const bool want_x = mask[kGradX], want_w = mask[kGradWeight], want_b = mask[kGradBias];
  const bool want_scale = mask[kGradScale];
  const bool want_gm = want_x || want_w || want_b;
  const bool need_x = (want_scale && !conv) || want_w;
  const int mb = cpu::kernels().mb;
  // x^T rows padded to the pixel block (also a multiple of the fp64 block, which is half as wide).
  const int64_t c_in_pad = (s.c_in + cpu::kernels().pixel_block - 1) / cpu::kernels().pixel_block *
                           cpu::kernels().pixel_block;
  const std::vector<acc_t> w_packed = pack_rows(w, s.c_out, s.c_in, s.c_in, 1, mb);
  const std::vector<acc_t> wt_packed = pack_rows(w, s.c_in, s.c_out, 1, s.c_in, mb);
  const std::vector<acc_t> bias_padded = padded_bias(bias, s.c_out, mb);
  const int64_t P = s.pixels();
  const int64_t T = tile_pixels(s, sizeof(acc_t));
  const int64_t tiles = (P + T - 1) / T;
  const int64_t total = s.batch * tiles;
  const int64_t ldT = T + kScratchPad;
  // A fixed number of chunks, each owning its grad_W / grad_bias partial sums: no two threads ever
  // write one accumulator (also when called from inside another parallel region).
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(total, at::get_num_threads()));
  const int64_t w_numel = s.c_out * s.c_in;
  std::vector<acc_t> part_w(want_w ? chunks * w_numel : 0, acc_t(0));
  std::vector<acc_t> part_b(want_b ? chunks * s.c_out : 0, acc_t(0));

  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<acc_t> x_buf(need_x ? s.c_in * ldT : 0), g_buf(direct ? 0 : s.c_out * ldT),
        scale_buf(direct ? 0 : s.c_out * ldT), conv_buf(direct || !conv ? 0 : s.c_out * ldT), gs_buf(direct || !want_scale ? 0 : s.c_out * ldT),
        gx_buf(direct || !want_x ? 0 : s.c_in * ldT), gm_buf(want_gm ? s.c_out * ldT : 0),
        xt_buf(want_w ? T * c_in_pad : 0, acc_t(0));
    for (int64_t chunk = chunk_begin; chunk < chunk_end; ++chunk) {
      for (int64_t tile = chunk * total / chunks; tile < (chunk + 1) * total / chunks; ++tile) {
        const int64_t b = tile / tiles;
        const int64_t p0 = (tile % tiles) * T;
        const int64_t n = std::min(T, P - p0);
        const int64_t x_off = b * s.c_in * P + p0;
        const int64_t map_off = b * s.c_out * P + p0;

        BackwardTileArgs<acc_t> a;
        a.w_packed = w_packed.data();
        a.wt_packed = wt_packed.data();
        a.bias = bias_padded.data();
        a.c_in = s.c_in;
        a.c_out = s.c_out;
        a.n = n;
        Operand<scalar_t, acc_t> xo{nullptr, 0};
        if (need_x) xo = pack_operand(x + x_off, P, s.c_in, n, x_buf, ldT);
        const auto go = widen_operand(g + map_off, P, s.c_out, n, g_buf, ldT);
        const auto so = widen_operand(scale + map_off, P, s.c_out, n, scale_buf, ldT);
        a.x = xo.ptr;
        a.ldx = xo.ld;
        a.g = go.ptr;
        a.ldg = go.ld;
        a.scale = so.ptr;
        a.lds = so.ld;
        if (conv && want_scale) {
          const auto co = widen_operand(conv + map_off, P, s.c_out, n, conv_buf, ldT);
          a.conv = co.ptr;
          a.ldconv = co.ld;
        }
        if (want_scale) {
          if constexpr (direct) {
            a.grad_scale = grad_scale + map_off;
            a.ld_grad_scale = P;
          } else {
            a.grad_scale = gs_buf.data();
            a.ld_grad_scale = ldT;
          }
        }
        if (want_gm) {
          a.gm = gm_buf.data();
          a.ldgm = ldT;
        }
        if (want_b) a.bias_sums = part_b.data() + chunk * s.c_out;
        if (want_w) {
          a.weight_sums = part_w.data() + chunk * w_numel;
          a.x_t = xt_buf.data();
          a.c_in_pad = c_in_pad;
        }
        if (want_x) {
          if constexpr (direct) {
            a.grad_x = grad_x + x_off;
            a.ld_grad_x = P;
          } else {
            a.grad_x = gx_buf.data();
            a.ld_grad_x = ldT;
          }
        }
        run_backward(a);
        if constexpr (!direct) {
          if (want_scale) narrow_rows(gs_buf.data(), ldT, grad_scale + map_off, P, s.c_out, n);
          if (want_x) narrow_rows(gx_buf.data(), ldT, grad_x + x_off, P, s.c_in, n);
        }
      }
    }
  });

  for (int64_t chunk = 0; chunk < (want_w ? chunks : 0); ++chunk) {
    const acc_t* part = part_w.data() + chunk * w_numel;
    for (int64_t i = 0; i < w_numel; ++i) grad_w[i] += part[i];
  }
  for (int64_t chunk = 0; chunk < (want_b ? chunks : 0); ++chunk) {
    const acc_t* part = part_b.data() + chunk * s.c_out;
    for (int64_t o = 0; o < s.c_out; ++o) grad_b[o] += part[o];
  }
}

at::Tensor weight_matrix(const at::Tensor& weight, const CsmShape& s, at::ScalarType acc) {
  return weight.reshape({s.c_out, s.c_in}).to(acc).contiguous();
}

at::Tensor bias_vector(const std::optional<at::Tensor>& bias, at::ScalarType acc) {
  return (bias.has_value() && bias->defined()) ? bias->to(acc).contiguous() : at::Tensor();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> csm_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                                                   const at::Tensor& shift, bool keep_conv) {
  const CsmShape s = csm_check_inputs("ddif::csm_forward", c10::DeviceType::CPU, x, weight, bias, scale, &shift);
  at::Tensor out = at::empty({s.batch, s.c_out, s.height, s.width}, x.options());
  at::Tensor conv = keep_conv ? at::empty_like(out) : at::empty({0}, x.options());
  if (out.numel() == 0) return {out, conv};
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  const at::Tensor w = weight_matrix(weight, s, acc);
  const at::Tensor b = bias_vector(bias, acc);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "csm_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_impl<scalar_t>(s, x.const_data_ptr<scalar_t>(), w.const_data_ptr<acc_t>(),
                           b.defined() ? b.const_data_ptr<acc_t>() : nullptr, scale.const_data_ptr<scalar_t>(),
                           shift.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                           keep_conv ? conv.mutable_data_ptr<scalar_t>() : nullptr);
  });
  return {out, conv};
}

CsmGrads csm_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                          const std::optional<at::Tensor>& conv, std::array<bool, 4> output_mask) {
  const char* op = "ddif::csm_backward";
  const CsmShape s = csm_check_inputs(op, c10::DeviceType::CPU, x, weight, bias, scale, nullptr);
  csm_check_grad_out(op, grad_out, x, s, c10::DeviceType::CPU);
  const bool conv_kept = csm_check_kept_conv(op, conv, x, s, c10::DeviceType::CPU);
  const bool has_bias = bias.has_value() && bias->defined();
  output_mask[kGradBias] = output_mask[kGradBias] && has_bias;

  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  at::Tensor grad_x = output_mask[kGradX] ? at::empty_like(x) : at::Tensor();
  at::Tensor grad_scale = output_mask[kGradScale] ? at::empty_like(scale) : at::Tensor();
  at::Tensor grad_w = output_mask[kGradWeight] ? at::zeros({s.c_out, s.c_in}, x.options().dtype(acc)) : at::Tensor();
  at::Tensor grad_b = output_mask[kGradBias] ? at::zeros({s.c_out}, x.options().dtype(acc)) : at::Tensor();

  if (s.batch * s.pixels() == 0) {
    if (grad_x.defined()) grad_x.zero_();
  } else if (output_mask[kGradX] || output_mask[kGradWeight] || output_mask[kGradBias] || output_mask[kGradScale]) {
    const at::Tensor w = weight_matrix(weight, s, acc);
    const at::Tensor b = bias_vector(bias, acc);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "csm_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_impl<scalar_t>(s, grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              w.const_data_ptr<acc_t>(), b.defined() ? b.const_data_ptr<acc_t>() : nullptr,
                              scale.const_data_ptr<scalar_t>(),
                              conv_kept ? conv->const_data_ptr<scalar_t>() : nullptr, output_mask,
                              grad_x.defined() ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                              grad_w.defined() ? grad_w.mutable_data_ptr<acc_t>() : nullptr,
                              grad_b.defined() ? grad_b.mutable_data_ptr<acc_t>() : nullptr,
                              grad_scale.defined() ? grad_scale.mutable_data_ptr<scalar_t>() : nullptr);
    });
  }
  if (grad_w.defined()) grad_w = grad_w.to(weight.scalar_type()).reshape(weight.sizes());
  if (grad_b.defined()) grad_b = grad_b.to(weight.scalar_type());
  return {grad_x, grad_w, grad_b, grad_scale};
}

const char* cpu_kernel_isa() { return cpu::kernels().isa; }

}  // namespace ddif_ext

TORCH_LIBRARY_FRAGMENT(ddif, m) {
  m.def(
      "csm_forward(Tensor x, Tensor weight, Tensor? bias, Tensor scale, Tensor shift, bool keep_conv=False)"
      " -> (Tensor, Tensor)");
  m.def(
      "csm_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor scale, Tensor? conv,"
      " bool[4] output_mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ddif, CPU, m) {
  m.impl("csm_forward", &ddif_ext::csm_forward_cpu);
  m.impl("csm_backward", &ddif_ext::csm_backward_cpu);
}

#ifndef DDIF_WITH_CUDA
#define DDIF_WITH_CUDA 0
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ddif native kernels: CSM style-modulated 1x1 convolution (ops in torch.ops.ddif)";
  m.attr("with_cuda") = pybind11::bool_(DDIF_WITH_CUDA);
  m.def("cpu_kernel_isa", [] { return std::string(ddif_ext::cpu_kernel_isa()); },
        "Instruction set of the CPU kernels chosen at run time (avx512, avx2 or baseline)");
}
