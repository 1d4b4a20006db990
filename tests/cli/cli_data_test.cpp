// `bnorm train --data FILE.npz | train.csv --test test.csv` and `bnorm predict --input FILE.npy`:
// the user's own data, end to end through the real executable, and its one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bnorm/io/data.hpp"
#include "cli/cli_run.hpp"
#include "io/test_files.hpp"

namespace {

namespace fs = std::filesystem;
using bnorm::Shape;
using bnorm::Tensor;
using bnorm::testing::CliResult;
using bnorm::testing::expect_one_line_error;
using bnorm::testing::read_bytes;
using bnorm::testing::run_bnorm;
using bnorm::testing::shell_quote;
using bnorm::testing::TempDir;
using bnorm::testing::write_bytes;

// 6 training and 3 test samples of 4x4 uint8 "images", labels 0..2 (tests/io/data/).
const std::string kNpz = std::string(BNORM_SOURCE_DIR) + "/tests/io/data/dataset.npz";

const std::string kTrainCsv =
    "f1,y,f2,f3\n0.1,0,1,2\n0.9,1,-1,0\n0.2,0,1.5,2\n0.8,1,-2,0.5\n0.15,0,1,1.9\n0.7,1,-1.2,0\n"
    "0.3,0,2,2\n0.85,1,-1,0.1\n";
const std::string kTestCsv = "f1,y,f2,f3\n0.1,0,1,2\n0.9,1,-1,0\n";

std::string train_args(const std::string& data, const std::string& out) {
  return "train --quiet --epochs 1 --batch-size 4 --threads 1 --data " + shell_quote(data) +
         " --out " + shell_quote(out);
}

TEST(CliUserData, TrainOnNpzThenPredictNpy) {
  TempDir dir;
  const std::string out = dir.file("out");
  const CliResult r = run_bnorm(train_args(kNpz, out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  for (const char* name : {"model_seed.bnorm", "model_seed-nobn.bnorm", "summary.json"}) {
    EXPECT_TRUE(fs::is_regular_file(fs::path(out) / name)) << name;
  }
  // The named models are rebuilt for the data: (16,) inputs, 3 classes (labels 0..2).
  const auto doc = nlohmann::json::parse(read_bytes(out + "/summary.json"));
  EXPECT_EQ(doc["config"]["test_samples"], 3);
  EXPECT_EQ(doc["models"][0]["spec"], "dense64-relu,bn,dense3-softmax") << doc.dump();

  // predict --input: (5, 4, 4) samples for a (16,) model, outputs written as float32 .npy.
  std::vector<float> values(80);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 7) / 7.0f;
  bnorm::io::write_npy(dir.file("x.npy"), Tensor(Shape{5, 4, 4}, values));
  const std::string model = " --model " + shell_quote(out + "/model_seed.bnorm");
  CliResult p = run_bnorm("predict" + model + " --input " + shell_quote(dir.file("x.npy")) +
                          " --output " + shell_quote(dir.file("y.npy")));
  ASSERT_EQ(p.code, 0) << p.err;
  const Tensor y = bnorm::io::read_npy(dir.file("y.npy"));
  ASSERT_EQ(y.shape(), (Shape{5, 3}));
  for (std::int64_t i = 0; i < 5; ++i) {
    EXPECT_NEAR(y[i * 3] + y[i * 3 + 1] + y[i * 3 + 2], 1.0f, 1e-5f);  // softmax rows
  }
  EXPECT_NE(p.out.find("outputs (5, 3) written to"), std::string::npos) << p.out;

  // Without --output: one line per row with its argmax.
  p = run_bnorm("predict" + model + " --input " + shell_quote(dir.file("x.npy")));
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_NE(p.out.find("5 samples -> model 'seed'"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("row 4: argmax "), std::string::npos) << p.out;
  EXPECT_EQ(p.out.find("row 5:"), std::string::npos) << p.out;

  // One sample of exactly the model's input shape.
  bnorm::io::write_npy(dir.file("one.npy"), Tensor(Shape{16}, std::vector<float>(16, 0.5f)));
  p = run_bnorm("predict" + model + " --input " + shell_quote(dir.file("one.npy")));
  ASSERT_EQ(p.code, 0) << p.err;
  EXPECT_NE(p.out.find("1 sample -> model 'seed'"), std::string::npos) << p.out;

  // Samples of another size: one line naming both shapes.
  bnorm::io::write_npy(dir.file("bad.npy"), Tensor(Shape{2, 5}));
  expect_one_line_error(
      run_bnorm("predict" + model + " --input " + shell_quote(dir.file("bad.npy"))),
      "holds shape (2, 5), samples of shape (5,); input 'input_layer' takes samples of shape "
      "(16,)",
      1);
  expect_one_line_error(
      run_bnorm("predict" + model + " --input " + shell_quote(dir.file("missing.npy"))),
      "missing.npy", 1);
  expect_one_line_error(
      run_bnorm("predict" + model + " --output " + shell_quote(dir.file("o.npy"))),
      "--output needs --input", 2);
  expect_one_line_error(
      run_bnorm("predict" + model + " --index 3 --input " + shell_quote(dir.file("x.npy"))),
      "--index picks Fashion-MNIST test images", 2);
  EXPECT_FALSE(fs::exists(dir.file("o.npy")));
}

TEST(CliUserData, Uint8RescaleIsAChoice) {
  TempDir dir;
  const CliResult a = run_bnorm(train_args(kNpz, dir.file("a")) + " --model seed-nobn");
  const CliResult b =
      run_bnorm(train_args(kNpz, dir.file("b")) + " --model seed-nobn --rescale none");
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  // Raw 0..255 inputs train differently from inputs scaled to [0, 1].
  const auto ja = nlohmann::json::parse(read_bytes(dir.file("a") + "/summary.json"));
  const auto jb = nlohmann::json::parse(read_bytes(dir.file("b") + "/summary.json"));
  // .at(): a missing key must fail the test, not read past the object (const operator[]).
  EXPECT_NE(ja.at("models").at(0).at("final_test").at("loss"),
            jb.at("models").at(0).at("final_test").at("loss"));
  expect_one_line_error(run_bnorm(train_args(kNpz, dir.file("c")) + " --rescale half"),
                        "--rescale must be auto or none", 2);
}

TEST(CliUserData, TrainOnCsv) {
  TempDir dir;
  write_bytes(dir.file("train.csv"), kTrainCsv);
  write_bytes(dir.file("test.csv"), kTestCsv);
  const std::string base = train_args(dir.file("train.csv"), dir.file("out")) + " --test " +
                           shell_quote(dir.file("test.csv"));
  const CliResult r = run_bnorm(base + " --label y --model seed");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto doc = nlohmann::json::parse(read_bytes(dir.file("out") + "/summary.json"));
  EXPECT_EQ(doc["config"]["test_samples"], 2);
  EXPECT_EQ(doc["models"][0]["spec"], "dense64-relu,bn,dense2-softmax");

  expect_one_line_error(run_bnorm(base + " --label z"), "no column named 'z'", 1);
  // Without --label the last column (f3, with 0.5 and 1.9) is the label: not class indices.
  expect_one_line_error(run_bnorm(base), "line 5: label column 'f3': '0.5' is not a class index",
                        1);
  expect_one_line_error(run_bnorm(train_args(dir.file("train.csv"), dir.file("o2"))),
                        "give the test split with --test FILE", 2);
  expect_one_line_error(
      run_bnorm(train_args(kNpz, dir.file("o3")) + " --test " + shell_quote(dir.file("test.csv"))),
      "--test is for CSV data", 2);
  // A convolutional model cannot take samples of 3 features.
  expect_one_line_error(run_bnorm(base + " --label y --model conv4-3x3,flatten,dense2-softmax"),
                        "takes samples of shape (height, width) or (height, width, channels); the "
                        "data's samples have shape (3,)",
                        1);
}

TEST(CliUserData, LabelsOutsideTheModelsClasses) {
  TempDir dir;
  // dataset.npz's labels go up to 2; a custom SPEC with 2 outputs cannot learn class 2.
  expect_one_line_error(
      run_bnorm(train_args(kNpz, dir.file("out")) + " --model dense8-relu,dense2-softmax"),
      "y_train (model 'custom'): label 2 at index 2 is outside the model's 2 classes (0..1)", 1);
  EXPECT_FALSE(fs::exists(dir.file("out")));
}

TEST(CliUserData, FilesThatAreNotData) {
  TempDir dir;
  write_bytes(dir.file("notes.txt"), "hello\n");
  expect_one_line_error(run_bnorm(train_args(dir.file("notes.txt"), dir.file("out"))),
                        "is neither a directory of Fashion-MNIST IDX files nor an .npz or .csv", 2);
  write_bytes(dir.file("broken.npz"), "PK\x03\x04 but not really a zip");
  expect_one_line_error(run_bnorm(train_args(dir.file("broken.npz"), dir.file("out"))),
                        "broken.npz", 1);
  expect_one_line_error(run_bnorm(train_args(dir.file("none.npz"), dir.file("out"))), "none.npz",
                        1);
}

}  // namespace
