// `bnorm train --resume RUN_DIR`: a run trained for some epochs and resumed gives the same model
// file and history CSV, byte for byte, as the run trained straight through; for every optimizer,
// with shuffling, dropout and validation, at another thread count, after a kill -9 at any moment,
// and with the temporary files a killed save left behind cleaned up.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bnorm/io/checkpoint.hpp"
#include "bnorm/model/optimizers.hpp"
#include "bnorm/model/sequential.hpp"
#include "bnorm/model/spec.hpp"
#include "cli/cli_run.hpp"
#include "io/test_files.hpp"

namespace {

namespace fs = std::filesystem;
using bnorm::testing::expect_one_line_error;
using bnorm::testing::read_bytes;
using bnorm::testing::TempDir;
using Result = bnorm::testing::CliResult;

std::string quote(const std::string& s) { return bnorm::testing::shell_quote(s); }
Result bnorm(const std::string& args) { return bnorm::testing::run_bnorm(args); }

// Dense + Dropout + BN: every piece of state a resume must restore is exercised.
constexpr const char* kSpec = "dense24-relu,dropout0.3,bn,dense10-softmax";

class CliResume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    data_ = dir_->file("data");
    fs::create_directory(data_);
    bnorm::testing::write_fake_fashion_mnist(data_, 300, 40);
  }
  static void TearDownTestSuite() { delete dir_; }

  // `bnorm train` into `out` with the common small-run flags.
  static Result train(const std::string& out, const std::string& flags) {
    return bnorm("train --quiet --batch-size 16 --test-limit 40 --data " + quote(data_) +
                 " --out " + quote(out) + " " + flags);
  }
  static std::string run_dir(const std::string& name) { return dir_->file(name); }

  // The files a straight run and a resumed run must agree on, byte for byte.
  static void expect_same_run(const std::string& a, const std::string& b,
                              const std::vector<std::string>& models) {
    for (const auto& m : models) {
      for (const std::string& file : {"model_" + m + ".bnorm", "history_" + m + ".csv"}) {
        const std::string x = read_bytes(a + "/" + file), y = read_bytes(b + "/" + file);
        EXPECT_FALSE(x.empty()) << file;
        EXPECT_TRUE(x == y) << file << " differs between " << a << " and " << b;
      }
      // The summary's per-epoch test metrics too (seconds differ, of course).
      const auto ra = nlohmann::json::parse(read_bytes(a + "/records_" + m + ".json"));
      const auto rb = nlohmann::json::parse(read_bytes(b + "/records_" + m + ".json"));
      ASSERT_EQ(ra.size(), rb.size());
      for (std::size_t i = 0; i < ra.size(); ++i) {
        EXPECT_EQ(ra[i]["test_accuracy"], rb[i]["test_accuracy"]);
        EXPECT_EQ(ra[i]["test_loss"], rb[i]["test_loss"]);
      }
    }
    for (const auto& entry : fs::directory_iterator(b))
      EXPECT_EQ(entry.path().filename().string().find(".tmp-"), std::string::npos) << entry.path();
  }

  static TempDir* dir_;
  static std::string data_;
};
TempDir* CliResume::dir_ = nullptr;
std::string CliResume::data_;

TEST_F(CliResume, EveryOptimizerAndScheduleIsBitIdentical) {
  for (const std::string optimizer : {"sgd", "adam", "rmsprop"}) {
    for (const std::string schedule : {"constant", "cosine"}) {
      SCOPED_TRACE(optimizer + " " + schedule);
      const std::string flags = "--model " + std::string(kSpec) + " --optimizer " + optimizer +
                                " --lr-schedule " + schedule;
      const std::string straight = run_dir("straight-" + optimizer + "-" + schedule);
      const std::string resumed = run_dir("resumed-" + optimizer + "-" + schedule);
      const Result a = train(straight, flags + " --epochs 2 --threads 1");
      ASSERT_EQ(a.code, 0) << a.err;
      const Result b = train(resumed, flags + " --epochs 1 --threads 1");
      ASSERT_EQ(b.code, 0) << b.err;
      const Result c =
          bnorm("train --quiet --resume " + quote(resumed) + " --epochs 2 --threads 2");
      ASSERT_EQ(c.code, 0) << c.err;
      expect_same_run(straight, resumed, {"custom"});
    }
  }
}

// SGD with momentum (and Nesterov) has no command-line flag: a model file compiled with it is
// trained with its own compile settings.
TEST_F(CliResume, SgdWithMomentumFromAModelFile) {
  for (const bool nesterov : {false, true}) {
    SCOPED_TRACE(nesterov ? "nesterov" : "momentum");
    const std::string file = dir_->file(nesterov ? "nesterov.bnorm" : "momentum.bnorm");
    bnorm::Sequential model(3, "sgd");
    bnorm::add_layers_from_spec(model, kSpec);
    model.build(bnorm::Shape{784});
    model.compile(std::make_unique<bnorm::SGD>(bnorm::SGD::Options{0.05f, 0.9f, nesterov}),
                  bnorm::LossKind::sparse_categorical_crossentropy);
    bnorm::io::save_model(model, file);
    const std::string name = fs::path(file).stem().string();
    const std::string straight = run_dir("straight-" + name), resumed = run_dir("resumed-" + name);
    ASSERT_EQ(train(straight, "--model " + quote(file) + " --epochs 3").code, 0);
    ASSERT_EQ(train(resumed, "--model " + quote(file) + " --epochs 1").code, 0);
    ASSERT_EQ(bnorm("train --quiet --resume " + quote(resumed) + " --epochs 2").code, 0);
    ASSERT_EQ(bnorm("train --quiet --resume " + quote(resumed) + " --epochs 3").code, 0);
    expect_same_run(straight, resumed, {name});
    const auto loaded = bnorm::io::load_model(resumed + "/model_" + name + ".bnorm");
    EXPECT_EQ(loaded.optimizer().name(), "SGD");
    EXPECT_EQ(loaded.optimizer().config().at("momentum"), 0.9f);
    EXPECT_EQ(loaded.training_state().epoch, 3);
  }
}

