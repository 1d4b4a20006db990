// HDF5 for the Keras formats, through the HDF5 C library: files opened from and written to
// memory (never a path HDF5 resolves), and reads that refuse what Keras's own loader learned to
// refuse (CVE-2026-1669, CVE-2026-0897, CVE-2026-12570): soft and external links, external
// storage, virtual datasets, and datasets whose declared size is implausible for the bytes
// stored. Every error is an IoError "<context><path>: <problem>".
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace bnorm::io::detail::h5 {

using hid = std::int64_t;  // hid_t, without exposing the HDF5 headers

// An owned HDF5 identifier (file, group, dataset, ...), closed on destruction.
class Handle {
 public:
  Handle() = default;
  Handle(hid id, int (*close)(hid)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle();
  hid get() const noexcept { return id_; }

 private:
  hid id_ = -1;
  int (*close_)(hid) = nullptr;
};

struct DatasetInfo {
  std::vector<std::int64_t> dims;  // empty: a scalar
  std::uint64_t elements = 1;
};

class Group {
 public:
  Group(Handle handle, std::string path, std::shared_ptr<const std::string> context)
      : handle_(std::move(handle)), path_(std::move(path)), context_(std::move(context)) {}
  const std::string& path() const noexcept { return path_; }

  // The child at `rel` ("a/b/c"), reached only through hard links; nullopt when a component does
  // not exist. IoError for a soft or external link on the way, or a child that is no group.
  std::optional<Group> find_group(const std::string& rel) const;
  Group group(const std::string& rel) const;  // IoError when absent
  bool has(const std::string& rel) const;     // a link of any kind exists at `rel`
  // Names of the direct children (links), in HDF5's order.
  std::vector<std::string> children() const;

  // A dataset's shape, after the safety checks (hard links only, not virtual, no external
  // storage, a numeric type, at most 8 dimensions). nullopt when absent.
  std::optional<DatasetInfo> find_dataset(const std::string& rel) const;
  // Reads a dataset whose shape must equal `dims` into `out` (converted to float32). Refuses a
  // dataset that declares more than 1000x the bytes it stores (above 1 MiB), or stores none.
  void read_floats(const std::string& rel, const std::vector<std::int64_t>& dims, float* out) const;

  // Attributes: a string (fixed or variable length), a list of strings (Keras's name lists,
  // concatenated over the split "<name>0", "<name>1", ... attributes that h5py writes above
  // 64 KiB); an empty numeric array reads as an empty list. nullopt when absent.
  std::optional<std::string> string_attr(const std::string& name) const;
  std::optional<std::vector<std::string>> string_list_attr(const std::string& name) const;

  // Writing (in-memory files made by File::create).
  Group create_group(const std::string& name) const;
  void write_floats(const std::string& name, const std::vector<std::int64_t>& dims,
                    const float* values) const;
  void write_int64_scalar(const std::string& name, std::int64_t value) const;
  void write_string_attr(const std::string& name, const std::string& value) const;
  void write_string_list_attr(const std::string& name,
                              const std::vector<std::string>& values) const;

  [[noreturn]] void fail(const std::string& rel, const std::string& problem) const;
  // Reads every attribute of `target` (strings as strings), for the child-process check.
  void read_all_attributes(const Group& target) const;

 private:
  std::string join(const std::string& rel) const;
  Handle open_dataset(const std::string& rel) const;
  DatasetInfo dataset_info(const Handle& dataset, const std::string& rel) const;
  Handle handle_;
  std::string path_;
  std::shared_ptr<const std::string> context_;
};

class File {
 public:
  // Opens an HDF5 file held in memory (copied), after check_in_child has read all of it in a
  // child process. IoError "<context>..." when that check or HDF5 refuses it.
  static File open(std::span<const unsigned char> bytes, const std::string& context);
  // The same without the child-process check (the check itself uses it).
  static File open_unchecked(std::span<const unsigned char> bytes, const std::string& context);
  // A new empty file in memory.
  static File create(const std::string& context);
  Group root() const;
  // The file's bytes (after a flush).
  std::string image() const;

 private:
  File(Handle handle, std::string context);
  Handle handle_;
  std::shared_ptr<const std::string> context_;
};

// Debian 12's HDF5 (1.10.8) crashes on some corrupt files (e.g. a damaged global heap behind a
// variable-length string attribute), and no bnorm check can stand in front of its parser. So a
// file from outside is first read whole, through the same calls the loaders make, in a child
// process: a crash there (a signal or a sanitizer report), a hang (5 s + 1 s per 10 MB) or an error
// becomes one IoError, and only a file that passed is opened in this process, where the same calls
// on the same bytes then run.
void check_in_child(std::span<const unsigned char> bytes, const std::string& context);

// A dataset shape as Python prints it: "(4, 3)", "(5,)", "()".
std::string dims_str(const std::vector<std::int64_t>& dims);

// Whether `bytes` start with the HDF5 signature.
bool is_hdf5(std::span<const unsigned char> bytes) noexcept;

}  // namespace bnorm::io::detail::h5
