// `mlakv bench` entry points; the CLI parses flags and calls these.
#pragma once

#include <string>
#include <vector>

namespace mlakv::bench {

struct BenchOptions {
  int device = 0;          ///< CUDA device index
  std::string json_path;   ///< write the JSON report here when non-empty
  int iters = 50;          ///< timed repetitions per case (median reported)
  /// decode: calls per timed sample, back to back (each step's first grid then follows the
  /// previous step's last kernel, as in a decode loop); the time reported is per call.
  int back_to_back = 1;
  bool quick = false;      ///< fewer / smaller cases (smoke test)
  /// Run only the cases whose "op format shape" contains one of these (empty: every case), so
  /// that a profiler sees just the kernels of interest.
  std::vector<std::string> only;
};

/// Whether the case "op format shape" passes the --only filters.
bool selected(const BenchOptions& opts, const std::string& op, const std::string& format, const std::string& shape);

/// Each returns a process exit code (0 ok); they throw mlakv::Error when no GPU is usable.
int run_cache(const BenchOptions& opts);
int run_decode(const BenchOptions& opts);
/// DCP decode step at W = 1 and 2, context gather with FP8 vs bf16 on the wire, KV bytes per GPU.
int run_dcp(const BenchOptions& opts);

}  // namespace mlakv::bench
