// dlib training peer of `bnorm bench train` (bnorm-dlib-train): a C++ framework on the same
// models, data and settings, so that bnorm's speed claims do not rest on Python frameworks'
// per-step overhead alone.
//
// dlib (Debian's libdlib-dev, 19.24; its CPU layers run on the BLAS it was built with) builds a
// network as a type, so this peer knows bnorm's named models rather than parsing any spec: the
// seed model (Dense(64, relu) -> BatchNormalization -> Dense(10, softmax)) and the cnn preset
// (Conv2D(32, 3, same) -> BN -> ReLU -> MaxPool2 -> Dropout(0.25) -> Conv2D(64, 3, same) -> BN ->
// ReLU -> MaxPool2 -> Dropout(0.25) -> Flatten -> Dense(128) -> BN -> ReLU -> Dropout(0.3) ->
// Dense(10, softmax)), both without BN (--spec: one of those four specs, bnorm/model/spec.hpp),
// and the residual presets (--preset resnet | resnet-nobn, below); anything else is reported as
// unsupported. Settings as bnorm's: Adam (lr 1e-3, beta 0.9 / 0.999; dlib's epsilon is 1e-8),
// batch --batch, shuffled every epoch, pixels / 255, BN with a running-statistics window of 100
// steps (Keras's momentum 0.99) and epsilon 1e-3, softmax fused into the loss
// (loss_multiclass_log). dlib trains in its trainer's own thread; the BLAS (OpenBLAS) gets
// --threads threads through OPENBLAS_NUM_THREADS/OMP_NUM_THREADS, set by the parent.
//
// Prints one JSON line, as the Python peers do:
//   {"epoch_seconds": [...], "loss": x, "accuracy": x, "version": "19.24", "images": n}
// or {"unsupported": "..."} (exit 4) for a model it cannot build, {"error": "..."} (exit 3).
// loss is dlib's running average over the last epoch's steps; accuracy is measured after the
// last epoch on the training images (inference mode, outside the timed epochs).
#include <dlib/dnn.h>
#include <dlib/revision.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "bnorm/io/idx.hpp"
#include "bnorm/model/spec.hpp"

