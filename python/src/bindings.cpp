// The nanobind extension mlakv._mlakv: the C++ ops over DLPack tensors (NumPy, PyTorch, CuPy, any
// producer), with no copy. The Pythonic layer (python/mlakv/*.py) picks streams, allocates outputs
// and workspaces in the caller's framework and registers the torch custom ops; this file only
// turns arrays into mlakv::Tensor views and calls the library.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "mlakv/mlakv.hpp"

#if MLAKV_WITH_CUDA
#include <cuda_runtime.h>
#endif

#if MLAKV_PY_CLI
#include <CLI/CLI.hpp>

#include "cli_common.hpp"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using mlakv::DType;
using mlakv::Tensor;

// Read-only as far as the import goes: outputs are written through the same pointer, and the
// Python layer refuses read-only NumPy outputs before they get here.
using Array = nb::ndarray<nb::ro>;
using OptArray = std::optional<Array>;

std::string dlpack_dtype_str(nb::dlpack::dtype dt) {
  const char* kind = "?";
  switch (static_cast<nb::dlpack::dtype_code>(dt.code)) {
    case nb::dlpack::dtype_code::Int: kind = "int"; break;
    case nb::dlpack::dtype_code::UInt: kind = "uint"; break;
    case nb::dlpack::dtype_code::Float: kind = "float"; break;
    case nb::dlpack::dtype_code::Bfloat: kind = "bfloat"; break;
    case nb::dlpack::dtype_code::Complex: kind = "complex"; break;
    case nb::dlpack::dtype_code::Bool: kind = "bool"; break;
    default: return "DLPack type code " + std::to_string(dt.code) + " (" + std::to_string(dt.bits) + " bits)";
  }
  std::string s = std::string(kind) + std::to_string(dt.bits);
  if (dt.lanes != 1) s += "x" + std::to_string(dt.lanes);
  return s;
}

// NumPy has no bf16 and no e4m3: their bit patterns arrive as uint16 and uint8. uint16 always
// means bf16 (no op takes 16-bit integers); uint8 means e4m3 only where the argument takes e4m3
// and not raw bytes (`u8_is_e4m3`).
DType map_dtype(nb::dlpack::dtype dt, const char* name, bool u8_is_e4m3) {
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(dt.code);
  if (dt.lanes == 1) {
    if (code == C::Int && dt.bits == 32) return DType::i32;
    if (code == C::Int && dt.bits == 64) return DType::i64;
    if (code == C::UInt && dt.bits == 8) return u8_is_e4m3 ? DType::e4m3 : DType::u8;
    if (code == C::UInt && dt.bits == 16) return DType::bf16;
    if (code == C::Float && dt.bits == 16) return DType::f16;
    if (code == C::Float && dt.bits == 32) return DType::f32;
    if (code == C::Float && dt.bits == 64) return DType::f64;
    if (code == C::Bfloat && dt.bits == 16) return DType::bf16;
    if (code == C::Float8_E4M3FN && dt.bits == 8) return DType::e4m3;
  }
  throw nb::type_error((std::string(name) + ": dtype " + dlpack_dtype_str(dt) +
                        " is not supported, expected bfloat16 (or uint16 bits), float32, float16, float64, "
                        "float8_e4m3fn (or uint8 bits), uint8, int32 or int64")
                           .c_str());
}

mlakv::Device map_device(const Array& a, const char* name) {
  const int type = a.device_type();
  if (type == nb::device::cpu::value || type == nb::device::cuda_host::value) return mlakv::Device::cpu();
  if (type == nb::device::cuda::value || type == nb::device::cuda_managed::value)
    return mlakv::Device::cuda(a.device_id());
  throw nb::value_error((std::string(name) + ": DLPack device type " + std::to_string(type) +
                         " is not supported, expected a CPU or CUDA array")
                            .c_str());
}

