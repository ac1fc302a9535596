// The `mlakv` command: check, demo, bench, info.
//
// Exit codes: 0 success; 1 a check or run failed (or mlakv::Error); 2 bad usage, or a command
// that needs a GPU where there is none.
#include <CLI/CLI.hpp>

#include <iostream>

#include "bench.hpp"
#include "cli_common.hpp"

namespace {

using mlakv::cli::CommandFn;

CommandFn add_bench_command(CLI::App& root) {
  auto what = std::make_shared<std::string>();
  auto opts = std::make_shared<mlakv::bench::BenchOptions>();
  CLI::App* app = root.add_subcommand("bench", "Time the CUDA kernels against the device-to-device copy ceiling");
  app->add_option("what", *what, "cache (writes and gathers), decode (mla_decode) or dcp (DCP over 2 GPUs)")
      ->required()
      ->check(CLI::IsMember({"cache", "decode", "dcp"}));
  app->add_option("--device", opts->device, "CUDA device index")->capture_default_str()->check(CLI::NonNegativeNumber);
  app->add_option("--json", opts->json_path, "also write the results as JSON to this file");
  app->add_option("--iters", opts->iters, "timed repetitions per case (the median is reported)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_flag("--quick", opts->quick, "fewer and smaller cases (a smoke test)");
  app->add_option("--back-to-back", opts->back_to_back,
                  "decode: calls per timed sample, back to back; the time per call is reported (default 1: one call "
                  "between two events)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app->add_option("--only", opts->only,
                  "run only cases whose \"op format shape\" contains this text (repeatable), e.g. \"dsv4_dequant_gather dsv4 1x2048\"");
  return [what, opts] {
    if (!mlakv::built_with_cuda()) {
      std::cerr << "mlakv bench: this build has no CUDA backend (configure with -DMLAKV_CUDA=ON); nothing to time\n";
      return 2;
    }
    const int n = mlakv::cuda_device_count();
    if (n == 0) {
      std::cerr << "mlakv bench: no CUDA device is visible; nothing to time\n";
      return 2;
    }
    if (opts->device >= n) {
      std::cerr << "mlakv bench: --device " << opts->device << ": only " << n << " CUDA device(s) visible\n";
      return 2;
    }
    if (*what == "dcp") return mlakv::bench::run_dcp(*opts);
    return *what == "cache" ? mlakv::bench::run_cache(*opts) : mlakv::bench::run_decode(*opts);
  };
}

CommandFn add_info_command(CLI::App& root) {
  root.add_subcommand("info", "Version, CUDA support and visible GPUs");
  return [] {
    std::cout << "mlakv " << mlakv::kVersion << '\n'
              << "CUDA backend: " << (mlakv::built_with_cuda() ? "built" : "not built") << '\n';
    const auto gpus = mlakv::cli::gpu_descriptions();
    std::cout << "CUDA devices: " << gpus.size() << '\n';
    for (std::size_t i = 0; i < gpus.size(); ++i) std::cout << "  cuda:" << i << "  " << gpus[i] << '\n';
    std::cout << "default device (auto): " << (mlakv::cli::have_gpu() ? "cuda:0" : "cpu") << '\n';
    return 0;
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mlakv: Multi-head Latent Attention over a paged, FP8-capable, DCP-sharded KV cache"};
  app.set_version_flag("--version", std::string("mlakv ") + mlakv::kVersion);
  app.require_subcommand(1);
  const std::vector<std::pair<std::string, CommandFn>> commands = {
      {"check", mlakv::cli::add_check_command(app)},
      {"demo", mlakv::cli::add_demo_command(app)},
      {"bench", add_bench_command(app)},
      {"info", add_info_command(app)},
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  std::string name;
  try {
    for (const auto& [cmd, run] : commands)
      if (app.get_subcommand(cmd)->parsed()) {
        name = cmd;
        return run();
      }
  } catch (const mlakv::cli::UsageError& e) {
    std::cerr << "mlakv " << name << ": error: " << e.what() << "\nRun with --help for more information.\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mlakv " << name << ": error: " << e.what() << '\n';
    return 1;
  }
  return 0;
}