namespace {

using dlib::bn_con;
using dlib::bn_fc;
using dlib::con;
using dlib::dropout;
using dlib::fc;
using dlib::input;
using dlib::loss_multiclass_log;
using dlib::matrix;
using dlib::max_pool;
using dlib::relu;

using Image = matrix<float>;

using SeedNet = loss_multiclass_log<fc<10, bn_fc<relu<fc<64, input<Image>>>>>>;
using SeedNoBnNet = loss_multiclass_log<fc<10, relu<fc<64, input<Image>>>>>;
// Read from the bottom up: con 32 -> bn -> relu -> pool -> dropout -> con 64 -> ... -> fc 10.
using CnnNet = loss_multiclass_log<fc<
    10,
    dropout<relu<bn_fc<fc<
        128, dropout<max_pool<
                 2, 2, 2, 2,
                 relu<bn_con<con<
                     64, 3, 3, 1, 1,
                     dropout<max_pool<2, 2, 2, 2,
                                      relu<bn_con<con<32, 3, 3, 1, 1, input<Image>>>>>>>>>>>>>>>>>;
// bnorm::resnet (ResNet-8, src/model/presets.cpp): a 3x3 stem, then per stage (16, 32, 64
// filters) one basic block: two 3x3 convolutions, the first strided in stages 2 and 3, and a
// shortcut that is the identity, or a 1x1 strided convolution where the shape changes; BN after
// every convolution, ReLU after the stem, inside each block and after each sum; global average
// pooling; Dense(10). dlib's add_prevN adds the output of the layer tagged tagN; skipN goes back
// to it. Strided 3x3 convolutions pad 1 on each side (28 -> 14 -> 7, the sizes of Keras's 'same';
// TensorFlow pads the odd row after instead, the cost is the same).
template <long N, int S, typename SUBNET>
using conv3 = dlib::add_layer<dlib::con_<N, 3, 3, S, S, 1, 1>, SUBNET>;
template <long N, int S, typename SUBNET>
using conv1 = dlib::add_layer<dlib::con_<N, 1, 1, S, S, 0, 0>, SUBNET>;
template <long N, typename SUBNET>
using block_identity =
    relu<dlib::add_prev1<bn_con<conv3<N, 1, relu<bn_con<conv3<N, 1, dlib::tag1<SUBNET>>>>>>>>;
template <long N, typename SUBNET>
using block_projection = relu<dlib::add_prev2<bn_con<conv1<
    N, 2,
    dlib::skip1<dlib::tag2<bn_con<conv3<N, 1, relu<bn_con<conv3<N, 2, dlib::tag1<SUBNET>>>>>>>>>>>>;
template <long N, typename SUBNET>
using block_identity_nobn =
    relu<dlib::add_prev1<conv3<N, 1, relu<conv3<N, 1, dlib::tag1<SUBNET>>>>>>;
template <long N, typename SUBNET>
using block_projection_nobn = relu<dlib::add_prev2<
    conv1<N, 2, dlib::skip1<dlib::tag2<conv3<N, 1, relu<conv3<N, 2, dlib::tag1<SUBNET>>>>>>>>>;
using ResNet = loss_multiclass_log<fc<
    10,
    dlib::avg_pool_everything<block_projection<
        64, block_projection<32, block_identity<16, relu<bn_con<conv3<16, 1, input<Image>>>>>>>>>>;
using ResNetNoBn = loss_multiclass_log<
    fc<10, dlib::avg_pool_everything<block_projection_nobn<
               64, block_projection_nobn<
                       32, block_identity_nobn<16, relu<conv3<16, 1, input<Image>>>>>>>>>;

using CnnNoBnNet = loss_multiclass_log<
    fc<10, dropout<relu<fc<
               128, dropout<max_pool<
                        2, 2, 2, 2,
                        relu<con<64, 3, 3, 1, 1,
                                 dropout<max_pool<
                                     2, 2, 2, 2, relu<con<32, 3, 3, 1, 1, input<Image>>>>>>>>>>>>>>;

struct Args {
  std::string spec = bnorm::kSeedSpec, preset, data = bnorm::io::kDefaultFashionMnistDir;
  std::int64_t batch = 32, train_limit = 0;
  int threads = 1, epochs = 2;
  unsigned seed = 42;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument("missing value after " + k);
    const std::string v = argv[++i];
    if (k == "--spec") {
      a.spec = v;
    } else if (k == "--preset") {
      a.preset = v;
    } else if (k == "--data") {
      a.data = v;
    } else if (k == "--batch") {
      a.batch = std::stoll(v);
    } else if (k == "--train-limit") {
      a.train_limit = std::stoll(v);
    } else if (k == "--threads") {
      a.threads = std::stoi(v);
    } else if (k == "--epochs") {
      a.epochs = std::stoi(v);
    } else if (k == "--seed") {
      a.seed = static_cast<unsigned>(std::stoul(v));
    } else {
      throw std::invalid_argument("unknown option " + k);
    }
  }
  if (a.batch < 1 || a.epochs < 1) throw std::invalid_argument("--batch and --epochs must be >= 1");
  return a;
}

// dlib's BN layers default to epsilon 1e-5; Keras's is 1e-3.
template <class Net>
void keras_batch_norm(Net& net) {
  dlib::visit_computational_layers(net, [](auto& layer) {
    using Details = std::decay_t<decltype(layer)>;
    if constexpr (std::is_same_v<Details, dlib::bn_<dlib::CONV_MODE>> ||
                  std::is_same_v<Details, dlib::bn_<dlib::FC_MODE>>) {
      layer = Details(100, 1e-3);
    }
  });
}

// The cnn's Dropout rates, bottom to top: 0.25, 0.25, 0.3 (dlib's default is 0.5).
template <class Net>
void keras_dropout_rates(Net& net) {
  std::vector<float> rates{0.3f, 0.25f, 0.25f};  // visited from the top of the network down
  std::size_t next = 0;
  dlib::visit_computational_layers(net, [&](auto& layer) {
    using Details = std::decay_t<decltype(layer)>;
    if constexpr (std::is_same_v<Details, dlib::dropout_>) {
      if (next < rates.size()) layer = dlib::dropout_(rates[next++]);
    }
  });
}

// The one JSON line the parent reads.
void print(const nlohmann::json& j) { std::printf("%s\n", j.dump().c_str()); }

int error(const std::string& what) {
  print({{"error", "bnorm-dlib-train: " + what}});
  return 3;
}

