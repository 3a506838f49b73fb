// CSM style-modulated 1x1 convolution of DDIF (Cao et al., "Diffusion model with disentangled
// modulations for sharpening multispectral and hyperspectral images", Information Fusion 104,
// 2024):   y = conv1x1(x; weight, bias) * (1 + scale) + shift
// with per-pixel (B, C_out, H, W) scale / shift maps.
//
// Declarations and input checks shared by the CPU (style_conv.cpp) and CUDA (style_conv_cuda.cu)
// kernels. Every check names the operator, the argument and what was expected.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <tuple>

namespace ddif_ext {

// Problem sizes of one call; P = H * W pixels per image.
struct CsmShape {
  int64_t batch = 0;
  int64_t c_in = 0;
  int64_t c_out = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t pixels() const { return height * width; }
};

inline bool csm_dtype_supported(at::ScalarType t, c10::DeviceType device) {
  switch (t) {
    case at::kFloat:
    case at::kDouble:
    case at::kBFloat16:
    case at::kHalf:
      return true;
    default:
      (void)device;
      return false;
  }
}

inline void csm_check_tensor(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x,
                             c10::DeviceType device) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.device().type() == device, op, ": ", name, " must be a ", c10::DeviceTypeName(device),
              " tensor for this kernel, got a tensor on ", t.device());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), " but x is on ", x.device(),
              "; all inputs must be on one device");
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " has dtype ", t.scalar_type(),
              " but x has dtype ", x.scalar_type(), "; all inputs must share one dtype");
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous (row-major), got sizes ", t.sizes(),
              " and strides ", t.strides(), "; call .contiguous() first");
}

// Checks x, weight, bias, scale (and shift when given) and returns the problem sizes.
inline CsmShape csm_check_inputs(const char* op, c10::DeviceType device, const at::Tensor& x,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& scale, const at::Tensor* shift) {
  TORCH_CHECK(x.defined(), op, ": x is an undefined tensor");
  TORCH_CHECK(x.device().type() == device, op, ": x must be a ", c10::DeviceTypeName(device),
              " tensor for this kernel, got a tensor on ", x.device());
  TORCH_CHECK(csm_dtype_supported(x.scalar_type(), device), op, ": unsupported dtype ", x.scalar_type(),
              "; expected float32, float64, bfloat16 or float16");
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (B, C_in, H, W), got ", x.dim(), "-D with sizes ", x.sizes());
  csm_check_tensor(op, "x", x, x, device);

  CsmShape s;
  s.batch = x.size(0);
  s.c_in = x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);

  csm_check_tensor(op, "weight", weight, x, device);
  const bool weight_2d = weight.dim() == 2;
  const bool weight_4d = weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1;
  TORCH_CHECK(weight_2d || weight_4d, op, ": weight must be (C_out, C_in) or (C_out, C_in, 1, 1), got sizes ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == s.c_in, op, ": weight has ", weight.size(1), " input channels but x has ",
              s.c_in, " (weight sizes ", weight.sizes(), ", x sizes ", x.sizes(), ")");
  s.c_out = weight.size(0);

  if (bias.has_value() && bias->defined()) {
    csm_check_tensor(op, "bias", *bias, x, device);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == s.c_out, op, ": bias must have shape (", s.c_out,
                ",) to match weight, got ", bias->sizes());
  }

  const std::array<int64_t, 4> map_shape{s.batch, s.c_out, s.height, s.width};
  csm_check_tensor(op, "scale", scale, x, device);
  TORCH_CHECK(scale.sizes() == at::IntArrayRef(map_shape), op, ": scale must have shape (B, C_out, H, W) = ",
              at::IntArrayRef(map_shape), ", got ", scale.sizes());
  if (shift != nullptr) {
    csm_check_tensor(op, "shift", *shift, x, device);
    TORCH_CHECK(shift->sizes() == at::IntArrayRef(map_shape), op,
                ": shift must have shape (B, C_out, H, W) = ", at::IntArrayRef(map_shape), ", got ",
                shift->sizes());
  }
  return s;
}

inline void csm_check_grad_out(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                               const CsmShape& s, c10::DeviceType device) {
  csm_check_tensor(op, "grad_out", grad_out, x, device);
  const std::array<int64_t, 4> out_shape{s.batch, s.c_out, s.height, s.width};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_shape), op,
              ": grad_out must have the output's shape (B, C_out, H, W) = ", at::IntArrayRef(out_shape),
              ", got ", grad_out.sizes());
}

// Order of the gradients in csm_backward's output_mask and result.
enum CsmGrad { kGradX = 0, kGradWeight = 1, kGradBias = 2, kGradScale = 3 };
using CsmGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Forward: (y, conv) where conv = conv1x1(x) + bias is written only when keep_conv (for a backward
// that then skips recomputing it); otherwise conv is an empty tensor.
std::tuple<at::Tensor, at::Tensor> csm_forward_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                   const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                                                   const at::Tensor& shift, bool keep_conv);
// Backward: (grad_x, grad_weight, grad_bias, grad_scale), undefined where output_mask is false.
// conv: the forward's kept conv, or nullopt / an empty tensor to recompute it from x.
CsmGrads csm_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& scale,
                          const std::optional<at::Tensor>& conv, std::array<bool, 4> output_mask);

// The kept conv must be (B, C_out, H, W) like the output, or empty (numel 0) for "not kept".
inline bool csm_check_kept_conv(const char* op, const std::optional<at::Tensor>& conv, const at::Tensor& x,
                                const CsmShape& s, c10::DeviceType device) {
  if (!conv.has_value() || !conv->defined() || conv->numel() == 0) return false;
  csm_check_tensor(op, "conv", *conv, x, device);
  const std::array<int64_t, 4> out_shape{s.batch, s.c_out, s.height, s.width};
  TORCH_CHECK(conv->sizes() == at::IntArrayRef(out_shape), op,
              ": conv (kept by the forward) must have the output's shape (B, C_out, H, W) = ",
              at::IntArrayRef(out_shape), " or be empty, got ", conv->sizes());
  return true;
}

}  // namespace ddif_ext