Tensor to_tensor(const Array& a, const char* name, bool u8_is_e4m3 = false) {
  if (a.ndim() > static_cast<size_t>(mlakv::kMaxDims))
    throw nb::value_error((std::string(name) + ": " + std::to_string(a.ndim()) + " dimensions, expected at most " +
                           std::to_string(mlakv::kMaxDims))
                              .c_str());
  Tensor t;
  t.data = const_cast<void*>(a.data());
  t.dtype = map_dtype(a.dtype(), name, u8_is_e4m3);
  t.ndim = static_cast<int>(a.ndim());
  t.device = map_device(a, name);
  for (int d = 0; d < t.ndim; ++d) {
    t.shape[d] = static_cast<int64_t>(a.shape(d));
    t.stride[d] = a.stride(d);
    // The kernels index forward from the data pointer; a reversed view would make them read
    // before it.
    if (t.stride[d] < 0 && t.shape[d] > 1)
      throw nb::value_error((std::string(name) + ": negative stride " + std::to_string(t.stride[d]) +
                             " in dimension " + std::to_string(d) + ", expected a forward view (copy it first)")
                                .c_str());
  }
  return t;
}

std::optional<Tensor> to_tensor(const OptArray& a, const char* name) {
  if (!a) return std::nullopt;
  return to_tensor(*a, name);
}

mlakv::Stream to_stream(uintptr_t handle) { return mlakv::Stream{reinterpret_cast<void*>(handle)}; }

