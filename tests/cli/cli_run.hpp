// tests/cli/cli_run.hpp — runs the real `bnorm` executable and checks its one-line errors.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "io/test_files.hpp"

namespace bnorm::testing {

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct CliResult {
  int code = -1;
  std::string out, err;
};

// Runs `bnorm <args>` (args pass through the shell) and captures both streams; `env`
// ("NAME=value ...") is set for that one command. BNORM_NUM_THREADS never leaks in.
inline CliResult run_bnorm(const std::string& args, const std::string& env = "") {
  TempDir capture;
  const std::string out = capture.file("stdout"), err = capture.file("stderr");
  const std::string command = "env -u BNORM_NUM_THREADS " + env + " " +
                              shell_quote(BNORM_CLI_PATH) + " " + args + " >" + shell_quote(out) +
                              " 2>" + shell_quote(err) + " </dev/null";
  const int status = std::system(command.c_str());
  CliResult r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_bytes(out);
  r.err = read_bytes(err);
  return r;
}

// A failure: non-zero exit (`code` when >= 0), exactly one line "bnorm: error: ..." on stderr
// containing `needle`.
inline void expect_one_line_error(const CliResult& r, const std::string& needle, int code = -1) {
  EXPECT_NE(r.code, 0) << r.out;
  if (code >= 0) {
    EXPECT_EQ(r.code, code) << r.err;
  }
  EXPECT_EQ(r.err.rfind("bnorm: error: ", 0), 0u) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n') << "stderr: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
}

}  // namespace bnorm::testing
