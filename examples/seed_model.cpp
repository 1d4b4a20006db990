// The README's library example, built with the project so it cannot go stale.
#include <bnorm/bnorm.hpp>
#include <cstdio>

int main() {
  using namespace bnorm;
  io::Dataset data = io::load_fashion_mnist();  // /usr/share/datasets/fashion-mnist
  Tensor x = data.train_x.reshaped(Shape{60000, 784});
  Tensor x_test = data.test_x.reshaped(Shape{10000, 784});

  Sequential model(/*seed=*/42);
  model.add(Input{Shape{784}});
  model.add(Dense(64, "relu"));
  model.add(BatchNormalization());  // Keras defaults: axis=-1, momentum=0.99, epsilon=1e-3
  model.add(Dense(10, "softmax"));
  model.compile("adam", "sparse_categorical_crossentropy", {"accuracy"});
  std::puts(model.summary().c_str());

  ProgressBar progress;
  model.fit(x, data.train_y,
            {.batch_size = 32, .epochs = 10, .validation_split = 0.1, .callbacks = {&progress}});
  EvaluateResult r = model.evaluate(x_test, data.test_y);  // inference mode: moving statistics
  io::save_model(model, "seed.bnorm");                     // atomic; io::load_model reads it
  std::printf("test accuracy %.4f\n", r.accuracy);
}
