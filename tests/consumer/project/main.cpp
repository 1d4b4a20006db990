// Builds the seed model through the public API, trains a few steps on random data, prints.
#include <bnorm/bnorm.hpp>
#include <cmath>
#include <cstdio>

int main() {
  bnorm::Sequential model(7);
  model.add(bnorm::Input{bnorm::Shape{784}});
  bnorm::add_layers_from_spec(model, bnorm::kSeedSpec);
  model.compile(bnorm::make_optimizer("adam", 1e-3),
                bnorm::LossKind::sparse_categorical_crossentropy);
  if (model.count_params() != 51146) {
    std::fprintf(stderr, "unexpected parameter count %lld\n",
                 static_cast<long long>(model.count_params()));
    return 1;
  }

  bnorm::Random rng(1);
  bnorm::Tensor x(bnorm::Shape{64, 784});
  bnorm::Tensor y(bnorm::Shape{64});
  for (float& v : x.values()) v = rng.uniform();
  for (float& v : y.values()) v = static_cast<float>(rng.below(10));

  bnorm::FitOptions options;
  options.batch_size = 16;
  options.epochs = 2;
  const bnorm::History history = model.fit(x, y, options);
  const double loss = history.history.at("loss").back();
  const bnorm::Tensor p = model.predict(x);
  if (!std::isfinite(loss) || p.shape() != bnorm::Shape{64, 10} || !p.all_finite()) {
    std::fprintf(stderr, "training produced a bad result\n");
    return 1;
  }
  std::printf("%s", model.summary().c_str());
  std::printf("bnorm consumer ok: %lld params, loss %.4f after %lld steps\n",
              static_cast<long long>(model.count_params()), loss,
              static_cast<long long>(model.optimizer().iterations()));
  return 0;
}
