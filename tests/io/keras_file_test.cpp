// Keras model files: files written by real Keras 3 (tests/io/keras/make_files.py) load and
// predict what Keras predicted; hostile variants are refused with one line naming the problem;
// bnorm's own models survive .keras and .h5 round trips bit for bit.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/keras.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/sequential.hpp"
#include "fixture.hpp"
#include "io/zip.hpp"
#include "test_files.hpp"

namespace bnorm {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

fs::path keras_dir() { return fs::path(BNORM_SOURCE_DIR) / "tests" / "io" / "keras"; }
std::string file(const std::string& name) { return (keras_dir() / name).string(); }

// max |a - b| / max(1, |b|)
double max_rel_error(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double worst = 0.0;
  for (std::int64_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a.data()[i]) - double(b.data()[i])) /
                     std::max(1.0, std::abs(double(b.data()[i])));
    worst = std::max(worst, d);
  }
  return worst;
}

void expect_keras_predictions(Model& m) {
  const Tensor x = parity::read_npy(keras_dir() / "small_x.npy").tensor();
  const Tensor y = parity::read_npy(keras_dir() / "small_y.npy").tensor();
  EXPECT_LT(max_rel_error(m.predict(x), y), 1e-5);
}

TEST(KerasFiles, LegacyH5FromKeras3PredictsWhatKerasPredicted) {
  Model m = io::load_keras_h5(file("small.h5"));
  EXPECT_TRUE(m.is_sequential());
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m.layer(1).name(), "bn");
  expect_keras_predictions(m);
}

TEST(KerasFiles, DotKerasFromKeras3PredictsWhatKerasPredicted) {
  Model m = io::load_keras(file("small.keras"));
  EXPECT_TRUE(m.is_sequential());
  expect_keras_predictions(m);
}

// Keras 3.0-3.3 wrote "dtype": "float32"; from 3.4 a DTypePolicy object. Both load.
TEST(KerasFiles, BothDtypeFormsLoad) {
  Model m = io::load_keras(file("dtype_strings.keras"));
  expect_keras_predictions(m);
}

TEST(KerasFiles, LoadModelPicksTheFormatByContentNotName) {
  TempDir dir;
  fs::copy_file(file("small.keras"), dir.file("model.bin"));
  fs::copy_file(file("small.h5"), dir.file("model.dat"));
  EXPECT_EQ(io::model_file_format(dir.file("model.bin")), "keras");
  EXPECT_EQ(io::model_file_format(dir.file("model.dat")), "h5");
  Model a = io::load_model(dir.file("model.bin"));
  Model b = io::load_model(dir.file("model.dat"));
  expect_keras_predictions(a);
  expect_keras_predictions(b);
}

// Weights-only files into a model of the same architecture (its own weights overwritten).
TEST(KerasFiles, WeightsOnlyFilesInBothLayouts) {
  for (const char* name : {"small.weights.h5", "small_legacy_weights.h5"}) {
    SCOPED_TRACE(name);
    Model m = io::load_keras(file("small.keras"));
    std::vector<Tensor> zeros = m.get_weights();
    for (auto& t : zeros) t.fill(0.5f);
    m.set_weights(zeros);
    io::load_keras_weights(m, file(name));
    expect_keras_predictions(m);
  }
  // A model whose layers do not fit the file is refused and keeps its weights: a shape that
  // differs, or layers the file has and the model lacks.
  for (std::int64_t units : {5, 3}) {
    Sequential other;
    other.add(Input(Shape{4}));
    other.add(Dense(units));
    Model o(std::move(other));
    const auto before = o.get_weights();
    EXPECT_THROW(io::load_keras_weights(o, file("small_legacy_weights.h5")), IoError);
    EXPECT_EQ(o.get_weights()[0].values()[0], before[0].values()[0]);
  }
}

TEST(KerasFiles, SplitLayerNamesAttributesAreConcatenated) {
  Model m = io::load_keras_h5(file("split_layer_names.h5"));
  expect_keras_predictions(m);
}

