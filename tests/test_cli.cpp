// The `mlakv` command as a user runs it: exit codes, error messages, the check table and the
// demo report. The CLI is built next to the test binary (both in the build root); without it
// (MLAKV_BUILD_TOOLS=OFF) these tests skip.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include "test_util.hpp"

namespace {

namespace fs = std::filesystem;

fs::path cli_path() {
  return fs::read_symlink("/proc/self/exe").parent_path() / "mlakv";
}

struct RunResult {
  int code = -1;
  std::string output;  // stdout and stderr together
};

RunResult run_cli(const std::string& args) {
  const std::string cmd = "'" + cli_path().string() + "' " + args + " 2>&1";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

#define REQUIRE_CLI()                                                                     \
  do {                                                                                    \
    if (!fs::exists(cli_path())) GTEST_SKIP() << "no mlakv binary at " << cli_path(); \
  } while (0)

TEST(Cli, BadFlagValuesExitNonZeroNamingTheFlag) {
  REQUIRE_CLI();
  const std::pair<const char*, const char*> cases[] = {
      {"demo --kv-cache-dtype fp9", "--kv-cache-dtype"},
      {"demo --kv-cache-dtype dsv4", "--kv-cache-dtype"},
      {"demo --dcp 0", "--dcp"},
      {"demo --dcp -2", "--dcp"},
      {"demo --interleave 0", "--interleave"},
      {"demo --heads -3", "--heads"},
      {"demo --heads=-3", "--heads"},
      {"demo --heads abc", "--heads"},
      {"demo --batch 0", "--batch"},
      {"demo --steps 0", "--steps"},
      {"demo --block-size 0", "--block-size"},
      {"demo --interleave 3", "--interleave"},  // does not divide the block size 64
      {"demo --dcp 3 --heads 16", "--heads"},   // heads must split evenly over the ranks
      {"demo --context-lens 100,,7", "--context-lens"},
      {"demo --context-lens 100,-7", "--context-lens"},
      {"demo --merge ring", "--merge"},
      {"demo --device tpu", "--device"},
      {"check --device tpu", "--device"},
      {"bench --iters 0 cache", "--iters"},
  };
  for (const auto& [args, flag] : cases) {
    const RunResult r = run_cli(args);
    EXPECT_NE(r.code, 0) << "mlakv " << args << "\n" << r.output;
    EXPECT_NE(r.output.find(flag), std::string::npos) << "mlakv " << args << " should name " << flag << ":\n"
                                                      << r.output;
  }
}

TEST(Cli, UnknownCommandOrNoneIsAUsageError) {
  REQUIRE_CLI();
  EXPECT_EQ(run_cli("").code, 2);
  EXPECT_EQ(run_cli("frobnicate").code, 2);
  EXPECT_EQ(run_cli("--help").code, 0);
}

TEST(Cli, InfoPrintsVersionAndCuda) {
  REQUIRE_CLI();
  const RunResult r = run_cli("info");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find(std::string("mlakv ") + mlakv::kVersion), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("CUDA backend"), std::string::npos) << r.output;
}

TEST(Cli, CheckOnCpuPasses) {
  REQUIRE_CLI();
  const RunResult r = run_cli("check --device cpu");
  EXPECT_EQ(r.code, 0) << r.output;
  for (const char* op : {"write_cache", "gather_cache", "gather_dequant_cache", "dsv4_write", "dsv4_dequant_gather",
                         "mla_decode", "merge_states", "dcp::decode", "dcp::gather_context"})
    EXPECT_NE(r.output.find(op), std::string::npos) << op << " missing from:\n" << r.output;
  EXPECT_EQ(r.output.find("FAIL"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" 0 failed"), std::string::npos) << r.output;
}

TEST(Cli, DemoWithTinySettingsPrintsTheReport) {
  REQUIRE_CLI();
  for (const char* fmt : {"bf16", "fp8", "fp8_ds_mla"}) {
    const std::string args = std::string("demo --device cpu --kv-cache-dtype ") + fmt +
                             " --batch 3 --context-lens 40,130 --steps 2 --heads 6 --dcp 3 --interleave 2 "
                             "--block-size 16 --seed 5";
    const RunResult r = run_cli(args);
    EXPECT_EQ(r.code, 0) << "mlakv " << args << "\n" << r.output;
    for (const char* line : {"KV cache per rank", "Accuracy against the bf16 single-rank reference",
                             "DCP alone", "Time per decode step", "W=3"})
      EXPECT_NE(r.output.find(line), std::string::npos) << "'" << line << "' missing from:\n" << r.output;
  }
}

TEST(Cli, DemoOnOneRankSkipsTheDcpRow) {
  REQUIRE_CLI();
  const RunResult r = run_cli("demo --device cpu --batch 2 --context-lens 70 --steps 1 --heads 2 --dcp 1");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output.find("DCP alone"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("W=1 vs bf16 W=1"), std::string::npos) << r.output;
}

TEST(Cli, BenchWithoutAGpuExits2) {
  REQUIRE_CLI();
  if (mlakv::test::have_gpu()) GTEST_SKIP() << "a GPU is present: bench would run";
  const RunResult r = run_cli("bench cache --quick");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("mlakv bench"), std::string::npos) << r.output;
}

}  // namespace
