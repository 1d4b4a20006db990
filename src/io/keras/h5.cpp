#include "io/keras/h5.hpp"

#include <hdf5.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "bnorm/core/error.hpp"

// Sanitizer runtimes define this; absent (null) in a plain build.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace bnorm::io::detail::h5 {

namespace {

constexpr int kChildCrashed = 97;  // exit code of a child that a sanitizer ended

constexpr std::uint64_t kMaxRatio = 1000;             // declared bytes per stored byte
constexpr std::uint64_t kRatioFloor = 1 << 20;        // small datasets are not checked
constexpr std::uint64_t kMaxAttrBytes = 64ull << 20;  // one attribute
constexpr int kMaxRank = 8;

// HDF5 prints its error stack to stderr by default; bnorm reports errors itself.
void quiet() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

int close_file(hid id) { return H5Fclose(static_cast<hid_t>(id)); }
int close_group(hid id) { return H5Gclose(static_cast<hid_t>(id)); }
int close_dataset(hid id) { return H5Dclose(static_cast<hid_t>(id)); }
int close_space(hid id) { return H5Sclose(static_cast<hid_t>(id)); }
int close_type(hid id) { return H5Tclose(static_cast<hid_t>(id)); }
int close_attr(hid id) { return H5Aclose(static_cast<hid_t>(id)); }
int close_plist(hid id) { return H5Pclose(static_cast<hid_t>(id)); }

hid_t id(const Handle& h) { return static_cast<hid_t>(h.get()); }

std::vector<std::string> split(const std::string& rel) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : rel) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

// Unique names for in-memory files (HDF5 refuses two open files with one name).
std::string next_name() {
  static std::atomic<std::uint64_t> counter{0};
  return "bnorm-memory-" + std::to_string(counter++) + ".h5";
}

}  // namespace

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0 && close_) close_(id_);
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

Handle::~Handle() {
  if (id_ >= 0 && close_) close_(id_);
}

std::string dims_str(const std::vector<std::int64_t>& dims) {
  std::string s = "(";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

bool is_hdf5(std::span<const unsigned char> bytes) noexcept {
  static constexpr unsigned char kSig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kSig, 8) == 0;
}

// ---------------------------------------------------------------------------------------------
// File

File::File(Handle handle, std::string context)
    : handle_(std::move(handle)),
      context_(std::make_shared<const std::string>(std::move(context))) {}

File File::open(std::span<const unsigned char> bytes, const std::string& context) {
  if (!is_hdf5(bytes)) throw IoError(context + "not an HDF5 file (no HDF5 signature)");
  check_in_child(bytes, context);
  return open_unchecked(bytes, context);
}

File File::open_unchecked(std::span<const unsigned char> bytes, const std::string& context) {
  quiet();
  if (!is_hdf5(bytes)) throw IoError(context + "not an HDF5 file (no HDF5 signature)");
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), close_plist);
  if (fapl.get() < 0 || H5Pset_fapl_core(id(fapl), 1 << 16, 0) < 0 ||
      H5Pset_file_image(id(fapl), const_cast<unsigned char*>(bytes.data()), bytes.size()) < 0) {
    throw IoError(context + "HDF5 could not take the file image");
  }
  const hid_t f = H5Fopen(next_name().c_str(), H5F_ACC_RDONLY, id(fapl));
  if (f < 0) throw IoError(context + "HDF5 cannot open the file (corrupt or truncated)");
  return File(Handle(f, close_file), context);
}

File File::create(const std::string& context) {
  quiet();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), close_plist);
  if (fapl.get() < 0 || H5Pset_fapl_core(id(fapl), 1 << 16, 0) < 0) {
    throw IoError(context + "HDF5 cannot create an in-memory file");
  }
  const hid_t f = H5Fcreate(next_name().c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, id(fapl));
  if (f < 0) throw IoError(context + "HDF5 cannot create an in-memory file");
  return File(Handle(f, close_file), context);
}

Group File::root() const {
  const hid_t g = H5Gopen2(id(handle_), "/", H5P_DEFAULT);
  if (g < 0) throw IoError(*context_ + "HDF5 cannot open the root group");
  return Group(Handle(g, close_group), "", context_);
}

