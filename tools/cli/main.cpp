// bnorm — command-line front end: parse, call the library, print. Every failure becomes one line
// "bnorm: error: <message>" on stderr: exit 2 for a bad command line, 1 for everything else.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "bnorm/core/error.hpp"
#include "bnorm/core/isa.hpp"
#include "bnorm/version.hpp"
#include "common.hpp"

namespace {

int fail(const std::string& message, int status) {
  std::string line = message;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  std::fprintf(stderr, "bnorm: error: %s\n", line.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace bnorm::cli;
  CLI::App app{
      "bnorm: Keras-exact batch normalization in a small Keras-style network library.\n"
      "Trains, evaluates and inspects models on Fashion-MNIST, and benchmarks them.",
      "bnorm"};
  app.set_version_flag("--version", std::string("bnorm ") + BNORM_VERSION_STRING);
  app.require_subcommand(1);
  app.fallthrough(false);

  std::vector<std::pair<CLI::App*, Action>> commands;
  auto add = [&](const char* name, Action (*make)(CLI::App&)) {
    Action action = make(app);
    commands.emplace_back(app.get_subcommand(name), std::move(action));
  };
  add("train", add_train_command);
  add("evaluate", add_evaluate_command);
  add("predict", add_predict_command);
  add("summary", add_summary_command);
  add("convert", add_convert_command);
  add("recalibrate", add_recalibrate_command);
  add("bench", add_bench_command);

  // An unknown first word is named (CLI11 would only say that a subcommand is required).
  if (argc > 1 && argv[1][0] != '-') {
    const std::string word = argv[1];
    std::string known;
    bool found = false;
    for (const auto& [sub, action] : commands) {
      found = found || sub->get_name() == word;
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) return fail("unknown command '" + word + "'; the commands are " + known, 2);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return fail(std::string(e.what()) + " (see 'bnorm --help')", 2);
  }

  try {
    // BNORM_ISA picks the kernels' instruction set; a value not available here is an error.
    try {
      bnorm::apply_isa_environment();
    } catch (const bnorm::ValueError& e) {
      throw UsageError(e.what());
    }
    for (auto& [sub, action] : commands) {
      if (sub->parsed()) action();
    }
    std::fflush(stdout);
    return 0;
  } catch (const UsageError& e) {
    return fail(e.what(), 2);
  } catch (const bnorm::Error& e) {
    return fail(e.what(), 1);
  } catch (const std::bad_alloc&) {
    return fail("out of memory", 1);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  } catch (...) {
    return fail("unknown error", 1);
  }
}
