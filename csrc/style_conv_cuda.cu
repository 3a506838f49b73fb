// CUDA kernels of the CSM style-modulated 1x1 convolution of DDIF (Cao et al., Information Fusion
// 104, 2024, arXiv:2304.04774):
//     y = conv1x1(x; weight, bias) * (1 + scale) + shift        (per-pixel scale / shift maps)
//
// Per image the 1x1 convolution is the GEMM  conv (C_out x P) = W (C_out x C_in) . x (C_in x P).
// One kernel computes a 64 x 64 output tile of it (fp32 accumulation, fp64 for double) and applies
// the modulation in its epilogue, so y is written once and conv never reaches memory:
//   - half / bfloat16 on tensor cores (WMMA 16x16x16, fp32 accumulators; sm_70+ / sm_80+),
//   - float / double (and half types on older GPUs) on a tiled shared-memory SIMT GEMM.
// Backward, with g = dL/dy:
//   grad_scale = g * conv, gm = g * (1 + scale): the same GEMM kernel with another epilogue (conv
//                recomputed from x), or an elementwise kernel when the forward kept conv;
//   grad_x     = W^T gm: the same GEMM kernel with A = W^T and a plain store;
//   grad_W     = sum_b gm_b x_b^T and grad_bias = sum gm: a split-K reduction kernel over pixels
//                with fp32 (fp64) atomics;
//   grad_shift = g (returned by the Python wrapper).
// Only ATen / c10 headers are used (no cuBLAS), so a partial CUDA toolkit builds it.
#include "style_conv.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <algorithm>
#include <type_traits>

namespace ddif_ext {
namespace cuda_kernels {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

enum class Epilogue : int {
  kModulate,     // out0 = conv * (1 + in0) + in1; out1 = conv if given        (in0 = scale, in1 = shift)
  kStore,        // out0 = conv
  kGradScaleGm,  // out0 = in0 * conv if given; out1 = in0 * (1 + in1) if given  (in0 = g, in1 = scale)
};

// Batched GEMM  C[batch] (M x N) = A (M x K) . B[batch] (K x N) + bias, with an epilogue on C.
template <typename scalar_t>
struct GemmParams {
  const scalar_t* a;  // A[m][k] = a[m * a_sm + k * a_sk]  (W, or W^T through the strides)
  int64_t a_sm, a_sk;
  const scalar_t* bias;  // M entries, or nullptr
  int64_t M, K, N;
  const scalar_t* b;  // B[batch][k][n] = b[batch * b_batch + k * N + n]
  int64_t b_batch;
  // Epilogue maps are (batch, M, N) contiguous.
  const scalar_t* in0;
  const scalar_t* in1;
  scalar_t* out0;
  scalar_t* out1;
};

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t to_acc(scalar_t v) {
  return static_cast<acc_t>(v);
}

template <Epilogue E, typename scalar_t, typename acc_t>
__device__ __forceinline__ void apply_epilogue(const GemmParams<scalar_t>& p, int64_t batch, int64_t m, int64_t n,
                                               acc_t conv) {
  const int64_t idx = (batch * p.M + m) * p.N + n;
  if (p.bias != nullptr) conv += to_acc<acc_t>(p.bias[m]);
  if constexpr (E == Epilogue::kModulate) {
    const acc_t s = to_acc<acc_t>(p.in0[idx]);
    const acc_t t = to_acc<acc_t>(p.in1[idx]);
    p.out0[idx] = static_cast<scalar_t>(conv * (acc_t(1) + s) + t);
    if (p.out1 != nullptr) p.out1[idx] = static_cast<scalar_t>(conv);
  } else if constexpr (E == Epilogue::kStore) {
    p.out0[idx] = static_cast<scalar_t>(conv);
  } else {
    const acc_t g = to_acc<acc_t>(p.in0[idx]);
    if (p.out0 != nullptr) p.out0[idx] = static_cast<scalar_t>(g * conv);
    if (p.out1 != nullptr) p.out1[idx] = static_cast<scalar_t>(g * (acc_t(1) + to_acc<acc_t>(p.in1[idx])));
  }
}

// ---------------------------------------------------------------------------------------------
// SIMT GEMM: 64 x 64 tile per block, 256 threads, each 4 rows x 4 pixels (pixels 16 apart so a
// half-warp touches 16 consecutive pixels of one row: coalesced epilogue loads and stores).
// ---------------------------------------------------------------------------------------------
constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kSimtTileK = 16;
constexpr int kSimtThreads = 256;

template <Epilogue E, typename scalar_t>
__global__ void __launch_bounds__(kSimtThreads) gemm_simt_kernel(const GemmParams<scalar_t> p) {
  using acc_t = typename AccType<scalar_t>::type;
  __shared__ acc_t a_tile[kSimtTileK][kTileM + 1];  // a_tile[k][m]: broadcast reads in the k-loop
  __shared__ acc_t b_tile[kSimtTileK][kTileN];      // b_tile[k][n]
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t n0 = int64_t(blockIdx.x) * kTileN;
  const int64_t m0 = int64_t(blockIdx.y) * kTileM;
  const int64_t batch = blockIdx.z;
  const scalar_t* b_img = p.b + batch * p.b_batch;

  acc_t acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[r][j] = acc_t(0);
  }