std::string File::image() const {
  if (H5Fflush(id(handle_), H5F_SCOPE_GLOBAL) < 0) throw IoError(*context_ + "HDF5 flush failed");
  const ssize_t n = H5Fget_file_image(id(handle_), nullptr, 0);
  if (n <= 0) throw IoError(*context_ + "HDF5 cannot produce the file image");
  std::string out(static_cast<std::size_t>(n), '\0');
  if (H5Fget_file_image(id(handle_), out.data(), out.size()) != n) {
    throw IoError(*context_ + "HDF5 cannot produce the file image");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Group: navigation

std::string Group::join(const std::string& rel) const {
  return path_.empty() ? rel : path_ + "/" + rel;
}

void Group::fail(const std::string& rel, const std::string& problem) const {
  const std::string where = rel.empty() ? (path_.empty() ? "/" : path_) : join(rel);
  throw IoError(*context_ + where + ": " + problem);
}

namespace {

// Follows `parts[0..n)` from `start` through hard links only; returns -1 (nothing opened) when a
// component is missing. `fail` is called for links that are not hard.
template <class Fail>
hid_t walk(hid_t start, const std::vector<std::string>& parts, std::size_t n, const Fail& fail) {
  hid_t cur = start;
  bool owned = false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string& name = parts[i];
    const htri_t exists = H5Lexists(cur, name.c_str(), H5P_DEFAULT);
    if (exists <= 0) {
      if (owned) H5Gclose(cur);
      return -1;
    }
    H5L_info_t info{};
    if (H5Lget_info(cur, name.c_str(), &info, H5P_DEFAULT) < 0 || info.type != H5L_TYPE_HARD) {
      if (owned) H5Gclose(cur);
      fail(i, "is a soft or external link; only hard links are followed");
    }
    const hid_t next = H5Gopen2(cur, name.c_str(), H5P_DEFAULT);
    if (owned) H5Gclose(cur);
    if (next < 0) fail(i, "is not a group");
    cur = next;
    owned = true;
  }
  if (!owned) cur = H5Gopen2(start, ".", H5P_DEFAULT);
  return cur;
}

}  // namespace

std::optional<Group> Group::find_group(const std::string& rel) const {
  const auto parts = split(rel);
  auto fail_at = [&](std::size_t i, const std::string& problem) {
    std::string p;
    for (std::size_t k = 0; k <= i; ++k) p += (k ? "/" : "") + parts[k];
    fail(p, problem);
  };
  const hid_t g = walk(id(handle_), parts, parts.size(), fail_at);
  if (g < 0) return std::nullopt;
  std::string path = path_;
  for (const auto& p : parts) path += (path.empty() ? "" : "/") + p;
  return Group(Handle(g, close_group), path, context_);
}

Group Group::group(const std::string& rel) const {
  auto g = find_group(rel);
  if (!g) fail(rel, "missing");
  return std::move(*g);
}

bool Group::has(const std::string& rel) const {
  const auto parts = split(rel);
  if (parts.empty()) return true;
  std::string parent_rel;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) parent_rel += (i ? "/" : "") + parts[i];
  auto parent = find_group(parent_rel);
  if (!parent) return false;
  return H5Lexists(id(parent->handle_), parts.back().c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> Group::children() const {
  std::vector<std::string> names;
  auto collect = [](hid_t, const char* name, const H5L_info_t*, void* data) -> herr_t {
    auto* out = static_cast<std::vector<std::string>*>(data);
    if (out->size() > 1000000) return 1;  // stop: no model has a million children
    out->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  if (H5Literate(id(handle_), H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect, &names) < 0) {
    fail("", "HDF5 cannot list the group");
  }
  return names;
}

// ---------------------------------------------------------------------------------------------
// Datasets

Handle Group::open_dataset(const std::string& rel) const {
  const auto parts = split(rel);
  if (parts.empty()) fail(rel, "empty dataset path");
  std::string parent_rel;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) parent_rel += (i ? "/" : "") + parts[i];
  auto parent = find_group(parent_rel);
  if (!parent) return Handle();
  const hid_t pid = id(parent->handle_);
  const char* name = parts.back().c_str();
  if (H5Lexists(pid, name, H5P_DEFAULT) <= 0) return Handle();
  H5L_info_t info{};
  if (H5Lget_info(pid, name, &info, H5P_DEFAULT) < 0 || info.type != H5L_TYPE_HARD) {
    fail(rel, "is a soft or external link; only hard links are followed");
  }
  const hid_t d = H5Dopen2(pid, name, H5P_DEFAULT);
  if (d < 0) fail(rel, "is not a dataset");
  Handle ds(d, close_dataset);
  Handle dcpl(H5Dget_create_plist(d), close_plist);
  if (dcpl.get() < 0) fail(rel, "HDF5 cannot read the dataset's properties");
  if (H5Pget_layout(id(dcpl)) == H5D_VIRTUAL) fail(rel, "is a virtual dataset; refused");
  if (H5Pget_external_count(id(dcpl)) != 0) {
    fail(rel, "keeps its data in an external file; refused");
  }
  return ds;
}

std::optional<DatasetInfo> Group::find_dataset(const std::string& rel) const {
  Handle ds = open_dataset(rel);
  if (ds.get() < 0) return std::nullopt;
  return dataset_info(ds, rel);
}

DatasetInfo Group::dataset_info(const Handle& ds, const std::string& rel) const {
  Handle type(H5Dget_type(id(ds)), close_type);
  const H5T_class_t cls = H5Tget_class(id(type));
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail(rel, "holds no numbers");
  Handle space(H5Dget_space(id(ds)), close_space);
  const H5S_class_t sc = H5Sget_simple_extent_type(id(space));
  if (sc != H5S_SIMPLE && sc != H5S_SCALAR) fail(rel, "has an empty or unknown dataspace");
  const int rank = H5Sget_simple_extent_ndims(id(space));
  if (rank < 0 || rank > kMaxRank) fail(rel, "has an unsupported rank");
  hsize_t dims[kMaxRank] = {};
  if (rank > 0 && H5Sget_simple_extent_dims(id(space), dims, nullptr) < 0) {
    fail(rel, "HDF5 cannot read the shape");
  }
  DatasetInfo info;
  const std::uint64_t type_bytes = H5Tget_size(id(type));
  if (type_bytes == 0 || type_bytes > 16) fail(rel, "has an unsupported element size");
  for (int i = 0; i < rank; ++i) {
    if (dims[i] > (hsize_t{1} << 40)) fail(rel, "declares an implausible dimension");
    info.dims.push_back(static_cast<std::int64_t>(dims[i]));
    if (dims[i] != 0 && info.elements > (std::uint64_t{1} << 40) / dims[i]) {
      fail(rel, "declares an implausible number of elements");
    }
    info.elements *= dims[i];
  }
  // Declared vs stored bytes, before anyone allocates for the dataset (Keras's
  // safe_get_h5_dataset rule, CVE-2026-12570): a dataset that stores nothing, or declares far
  // more than it stores, is refused.
  const std::uint64_t declared = info.elements * type_bytes;
  const std::uint64_t stored = H5Dget_storage_size(id(ds));
  if (declared > 0 && stored == 0) fail(rel, "stores no data");
  if (declared > kRatioFloor && declared / kMaxRatio > stored) {
    fail(rel, "declares " + std::to_string(declared) + " bytes but stores " +
                  std::to_string(stored) + " (more than 1000x); refused");
  }
  return info;
}

void Group::read_floats(const std::string& rel, const std::vector<std::int64_t>& dims,
                        float* out) const {
  Handle ds = open_dataset(rel);
  if (ds.get() < 0) fail(rel, "missing");
  const DatasetInfo info = dataset_info(ds, rel);
  if (info.dims != dims) {
    fail(rel, "has shape " + dims_str(info.dims) + "; the layer needs " + dims_str(dims));
  }
  if (info.elements == 0) return;
  if (H5Dread(id(ds), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    fail(rel, "HDF5 cannot read the data (corrupt, or a type that does not convert to float32)");
  }
}

// ---------------------------------------------------------------------------------------------
// Attributes

std::optional<std::string> Group::string_attr(const std::string& name) const {
  auto list = string_list_attr(name);
  if (!list) return std::nullopt;
  if (list->size() != 1) fail("", "attribute '" + name + "' must be one string");
  return std::move((*list)[0]);
}

namespace {

// Reads one attribute as a list of strings; nullopt when it does not exist.
template <class Fail>
std::optional<std::vector<std::string>> read_strings(hid_t obj, const std::string& name,
                                                     const Fail& fail) {
  if (H5Aexists(obj, name.c_str()) <= 0) return std::nullopt;
  Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), close_attr);
  if (attr.get() < 0) fail("HDF5 cannot open attribute '" + name + "'");
  Handle type(H5Aget_type(id(attr)), close_type);
  Handle space(H5Aget_space(id(attr)), close_space);
  const hssize_t n = H5Sget_simple_extent_npoints(id(space));
  if (n < 0 || n > (1 << 24)) fail("attribute '" + name + "' has an implausible size");
  std::vector<std::string> out;
  if (H5Tget_class(id(type)) != H5T_STRING) {
    if (n == 0) return out;  // h5py writes an empty name list as an empty float array
    fail("attribute '" + name + "' is not a string");
  }
  const auto count = static_cast<std::size_t>(n);
  if (H5Tis_variable_str(id(type)) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), close_type);
    H5Tset_size(id(mem), H5T_VARIABLE);
    H5Tset_cset(id(mem), H5Tget_cset(id(type)));
    std::vector<char*> ptrs(count, nullptr);
    if (count && H5Aread(id(attr), id(mem), ptrs.data()) < 0) {
      // A read that failed half-way may have allocated some strings already.
      for (char* p : ptrs) H5free_memory(p);
      fail("HDF5 cannot read attribute '" + name + "'");
    }
    std::uint64_t total = 0;
    bool too_big = false;
    for (char* p : ptrs) {
      const std::string s = p ? std::string(p) : std::string();
      total += s.size();
      if (total > kMaxAttrBytes) too_big = true;
      if (!too_big) out.push_back(s);
    }
    if (count) H5Dvlen_reclaim(id(mem), id(space), H5P_DEFAULT, ptrs.data());
    if (too_big) fail("attribute '" + name + "' is implausibly large");
    return out;
  }
  const std::size_t size = H5Tget_size(id(type));
  if (size == 0 || size > kMaxAttrBytes || count * size > kMaxAttrBytes) {
    fail("attribute '" + name + "' is implausibly large");
  }
  Handle mem(H5Tcopy(H5T_C_S1), close_type);
  H5Tset_size(id(mem), size);
  H5Tset_strpad(id(mem), H5T_STR_NULLPAD);
  std::vector<char> buf(count * size);
  if (count && H5Aread(id(attr), id(mem), buf.data()) < 0) {
    fail("HDF5 cannot read attribute '" + name + "'");
  }
  for (std::size_t i = 0; i < count; ++i) {
    const char* p = buf.data() + i * size;
    out.emplace_back(p, strnlen(p, size));
  }
  return out;
}

}  // namespace

