// bnorm convert — a model file from one format to another: .bnorm, Keras 3 .keras, legacy .h5.
// The input's format comes from its content, the output's from its extension.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <string>

#include "bnorm/io/checkpoint.hpp"
#include "common.hpp"

namespace bnorm::cli {

namespace {

struct ConvertArgs {
  std::string input, output, weights;
};

void run_convert(const ConvertArgs& a) {
  const std::string in_format = io::model_file_format(a.input);
  Model model = io::load_model(a.input);
  if (!a.weights.empty()) io::load_weights(model, a.weights);
  io::save_model(model, a.output);
  std::printf("%s (%s) -> %s (%s): %zu layers, %lld parameters\n", a.input.c_str(),
              in_format.empty() ? "unknown" : in_format.c_str(), a.output.c_str(),
              io::model_format_for_name(a.output).c_str(), model.size(),
              static_cast<long long>(model.count_params()));
}

}  // namespace

Action add_convert_command(CLI::App& app) {
  auto args = std::make_shared<ConvertArgs>();
  CLI::App* cmd = app.add_subcommand(
      "convert", "Convert a model file between .bnorm, Keras 3 .keras and legacy Keras .h5");
  cmd->add_option("input", args->input, "Model file (format read from its content)")->required();
  cmd->add_option("output", args->output,
                  "Output file; its extension picks the format (.keras, .h5, else .bnorm)")
      ->required();
  cmd->add_option("--weights", args->weights,
                  "Keras weights file (.weights.h5, or a legacy weights .h5 as keras.applications "
                  "ships them) loaded into the model before saving");
  return [args] { run_convert(*args); };
}

}  // namespace bnorm::cli
