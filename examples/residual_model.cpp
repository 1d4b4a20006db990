#include <bnorm/bnorm.hpp>
#include <cstdio>

int main() {
  using namespace bnorm;
  io::Dataset data = io::load_fashion_mnist();  // /usr/share/datasets/fashion-mnist
  Tensor x = data.train_x.reshaped(Shape{60000, 28, 28, 1});

  Input inputs(Shape{28, 28, 1});  // keras.Input(shape=(28, 28, 1))
  SymbolicTensor h = Activation("relu")(BatchNormalization()(Conv2D(16, 3, "same")(inputs)));
  SymbolicTensor r = Activation("relu")(BatchNormalization()(Conv2D(16, 3, "same")(h)));
  r = BatchNormalization()(Conv2D(16, 3, "same")(r));
  h = Activation("relu")(Add()({r, h}));  // the residual connection: relu(bn(conv(.)) + h)
  h = GlobalAveragePooling2D()(MaxPooling2D(2)(h));
  Model model(inputs, Dense(10, "softmax")(h), "residual", /*seed=*/42);
  model.compile("adam", "sparse_categorical_crossentropy", {"accuracy"});
  std::puts(model.summary().c_str());

  ProgressBar progress;
  model.fit(x, data.train_y, {.batch_size = 64, .epochs = 2, .callbacks = {&progress}});
  EvaluateResult r_test =
      model.evaluate(data.test_x.reshaped(Shape{10000, 28, 28, 1}), data.test_y);
  io::save_model(model, "residual.bnorm");  // the graph and its weights; io::load_model reads it
  std::printf("test accuracy %.4f\n", r_test.accuracy);
}