// base(x, training=False) with a frozen base: BN on moving statistics and Dropout as the identity,
// in predict and in fit alike, as in Keras.
TEST(KerasFiles, FrozenBaseCalledWithTrainingFalseLoads) {
  Model m = io::load_keras(file("training_false_frozen.keras"));
  const Tensor x = parity::read_npy(keras_dir() / "small_x.npy").tensor();
  const Tensor y = parity::read_npy(keras_dir() / "training_false_frozen_y.npy").tensor();
  EXPECT_LT(max_rel_error(m.predict(x), y), 1e-5);
  int bns = 0;
  for (const auto& l : m.layers()) {
    EXPECT_NE(l->class_name(), "Dropout");
    if (l->class_name() == "BatchNormalization") {
      ++bns;
      EXPECT_FALSE(l->trainable());
    }
  }
  EXPECT_EQ(bns, 1);
}

// compile_config of a model Keras compiled (Adam, sparse categorical cross-entropy, accuracy);
// a file without one loads uncompiled.
TEST(KerasFiles, CompileConfigIsApplied) {
  const fs::path compiled = fs::path(BNORM_SOURCE_DIR) /
                            "tests/parity/fixtures/keras_files/canonical_mlp_compiled/model.keras";
  Model m = io::load_keras(compiled.string());
  ASSERT_TRUE(m.compiled());
  EXPECT_EQ(m.optimizer().name(), "Adam");
  EXPECT_EQ(m.loss(), LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(m.metrics(), std::vector<std::string>{"accuracy"});
  EXPECT_FALSE(io::load_keras(file("small.keras")).compiled());
}

void expect_refused(const std::string& name, const std::string& needle) {
  SCOPED_TRACE(name);
  try {
    (void)io::load_model(file(name));
    ADD_FAILURE() << "loaded " << name;
  } catch (const IoError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << "not one line: " << what;
  }
}

TEST(KerasFiles, HostileFilesAreRefusedWithOneLine) {
  expect_refused("hostile_softlink.h5", "soft or external link");
  expect_refused("hostile_extlink.h5", "soft or external link");
  expect_refused("hostile_external_storage.h5", "external file");
  expect_refused("hostile_virtual.h5", "virtual dataset");
  expect_refused("hostile_bomb.h5", "stores no data");
  expect_refused("hostile_bomb_config.h5", "more than 1000x");
  expect_refused("hostile_wrong_shape.h5", "has shape (5, 3)");
  expect_refused("hostile_nan.h5", "NaN");
  expect_refused("hostile_lambda.h5", "Lambda");
  expect_refused("hostile_module.keras", "module 'os'");
  expect_refused("hostile_quantized.keras", "Int8DTypePolicy");
  expect_refused("training_true.keras", "training=True");
  expect_refused("training_false_trainable.keras", "set trainable=False");
}

TEST(KerasFiles, NonRegularFilesAreRefusedWithoutBlocking) {
  TempDir dir;
  const std::string fifo = dir.file("fifo.keras");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THROW((void)io::load_keras(fifo), IoError);
  EXPECT_THROW((void)io::load_model(fifo), IoError);
  EXPECT_THROW((void)io::load_model(dir.path().string()), IoError);
}

// Corrupted copies (bytes flipped, truncated) of real Keras files: each loads or is refused with
// an IoError; never a crash, hang or another exception (ASan runs this in CI).
TEST(KerasFiles, CorruptedFilesAreRefusedCleanly) {
  for (const char* name : {"small.keras", "small.h5"}) {
    std::ifstream in(file(name), std::ios::binary);
    const std::vector<unsigned char> good((std::istreambuf_iterator<char>(in)), {});
    ASSERT_GT(good.size(), 1000u);
    TempDir dir;
    Random rng(99);
    int refused = 0;
    for (int trial = 0; trial < 150; ++trial) {
      std::vector<unsigned char> bad = good;
      if (trial % 5 == 0) {
        bad.resize(static_cast<std::size_t>(rng.uniform() * static_cast<float>(good.size())));
      } else {
        for (int k = 0; k < 1 + trial % 7; ++k) {
          const auto at =
              static_cast<std::size_t>(rng.uniform() * static_cast<float>(good.size() - 1));
          bad[at] = static_cast<unsigned char>(rng.uniform() * 255.0f);
        }
      }
      const std::string path = dir.file("bad");
      std::ofstream(path, std::ios::binary)
          .write(reinterpret_cast<const char*>(bad.data()),
                 static_cast<std::streamsize>(bad.size()));
      try {
        Model m = io::load_model(path);
        (void)m.count_params();
      } catch (const IoError&) {
        ++refused;
      }
    }
    EXPECT_GT(refused, 10) << name;
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips of bnorm's own models.

void randomize(Model& m, std::uint64_t seed) {
  Random rng(seed);
  std::vector<Tensor> ws = m.get_weights();
  std::size_t i = 0;
  for (const auto& l : m.layers()) {
    for (const Variable* v : l->weights()) {
      Tensor& t = ws[i++];
      for (auto& x : t.values())
        x = v->name == "moving_variance" ? 0.5f + rng.uniform() : 2.0f * rng.uniform() - 1.0f;
    }
  }
  m.set_weights(ws);
}

Tensor random_input(const Shape& per_sample, std::int64_t n, std::uint64_t seed) {
  std::vector<std::int64_t> dims{n};
  for (auto d : per_sample.dims()) dims.push_back(d);
  Tensor x{Shape(dims)};
  Random rng(seed);
  for (auto& v : x.values()) v = 2.0f * rng.uniform() - 1.0f;
  return x;
}

Model residual_model() {
  Input x(Shape{6, 6, 3});
  auto conv = std::make_shared<Conv2D>(4, 3, "same");
  SymbolicTensor h = (*conv)(x);
  h = BatchNormalization()(h);
  h = Activation("relu")(h);
  SymbolicTensor skip = Conv2D(4, 1)(x);
  h = Add()({h, skip});
  auto shared = std::make_shared<Conv2D>(4, 3, "same", "relu");
  h = (*shared)(h);
  h = (*shared)(h);  // a shared layer: two calls, one set of weights
  h = GlobalAveragePooling2D()(h);
  SymbolicTensor out = Dense(5, "softmax")(h);
  Model m(x, out, "res");
  return m;
}

TEST(KerasFiles, RoundTripsKeepEveryBit) {
  TempDir dir;
  Sequential seq(3, "seed_like");
  seq.add(Input(Shape{8}));
  seq.add(Dense(6, "relu"));
  seq.add(BatchNormalization());
  seq.add(Dense(3, "softmax"));
  Model a(std::move(seq));
  Model b = residual_model();
  for (Model* m : {&a, &b}) {
    randomize(*m, 11);
    m->compile("adam", "sparse_categorical_crossentropy");
    const Tensor x = random_input(*m->input_shape(), 4, 5);
    const Tensor want = m->predict(x);
    for (const char* ext : {".keras", ".h5"}) {
      SCOPED_TRACE(m->name() + ext);
      const std::string path = dir.file(m->name() + ext);
      io::save_model(*m, path);
      Model back = io::load_model(path);
      EXPECT_EQ(back.is_sequential(), m->is_sequential());
      EXPECT_EQ(back.size(), m->size());
      EXPECT_EQ(back.count_params(), m->count_params());
      const Tensor got = back.predict(x);
      ASSERT_EQ(got.shape(), want.shape());
      for (std::int64_t i = 0; i < got.size(); ++i) ASSERT_EQ(got.data()[i], want.data()[i]);
      EXPECT_TRUE(back.compiled());
    }
  }
}

TEST(KerasFiles, SavedConfigHasKerasEnvelopes) {
  TempDir dir;
  Model m = residual_model();
  io::save_keras(m, dir.file("m.keras"));
  std::ifstream in(dir.file("m.keras"), std::ios::binary);
  const std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), {});
  const io::detail::ZipReader zip(bytes, "test: ");
  EXPECT_EQ(zip.names(),
            (std::vector<std::string>{"metadata.json", "config.json", "model.weights.h5"}));
  const auto text = zip.read("config.json", 1 << 20);
  const auto config = nlohmann::json::parse(text.begin(), text.end());
  EXPECT_EQ(config.at("module"), "keras.src.models.functional");
  EXPECT_EQ(config.at("registered_name"), "Functional");
  const auto& layers = config.at("config").at("layers");
  EXPECT_EQ(layers.at(0).at("class_name"), "InputLayer");
  for (const auto& l : layers) {
    EXPECT_EQ(l.at("module"), "keras.layers");
    EXPECT_TRUE(l.at("registered_name").is_null());
    EXPECT_TRUE(l.contains("inbound_nodes"));
  }
}

TEST(KerasFiles, PyTorchStyleBatchNormCannotBeSavedAsKeras) {
  TempDir dir;
  Sequential seq;
  seq.add(Input(Shape{4}));
  BatchNormalization::Options o;
  o.unbiased_moving_variance = true;
  seq.add(BatchNormalization(o));
  Model m(std::move(seq));
  try {
    io::save_keras(m, dir.file("m.keras"));
    ADD_FAILURE() << "saved";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("unbiased_moving_variance"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(dir.file("m.keras")));
}

TEST(KerasLayerArguments, BuildTheLayerKerasWouldBuild) {
  auto conv = io::make_keras_layer(
      "Conv2D", R"({"filters": 8, "kernel_size": 3, "strides": [2, 2], "padding": "same",
                    "activation": "relu", "kernel_initializer": "he_normal", "name": "c1"})");
  EXPECT_EQ(conv->class_name(), "Conv2D");
  EXPECT_EQ(conv->name(), "c1");
  const auto config = nlohmann::json::parse(io::keras_layer_config(*conv));
  EXPECT_EQ(config["kernel_size"], nlohmann::json::array({3, 3}));
  EXPECT_EQ(config["strides"], nlohmann::json::array({2, 2}));
  // he_normal is Keras's VarianceScaling(2, fan_in, truncated_normal), written in that form.
  EXPECT_EQ(config["kernel_initializer"]["class_name"], "VarianceScaling");
  EXPECT_DOUBLE_EQ(config["kernel_initializer"]["config"]["scale"].get<double>(), 2.0);
  EXPECT_EQ(config["kernel_initializer"]["config"]["mode"], "fan_in");
  auto bn = io::make_keras_layer("BatchNormalization",
                                 R"({"momentum": 0.9, "epsilon": 1e-5, "trainable": false})");
  EXPECT_FALSE(bn->trainable());
  const auto bn_config = nlohmann::json::parse(io::keras_layer_config(*bn));
  EXPECT_DOUBLE_EQ(bn_config["momentum"].get<double>(), 0.9);
  EXPECT_EQ(bn_config["center"], true) << "left-out arguments take Keras's defaults";
  EXPECT_EQ(bn_config["synchronized"], false);
  // Keras's synchronized=True: kept, and written back (a distributed fit synchronizes it).
  auto synced = io::make_keras_layer("BatchNormalization", R"({"synchronized": true})");
  EXPECT_TRUE(dynamic_cast<const BatchNormalization&>(*synced).options().synchronized);
  EXPECT_EQ(nlohmann::json::parse(io::keras_layer_config(*synced))["synchronized"], true);
}

TEST(KerasLayerArguments, BadArgumentsAreValueErrorsNamingTheClass) {
  auto expect_error = [](const char* cls, const char* args, const char* needle) {
    try {
      io::make_keras_layer(cls, args);
      ADD_FAILURE() << cls << " " << args << " was accepted";
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind(std::string(cls) + "()", 0), 0u) << e.what();
    }
  };
  expect_error("Dense", R"({"units": 4, "colour": "red"})", "colour");
  expect_error("Dense", R"({"units": -4})", "units");
  expect_error("Dense", "[1, 2]", "JSON object");
  expect_error("Dense", "{not json", "JSON object");
  expect_error("Lambda", "{}", "no layer class 'Lambda'");
  expect_error("BatchNormalization", R"({"synchronized": "yes"})", "synchronized");
}

}  // namespace
}  // namespace bnorm
