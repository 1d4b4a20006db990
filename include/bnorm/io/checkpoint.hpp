// bnorm/io/checkpoint.hpp — saving and loading whole models (architecture, compile settings,
// every weight incl. moving statistics, and a trained model's state for exact resume). The
// format is in docs/model-format.md.
#pragma once

#include <string>

#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/sequential.hpp"

namespace bnorm::io {

// The one entry for model files. Saving picks the format by the extension: ".keras" (Keras 3),
// ".h5"/".hdf5" (legacy Keras HDF5), anything else bnorm's own format. Atomic: writes
// "<path>.tmp-<pid>", flushes, then renames over `path`; on any failure the previous file at
// `path` is left untouched and IoError is thrown.
void save_model(const Model& model, const std::string& path);
// Loading picks the format by the file's content (bnorm's magic, a zip, an HDF5 signature), not
// its name. IoError naming the file and the problem (not a model, truncated, checksum mismatch,
// unknown layer class, weights that do not fit the architecture, ...).
// A Sequential file gives a Model that converts to Sequential (Sequential m = load_model(p)).
Model load_model(const std::string& path);

// Keras weights-only files (.weights.h5, or legacy weights .h5) into a built model; IoError when
// this bnorm was built without Keras support. See bnorm/io/keras.hpp load_keras_weights.
void load_weights(Model& model, const std::string& path);

// Removes "<path>.tmp-<pid>" files that a save killed before its rename left beside `path`
// (files of processes that no longer exist on this machine; a save in progress is left alone).
// Every save does this for its own path first; callers that write other files beside a model
// (bnorm train's reports) can do the same. Best effort: never throws.
void remove_stale_temporaries(const std::string& path);

// bnorm's own format (docs/model-format.md), whatever the file is called.
void save_native_model(const Model& model, const std::string& path);
Model load_native_model(const std::string& path);

// The format save_model writes for `path`: "keras" (.keras), "h5" (.h5, .hdf5), else "bnorm".
std::string model_format_for_name(const std::string& path);

// Which format a file holds, from its first bytes: "bnorm", "keras" (a zip), "h5", or "" when
// none (IoError when the file cannot be read).
std::string model_file_format(const std::string& path);

// Saves the model after every epoch (Keras ModelCheckpoint with save_best_only=false).
// Because saves are atomic, a crash or a non-finite loss leaves the last good file intact.
// A .bnorm checkpoint is resumable: it holds the optimizer's state, the random streams, the
// epoch and the history (docs/model-format.md), so
//   Model m = load_model(path);
//   m.fit(x, y, {.epochs = E, .initial_epoch = m.training_state().epoch, ...});
// continues the run with the bits of one that was never interrupted (same data and options).
class ModelCheckpoint final : public Callback {
 public:
  explicit ModelCheckpoint(std::string path) : path_(std::move(path)) {}
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override;

 private:
  std::string path_;
};

}  // namespace bnorm::io
