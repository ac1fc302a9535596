// CPU reference of merge_states (SPEC §3.7), in double.
#include <vector>

#include "backend.hpp"
#include "cpu/attention_math.hpp"

namespace mlakv::cpu {

void merge_states(const Tensor& o_a, const Tensor& lse_a, const Tensor& o_b, const Tensor& lse_b, const Tensor& o,
                  const Tensor& lse) {
  const int64_t n = o.shape[0], h = o.shape[1], d = o.shape[2];
  const std::size_t ea = dtype_size(o_a.dtype), eb = dtype_size(o_b.dtype), eo = dtype_size(o.dtype);
  // o may alias o_a or o_b (in-place merge): each row is read completely before it is written.
  std::vector<double> row(static_cast<std::size_t>(d));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < h; ++j) {
      const double la = lse_or_empty(*reinterpret_cast<const float*>(element_ptr(lse_a, {i, j})));
      const double lb = lse_or_empty(*reinterpret_cast<const float*>(element_ptr(lse_b, {i, j})));
      const double m = la > lb ? la : lb;
      double wa = 0, wb = 0, out_lse = kNegInf;
      if (m != kNegInf) {
        const double ea_ = std::exp(la - m), eb_ = std::exp(lb - m), s = ea_ + eb_;
        wa = ea_ / s;
        wb = eb_ / s;
        out_lse = m + std::log(s);
      }
      const uint8_t* pa = element_ptr(o_a, {i, j});
      const uint8_t* pb = element_ptr(o_b, {i, j});
      for (int64_t k = 0; k < d; ++k) {
        // A zero weight must not turn an inf/NaN in an empty state into NaN.
        double v = 0;
        if (wa != 0) v += wa * load_value(pa + k * ea, o_a.dtype);
        if (wb != 0) v += wb * load_value(pb + k * eb, o_b.dtype);
        row[static_cast<std::size_t>(k)] = v;
      }
      uint8_t* po = element_ptr(o, {i, j});
      for (int64_t k = 0; k < d; ++k) store_value(po + k * eo, o.dtype, row[static_cast<std::size_t>(k)]);
      *reinterpret_cast<float*>(element_ptr(lse, {i, j})) = static_cast<float>(out_lse);
    }
  }
}

}  // namespace mlakv::cpu