  for (int64_t k0 = 0; k0 < p.K; k0 += kSimtTileK) {
    for (int i = tid; i < kTileM * kSimtTileK; i += kSimtThreads) {
      const int mm = i / kSimtTileK, kk = i % kSimtTileK;
      const int64_t m = m0 + mm, k = k0 + kk;
      a_tile[kk][mm] = (m < p.M && k < p.K) ? to_acc<acc_t>(p.a[m * p.a_sm + k * p.a_sk]) : acc_t(0);
    }
    for (int i = tid; i < kSimtTileK * kTileN; i += kSimtThreads) {
      const int kk = i / kTileN, nn = i % kTileN;
      const int64_t k = k0 + kk, n = n0 + nn;
      b_tile[kk][nn] = (k < p.K && n < p.N) ? to_acc<acc_t>(b_img[k * p.N + n]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kSimtTileK; ++kk) {
      acc_t av[4], bv[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) av[r] = a_tile[kk][ty * 4 + r];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = b_tile[kk][tx + 16 * j];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[r][j] += av[r] * bv[j];
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 4; ++r) {
    const int64_t m = m0 + ty * 4 + r;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t n = n0 + tx + 16 * j;
      if (n < p.N) apply_epilogue<E, scalar_t, acc_t>(p, batch, m, n, acc[r][j]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core GEMM for half / bfloat16: 64 x 64 tile, 4 warps in 2 x 2, each 32 x 32 outputs as
// 2 x 2 WMMA 16x16x16 fragments with fp32 accumulators. The accumulators go through shared
// memory so that the epilogue walks rows with coalesced accesses.
// ---------------------------------------------------------------------------------------------
constexpr int kWmmaTileK = 32;
constexpr int kWmmaThreads = 128;
constexpr int kPadHalf = 8;   // keeps WMMA leading dimensions multiples of 8 halves and rows off-bank
constexpr int kPadFloat = 4;  // multiple of 4 floats for store_matrix_sync

template <typename scalar_t>
struct WmmaType;
template <>
struct WmmaType<at::Half> {
  using type = __half;
  static constexpr int kMinArch = 700;
  static __device__ __forceinline__ type from_float(float v) { return __float2half(v); }
};
template <>
struct WmmaType<at::BFloat16> {
  using type = __nv_bfloat16;
  static constexpr int kMinArch = 800;
  static __device__ __forceinline__ type from_float(float v) { return __float2bfloat16(v); }
};

template <Epilogue E, typename scalar_t>
__global__ void __launch_bounds__(kWmmaThreads) gemm_wmma_kernel(const GemmParams<scalar_t> p) {
#if defined(__CUDA_ARCH__)
  if constexpr (__CUDA_ARCH__ >= WmmaType<scalar_t>::kMinArch) {
    namespace wmma = nvcuda::wmma;
    using W = WmmaType<scalar_t>;
    using T = typename W::type;
    __shared__ __align__(128) T a_tile[kTileM][kWmmaTileK + kPadHalf];  // row-major (m, k)
    __shared__ __align__(128) T b_tile[kWmmaTileK][kTileN + kPadHalf];  // row-major (k, n)
    __shared__ __align__(128) float c_tile[kTileM][kTileN + kPadFloat];

    const int tid = threadIdx.x;
    const int warp = tid / 32;
    const int warp_m = warp / 2, warp_n = warp % 2;
    const int64_t n0 = int64_t(blockIdx.x) * kTileN;
    const int64_t m0 = int64_t(blockIdx.y) * kTileM;
    const int64_t batch = blockIdx.z;
    const scalar_t* b_img = p.b + batch * p.b_batch;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    }

    for (int64_t k0 = 0; k0 < p.K; k0 += kWmmaTileK) {
      for (int i = tid; i < kTileM * kWmmaTileK; i += kWmmaThreads) {
        const int mm = i / kWmmaTileK, kk = i % kWmmaTileK;
        const int64_t m = m0 + mm, k = k0 + kk;
        a_tile[mm][kk] = W::from_float((m < p.M && k < p.K) ? static_cast<float>(p.a[m * p.a_sm + k * p.a_sk]) : 0.0f);
      }
      for (int i = tid; i < kWmmaTileK * kTileN; i += kWmmaThreads) {
        const int kk = i / kTileN, nn = i % kTileN;
        const int64_t k = k0 + kk, n = n0 + nn;
        b_tile[kk][nn] = W::from_float((k < p.K && n < p.N) ? static_cast<float>(b_img[k * p.N + n]) : 0.0f);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kWmmaTileK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a_frag[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b_frag[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          wmma::load_matrix_sync(a_frag[i], &a_tile[warp_m * 32 + i * 16][kk], kWmmaTileK + kPadHalf);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          wmma::load_matrix_sync(b_frag[j], &b_tile[kk][warp_n * 32 + j * 16], kTileN + kPadHalf);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
        }
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::store_matrix_sync(&c_tile[warp_m * 32 + i * 16][warp_n * 32 + j * 16], acc[i][j], kTileN + kPadFloat,
                                wmma::mem_row_major);
      }
    }
    __syncthreads();
    for (int i = tid; i < kTileM * kTileN; i += kWmmaThreads) {
      const int mm = i / kTileN, nn = i % kTileN;
      const int64_t m = m0 + mm, n = n0 + nn;
      if (m < p.M && n < p.N) apply_epilogue<E, scalar_t, float>(p, batch, m, n, c_tile[mm][nn]);
    }
  } else {
    __trap();  // the host launches this kernel only on GPUs with the tensor-core type (see use_wmma)
  }
#endif
}

// ---------------------------------------------------------------------------------------------
// Elementwise backward when no GEMM is needed: grad_scale = g * conv (kept), gm = g * (1 + scale).
// ---------------------------------------------------------------------------------------------
template <typename scalar_t>
__global__ void grad_modulation_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ scale,
                                       const scalar_t* __restrict__ conv, scalar_t* __restrict__ grad_scale,
                                       scalar_t* __restrict__ gm, int64_t numel) {
  using acc_t = typename AccType<scalar_t>::type;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += int64_t(gridDim.x) * blockDim.x) {
    const acc_t gv = to_acc<acc_t>(g[i]);
    if (grad_scale != nullptr) grad_scale[i] = static_cast<scalar_t>(gv * to_acc<acc_t>(conv[i]));
    if (gm != nullptr) gm[i] = static_cast<scalar_t>(gv * (acc_t(1) + to_acc<acc_t>(scale[i])));
  }
}

// ---------------------------------------------------------------------------------------------
// grad_W (C_out x C_in) = sum over all B * P pixels of gm[o, q] x[i, q], and grad_bias[o] = sum gm:
// a 64 x 64 tile of grad_W per block over one chunk of pixels (split-K), added atomically.
// ---------------------------------------------------------------------------------------------
constexpr int kReduceTileK = 32;

__device__ __forceinline__ void atomic_add(float* address, float v) { atomicAdd(address, v); }

__device__ __forceinline__ void atomic_add(double* address, double v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
  auto* bits = reinterpret_cast<unsigned long long*>(address);
  unsigned long long old = *bits, assumed;
  do {
    assumed = old;
    old = atomicCAS(bits, assumed, __double_as_longlong(v + __longlong_as_double(assumed)));
  } while (assumed != old);
#else
  atomicAdd(address, v);
#endif
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSimtThreads)
    weight_grad_kernel(const scalar_t* __restrict__ gm, const scalar_t* __restrict__ x, int64_t c_out, int64_t c_in,
                       int64_t pixels, int64_t total, int64_t chunk, typename AccType<scalar_t>::type* grad_w,
                       typename AccType<scalar_t>::type* grad_b) {
  using acc_t = typename AccType<scalar_t>::type;
  __shared__ acc_t g_tile[kReduceTileK][kTileM + 1];  // g_tile[q][o]
  __shared__ acc_t x_tile[kReduceTileK][kTileN + 1];  // x_tile[q][i]
  const int tid = threadIdx.x;
  const int tx = tid % 16;
  const int ty = tid / 16;
  const int64_t i0 = int64_t(blockIdx.x) * kTileN;
  const int64_t o0 = int64_t(blockIdx.y) * kTileM;
  const int64_t q_begin = int64_t(blockIdx.z) * chunk;
  const int64_t q_end = q_begin + chunk < total ? q_begin + chunk : total;
  const bool sums_bias = grad_b != nullptr && blockIdx.x == 0;

  acc_t acc[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[r][j] = acc_t(0);
  }
  acc_t bias_acc = acc_t(0);

  for (int64_t q0 = q_begin; q0 < q_end; q0 += kReduceTileK) {
    // Consecutive threads read consecutive pixels of one channel row (coalesced).
    for (int i = tid; i < kTileM * kReduceTileK; i += kSimtThreads) {
      const int rr = i / kReduceTileK, qq = i % kReduceTileK;
      const int64_t q = q0 + qq, o = o0 + rr;
      acc_t v = acc_t(0);
      if (q < q_end && o < c_out) {
        const int64_t b = q / pixels, px = q - b * pixels;
        v = to_acc<acc_t>(gm[(b * c_out + o) * pixels + px]);
      }
      g_tile[qq][rr] = v;
    }
    if (grad_w != nullptr) {
      for (int i = tid; i < kTileN * kReduceTileK; i += kSimtThreads) {
        const int cc = i / kReduceTileK, qq = i % kReduceTileK;
        const int64_t q = q0 + qq, ci = i0 + cc;
        acc_t v = acc_t(0);
        if (q < q_end && ci < c_in) {
          const int64_t b = q / pixels, px = q - b * pixels;
          v = to_acc<acc_t>(x[(b * c_in + ci) * pixels + px]);
        }
        x_tile[qq][cc] = v;
      }
    }
    __syncthreads();
    if (grad_w != nullptr) {
#pragma unroll 8
      for (int qq = 0; qq < kReduceTileK; ++qq) {
        acc_t gv[4], xv[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) gv[r] = g_tile[qq][ty * 4 + r];
#pragma unroll
        for (int j = 0; j < 4; ++j) xv[j] = x_tile[qq][tx + 16 * j];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[r][j] += gv[r] * xv[j];
        }
      }
    }
    if (sums_bias && tid < kTileM) {
      for (int qq = 0; qq < kReduceTileK; ++qq) bias_acc += g_tile[qq][tid];
    }
    __syncthreads();
  }

  if (grad_w != nullptr) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t o = o0 + ty * 4 + r;
      if (o >= c_out) continue;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t ci = i0 + tx + 16 * j;
        if (ci < c_in) atomic_add(&grad_w[o * c_in + ci], acc[r][j]);
      }
    }
  }
  if (sums_bias && tid < kTileM && o0 + tid < c_out) atomic_add(&grad_b[o0 + tid], bias_acc);
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------
struct DeviceInfo {
  int major = 0;
  int minor = 0;
  int sms = 1;
};

DeviceInfo device_info(int device) {
  DeviceInfo info;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&info.minor, cudaDevAttrComputeCapabilityMinor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device));
  return info;
}

