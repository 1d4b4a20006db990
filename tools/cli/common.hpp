// tools/cli/common.hpp — pieces shared by the bnorm commands.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/data.hpp"
#include "bnorm/model/sequential.hpp"

namespace CLI {
class App;
}

namespace bnorm::cli {

// A command-line value out of its range ("--batch-size must be >= 1; received 0"). Exit status 2,
// like CLI11's own usage errors; library errors (data, model files, specs) exit with 1.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Each command registers its subcommand and returns what to run once parsing succeeded.
using Action = std::function<void()>;
Action add_train_command(CLI::App& app);
Action add_evaluate_command(CLI::App& app);
Action add_predict_command(CLI::App& app);
Action add_summary_command(CLI::App& app);
Action add_convert_command(CLI::App& app);
Action add_recalibrate_command(CLI::App& app);
Action add_bench_command(CLI::App& app);

inline constexpr int kNumClasses = 10;
// Fashion-MNIST class names by label.
inline constexpr std::array<const char*, kNumClasses> kClassNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// Option checks; each throws UsageError naming the option and the received value.
void check_batch_size(std::int64_t batch_size);
void check_threads(int threads);
void check_limit(std::int64_t limit, const char* option);
// --rescale auto | none; UsageError otherwise. rescale_mode: auto divides uint8 data by 255 (as
// the Fashion-MNIST IDX loader does), none keeps the stored values.
void check_rescale(const std::string& rescale);
io::Rescale rescale_mode(const std::string& rescale);
// True when the file starts with a zip signature ("PK\3\4" or the empty archive's "PK\5\6").
bool looks_like_zip(const std::string& path);

// Environment variable giving the thread count when --threads is absent.
inline constexpr const char* kThreadsEnv = "BNORM_NUM_THREADS";
// Sets bnorm's thread count: --threads when given (the environment is then not read), else
// BNORM_NUM_THREADS when set and non-empty, else bnorm's default (all cores). UsageError for a
// value that is not an integer >= 1 (e.g. "0", "-1", "abc", "2x"). Returns the count in use.
int configure_threads(bool flag_given, int flag_threads);
// The BLAS behind Dense and Conv2D and the kernel set it runs: "OpenBLAS (SkylakeX)", "MKL".
std::string blas_description();

// The first `limit` rows (all when limit is 0 or larger than the tensor: then `t` is moved, not
// copied, so pass std::move(data) to keep one copy of a data set in memory).
Tensor first_rows(Tensor t, std::int64_t limit);

// One Fashion-MNIST split alone: the test split (evaluate and predict do not need the 60000
// training images) or the training split (bench train does not need the test images); the same
// "not found ... install it with" errors as io::load_fashion_mnist.
struct TestSet {
  Tensor x;  // (N, 28, 28) in [0, 1]
  Tensor y;  // (N,)
};
TestSet load_test_set(const std::string& dir, std::int64_t limit);
TestSet load_train_set(const std::string& dir, std::int64_t limit);

// The per-sample input shape a model built from a spec gets for samples of shape `sample`, from
// its first layer: an image layer (Conv2D, pooling) takes (H, W, C) samples as they are and
// (H, W) samples as (H, W, 1) ((1, H, W) with data_format channels_first); any other first layer
// takes the samples flattened, e.g. (784,). ShapeError for samples an image layer cannot take.
Shape model_input_shape(const Model& model, const Shape& sample);
// model_input_shape for Fashion-MNIST's (28, 28) images: (28, 28, 1), (1, 28, 28) or (784,).
Shape fashion_mnist_input_shape(const Model& model);
// Samples (N, ...) viewed with the model's per-sample input shape, e.g. (N, 784), reusing their
// storage; ShapeError when the per-sample sizes differ or the model has no input shape.
Tensor as_model_input(Tensor images, const Model& model);
// The functional presets (bnorm::resnet) have no spec string: these stand where a spec would,
// in `train`'s and `bench train`'s named models and in their JSON "spec" fields.
inline constexpr const char* kResNetPreset = "resnet-8 (bnorm::resnet, BN after every convolution)";
inline constexpr const char* kResNetNoBnPreset =
    "resnet-8 without BN (bnorm::resnet, batch_norm=false)";
// True when `spec` is kResNetPreset or kResNetNoBnPreset.
bool is_resnet_preset(const std::string& spec);
// The preset's network (bnorm::resnet with default options; batch_norm off for
// kResNetNoBnPreset), built for `input_shape` (H, W, C) and `classes` outputs, not compiled.
// ValueError for another spec.
Model make_resnet_preset(const std::string& spec, std::uint64_t seed, std::string name,
                         const Shape& input_shape = Shape{28, 28, 1}, std::int64_t classes = 10);

// ShapeError unless the model outputs one value per Fashion-MNIST class.
void check_classifier_output(const Model& model, const std::string& what);
// A model from a file, compiled (sparse categorical cross-entropy) when the file has no
// compile settings, so that evaluate works.
Model load_model_for_inference(const std::string& path);

// Atomic text file write (temp file + fsync + rename); IoError naming the file otherwise.
void write_text_file(const std::string& path, const std::string& contents);

// "0.8712" style fixed formatting.
std::string fixed(double value, int digits);

}  // namespace bnorm::cli
