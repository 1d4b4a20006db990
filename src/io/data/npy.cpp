// NumPy .npy files (numpy/lib/format.py): the magic "\x93NUMPY", a version (1.0: 2-byte header
// length; 2.0/3.0: 4-byte), a Python dict literal {'descr': '<f4', 'fortran_order': False,
// 'shape': (2, 3), } padded with spaces to a newline, then the raw values. The dict is parsed by
// a small strict grammar, never evaluated.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

#include "bnorm/core/error.hpp"
#include "bnorm/io/data.hpp"
#include "io/files.hpp"

namespace bnorm::io {

namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
// NumPy itself refuses headers above 10000 bytes by default (max_header_size); 1 MiB leaves
// room for hand-made files and still bounds the parse.
constexpr std::uint64_t kMaxHeaderBytes = std::uint64_t{1} << 20;
// Arrays up to 64 GiB; beyond that the file could not have been read anyway.
constexpr std::uint64_t kMaxFileBytes = std::uint64_t{64} << 30;

struct TypeInfo {
  NpyType type;
  char kind;  // NumPy's kind letter: f, u, i, b
  int bytes;
};
constexpr TypeInfo kTypes[] = {
    {NpyType::float32, 'f', 4}, {NpyType::float64, 'f', 8}, {NpyType::uint8, 'u', 1},
    {NpyType::int8, 'i', 1},    {NpyType::int16, 'i', 2},   {NpyType::int32, 'i', 4},
    {NpyType::int64, 'i', 8},   {NpyType::uint16, 'u', 2},  {NpyType::uint32, 'u', 4},
    {NpyType::uint64, 'u', 8},  {NpyType::bool_, 'b', 1}};

int item_bytes(NpyType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t.bytes;
  return 0;
}

struct Header {
  NpyType type = NpyType::float32;
  bool big_endian = false;
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::uint64_t count = 1;        // elements
  std::uint64_t data_offset = 0;  // bytes before the values
};

// The dict literal's tokens: '{' '}' '(' ')' ':' ',' strings, names (True/False), integers.
class DictParser {
 public:
  DictParser(std::string_view text, const std::string& context) : s_(text), context_(context) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw IoError(context_ + "bad .npy header (" + problem + "): " + excerpt());
  }

  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool accept(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const char* where) {
    if (!accept(c)) fail(std::string("expected '") + c + "' " + where);
  }
  std::string string_literal() {
    skip_space();
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) fail("expected a string");
    const char quote = s_[pos_++];
    const std::size_t start = pos_;
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\') fail("escapes in strings are not supported");
      ++pos_;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(start, pos_++ - start));
  }
  bool boolean() {
    skip_space();
    for (const auto& [word, value] :
         {std::pair<std::string_view, bool>{"True", true}, {"False", false}}) {
      if (s_.substr(pos_, word.size()) == word) {
        pos_ += word.size();
        return value;
      }
    }
    fail("fortran_order must be True or False");
  }
  std::int64_t integer() {
    skip_space();
    std::int64_t v = 0;
    const char* begin = s_.data() + pos_;
    const auto [end, ec] = std::from_chars(begin, s_.data() + s_.size(), v);
    if (ec == std::errc::result_out_of_range) fail("a dimension does not fit 64 bits");
    if (ec != std::errc() || v < 0) fail("dimensions must be integers >= 0");
    pos_ += static_cast<std::size_t>(end - begin);
    return v;
  }
  std::vector<std::int64_t> shape_tuple() {
    expect('(', "to open the shape tuple");
    std::vector<std::int64_t> dims;
    if (accept(')')) return dims;
    for (;;) {
      if (dims.size() >= static_cast<std::size_t>(kMaxNpyRank)) {
        fail("rank above " + std::to_string(kMaxNpyRank));
      }
      dims.push_back(integer());
      if (accept(')')) {
        // (3) is the integer 3 in Python, not a tuple; NumPy writes (3,).
        if (dims.size() == 1) fail("the shape must be a tuple such as (3,)");
        break;
      }
      expect(',', "between dimensions");
      if (accept(')')) break;
    }
    return dims;
  }
  bool at_end() {
    skip_space();
    return pos_ == s_.size();
  }

 private:
  std::string excerpt() const {
    std::string e(s_.substr(0, std::min<std::size_t>(s_.size(), 120)));
    for (auto& c : e) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) c = '?';
    }
    while (!e.empty() && (e.back() == ' ' || e.back() == '?')) e.pop_back();
    return e;
  }

  std::string_view s_;
  const std::string& context_;
  std::size_t pos_ = 0;
};