template <typename scalar_t>
bool use_wmma(const DeviceInfo& info) {
  if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
    return info.major * 100 + info.minor * 10 >= WmmaType<scalar_t>::kMinArch;
  } else {
    return false;
  }
}

template <Epilogue E, typename scalar_t>
void launch_gemm(const GemmParams<scalar_t>& p, int64_t batch, const DeviceInfo& info, cudaStream_t stream) {
  if (batch == 0 || p.M == 0 || p.N == 0) return;
  const int64_t grid_m = (p.M + kTileM - 1) / kTileM;
  const int64_t grid_n = (p.N + kTileN - 1) / kTileN;
  TORCH_CHECK(grid_m <= 65535 && batch <= 65535, "ddif CSM CUDA kernel: ", p.M, " channels x batch ", batch,
              " exceed the launch grid (at most 65535 channel tiles of 64 and 65535 images)");
  TORCH_CHECK(grid_n <= 2147483647LL, "ddif CSM CUDA kernel: too many pixels per image (", p.N, ")");
  const dim3 grid(static_cast<unsigned>(grid_n), static_cast<unsigned>(grid_m), static_cast<unsigned>(batch));
  if constexpr (std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>) {
    if (use_wmma<scalar_t>(info)) {
      gemm_wmma_kernel<E, scalar_t><<<grid, kWmmaThreads, 0, stream>>>(p);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
  }
  gemm_simt_kernel<E, scalar_t><<<grid, kSimtThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
GemmParams<scalar_t> conv_gemm_params(const CsmShape& s, const at::Tensor& w, const at::Tensor& bias,
                                      const at::Tensor& x) {
  GemmParams<scalar_t> p{};
  p.a = w.const_data_ptr<scalar_t>();
  p.a_sm = s.c_in;
  p.a_sk = 1;
  p.bias = bias.defined() ? bias.const_data_ptr<scalar_t>() : nullptr;
  p.M = s.c_out;
  p.K = s.c_in;
  p.N = s.pixels();
  p.b = x.const_data_ptr<scalar_t>();
  p.b_batch = s.c_in * s.pixels();
  return p;
}

}  // namespace cuda_kernels

namespace {

using namespace cuda_kernels;

at::Tensor bias_or_undefined(const std::optional<at::Tensor>& bias) {
  return (bias.has_value() && bias->defined()) ? *bias : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor> csm_forward_cuda(const at::Tensor& x, const at::Tensor& weight,
                                                    const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                                                    const at::Tensor& shift, bool keep_conv) {
  const CsmShape s =
      csm_check_inputs("ddif::csm_forward", c10::DeviceType::CUDA, x, weight, bias, scale, &shift);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty({s.batch, s.c_out, s.height, s.width}, x.options());
  at::Tensor conv = keep_conv ? at::empty_like(out) : at::empty({0}, x.options());
  if (out.numel() == 0) return {out, conv};
  const DeviceInfo info = device_info(x.get_device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor b = bias_or_undefined(bias);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "csm_forward_cuda", [&] {
    GemmParams<scalar_t> p = conv_gemm_params<scalar_t>(s, weight, b, x);
    p.in0 = scale.const_data_ptr<scalar_t>();
    p.in1 = shift.const_data_ptr<scalar_t>();
    p.out0 = out.mutable_data_ptr<scalar_t>();
    p.out1 = keep_conv ? conv.mutable_data_ptr<scalar_t>() : nullptr;
    launch_gemm<Epilogue::kModulate, scalar_t>(p, s.batch, info, stream);
  });
  return {out, conv};
}

CsmGrads csm_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                           const std::optional<at::Tensor>& conv, std::array<bool, 4> output_mask) {
  const char* op = "ddif::csm_backward";
  const CsmShape s = csm_check_inputs(op, c10::DeviceType::CUDA, x, weight, bias, scale, nullptr);
  csm_check_grad_out(op, grad_out, x, s, c10::DeviceType::CUDA);
  const bool conv_kept = csm_check_kept_conv(op, conv, x, s, c10::DeviceType::CUDA);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor b = bias_or_undefined(bias);
  const bool want_x = output_mask[kGradX], want_w = output_mask[kGradWeight];
  const bool want_b = output_mask[kGradBias] && b.defined(), want_scale = output_mask[kGradScale];
  const bool want_gm = want_x || want_w || want_b;
  const at::ScalarType acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;

  at::Tensor grad_x = want_x ? at::empty_like(x) : at::Tensor();
  at::Tensor grad_scale = want_scale ? at::empty_like(scale) : at::Tensor();
  at::Tensor grad_w = want_w ? at::zeros({s.c_out, s.c_in}, x.options().dtype(acc)) : at::Tensor();
  at::Tensor grad_b = want_b ? at::zeros({s.c_out}, x.options().dtype(acc)) : at::Tensor();
  const int64_t total = s.batch * s.pixels();

  if (total == 0) {
    if (want_x) grad_x.zero_();
  } else if (want_gm || want_scale) {
    const DeviceInfo info = device_info(x.get_device());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    // gm = g * (1 + scale), the gradient at the conv output, in the input dtype (as autograd's).
    at::Tensor gm = want_gm ? at::empty_like(grad_out) : at::Tensor();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "csm_backward_cuda", [&] {
      using acc_t = typename AccType<scalar_t>::type;
      scalar_t* gm_ptr = want_gm ? gm.mutable_data_ptr<scalar_t>() : nullptr;
      scalar_t* gs_ptr = want_scale ? grad_scale.mutable_data_ptr<scalar_t>() : nullptr;
      if (want_scale && !conv_kept) {
        GemmParams<scalar_t> p = conv_gemm_params<scalar_t>(s, weight, b, x);
        p.in0 = grad_out.const_data_ptr<scalar_t>();
        p.in1 = scale.const_data_ptr<scalar_t>();
        p.out0 = gs_ptr;
        p.out1 = gm_ptr;
        launch_gemm<Epilogue::kGradScaleGm, scalar_t>(p, s.batch, info, stream);
      } else {
        const int64_t numel = grad_out.numel();
        const int threads = 256;
        const int64_t blocks = std::min<int64_t>((numel + threads - 1) / threads, int64_t(info.sms) * 16);
        grad_modulation_kernel<scalar_t><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
            grad_out.const_data_ptr<scalar_t>(), scale.const_data_ptr<scalar_t>(),
            conv_kept ? conv->const_data_ptr<scalar_t>() : nullptr, want_scale ? gs_ptr : nullptr, gm_ptr, numel);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      if (want_x) {
        GemmParams<scalar_t> p{};
        p.a = weight.const_data_ptr<scalar_t>();  // A = W^T: A[m][k] = W[k][m]
        p.a_sm = 1;
        p.a_sk = s.c_in;
        p.bias = nullptr;
        p.M = s.c_in;
        p.K = s.c_out;
        p.N = s.pixels();
        p.b = gm.const_data_ptr<scalar_t>();
        p.b_batch = s.c_out * s.pixels();
        p.out0 = grad_x.mutable_data_ptr<scalar_t>();
        launch_gemm<Epilogue::kStore, scalar_t>(p, s.batch, info, stream);
      }
      if (want_w || want_b) {
        const int64_t tiles_i = want_w ? (s.c_in + kTileN - 1) / kTileN : 1;
        const int64_t tiles_o = (s.c_out + kTileM - 1) / kTileM;
        // Enough pixel chunks to give every SM a few blocks, each at least a few k-steps long.
        const int64_t max_splits = (total + 4 * kReduceTileK - 1) / (4 * kReduceTileK);
        const int64_t splits =
            std::max<int64_t>(1, std::min<int64_t>({max_splits, (int64_t(info.sms) * 4 + tiles_i * tiles_o - 1) /
                                                                   (tiles_i * tiles_o), 65535}));
        int64_t chunk = (total + splits - 1) / splits;
        chunk = (chunk + kReduceTileK - 1) / kReduceTileK * kReduceTileK;
        const int64_t grid_z = (total + chunk - 1) / chunk;
        TORCH_CHECK(tiles_o <= 65535, op, ": too many output channels for the CUDA weight-gradient grid");
        const dim3 grid(static_cast<unsigned>(tiles_i), static_cast<unsigned>(tiles_o), static_cast<unsigned>(grid_z));
        weight_grad_kernel<scalar_t><<<grid, kSimtThreads, 0, stream>>>(
            gm.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), s.c_out, s.c_in, s.pixels(), total, chunk,
            want_w ? grad_w.mutable_data_ptr<acc_t>() : nullptr, want_b ? grad_b.mutable_data_ptr<acc_t>() : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  if (grad_w.defined()) grad_w = grad_w.to(weight.scalar_type()).reshape(weight.sizes());
  if (grad_b.defined()) grad_b = grad_b.to(weight.scalar_type());
  return {grad_x, grad_w, grad_b, grad_scale};
}

}  // namespace
}  // namespace ddif_ext

TORCH_LIBRARY_IMPL(ddif, CUDA, m) {
  m.impl("csm_forward", &ddif_ext::csm_forward_cuda);
  m.impl("csm_backward", &ddif_ext::csm_backward_cuda);
}