// The library switches the current CUDA device to the tensors' one; put it back so that the
// caller's framework (which tracks the current device itself) is not surprised.
class DeviceRestore {
 public:
  explicit DeviceRestore(mlakv::Device d) {
#if MLAKV_WITH_CUDA
    if (d.is_cuda() && cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
#else
    (void)d;
#endif
  }
  ~DeviceRestore() {
#if MLAKV_WITH_CUDA
    if (prev_ >= 0) cudaSetDevice(prev_);
#endif
  }
  DeviceRestore(const DeviceRestore&) = delete;
  DeviceRestore& operator=(const DeviceRestore&) = delete;

 private:
  int prev_ = -1;
};

int64_t elem_bytes(const Array& a) { return (a.dtype().bits * a.dtype().lanes + 7) / 8; }

std::string shape_str(const Array& a) {
  std::string s = "[";
  for (size_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + "]";
}

[[noreturn]] void cache_error(const std::string& what) { throw nb::value_error(("kv_cache: " + what).c_str()); }

// One paged cache as the library sees it, built from a framework tensor: dimension 0 counts the
// blocks and the remaining dimensions, row-major, hold one block (vLLM's [num_blocks, block_size,
// 656] uint8, [num_blocks, block_size, 576] bf16, [num_blocks, 37440] uint8, ...). A 1-D byte
// tensor needs num_blocks. Keeps the arrays alive while an op runs.
struct CacheView {
  mlakv::Cache cache;
  Array data;
  OptArray scale;

  CacheView(Array data_, const std::string& format, int block_size, int64_t num_blocks, int64_t block_stride,
            OptArray scale_)
      : data(std::move(data_)), scale(std::move(scale_)) {
    const auto fmt = mlakv::parse_format(format);
    if (!fmt)
      throw nb::value_error(("kv_cache_dtype: '" + format + "', expected bf16 (or auto), fp8 (or fp8_e4m3), "
                             "fp8_ds_mla or dsv4")
                                .c_str());
    if (block_size < 1) throw nb::value_error(("block_size: " + std::to_string(block_size) + ", expected >= 1").c_str());
    if (data.ndim() < 1) cache_error("a 0-d array, expected [num_blocks, ...]");
    (void)map_dtype(data.dtype(), "kv_cache", false);  // any supported element type: the cache is bytes
    mlakv::CacheDesc desc{*fmt, 0, block_size};
    const int64_t es = elem_bytes(data);
    // Dimensions after the first must be one dense run of bytes: a block is addressed bytewise.
    int64_t expect = 1, inner = 1;
    for (int d = static_cast<int>(data.ndim()) - 1; d >= 1; --d) {
      if (data.shape(d) > 1 && data.stride(d) != expect)
        cache_error("dimension " + std::to_string(d) + " of " + shape_str(data) + " has stride " +
                    std::to_string(data.stride(d)) + ", expected " + std::to_string(expect) +
                    " (each block must be contiguous)");
      expect *= static_cast<int64_t>(data.shape(d));
      inner *= static_cast<int64_t>(data.shape(d));
    }
    if (data.ndim() >= 2) {
      const int64_t n = static_cast<int64_t>(data.shape(0));
      const int64_t block_bytes = inner * es;
      const int64_t stride = n > 1 ? data.stride(0) * es : block_bytes;
      if (num_blocks >= 0 && num_blocks != n)
        cache_error("num_blocks " + std::to_string(num_blocks) + " differs from dimension 0 of " + shape_str(data));
      if (block_stride > 0 && block_stride != stride)
        cache_error("block_stride " + std::to_string(block_stride) + " bytes differs from the tensor's " +
                    std::to_string(stride) + " bytes between blocks");
      if (block_bytes < desc.dense_block_bytes())
        cache_error("a block of " + shape_str(data) + " holds " + std::to_string(block_bytes) + " bytes, expected >= " +
                    std::to_string(desc.dense_block_bytes()) + " (" + std::to_string(block_size) + " tokens of " +
                    format + ")");
      if (n > 1 && stride < block_bytes)
        cache_error("blocks overlap: " + std::to_string(stride) + " bytes apart, each " + std::to_string(block_bytes));
      desc.num_blocks = n;
      desc.block_stride = stride;
    } else {
      if (data.shape(0) > 1 && data.stride(0) != 1) cache_error("a 1-d cache must be contiguous");
      desc.block_stride = block_stride > 0 ? block_stride : 0;
      const int64_t bytes = static_cast<int64_t>(data.shape(0)) * es;
      const int64_t stride = desc.stride_bytes();
      desc.num_blocks = num_blocks >= 0 ? num_blocks : bytes / stride;
      if (desc.num_blocks * stride > bytes)
        cache_error(std::to_string(bytes) + " bytes, expected >= " + std::to_string(desc.num_blocks * stride) + " (" +
                    std::to_string(desc.num_blocks) + " blocks of " + std::to_string(stride) + " bytes)");
    }
    cache.data = const_cast<void*>(data.data());
    cache.desc = desc;
    cache.device = map_device(data, "kv_cache");
    if (scale) {
      const Tensor s = to_tensor(*scale, "scale");
      if (s.dtype != DType::f32)
        throw nb::type_error(("scale: dtype " + std::string(mlakv::dtype_name(s.dtype)) + ", expected float32").c_str());
      if (s.numel() < 1) throw nb::value_error("scale: empty, expected one float32 value");
      if (!(s.device == cache.device))
        throw nb::value_error(("scale is on " + s.device.str() + ", expected " + cache.device.str() +
                               " (the cache's device)")
                                  .c_str());
      cache.scale = static_cast<const float*>(s.data);
    }
  }
};

// mlakv::Error carries the argument's name in its message; dtype complaints become TypeError,
// the rest (shape, stride, device, values) ValueError.
void translate(const std::exception_ptr& p, void*) {
  try {
    std::rethrow_exception(p);
  } catch (const mlakv::Error& e) {
    const std::string m = e.what();
    PyErr_SetString(m.find(": dtype ") != std::string::npos ? PyExc_TypeError : PyExc_ValueError, m.c_str());
  }
}

mlakv::Device parse_device(const std::string& kind, int index) {
  if (kind == "cpu") return mlakv::Device::cpu();
  if (kind == "cuda") return mlakv::Device::cuda(index);
  throw nb::value_error(("device: '" + kind + "', expected cpu or cuda").c_str());
}

#if MLAKV_PY_CLI
// The CLI's main() for the two commands the Python package carries, with the same flags, output
// and exit codes (0 ok, 1 failure, 2 bad usage).
int cli_main(const std::vector<std::string>& args) {
  CLI::App app{"mlakv: Multi-head Latent Attention over a paged, FP8-capable, DCP-sharded KV cache", "mlakv"};
  app.set_version_flag("--version", std::string("mlakv ") + mlakv::kVersion);
  app.require_subcommand(1);
  const std::vector<std::pair<std::string, mlakv::cli::CommandFn>> commands = {
      {"check", mlakv::cli::add_check_command(app)},
      {"demo", mlakv::cli::add_demo_command(app)},
  };
  std::vector<std::string> argv_store = args;
  if (argv_store.empty()) argv_store.push_back("mlakv");
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  int rc = 0;
  std::string name;
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
    for (const auto& [cmd, run] : commands)
      if (app.get_subcommand(cmd)->parsed()) {
        name = cmd;
        rc = run();
        break;
      }
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    rc = code == 0 ? 0 : 2;
  } catch (const mlakv::cli::UsageError& e) {
    std::cerr << "mlakv " << name << ": error: " << e.what() << "\nRun with --help for more information.\n";
    rc = 2;
  } catch (const std::exception& e) {
    std::cerr << "mlakv " << name << ": error: " << e.what() << '\n';
    rc = 1;
  }
  std::cout.flush();
  std::cerr.flush();
  return rc;
}
#endif

}  // namespace