template <class Net>
int train(const Args& a, const std::vector<Image>& x, const std::vector<unsigned long>& y) {
  Net net;
  keras_batch_norm(net);
  keras_dropout_rates(net);
  dlib::dnn_trainer<Net, dlib::adam> trainer(net, dlib::adam(0.0f, 0.9f, 0.999f));
  trainer.set_learning_rate(1e-3);
  trainer.set_learning_rate_shrink_factor(1);  // a constant learning rate, as bnorm's bench
  trainer.set_mini_batch_size(static_cast<unsigned long>(a.batch));
  trainer.be_quiet();

  const std::size_t n = x.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::mt19937 rng(a.seed);
  std::vector<Image> xb;
  std::vector<unsigned long> yb;
  std::vector<double> epoch_seconds;
  for (int e = 0; e < a.epochs; ++e) {
    const auto start = std::chrono::steady_clock::now();
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t b = 0; b < n; b += static_cast<std::size_t>(a.batch)) {
      const std::size_t end = std::min(n, b + static_cast<std::size_t>(a.batch));
      xb.clear();
      yb.clear();
      for (std::size_t i = b; i < end; ++i) {
        xb.push_back(x[order[i]]);
        yb.push_back(y[order[i]]);
      }
      trainer.train_one_step(xb, yb);
    }
    trainer.get_net();  // waits for the trainer's thread to finish the epoch's steps
    epoch_seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  const double loss = trainer.get_average_loss();
  net.clean();
  std::size_t correct = 0;
  constexpr std::size_t kEvalBatch = 256;
  for (std::size_t b = 0; b < n; b += kEvalBatch) {
    const std::size_t end = std::min(n, b + kEvalBatch);
    const std::vector<Image> chunk(x.begin() + static_cast<std::ptrdiff_t>(b),
                                   x.begin() + static_cast<std::ptrdiff_t>(end));
    const std::vector<unsigned long> predicted = net(chunk);
    for (std::size_t i = b; i < end; ++i) correct += predicted[i - b] == y[i];
  }
  print({{"epoch_seconds", epoch_seconds},
         {"loss", loss},
         {"accuracy", static_cast<double>(correct) / static_cast<double>(n)},
         {"version", std::to_string(DLIB_MAJOR_VERSION) + "." + std::to_string(DLIB_MINOR_VERSION)},
         {"images", n}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse(argc, argv);
  } catch (const std::exception& e) {
    return error(e.what());
  }
  int (*run)(const Args&, const std::vector<Image>&, const std::vector<unsigned long>&) = nullptr;
  if (a.preset.empty() && a.spec == bnorm::kSeedSpec) run = train<SeedNet>;
  if (a.preset.empty() && a.spec == bnorm::kSeedNoBnSpec) run = train<SeedNoBnNet>;
  if (a.preset.empty() && a.spec == bnorm::kCnnSpec) run = train<CnnNet>;
  if (a.preset.empty() && a.spec == bnorm::kCnnNoBnSpec) run = train<CnnNoBnNet>;
  if (a.preset == "resnet") run = train<ResNet>;
  if (a.preset == "resnet-nobn") run = train<ResNetNoBn>;
  if (!run) {
    const std::string what = a.preset.empty() ? "spec '" + a.spec + "'" : "preset " + a.preset;
    print({{"unsupported", "the dlib peer builds bnorm's named models only, not " + what}});
    return 4;
  }
  try {
    const bnorm::io::Dataset d = bnorm::io::load_fashion_mnist(a.data);
    std::int64_t n = d.train_x.shape()[0];
    if (a.train_limit > 0) n = std::min(n, a.train_limit);
    std::vector<Image> x(static_cast<std::size_t>(n), Image(28, 28));
    std::vector<unsigned long> y(static_cast<std::size_t>(n));
    const float* pixels = d.train_x.data();
    for (std::int64_t i = 0; i < n; ++i) {
      Image& m = x[static_cast<std::size_t>(i)];
      for (long r = 0; r < 28; ++r)
        for (long c = 0; c < 28; ++c) m(r, c) = pixels[(i * 28 + r) * 28 + c];  // already / 255
      y[static_cast<std::size_t>(i)] = static_cast<unsigned long>(d.train_y[i]);
    }
    return run(a, x, y);
  } catch (const std::exception& e) {
    return error(e.what());
  }
}