void parse_descr(const std::string& descr, Header& h, const std::string& context) {
  const auto unsupported = [&] {
    throw IoError(context + "dtype '" + descr +
                  "' is not supported (supported: float32, float64, uint8/16/32/64, "
                  "int8/16/32/64, bool; little- or big-endian)");
  };
  if (descr.size() < 3) unsupported();
  const char order = descr[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') unsupported();
  const char kind = descr[1];
  int bytes = 0;
  const auto [end, ec] = std::from_chars(descr.data() + 2, descr.data() + descr.size(), bytes);
  if (ec != std::errc() || end != descr.data() + descr.size()) unsupported();
  for (const auto& t : kTypes) {
    if (t.kind == kind && t.bytes == bytes) {
      // Multi-byte types need an explicit byte order ('|' means "not applicable").
      if (bytes > 1 && order == '|') unsupported();
      h.type = t.type;
      h.big_endian =
          bytes > 1 && (order == '>' || (order == '=' && std::endian::native == std::endian::big));
      return;
    }
  }
  unsupported();
}

Header parse_header(std::span<const unsigned char> bytes, const std::string& context) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    throw IoError(context + "not a .npy file (no \\x93NUMPY magic at the start)");
  }
  const int major = bytes[6];
  const int minor = bytes[7];
  std::uint64_t header_len = 0;
  std::uint64_t preamble = 0;
  if (major == 1) {
    header_len = std::uint64_t{bytes[8]} | (std::uint64_t{bytes[9]} << 8);
    preamble = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw IoError(context + "truncated .npy header");
    header_len = std::uint64_t{bytes[8]} | (std::uint64_t{bytes[9]} << 8) |
                 (std::uint64_t{bytes[10]} << 16) | (std::uint64_t{bytes[11]} << 24);
    preamble = 12;
  } else {
    throw IoError(context + ".npy format version " + std::to_string(major) + "." +
                  std::to_string(minor) + " is not supported (1.0, 2.0 and 3.0 are)");
  }
  if (header_len > kMaxHeaderBytes) {
    throw IoError(context + ".npy header of " + std::to_string(header_len) +
                  " bytes is implausibly large");
  }
  if (bytes.size() - preamble < header_len) {
    throw IoError(context + "truncated .npy header (declares " + std::to_string(header_len) +
                  " bytes, " + std::to_string(bytes.size() - preamble) + " present)");
  }
  const std::string_view text(reinterpret_cast<const char*>(bytes.data() + preamble),
                              static_cast<std::size_t>(header_len));
  Header h;
  h.data_offset = preamble + header_len;
  DictParser p(text, context);
  p.expect('{', "at the start of the header dict");
  bool have_descr = false, have_fortran = false, have_shape = false;
  while (!p.accept('}')) {
    const std::string key = p.string_literal();
    p.expect(':', "after a key");
    bool* seen = nullptr;
    if (key == "descr") {
      p.skip_space();
      if (p.accept('[')) {
        throw IoError(context +
                      "structured dtypes (records) are not supported; save a plain "
                      "numeric array");
      }
      parse_descr(p.string_literal(), h, context);
      seen = &have_descr;
    } else if (key == "fortran_order") {
      h.fortran_order = p.boolean();
      seen = &have_fortran;
    } else if (key == "shape") {
      h.shape = p.shape_tuple();
      seen = &have_shape;
    } else {
      p.fail("unknown key '" + key + "'");
    }
    if (*seen) p.fail("key '" + key + "' appears twice");
    *seen = true;
    if (p.accept('}')) break;
    p.expect(',', "between entries");
  }
  if (!p.at_end()) p.fail("text after the dict");
  if (!have_descr || !have_fortran || !have_shape) {
    p.fail(std::string("missing key '") +
           (!have_descr     ? "descr"
            : !have_fortran ? "fortran_order"
                            : "shape") +
           "'");
  }
  // Element count and byte size, overflow-checked, against the bytes that follow the header.
  const std::uint64_t available = bytes.size() - h.data_offset;
  const auto item = static_cast<std::uint64_t>(item_bytes(h.type));
  std::uint64_t count = 1;
  for (auto d : h.shape) {
    const auto ud = static_cast<std::uint64_t>(d);
    if (ud != 0 && count > std::numeric_limits<std::uint64_t>::max() / item / ud) {
      throw IoError(context + "shape " + NpyArray{h.type, h.shape, {}}.shape_str() +
                    " is too large (its byte size overflows 64 bits)");
    }
    count *= ud;
  }
  const std::uint64_t need = count * item;
  if (need != available) {
    throw IoError(context + "shape " + NpyArray{h.type, h.shape, {}}.shape_str() + " of " +
                  npy_type_name(h.type) + " needs " + std::to_string(need) + " bytes of data but " +
                  std::to_string(available) + " follow the header" +
                  (need > available ? " (truncated file?)" : " (trailing bytes)"));
  }
  h.count = count;
  return h;
}

