#include "common.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <utility>

#include "bnorm/core/error.hpp"
#include "bnorm/core/parallel.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "bnorm/io/idx.hpp"
#include "bnorm/layers/conv2d.hpp"
#include "bnorm/layers/pooling.hpp"
#include "bnorm/model/presets.hpp"
#include "kernels/gemm.hpp"

namespace bnorm::cli {

namespace fs = std::filesystem;

void check_batch_size(std::int64_t batch_size) {
  if (batch_size < 1) {
    throw UsageError("--batch-size must be at least 1; received " + std::to_string(batch_size));
  }
}

void check_threads(int threads) {
  if (threads < 1 || threads > max_num_threads()) {
    throw UsageError("--threads must be from 1 to " + std::to_string(max_num_threads()) +
                     " (4 x this machine's hardware threads); received " + std::to_string(threads));
  }
}

int configure_threads(bool flag_given, int flag_threads) {
  if (flag_given) {
    check_threads(flag_threads);
    set_num_threads(flag_threads);
    return num_threads();
  }
  const char* env = std::getenv(kThreadsEnv);
  if (env == nullptr || *env == '\0') return num_threads();
  const std::string_view text(env);
  int threads = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), threads);
  if (ec != std::errc() || end != text.data() + text.size() || threads < 1 ||
      threads > max_num_threads()) {
    throw UsageError(std::string(kThreadsEnv) + " must be an integer from 1 to " +
                     std::to_string(max_num_threads()) +
                     " (4 x this machine's hardware threads, or unset); received '" +
                     std::string(text) + "'");
  }
  set_num_threads(threads);
  return num_threads();
}

void check_limit(std::int64_t limit, const char* option) {
  if (limit < 0) {
    throw UsageError(std::string(option) + " must be >= 0 (0 = all); received " +
                     std::to_string(limit));
  }
}

void check_rescale(const std::string& rescale) {
  if (rescale != "auto" && rescale != "none") {
    throw UsageError("--rescale must be auto or none; received '" + rescale + "'");
  }
}

io::Rescale rescale_mode(const std::string& rescale) {
  check_rescale(rescale);
  return rescale == "none" ? io::Rescale::none : io::Rescale::uint8_unit;
}

bool looks_like_zip(const std::string& path) {
  // Non-blocking, so that a FIFO without a writer cannot hang the check.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char head[4] = {0, 0, 0, 0};
  const ssize_t got = ::read(fd, head, sizeof head);
  ::close(fd);
  return got == 4 && head[0] == 'P' && head[1] == 'K' &&
         ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6));
}

Tensor first_rows(Tensor t, std::int64_t limit) {
  if (limit <= 0 || limit >= t.shape()[0]) return t;
  return t.slice_rows(0, limit);
}

namespace {

std::string not_found(const std::string& dir, const std::string& why) {
  return "Fashion-MNIST not found in " + dir + " (" + why +
         "); install it with: apt-get install dataset-fashion-mnist, or pass --data DIR";
}

std::string locate(const std::string& dir, const std::string& name) {
  std::error_code ec;
  for (const auto& candidate : {name + ".gz", name}) {
    const fs::path p = fs::path(dir) / candidate;
    if (fs::exists(p, ec)) return p.string();
  }
  throw IoError(not_found(dir, "missing " + name + ".gz"));
}

// `prefix` is "t10k" (test) or "train".
TestSet load_split(const std::string& dir, const std::string& prefix, std::int64_t limit) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw IoError(not_found(dir, fs::exists(dir, ec) ? "not a directory" : "no such directory"));
  }
  const std::string images_path = locate(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = locate(dir, prefix + "-labels-idx1-ubyte");
  TestSet set{io::read_idx_images(images_path), io::read_idx_labels(labels_path)};
  if (set.x.shape()[0] != set.y.shape()[0]) {
    throw IoError("Fashion-MNIST in " + dir + ": '" + images_path + "' holds " +
                  std::to_string(set.x.shape()[0]) + " images but '" + labels_path + "' holds " +
                  std::to_string(set.y.shape()[0]) + " labels (count mismatch)");
  }
  // Every command reads these labels as Fashion-MNIST classes (predict prints class names):
  // a label outside 0..9 is refused here, naming the file, never used as an index.
  io::check_class_labels(set.y, kNumClasses, "'" + labels_path + "'");
  set.x = first_rows(std::move(set.x), limit);
  set.y = first_rows(std::move(set.y), limit);
  return set;
}

}  // namespace

TestSet load_test_set(const std::string& dir, std::int64_t limit) {
  return load_split(dir, "t10k", limit);
}