NB_MODULE(_mlakv, m) {
  m.doc() = "mlakv C++ core (use the mlakv package, not this module)";
  nb::register_exception_translator(translate);

  m.attr("__version__") = mlakv::kVersion;
  m.def("built_with_cuda", &mlakv::built_with_cuda);
  m.def("cuda_device_count", &mlakv::cuda_device_count);
#if MLAKV_PY_CLI
  m.attr("has_cli") = true;
#else
  m.attr("has_cli") = false;
#endif

  m.def(
      "format_layout",
      [](const std::string& format, int block_size, int64_t block_stride) {
        const auto fmt = mlakv::parse_format(format);
        if (!fmt)
          throw nb::value_error(("kv_cache_dtype: '" + format + "', expected bf16 (or auto), fp8 (or fp8_e4m3), "
                                 "fp8_ds_mla or dsv4")
                                    .c_str());
        if (block_size < 1)
          throw nb::value_error(("block_size: " + std::to_string(block_size) + ", expected >= 1").c_str());
        mlakv::CacheDesc d{*fmt, 0, block_size, block_stride};
        if (block_stride != 0 && block_stride < d.dense_block_bytes())
          throw nb::value_error(("block_stride: " + std::to_string(block_stride) + " bytes, expected 0 or >= " +
                                 std::to_string(d.dense_block_bytes()))
                                    .c_str());
        return nb::make_tuple(std::string(mlakv::format_name(*fmt)), d.token_bytes(), d.dense_block_bytes(),
                              d.stride_bytes(), d.row_width());
      },
      "kv_cache_dtype"_a, "block_size"_a, "block_stride"_a = 0,
      "(canonical name, token_bytes, dense_block_bytes, block_stride_bytes, row_width)");

  nb::class_<CacheView>(m, "CacheView")
      .def(nb::init<Array, const std::string&, int, int64_t, int64_t, OptArray>(), "data"_a, "kv_cache_dtype"_a,
           "block_size"_a, "num_blocks"_a = -1, "block_stride"_a = 0, "scale"_a = nb::none())
      .def_prop_ro("format", [](const CacheView& c) { return std::string(mlakv::format_name(c.cache.desc.format)); })
      .def_prop_ro("num_blocks", [](const CacheView& c) { return c.cache.desc.num_blocks; })
      .def_prop_ro("block_size", [](const CacheView& c) { return c.cache.desc.block_size; })
      .def_prop_ro("block_stride", [](const CacheView& c) { return c.cache.desc.stride_bytes(); })
      .def_prop_ro("device", [](const CacheView& c) { return c.cache.device.str(); });

  m.def(
      "write_cache",
      [](Array kv_c, Array k_pe, Array slot_mapping, const CacheView& cache, uintptr_t stream) {
        const Tensor a = to_tensor(kv_c, "kv_c"), b = to_tensor(k_pe, "k_pe"), s = to_tensor(slot_mapping, "slot_mapping");
        DeviceRestore guard(cache.cache.device);
        nb::gil_scoped_release nogil;
        mlakv::write_cache(a, b, s, cache.cache, to_stream(stream));
      },
      "kv_c"_a, "k_pe"_a, "slot_mapping"_a, "cache"_a, "stream"_a = 0);

  auto gather = [](bool dequant) {
    return [dequant](const CacheView& cache, Array block_table, Array cu_seq_lens, Array dst, OptArray seq_starts,
                     OptArray token_to_seq, uintptr_t stream) {
      const Tensor bt = to_tensor(block_table, "block_table"), cu = to_tensor(cu_seq_lens, "cu_seq_lens");
      const Tensor d = to_tensor(dst, "dst", false);
      mlakv::GatherOptions opts{to_tensor(seq_starts, "seq_starts"), to_tensor(token_to_seq, "token_to_seq")};
      DeviceRestore guard(cache.cache.device);
      nb::gil_scoped_release nogil;
      if (dequant)
        mlakv::gather_dequant_cache(cache.cache, bt, cu, d, opts, to_stream(stream));
      else
        mlakv::gather_cache(cache.cache, bt, cu, d, opts, to_stream(stream));
    };
  };
  m.def("gather_cache", gather(false), "cache"_a, "block_table"_a, "cu_seq_lens"_a, "dst"_a,
        "seq_starts"_a = nb::none(), "token_to_seq"_a = nb::none(), "stream"_a = 0);
  m.def("gather_dequant_cache", gather(true), "cache"_a, "block_table"_a, "cu_seq_lens"_a, "dst"_a,
        "seq_starts"_a = nb::none(), "token_to_seq"_a = nb::none(), "stream"_a = 0);

  m.def(
      "dsv4_write",
      [](Array k, Array slot_mapping, const CacheView& cache, uintptr_t stream) {
        const Tensor kt = to_tensor(k, "k"), s = to_tensor(slot_mapping, "slot_mapping");
        DeviceRestore guard(cache.cache.device);
        nb::gil_scoped_release nogil;
        mlakv::dsv4_write(kt, s, cache.cache, to_stream(stream));
      },
      "k"_a, "slot_mapping"_a, "cache"_a, "stream"_a = 0);

  m.def(
      "dsv4_dequant_gather",
      [](const CacheView& cache, Array block_table, Array seq_lens, Array out, OptArray gather_lens, int64_t offset,
         uintptr_t stream) {
        const Tensor bt = to_tensor(block_table, "block_table"), sl = to_tensor(seq_lens, "seq_lens");
        const Tensor o = to_tensor(out, "out");
        const auto gl = to_tensor(gather_lens, "gather_lens");
        DeviceRestore guard(cache.cache.device);
        nb::gil_scoped_release nogil;
        mlakv::dsv4_dequant_gather(cache.cache, bt, sl, o, gl, offset, to_stream(stream));
      },
      "cache"_a, "block_table"_a, "seq_lens"_a, "out"_a, "gather_lens"_a = nb::none(), "offset"_a = 0,
      "stream"_a = 0);

  m.def(
      "mla_decode_workspace_size",
      [](int batch, int s_q, int heads, const std::string& device, int index) {
        const mlakv::Device d = parse_device(device, index);
        DeviceRestore guard(d);
        return mlakv::mla_decode_workspace_size(batch, s_q, heads, d);
      },
      "batch"_a, "s_q"_a, "heads"_a, "device"_a = "cpu", "index"_a = 0);

  m.def(
      "mla_decode",
      [](Array q, const CacheView& cache, Array block_table, Array seq_lens, Array out, Array lse, float softmax_scale,
         bool causal, OptArray q_scale, OptArray workspace, int dcp_world_size, int dcp_rank, int dcp_interleave,
         uintptr_t stream) {
        // q accepts bf16 or e4m3 and never raw bytes, so uint8 bits are e4m3.
        const Tensor qt = to_tensor(q, "q", /*u8_is_e4m3=*/true);
        const Tensor bt = to_tensor(block_table, "block_table"), sl = to_tensor(seq_lens, "seq_lens");
        const Tensor o = to_tensor(out, "out"), l = to_tensor(lse, "lse");
        mlakv::DecodeParams params;
        params.softmax_scale = softmax_scale;
        params.causal = causal;
        params.shard = {dcp_world_size, dcp_rank, dcp_interleave};
        if (q_scale) {
          const Tensor s = to_tensor(*q_scale, "q_scale");
          if (s.dtype != DType::f32)
            throw nb::type_error(("q_scale: dtype " + std::string(mlakv::dtype_name(s.dtype)) + ", expected float32").c_str());
          if (s.numel() < 1) throw nb::value_error("q_scale: empty, expected one float32 value");
          if (!(s.device == qt.device))
            throw nb::value_error(("q_scale is on " + s.device.str() + ", expected " + qt.device.str()).c_str());
          params.q_scale = static_cast<const float*>(s.data);
        }
        mlakv::Workspace ws;
        if (workspace) {
          const Tensor w = to_tensor(*workspace, "workspace");
          if (!(w.device == qt.device))
            throw nb::value_error(("workspace is on " + w.device.str() + ", expected " + qt.device.str()).c_str());
          if (w.numel() > 0) {
            if (!w.is_contiguous()) throw nb::value_error("workspace: expected a contiguous array");
            ws = {w.data, w.nbytes()};
          }
        }
        DeviceRestore guard(qt.device);
        nb::gil_scoped_release nogil;
        mlakv::mla_decode(qt, cache.cache, bt, sl, o, l, params, ws, to_stream(stream));
      },
      "q"_a, "cache"_a, "block_table"_a, "seq_lens"_a, "out"_a, "lse"_a, "softmax_scale"_a, "causal"_a = true,
      "q_scale"_a = nb::none(), "workspace"_a = nb::none(), "dcp_world_size"_a = 1, "dcp_rank"_a = 0,
      "dcp_interleave"_a = 1, "stream"_a = 0);

  m.def(
      "merge_states",
      [](Array o_a, Array lse_a, Array o_b, Array lse_b, Array o, Array lse, uintptr_t stream) {
        const Tensor ta = to_tensor(o_a, "o_a"), la = to_tensor(lse_a, "lse_a"), tb = to_tensor(o_b, "o_b"),
                     lb = to_tensor(lse_b, "lse_b"), to = to_tensor(o, "out"), lo = to_tensor(lse, "lse");
        DeviceRestore guard(ta.device);
        nb::gil_scoped_release nogil;
        mlakv::merge_states(ta, la, tb, lb, to, lo, to_stream(stream));
      },
      "o_a"_a, "lse_a"_a, "o_b"_a, "lse_b"_a, "out"_a, "lse"_a, "stream"_a = 0);

  m.def(
      "dcp_slot_mapping",
      [](Array positions, Array token_to_req, Array block_table, int block_size, int world, int rank, int interleave,
         Array out, uintptr_t stream) {
        const Tensor p = to_tensor(positions, "positions"), r = to_tensor(token_to_req, "token_to_req");
        const Tensor bt = to_tensor(block_table, "block_table"), o = to_tensor(out, "slot_mapping");
        DeviceRestore guard(p.device);
        nb::gil_scoped_release nogil;
        mlakv::dcp::slot_mapping(p, r, bt, block_size, mlakv::DcpShard{world, rank, interleave}, o, to_stream(stream));
      },
      "positions"_a, "token_to_req"_a, "block_table"_a, "block_size"_a, "world"_a, "rank"_a, "interleave"_a,
      "out"_a, "stream"_a = 0);

#if MLAKV_PY_CLI
  m.def(
      "cli_main",
      [](const std::vector<std::string>& args) {
        nb::gil_scoped_release nogil;
        return cli_main(args);
      },
      "argv"_a, "Runs `mlakv check|demo ...` (argv[0] is the program name); returns the exit code.");
#endif
}
