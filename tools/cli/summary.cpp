// bnorm summary — the Keras summary() table of a saved model, plus its compile settings.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "bnorm/io/checkpoint.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

void run_summary(const std::string& path) {
  Model model = io::load_model(path);
  std::printf("%s", model.summary().c_str());
  if (model.compiled()) {
    Optimizer& opt = model.optimizer();
    std::string config;
    for (const auto& [key, value] : opt.config()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", value);
      config += (config.empty() ? "" : ", ") + key + "=" + buf;
    }
    std::printf("Optimizer: %s (%s)\nLoss: %s\n", opt.name().c_str(), config.c_str(),
                loss_name(model.loss()).c_str());
  } else {
    std::printf("Not compiled.\n");
  }
}

}  // namespace

Action add_summary_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("summary", "Print the layer table of a saved model");
  cmd->add_option("--model", *path, "Model file: .bnorm, Keras .keras or legacy .h5 (format read from the content)")->required();
  return [path] { run_summary(*path); };
}

}  // namespace bnorm::cli
