// The one load_model/save_model entry: picks the format room by content (loading) or by
// extension (saving).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "bnorm/core/error.hpp"
#include "bnorm/io/checkpoint.hpp"
#include "io/files.hpp"
#ifdef BNORM_HAVE_KERAS
#include "bnorm/io/keras.hpp"
#endif

namespace bnorm::io {

namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    const char c = s[s.size() - suffix.size() + i];
    if (std::tolower(static_cast<unsigned char>(c)) != suffix[i]) return false;
  }
  return true;
}

#ifndef BNORM_HAVE_KERAS
[[noreturn]] void no_keras(const std::string& path) {
  throw IoError("model file '" + path +
                "': this bnorm was built without Keras file support (HDF5/libzip missing)");
}
#endif

}  // namespace

std::string model_file_format(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw IoError("model file '" + path + "': cannot open (" + std::strerror(errno) + ")");
  unsigned char head[8] = {};
  ssize_t n = 0;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) n = ::read(fd, head, sizeof head);
  ::close(fd);
  if (n == 8 && std::memcmp(head, "BNORMMDL", 8) == 0) return "bnorm";
  if (n >= 4 && head[0] == 'P' && head[1] == 'K' && head[2] == 3 && head[3] == 4) return "keras";
  static constexpr unsigned char kHdf5[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  if (n == 8 && std::memcmp(head, kHdf5, 8) == 0) return "h5";
  return "";
}

Model load_model(const std::string& path) {
  const std::string format = model_file_format(path);
#ifdef BNORM_HAVE_KERAS
  if (format == "keras") return load_keras(path);
  if (format == "h5") return load_keras_h5(path);
#else
  if (format == "keras" || format == "h5") no_keras(path);
#endif
  if (format.empty()) {
    // Too short to tell, or a bnorm header cut short: the native reader says which.
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (!ec && size >= 8) {
      throw IoError("model file '" + path +
                    "': not a model file (neither a bnorm model, a Keras .keras archive nor a "
                    "Keras HDF5 file)");
    }
  }
  return load_native_model(path);
}

std::string model_format_for_name(const std::string& path) {
  if (has_suffix(path, ".keras")) return "keras";
  if (has_suffix(path, ".h5") || has_suffix(path, ".hdf5")) return "h5";
  return "bnorm";
}

void save_model(const Model& model, const std::string& path) {
  const std::string format = model_format_for_name(path);
  if (format == "bnorm") return save_native_model(model, path);
#ifdef BNORM_HAVE_KERAS
  if (format == "keras") return save_keras(model, path);
  save_keras_h5(model, path);
#else
  no_keras(path);
#endif
}

void load_weights(Model& model, const std::string& path) {
#ifdef BNORM_HAVE_KERAS
  load_keras_weights(model, path);
#else
  (void)model;
  no_keras(path);
#endif
}

void remove_stale_temporaries(const std::string& path) { detail::remove_stale_temporaries(path); }

void ModelCheckpoint::on_epoch_end(Model& model, int /*epoch*/, const Logs& /*logs*/) {
  save_model(model, path_);
}

}  // namespace bnorm::io