// The default run (seed and seed-nobn, one after the other), resumed twice with a growing
// --epochs; a resume with nothing left to train leaves every file as it was.
TEST_F(CliResume, DefaultModelsResumedTwice) {
  const std::string straight = run_dir("straight-default"), resumed = run_dir("resumed-default");
  ASSERT_EQ(train(straight, "--epochs 3").code, 0);
  ASSERT_EQ(train(resumed, "--epochs 1").code, 0);
  ASSERT_EQ(bnorm("train --quiet --resume " + quote(resumed) + " --epochs 2").code, 0);
  const Result r = bnorm("train --resume " + quote(resumed) + " --epochs 3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("after epoch 2 of 3"), std::string::npos) << r.out;
  expect_same_run(straight, resumed, {"seed", "seed-nobn"});
  const auto summary = nlohmann::json::parse(read_bytes(resumed + "/summary.json"));
  EXPECT_EQ(summary["config"]["epochs"], 3);
  EXPECT_EQ(summary["models"][0]["epochs"].size(), 3u);

  const std::string model_before = read_bytes(resumed + "/model_seed.bnorm");
  ASSERT_EQ(bnorm("train --quiet --resume " + quote(resumed)).code, 0);  // the run's 3 epochs
  EXPECT_EQ(read_bytes(resumed + "/model_seed.bnorm"), model_before);
  expect_one_line_error(bnorm("train --quiet --resume " + quote(resumed) + " --epochs 2"),
                        "below the 3 epochs", 2);
}

// kill -9 at any moment of a run (during an epoch, between the history and the checkpoint,
// inside a save): the resumed run is still the straight run, bit for bit, and the temporary
// files the killed process left are removed.
TEST_F(CliResume, KilledRunResumesExactly) {
  TempDir big;
  bnorm::testing::write_fake_fashion_mnist(big.path().string(), 6000, 40);
  const std::string flags = "train --quiet --batch-size 16 --test-limit 40 --epochs 8 --model " +
                            std::string(kSpec) + " --data " + quote(big.path().string());
  const std::string straight = run_dir("straight-killed");
  ASSERT_EQ(bnorm(flags + " --out " + quote(straight)).code, 0);
  int interrupted = 0;
  for (const int delay_ms : {0, 7, 23, 61}) {
    SCOPED_TRACE("killed after the first checkpoint + " + std::to_string(delay_ms) + " ms");
    const std::string resumed = run_dir("killed-" + std::to_string(delay_ms));
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      const std::string command = "exec " + quote(BNORM_CLI_PATH) + " " + flags + " --out " +
                                  quote(resumed) + " >/dev/null 2>&1";
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!fs::exists(resumed + "/model_custom.bnorm") &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    if (WIFSIGNALED(status) &&
        bnorm::io::load_model(resumed + "/model_custom.bnorm").training_state().epoch < 8)
      ++interrupted;
    // What a save killed before its rename leaves (whatever the kill itself left is there too).
    for (const char* file : {"/model_custom.bnorm", "/history_custom.csv", "/records_custom.json"})
      bnorm::testing::write_bytes(resumed + file + ".tmp-" + std::to_string(child), "partial");
    const Result r = bnorm("train --quiet --resume " + quote(resumed));
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_run(straight, resumed, {"custom"});
  }
  EXPECT_GE(interrupted, 1) << "no kill landed before the run's end (each epoch is ~20 ms)";
}

TEST_F(CliResume, UsageErrors) {
  const std::string dir = run_dir("usage");
  ASSERT_EQ(train(dir, "--model " + std::string(kSpec) + " --epochs 1").code, 0);
  expect_one_line_error(bnorm("train --resume " + quote(dir) + " --lr 0.1"),
                        "--lr cannot be given with it", 2);
  expect_one_line_error(bnorm("train --resume " + quote(dir) + " --out elsewhere"),
                        "--out cannot be given with it", 2);
  expect_one_line_error(bnorm("train --resume " + quote(data_)), "not a bnorm train run", 1);
  expect_one_line_error(bnorm("train --resume " + quote(dir_->file("nowhere"))),
                        "no such run directory", 1);
  // A checkpoint from another data set size cannot continue this run.
  const std::string other = run_dir("usage-other");
  ASSERT_EQ(train(other, "--model " + std::string(kSpec) + " --epochs 1 --train-limit 200").code,
            0);
  fs::copy_file(other + "/model_custom.bnorm", dir + "/model_custom.bnorm",
                fs::copy_options::overwrite_existing);
  expect_one_line_error(bnorm("train --quiet --resume " + quote(dir) + " --epochs 2"),
                        "the data set changed", 1);
}

}  // namespace
