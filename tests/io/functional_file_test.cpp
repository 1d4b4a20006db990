// Functional models in the native model file: the graph (inputs, every layer call, outputs)
// round-trips with shared layers, several inputs and the fused residual tail; a graph that reads
// a tensor or layer that does not exist is refused before anything is called.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/layers/activation.hpp"
#include "bnorm/layers/batch_normalization.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/dense.hpp"
#include "bnorm/layers/merge.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/model.hpp"
#include "io/test_files.hpp"
#include "support/test_support.hpp"

namespace bnorm {
namespace {

using bnorm::testing::TempDir;

Model residual(std::uint64_t seed) {
  Input x(Shape{6, 6, 2}, "image"), side(Shape{3}, "side");
  SymbolicTensor h = Activation("relu")(BatchNormalization()(Conv2D(4, 3, "same")(x)));
  SymbolicTensor b = BatchNormalization()(Conv2D(4, 3, "same")(h));
  h = Activation("relu")(Add()({b, h}));
  auto shared = std::make_shared<Dense>(4, "tanh");
  SymbolicTensor s = Add()({(*shared)(side), (*shared)(Dense(3)(side))});
  SymbolicTensor out = Dense(3, "softmax")(Concatenate()({GlobalAveragePooling2D()(h), s}));
  Model m({x, side}, {out}, "res", seed);
  m.compile(make_optimizer("adam", 0.01), LossKind::sparse_categorical_crossentropy);
  return m;
}

TEST(FunctionalFile, RoundTripsTheGraphWeightsAndTraining) {
  TempDir dir;
  Random rng(1);
  const Tensor x = test::random_normal(Shape{20, 6, 6, 2}, rng),
               side = test::random_normal(Shape{20, 3}, rng);
  Tensor y(Shape{20});
  for (std::int64_t i = 0; i < 20; ++i) y[i] = static_cast<float>(i % 3);
  Model m = residual(3);
  FitOptions o;
  o.batch_size = 5;
  m.fit({&x, &side}, {&y}, o);
  io::save_model(m, dir.file("res.bnorm"));
  Model back = io::load_model(dir.file("res.bnorm"));
  EXPECT_EQ(back.class_name(), "Functional");
  EXPECT_EQ(back.summary(), m.summary());
  ASSERT_EQ(back.size(), m.size());
  for (std::size_t i = 0; i < m.size(); ++i) EXPECT_EQ(back.layer(i).name(), m.layer(i).name());
  const auto wm = m.get_weights(), wb = back.get_weights();
  ASSERT_EQ(wm.size(), wb.size());
  for (std::size_t i = 0; i < wm.size(); ++i) EXPECT_TRUE(test::bitwise_equal(wm[i], wb[i]));
  EXPECT_TRUE(test::bitwise_equal(back.predict_all({&x, &side})[0], m.predict_all({&x, &side})[0]));
  // The shared Dense is one layer called twice in the loaded model too.
  EXPECT_EQ(back.count_params(), m.count_params());
  // Training goes on identically (the optimizer starts fresh on both).
  m.compile(make_optimizer("sgd", 0.1), LossKind::sparse_categorical_crossentropy);
  back.compile(make_optimizer("sgd", 0.1), LossKind::sparse_categorical_crossentropy);
  EXPECT_EQ(m.train_on_batch({&x, &side}, {&y}), back.train_on_batch({&x, &side}, {&y}));
  // Saving the loaded model writes the same bytes.
  io::save_model(back, dir.file("again.bnorm"));
  io::save_model(m, dir.file("m.bnorm"));
  std::ifstream a(dir.file("again.bnorm"), std::ios::binary),
      b(dir.file("m.bnorm"), std::ios::binary);
  std::stringstream sa, sb;
  sa << a.rdbuf();
  sb << b.rdbuf();
  EXPECT_EQ(sa.str(), sb.str());
}

TEST(FunctionalFile, AGraphThatReadsWhatDoesNotExistIsRefused) {
  Model m = residual(4);
  Model::FlatGraph g = m.flat_graph();
  std::vector<std::shared_ptr<Layer>> layers = m.layers();
  Model::FlatGraph future = g;
  future.calls[0].inputs[0] = static_cast<int>(g.input_shapes.size() + 5);
  EXPECT_THROW(Model::from_flat_graph(future, layers, "x", 0), ValueError);
  Model::FlatGraph missing = g;
  missing.calls[1].layer = layers.size() + 3;
  EXPECT_THROW(Model::from_flat_graph(missing, layers, "x", 0), ValueError);
  Model::FlatGraph bad_out = g;
  bad_out.outputs[0] = -1;
  EXPECT_THROW(Model::from_flat_graph(bad_out, layers, "x", 0), ValueError);
}

}  // namespace
}  // namespace bnorm
