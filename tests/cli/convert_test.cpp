// `bnorm convert` and Keras files on the command line: conversions in every direction keep the
// model, bad files give one line and a non-zero exit, and summary/evaluate take Keras files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>

#include "bnorm/io/data.hpp"
#include "cli/cli_run.hpp"
#include "io/test_files.hpp"

namespace {

namespace fs = std::filesystem;
using Result = bnorm::testing::CliResult;
using bnorm::testing::TempDir;

using bnorm::testing::expect_one_line_error;

Result bnorm(const std::string& args) { return bnorm::testing::run_bnorm(args); }

std::string keras_file(const std::string& name) {
  return (fs::path(BNORM_SOURCE_DIR) / "tests" / "io" / "keras" / name).string();
}

TEST(CliConvert, EveryDirectionKeepsTheModel) {
  TempDir dir;
  const std::string a = dir.file("a.bnorm"), b = dir.file("b.h5"), c = dir.file("c.keras"),
                    d = dir.file("d.bnorm");
  Result r = bnorm("convert '" + keras_file("small.keras") + "' '" + a + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("(keras) -> "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 layers, 35 parameters"), std::string::npos) << r.out;
  ASSERT_EQ(bnorm("convert '" + a + "' '" + b + "'").code, 0);
  ASSERT_EQ(bnorm("convert '" + b + "' '" + c + "'").code, 0);
  ASSERT_EQ(bnorm("convert '" + c + "' '" + d + "'").code, 0);
  // Two conversions through Keras's formats give back the same bnorm file's weights: the
  // summaries (shapes, parameter counts) are identical.
  const Result s1 = bnorm("summary --model '" + a + "'");
  const Result s2 = bnorm("summary --model '" + d + "'");
  ASSERT_EQ(s1.code, 0) << s1.err;
  EXPECT_EQ(s1.out, s2.out);
  const Result s3 = bnorm("summary --model '" + c + "'");
  EXPECT_EQ(s3.code, 0) << s3.err;
  EXPECT_NE(s3.out.find("BatchNormalization"), std::string::npos) << s3.out;
}

TEST(CliConvert, RefusedFilesGiveOneLine) {
  TempDir dir;
  expect_one_line_error(
      bnorm("convert '" + keras_file("hostile_lambda.h5") + "' '" + dir.file("x.bnorm") + "'"),
      "Lambda");
  expect_one_line_error(bnorm("summary --model '" + keras_file("hostile_softlink.h5") + "'"),
                        "soft or external link");
  expect_one_line_error(
      bnorm("convert '" + keras_file("small_x.npy") + "' '" + dir.file("x.keras") + "'"),
      "not a model file");
  EXPECT_FALSE(fs::exists(dir.file("x.bnorm")));
  EXPECT_FALSE(fs::exists(dir.file("x.keras")));
}

// A model with two inputs and two outputs, straight from a Keras file: one --input and one
// --output per tensor, in the model's order; outputs equal Keras's within 1e-5.
TEST(CliConvert, PredictTakesOneFilePerInputAndOutput) {
  TempDir dir;
  const fs::path c =
      fs::path(BNORM_SOURCE_DIR) / "tests/parity/fixtures/keras_files/functional_two_in_two_out";
  const std::string y0 = dir.file("y0.npy"), y1 = dir.file("y1.npy");
  const Result r = bnorm("predict --model '" + (c / "model.keras").string() + "' --input '" +
                         (c / "x0.npy").string() + "' --input '" + (c / "x1.npy").string() +
                         "' --output '" + y0 + "' --output '" + y1 + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const auto& [got, want] : {std::pair{y0, c / "y0.npy"}, std::pair{y1, c / "y1.npy"}}) {
    const bnorm::Tensor a = bnorm::io::read_npy(got);
    const bnorm::Tensor b = bnorm::io::read_npy(want.string());
    ASSERT_EQ(a.shape(), b.shape());
    for (std::int64_t i = 0; i < a.size(); ++i)
      EXPECT_NEAR(a.data()[i], b.data()[i], 1e-5 * std::max(1.0f, std::abs(b.data()[i])));
  }
  expect_one_line_error(bnorm("predict --model '" + (c / "model.keras").string() + "' --input '" +
                              (c / "x0.npy").string() + "'"),
                        "takes 2 inputs; received 1 --input file");
}

}  // namespace