// Copies the values into C order and native byte order.
std::vector<unsigned char> c_order_native(const Header& h, const unsigned char* src) {
  const auto item = static_cast<std::size_t>(item_bytes(h.type));
  const auto total = static_cast<std::size_t>(h.count) * item;
  std::vector<unsigned char> out(total);
  const std::size_t rank = h.shape.size();
  if (total == 0) return out;  // an empty vector's data() may be null: no memcpy from it
  if (!h.fortran_order || rank < 2) {
    std::memcpy(out.data(), src, total);
  } else {
    // Element (i0, ..., ik) sits at i0 + d0 * (i1 + d1 * (...)) in Fortran order. Walk C order
    // with an index vector; Fortran strides make each step O(1) amortized.
    std::vector<std::uint64_t> fstride(rank, 1), index(rank, 0);
    for (std::size_t a = 1; a < rank; ++a)
      fstride[a] = fstride[a - 1] * static_cast<std::uint64_t>(h.shape[a - 1]);
    std::uint64_t f = 0;
    for (std::uint64_t c = 0; c < h.count; ++c) {
      std::memcpy(out.data() + c * item, src + f * item, item);
      for (std::size_t a = rank; a-- > 0;) {  // increment the C-order index, last axis fastest
        f += fstride[a];
        if (++index[a] < static_cast<std::uint64_t>(h.shape[a])) break;
        f -= fstride[a] * index[a];
        index[a] = 0;
      }
    }
  }
  if (h.big_endian != (std::endian::native == std::endian::big) && item > 1) {
    for (std::size_t at = 0; at < total; at += item) std::reverse(&out[at], &out[at] + item);
  }
  return out;
}

template <class T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Element i as a double (exact for every integer below 2^53, and for float32/float64).
double value_at(const NpyArray& a, std::int64_t i) {
  const unsigned char* p = a.data.data() + static_cast<std::size_t>(i) * item_bytes(a.type);
  switch (a.type) {
    case NpyType::float32:
      return load<float>(p);
    case NpyType::float64:
      return load<double>(p);
    case NpyType::uint8:
      return *p;
    case NpyType::int8:
      return static_cast<std::int8_t>(*p);
    case NpyType::int16:
      return load<std::int16_t>(p);
    case NpyType::int32:
      return load<std::int32_t>(p);
    case NpyType::int64:
      return static_cast<double>(load<std::int64_t>(p));
    case NpyType::uint16:
      return load<std::uint16_t>(p);
    case NpyType::uint32:
      return load<std::uint32_t>(p);
    case NpyType::uint64:
      return static_cast<double>(load<std::uint64_t>(p));
    case NpyType::bool_:
      return *p != 0 ? 1.0 : 0.0;
  }
  return 0.0;
}

std::string number_text(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : "?";
}

}  // namespace

const char* npy_type_name(NpyType type) noexcept {
  switch (type) {
    case NpyType::float32:
      return "float32";
    case NpyType::float64:
      return "float64";
    case NpyType::uint8:
      return "uint8";
    case NpyType::int8:
      return "int8";
    case NpyType::int16:
      return "int16";
    case NpyType::int32:
      return "int32";
    case NpyType::int64:
      return "int64";
    case NpyType::uint16:
      return "uint16";
    case NpyType::uint32:
      return "uint32";
    case NpyType::uint64:
      return "uint64";
    case NpyType::bool_:
      return "bool";
  }
  return "?";
}