std::optional<std::vector<std::string>> Group::string_list_attr(const std::string& name) const {
  auto fail_here = [&](const std::string& problem) { fail("", problem); };
  auto whole = read_strings(id(handle_), name, fail_here);
  if (whole) return whole;
  // h5py splits attributes above 64 KiB into name0, name1, ... (tf.keras
  // save_attributes_to_hdf5_group).
  std::vector<std::string> out;
  bool any = false;
  for (int chunk = 0; chunk < 100000; ++chunk) {
    auto part = read_strings(id(handle_), name + std::to_string(chunk), fail_here);
    if (!part) break;
    any = true;
    for (auto& s : *part) out.push_back(std::move(s));
    if (out.size() > (1u << 24)) fail("", "attribute '" + name + "' is implausibly long");
  }
  if (!any) return std::nullopt;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

Group Group::create_group(const std::string& name) const {
  const hid_t g = H5Gcreate2(id(handle_), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  if (g < 0) fail(name, "HDF5 cannot create the group");
  return Group(Handle(g, close_group), join(name), context_);
}

void Group::write_floats(const std::string& name, const std::vector<std::int64_t>& dims,
                         const float* values) const {
  std::vector<hsize_t> d(dims.begin(), dims.end());
  Handle space(d.empty() ? H5Screate(H5S_SCALAR)
                         : H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr),
               close_space);
  Handle ds(H5Dcreate2(id(handle_), name.c_str(), H5T_IEEE_F32LE, id(space), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT),
            close_dataset);
  if (ds.get() < 0) fail(name, "HDF5 cannot create the dataset");
  if (H5Dwrite(id(ds), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) < 0) {
    fail(name, "HDF5 cannot write the dataset");
  }
}

void Group::write_int64_scalar(const std::string& name, std::int64_t value) const {
  Handle space(H5Screate(H5S_SCALAR), close_space);
  Handle ds(H5Dcreate2(id(handle_), name.c_str(), H5T_STD_I64LE, id(space), H5P_DEFAULT,
                       H5P_DEFAULT, H5P_DEFAULT),
            close_dataset);
  if (ds.get() < 0 ||
      H5Dwrite(id(ds), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value) < 0) {
    fail(name, "HDF5 cannot write the dataset");
  }
}

namespace {

// h5py's str: variable-length UTF-8.
Handle vlen_utf8() {
  Handle t(H5Tcopy(H5T_C_S1), close_type);
  H5Tset_size(id(t), H5T_VARIABLE);
  H5Tset_cset(id(t), H5T_CSET_UTF8);
  return t;
}

}  // namespace

void Group::write_string_attr(const std::string& name, const std::string& value) const {
  Handle type = vlen_utf8();
  Handle space(H5Screate(H5S_SCALAR), close_space);
  Handle attr(H5Acreate2(id(handle_), name.c_str(), id(type), id(space), H5P_DEFAULT, H5P_DEFAULT),
              close_attr);
  const char* p = value.c_str();
  if (attr.get() < 0 || H5Awrite(id(attr), id(type), &p) < 0) {
    fail("", "HDF5 cannot write attribute '" + name + "'");
  }
}

void Group::write_string_list_attr(const std::string& name,
                                   const std::vector<std::string>& values) const {
  Handle type = vlen_utf8();
  const hsize_t n = values.size();
  Handle space(H5Screate_simple(1, &n, nullptr), close_space);
  Handle attr(H5Acreate2(id(handle_), name.c_str(), id(type), id(space), H5P_DEFAULT, H5P_DEFAULT),
              close_attr);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (attr.get() < 0 || (n && H5Awrite(id(attr), id(type), ptrs.data()) < 0)) {
    fail("", "HDF5 cannot write attribute '" + name + "'");
  }
}

// ---------------------------------------------------------------------------------------------
// The child-process check

namespace {

// Ends a child that a sanitizer reported on (an error inside HDF5), with a code the parent reads
// as "crashed".
void child_died() { ::_exit(kChildCrashed); }

constexpr int kMaxWalkDepth = 32;
constexpr std::size_t kMaxWalkObjects = 200000;
constexpr std::uint64_t kMaxWalkDatasetBytes = std::uint64_t{1} << 30;

struct Walk {
  std::size_t objects = 0;
};

// Reads, through the same calls the loaders use, everything a Keras loader can reach from `g`:
// every attribute (as strings where they are strings), every dataset's checks and its data as
// float32, every child group reached by a hard link.
void walk_group(const Group& g, Walk& w, int depth) {
  if (depth > kMaxWalkDepth) g.fail("", "groups nested more than 32 deep");
  const auto names = g.children();
  for (const auto& name : names) {
    if (++w.objects > kMaxWalkObjects) g.fail("", "more than 200000 objects");
    if (name.find('/') != std::string::npos || name == "." || name == "..") continue;
    if (!g.has(name)) continue;
    // Links other than hard ones are refused when a loader reaches them; not followed here.
    std::optional<Group> child;
    try {
      child = g.find_group(name);
    } catch (const IoError&) {
      child.reset();
    }
    if (child) {
      g.read_all_attributes(*child);
      walk_group(*child, w, depth + 1);
      continue;
    }
    std::optional<DatasetInfo> info;
    try {
      info = g.find_dataset(name);
    } catch (const IoError&) {
      continue;  // refused by the loader when reached
    }
    if (info && info->elements * 4 <= kMaxWalkDatasetBytes) {
      std::vector<float> scratch(static_cast<std::size_t>(info->elements));
      try {
        g.read_floats(name, info->dims, scratch.data());
      } catch (const IoError&) {
      }
    }
  }
}

}  // namespace

void Group::read_all_attributes(const Group& target) const {
  std::vector<std::string> names;
  auto collect = [](hid_t, const char* name, const H5A_info_t*, void* data) -> herr_t {
    auto* out = static_cast<std::vector<std::string>*>(data);
    if (out->size() > 100000) return 1;
    out->emplace_back(name);
    return 0;
  };
  hsize_t idx = 0;
  if (H5Aiterate2(id(target.handle_), H5_INDEX_NAME, H5_ITER_NATIVE, &idx, collect, &names) < 0) {
    target.fail("", "HDF5 cannot list the attributes");
  }
  for (const auto& n : names) {
    try {
      (void)target.string_list_attr(n);
    } catch (const IoError&) {
    }
  }
}

void check_in_child(std::span<const unsigned char> bytes, const std::string& context) {
  // A corrupt file can make HDF5 loop: the child gets 5 s plus 1 s per 10 MB (reading a 100 MB
  // file takes well under a second).
  const auto allowed = std::chrono::seconds(5 + static_cast<long long>(bytes.size() / 10000000));
  int fds[2];
  if (::pipe(fds) != 0) throw IoError(context + "cannot create a pipe for the HDF5 check");
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw IoError(context + "cannot start the HDF5 check process (" + std::strerror(errno) + ")");
  }
  if (pid == 0) {
    // The child: HDF5 only (no OpenMP, no model), then _exit without running destructors or
    // atexit handlers that belong to the parent.
    ::close(fds[0]);
    // Die of a crash plainly: no inherited handler (a sanitizer's, a fuzzer's) runs here, and a
    // sanitizer's report ends the child without the death callback a fuzzer installed.
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM}) ::signal(sig, SIG_DFL);
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(child_died);
    // Never outlive the deadline, or a parent that died while HDF5 loops here.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::alarm(static_cast<unsigned>(allowed.count()) + 1);
    int code = 0;
    std::string message;
    try {
      const File f = File::open_unchecked(bytes, "");
      const Group root = f.root();
      root.read_all_attributes(root);
      Walk w;
      walk_group(root, w, 0);
    } catch (const std::exception& e) {
      message = e.what();
      code = 1;
    }
    std::size_t done = 0;
    while (done < message.size()) {
      const ssize_t n = ::write(fds[1], message.data() + done, message.size() - done);
      if (n <= 0) break;
      done += static_cast<std::size_t>(n);
    }
    ::_exit(code);
  }
  ::close(fds[1]);
  // The parent: read the child's message (a corrupt file may also make HDF5 loop: a deadline).
  std::string message;
  const auto deadline = std::chrono::steady_clock::now() + allowed;
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EOF: the child is done
    if (message.size() < 4096) message.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    throw IoError(context + "HDF5 did not finish reading the file in " +
                  std::to_string(allowed.count()) + " s; refused");
  }
  if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == kChildCrashed)) {
    throw IoError(context + "the HDF5 library crashed reading this file (" +
                  (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                       : std::string("a memory error")) +
                  "); the file is corrupt or hostile");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // The child's message carries its own location ("<path>: problem"); context is ours.
    if (message.empty()) message = "HDF5 could not read the file";
    throw IoError(context + message);
  }
}

}  // namespace bnorm::io::detail::h5
