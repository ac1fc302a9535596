// Shared test helpers: random data, vector files, error norms, device buffers.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "mlakv/mlakv.hpp"

namespace mlakv::test {

/// A test data file: under $MLAKV_TEST_DATA if set, else the source tree the tests were built
/// from, else tests/data below the working directory (binaries built on another machine and run
/// from a copy of the repository's root, as scripts/gpu-check.sh does with PREBUILT).
inline std::string data_path(const std::string& rel) {
  if (const char* dir = std::getenv("MLAKV_TEST_DATA")) return std::string(dir) + "/" + rel;
  const std::string built = std::string(MLAKV_TEST_DATA) + "/" + rel;
  return std::ifstream(built).good() ? built : "tests/data/" + rel;
}

/// Reads a whole raw little-endian file as elements of T.
template <class T> std::vector<T> read_raw(const std::string& rel) {
  std::ifstream f(data_path(rel), std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + data_path(rel));
  f.seekg(0, std::ios::end);
  const auto n = static_cast<std::size_t>(f.tellg());
  f.seekg(0);
  std::vector<T> v(n / sizeof(T));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return v;
}

inline std::mt19937_64& rng() {
  static std::mt19937_64 g(12345);
  return g;
}

/// N(0, sigma) values rounded to bf16, as bf16 bits.
inline std::vector<uint16_t> random_bf16(std::size_t n, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = num::f32_to_bf16(d(rng()));
  return v;
}

inline std::vector<float> random_f32(std::size_t n, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

inline std::vector<float> bf16_to_f32(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = num::bf16_to_f32(v[i]);
  return r;
}

/// ||x - ref|| / ||ref|| (Frobenius), in double; NaN anywhere gives +inf.
template <class A, class B> double rel_err(const A& x, const B& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double a = static_cast<double>(x[i]), b = static_cast<double>(ref[i]);
    if (std::isnan(a) || std::isnan(b)) return INFINITY;
    num += (a - b) * (a - b);
    den += b * b;
  }
  return den == 0 ? (num == 0 ? 0.0 : INFINITY) : std::sqrt(num / den);
}

inline bool have_gpu() { return built_with_cuda() && cuda_device_count() > 0; }

#define MLAKV_REQUIRE_GPU()                                                                  \
  do {                                                                                       \
    if (!::mlakv::test::have_gpu()) GTEST_SKIP() << "no CUDA device (or built without CUDA)"; \
  } while (0)

}  // namespace mlakv::test