std::int64_t NpyArray::size() const noexcept {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string NpyArray::shape_str() const {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

NpyArray read_npy_bytes(std::span<const unsigned char> bytes, const std::string& context) {
  const Header h = parse_header(bytes, context);
  NpyArray a;
  a.type = h.type;
  a.shape = h.shape;
  a.data = c_order_native(h, bytes.data() + h.data_offset);
  return a;
}

NpyArray read_npy_array(const std::string& path) {
  const std::string context = "'" + path + "': ";
  const std::vector<unsigned char> bytes = detail::read_file(path, context, kMaxFileBytes);
  return read_npy_bytes(bytes, context);
}

Tensor npy_features(const NpyArray& array, const std::string& what, Rescale rescale) {
  if (array.shape.empty() || array.shape.size() > static_cast<std::size_t>(Shape::kMaxRank)) {
    throw IoError(what + ": an array of shape " + array.shape_str() +
                  " cannot be features (rank 1 to " + std::to_string(Shape::kMaxRank) + " needed)");
  }
  Tensor t{Shape(array.shape)};
  float* out = t.data();
  const std::int64_t n = array.size();
  if (n == 0) return t;
  if (array.type == NpyType::float32) {
    std::memcpy(out, array.data.data(), static_cast<std::size_t>(n) * sizeof(float));
  } else if (array.type == NpyType::uint8) {
    const unsigned char* in = array.data.data();
    // The same expression as the IDX loader, so an .npz of Fashion-MNIST trains bit-identically.
    if (rescale == Rescale::uint8_unit) {
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]) / 255.0f;
    } else {
      for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(in[i]);
    }
  } else {
    for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(value_at(array, i));
  }
  return t;
}

std::vector<std::int64_t> npy_labels(const NpyArray& array, const std::string& what) {
  const bool column = array.shape.size() == 2 && array.shape[1] == 1;
  if (array.shape.size() != 1 && !column) {
    throw IoError(what + ": labels must have shape (n,) or (n, 1); received " + array.shape_str());
  }
  const std::int64_t n = array.size();
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t label = 0;
    if (array.type == NpyType::int64) {
      label = load<std::int64_t>(array.data.data() + i * 8);
    } else if (array.type == NpyType::uint64) {
      const auto u = load<std::uint64_t>(array.data.data() + i * 8);
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw IoError(what + ": label " + std::to_string(u) + " at index " + std::to_string(i) +
                      " is too large to be a class index");
      }
      label = static_cast<std::int64_t>(u);
    } else {
      const double v = value_at(array, i);
      if (!(v == std::floor(v)) || std::fabs(v) > 9.0e18) {
        throw IoError(what + ": label " + number_text(v) + " at index " + std::to_string(i) +
                      " is not a whole number (labels are class indices 0, 1, 2, ...)");
      }
      label = static_cast<std::int64_t>(v);
    }
    if (label < 0) {
      throw IoError(what + ": label " + std::to_string(label) + " at index " + std::to_string(i) +
                    " is negative (labels are class indices 0, 1, 2, ...)");
    }
    labels[static_cast<std::size_t>(i)] = label;
  }
  return labels;
}

Tensor read_npy(const std::string& path, Rescale rescale) {
  return npy_features(read_npy_array(path), "'" + path + "'", rescale);
}

std::string npy_bytes(const Tensor& tensor) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  for (int i = 0; i < tensor.rank(); ++i) {
    dict += (i ? ", " : "") + std::to_string(tensor.shape()[i]);
  }
  dict += tensor.rank() == 1 ? ",), }" : "), }";
  // Pad with spaces so that the values start on a 64-byte boundary, then end in a newline.
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict += '\n';
  std::string out(reinterpret_cast<const char*>(kMagic), sizeof kMagic);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(dict.size() & 0xFF);
  out += static_cast<char>(dict.size() >> 8);
  out += dict;
  const std::size_t header = out.size();
  out.resize(header + static_cast<std::size_t>(tensor.size()) * 4);
  for (std::int64_t i = 0; i < tensor.size(); ++i) {
    auto bits = std::bit_cast<std::uint32_t>(tensor[i]);
    for (int b = 0; b < 4; ++b) {
      out[header + static_cast<std::size_t>(i) * 4 + static_cast<std::size_t>(b)] =
          static_cast<char>((bits >> (8 * b)) & 0xFF);
    }
  }
  return out;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  detail::write_file_atomic(path, npy_bytes(tensor), "'" + path + "': ");
}

}  // namespace bnorm::io
