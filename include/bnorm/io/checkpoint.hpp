// bnorm/io/checkpoint.hpp — saving and loading whole models (architecture, compile settings,
// every weight incl. moving statistics). The format is in docs/model-format.md.
#pragma once

#include <string>

#include "bnorm/model/callbacks.hpp"
#include "bnorm/model/sequential.hpp"

namespace bnorm::io {

// Atomic: writes "<path>.tmp-<pid>", flushes, then renames over `path`; on any failure the
// previous file at `path` is left untouched and IoError is thrown.
void save_model(const Model& model, const std::string& path);
// IoError naming the file and the problem (not a bnorm model, truncated, checksum mismatch,
// unknown layer class, weights that do not fit the architecture, ...).
// A Sequential file gives a Model that converts to Sequential (Sequential m = load_model(p)).
Model load_model(const std::string& path);

// Saves the model after every epoch (Keras ModelCheckpoint with save_best_only=false).
// Because saves are atomic, a crash or a non-finite loss leaves the last good file intact.
class ModelCheckpoint final : public Callback {
 public:
  explicit ModelCheckpoint(std::string path) : path_(std::move(path)) {}
  void on_epoch_end(Model& model, int epoch, const Logs& logs) override;

 private:
  std::string path_;
};

}  // namespace bnorm::io
