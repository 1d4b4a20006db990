// bnorm/io/data.hpp — the user's data: NumPy .npy/.npz files and CSV, and the data sets that
// `bnorm train --data` and `bnorm predict --input` read from them.
//
// Every reader validates before it allocates (the shape's element count and byte size against
// the bytes that are actually there) and reports problems as IoError "<file>: <problem>" on one
// line. Features become float32 tensors; labels become class indices, checked to be whole
// numbers >= 0.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bnorm/core/tensor.hpp"
#include "bnorm/io/idx.hpp"  // Dataset

namespace bnorm::io {

// --- .npy (NumPy format 1.0, 2.0, 3.0) --------------------------------------------------------

// The element types bnorm reads, by NumPy name. Little- and big-endian files are both read
// (big-endian is byte-swapped on load).
enum class NpyType {
  float32,
  float64,
  uint8,
  int8,
  int16,
  int32,
  int64,
  uint16,
  uint32,
  uint64,
  bool_
};
// "float32", "uint8", "bool", ... (NumPy's dtype names).
const char* npy_type_name(NpyType type) noexcept;

// One array as NumPy stored it, in C order and native byte order (a Fortran-order file is
// transposed on load).
struct NpyArray {
  NpyType type = NpyType::float32;
  std::vector<std::int64_t> shape;     // rank 0..8; empty for a 0-d array (one value)
  std::vector<unsigned char> data;     // size() * item size bytes
  std::int64_t size() const noexcept;  // element count (1 for rank 0)
  std::string shape_str() const;       // "(3, 4)", "(5,)", "()" as NumPy prints them
};

// Largest rank accepted (NumPy allows 64; no data set needs more than a handful).
inline constexpr int kMaxNpyRank = 8;

// Parses a whole .npy file held in memory. The header dict must be exactly NumPy's
// {'descr': ..., 'fortran_order': ..., 'shape': (...)}; the shape's element count and byte size
// are checked for overflow and against the bytes present (no more, no fewer) before the data is
// copied. `context` starts every error message ("x.npy: ").
NpyArray read_npy_bytes(std::span<const unsigned char> bytes, const std::string& context);
// The same from a file (read whole; size-capped; FIFOs and directories refused).
NpyArray read_npy_array(const std::string& path);

// How integer image data is scaled when it becomes float32 features.
enum class Rescale {
  none,        // values as stored (a model with its own Rescaling layer)
  uint8_unit,  // uint8 arrays divided by 255 (as the Fashion-MNIST IDX loader does); others as
               // stored
};

// The array as float32 features: rank 1..5 (a Tensor's range), every type converted by value
// (bool -> 0/1). IoError naming `what` for another rank.
Tensor npy_features(const NpyArray& array, const std::string& what,
                    Rescale rescale = Rescale::none);
// The array as class labels: shape (n,) or (n, 1); integer or bool types, or floats holding whole
// numbers; every label >= 0. IoError naming `what`, the index and the value otherwise.
std::vector<std::int64_t> npy_labels(const NpyArray& array, const std::string& what);

// read_npy_array + npy_features: a .npy file as float32 features.
Tensor read_npy(const std::string& path, Rescale rescale = Rescale::none);

// A float32 tensor as .npy bytes (format 1.0, '<f4', C order), and written atomically
// (temporary file + rename; IoError naming the file on failure).
std::string npy_bytes(const Tensor& tensor);
void write_npy(const std::string& path, const Tensor& tensor);

// --- .npz (np.savez: stored; np.savez_compressed: deflate) ---------------------------------

// The arrays of an .npz archive held in memory, keyed by member name without ".npy". With
// `wanted` non-empty only those arrays are decompressed (a missing one is simply absent). Zip
// caps: members up to 4 GiB, compression ratio 100:1 above 64 MiB (zip bombs). A member that
// is not a .npy file is refused.
std::map<std::string, NpyArray> read_npz_bytes(std::span<const unsigned char> bytes,
                                               const std::string& context,
                                               const std::vector<std::string>& wanted = {});
std::map<std::string, NpyArray> read_npz(const std::string& path,
                                         const std::vector<std::string>& wanted = {});

// --- CSV ----------------------------------------------------------------------------------------

// A numeric CSV file: a header row, then rows of numbers, one of them the label.
struct CsvData {
  std::vector<std::string> columns;  // the header's names, in order
  std::string label_column;          // the chosen label column
  Tensor features;                   // (rows, columns - 1) float32, the other columns in order
  std::vector<std::int64_t> labels;  // (rows,)
};

// Parses CSV text (RFC 4180: comma-separated, fields optionally in double quotes with "" for a
// quote; LF or CRLF line ends; blank lines skipped). `label_column` names the label column; empty
// = the last column. Every field must be a finite number (surrounding spaces allowed), labels
// whole numbers >= 0. IoError "<context>line L, column 'name': ..." for the first bad field, a
// row with another field count than the header, a file with no header or no data rows, an
// unknown or repeated label column name.
CsvData read_csv_text(std::string_view text, const std::string& label_column,
                      const std::string& context);
CsvData read_csv(const std::string& path, const std::string& label_column);

// --- data sets ----------------------------------------------------------------------------------

// x_train, y_train, x_test, y_test from an .npz archive, as keras.datasets returns them (e.g.
// np.savez("data.npz", x_train=..., y_train=..., x_test=..., y_test=...)): x of shape (n, ...) of
// any supported type, y of shape (n,) or (n, 1) holding class indices. Features are float32
// (scaled by `rescale`), labels float class indices of shape (n,) as bnorm's trainer takes them.
// IoError naming the file for a missing array, row counts that differ between x and y, train
// and test samples of different shapes, labels that are not class indices.
Dataset load_npz_dataset(const std::string& path, Rescale rescale = Rescale::uint8_unit);
// The same from two CSV files with the same header: features (n, columns - 1).
Dataset load_csv_dataset(const std::string& train_path, const std::string& test_path,
                         const std::string& label_column);

// IoError "<what>: label V at index I is outside the model's K classes (0..K-1)" for the first
// label not in [0, num_classes).
void check_class_labels(const Tensor& labels, std::int64_t num_classes, const std::string& what);
// The largest label of the data set's two splits + 1 (at least 1); labels are >= 0 by
// construction.
std::int64_t count_classes(const Dataset& data);

}  // namespace bnorm::io