TestSet load_train_set(const std::string& dir, std::int64_t limit) {
  return load_split(dir, "train", limit);
}

Shape model_input_shape(const Model& model, const Shape& sample) {
  std::optional<std::string> data_format;
  if (model.size() > 0) {
    const Layer& first = model.layer(std::size_t{0});
    if (const auto* conv = dynamic_cast<const Conv2D*>(&first)) {
      data_format = conv->options().data_format;
    } else if (const auto* pool = dynamic_cast<const Pooling2D*>(&first)) {
      data_format = pool->options().data_format;
    } else if (const auto* gap = dynamic_cast<const GlobalAveragePooling2D*>(&first)) {
      data_format = gap->options().data_format;
    }
  }
  if (!data_format) return Shape{sample.size()};
  if (sample.rank() == 3) return sample;
  if (sample.rank() != 2) {
    throw ShapeError("model '" + model.name() + "' starts with an image layer (" +
                     model.layer(std::size_t{0}).class_name() +
                     ") that takes samples of shape (height, width) or (height, width, "
                     "channels); the data's samples have shape " +
                     sample.str());
  }
  if (*data_format == "channels_first") return Shape{1, sample[0], sample[1]};
  return Shape{sample[0], sample[1], 1};
}

Shape fashion_mnist_input_shape(const Model& model) {
  constexpr std::int64_t kSide = 28;
  return model_input_shape(model, Shape{kSide, kSide});
}

bool is_resnet_preset(const std::string& spec) {
  return spec == kResNetPreset || spec == kResNetNoBnPreset;
}

Model make_resnet_preset(const std::string& spec, std::uint64_t seed, std::string name,
                         const Shape& input_shape, std::int64_t classes) {
  if (!is_resnet_preset(spec)) throw ValueError("'" + spec + "' is not a resnet preset");
  ResNetOptions r;
  r.batch_norm = spec == kResNetPreset;
  r.input_shape = input_shape;
  r.classes = classes;
  return resnet(r, seed, std::move(name));
}

Tensor as_model_input(Tensor images, const Model& model) {
  if (!model.input_shape()) {
    throw ShapeError("model '" + model.name() +
                     "' has no input shape (it was saved before it was built)");
  }
  const Shape& per_sample = *model.input_shape();
  const std::int64_t n = images.shape()[0];
  const std::vector<std::int64_t> sample(images.shape().dims().begin() + 1,
                                         images.shape().dims().end());
  const Shape sample_shape(sample);
  if (per_sample.size() != sample_shape.size()) {
    throw ShapeError("model '" + model.name() + "' expects inputs of shape " + per_sample.str() +
                     " (" + std::to_string(per_sample.size()) + " values), but the samples are " +
                     sample_shape.str() + " (" + std::to_string(sample_shape.size()) + " values)");
  }
  std::vector<std::int64_t> dims{n};
  for (auto d : per_sample.dims()) dims.push_back(d);
  return std::move(images).reshaped(Shape(dims));
}

void check_classifier_output(const Model& model, const std::string& what) {
  const Shape out = model.output_shape();
  if (out != Shape{kNumClasses}) {
    throw ShapeError(what + " outputs shape " + out.str() + " per image; Fashion-MNIST needs (" +
                     std::to_string(kNumClasses) +
                     ",) (one probability per class: end the model with dense10-softmax)");
  }
}

Model load_model_for_inference(const std::string& path) {
  Model model = io::load_model(path);
  if (!model.built()) {
    throw IoError("model file '" + path +
                  "': the model was saved before it was built (no weights)");
  }
  if (!model.compiled()) model.compile("adam", "sparse_categorical_crossentropy");
  return model;
}

void write_text_file(const std::string& path, const std::string& contents) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw IoError("cannot write '" + path + "': " + std::strerror(errno));
  }
  std::size_t done = 0;
  int err = 0;
  while (done < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) err = errno;
  if (err != 0) {
    ::unlink(tmp.c_str());
    throw IoError("cannot write '" + path + "': " + std::strerror(err));
  }
}

std::string fixed(double value, int digits) {
  if (std::isnan(value)) return "nan";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, value);
  return buf;
}

std::string blas_description() {
  const std::string core = kernels::blas_core();
  if (core.empty()) return kernels::blas_name();
  // OpenBLAS's own pick for the CPU, unless OPENBLAS_CORETYPE forced one (often an older one:
  // Haswell's AVX2 kernels on an AVX-512 CPU run the GEMMs 10-25% slower).
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  return std::string(kernels::blas_name()) + " (" + core +
         (forced && *forced ? " kernels, forced by OPENBLAS_CORETYPE)" : " kernels)");
}

}  // namespace bnorm::cli
