#include "layers/spatial.hpp"

#include <algorithm>
#include <cctype>
#include <vector>

#include "bnorm/core/error.hpp"
#include "kernels/conv2d.hpp"

namespace bnorm::detail {

std::string pair_str(const std::array<std::int64_t, 2>& v) {
  return std::to_string(v[0]) + "x" + std::to_string(v[1]);
}

std::string batch_shape_str(const Shape& per_sample) {
  std::string s = "(None";
  for (auto d : per_sample.dims()) s += ", " + std::to_string(d);
  return s + ")";
}

std::string normalize_padding(const std::string& who, const std::string& padding) {
  std::string p = padding;
  std::transform(p.begin(), p.end(), p.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (p != "valid" && p != "same") {
    throw ValueError(who + ": padding must be 'valid' or 'same'; received '" + padding + "'");
  }
  return p;
}

namespace {
std::string lower(const std::string& s) {
  std::string out = s;
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}
}  // namespace

std::string normalize_data_format(const std::string& who, const std::string& data_format) {
  const std::string f = lower(data_format);
  if (f != "channels_last" && f != "channels_first") {
    throw ValueError(who + ": data_format must be 'channels_last' or 'channels_first'; received '" +
                     data_format + "'");
  }
  return f;
}

void check_positive_pair(const std::string& who, const char* what,
                         const std::array<std::int64_t, 2>& v) {
  if (v[0] < 1 || v[1] < 1) {
    throw ValueError(who + ": " + what + " must be >= 1; received " + pair_str(v));
  }
}

ImageShape image_shape(const std::string& label, const Shape& s, bool channels_first) {
  if (s.rank() != 3) {
    throw ShapeError(
        label + ": expected input of rank 4 " +
        (channels_first ? "(batch, channels, height, width)" : "(batch, height, width, channels)") +
        "; received shape " + batch_shape_str(s));
  }
  const ImageShape img =
      channels_first ? ImageShape{s[1], s[2], s[0]} : ImageShape{s[0], s[1], s[2]};
  if (img.h < 1 || img.w < 1 || img.c < 1) {
    throw ShapeError(label + ": the input has an empty dimension; received shape " +
                     batch_shape_str(s));
  }
  return img;
}

WindowGeometry window_geometry(const std::string& label, const Shape& per_sample,
                               bool channels_first, const char* what,
                               const std::array<std::int64_t, 2>& window,
                               const std::array<std::int64_t, 2>& strides,
                               const std::array<std::int64_t, 2>& dilation_rate,
                               bool same_padding) {
  const auto img = image_shape(label, per_sample, channels_first);
  const auto& k = window;
  const auto& r = dilation_rate;
  const auto gh = kernels::conv_axis_geometry(img.h, k[0], strides[0], r[0], same_padding);
  const auto gw = kernels::conv_axis_geometry(img.w, k[1], strides[1], r[1], same_padding);
  if (gh.out < 1 || gw.out < 1) {
    const std::array<std::int64_t, 2> span{r[0] * (k[0] - 1) + 1, r[1] * (k[1] - 1) + 1};
    std::string text = std::string(what) + " " + pair_str(k);
    if (span != k) {
      text += " with dilation_rate " + pair_str(r) + " (a " + pair_str(span) + " window)";
    }
    throw ShapeError(label + ": " + text + " is larger than the input " + pair_str({img.h, img.w}) +
                     " with padding 'valid'");
  }
  return {img.h, img.w, img.c, gh.out, gw.out, gh.pad_before, gw.pad_before};
}

Shape make_image_shape(std::int64_t h, std::int64_t w, std::int64_t c, bool channels_first) {
  return channels_first ? Shape{c, h, w} : Shape{h, w, c};
}

Shape with_batch(std::int64_t batch, const Shape& per_sample) {
  std::vector<std::int64_t> dims{batch};
  dims.insert(dims.end(), per_sample.dims().begin(), per_sample.dims().end());
  return Shape(dims);
}

}  // namespace bnorm::detail
