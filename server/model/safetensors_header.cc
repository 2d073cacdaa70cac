// The safetensors header parser (huggingface/safetensors' format).
//
// The header is parsed with nlohmann's SAX interface straight into
// StTensorInfo records. A DOM parse cannot see duplicate keys (it keeps the
// last one), and nlohmann's callback parser, which can, scans the whole parent
// object each time a child object ends: quadratic in the tensor count (measured
// 645 s for 100k tensors against 0.18 s for a plain parse). The SAX handler is
// linear, stops at the first problem, never throws on bad input, and keeps
// only what the format defines, so a hostile header cannot make it build a
// large tree.
#include "server/model/safetensors_header.h"

#include <string>
#include <unordered_set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace adapterd::model::safetensors_internal {
namespace {

using json = nlohmann::json;

// abseil here is built with its own string_view, which does not take a
// std::string_view implicitly.
absl::string_view Sv(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// Text for an error message, which must be valid UTF-8 (it may end up in a
// protobuf string): printable ASCII kept, every other byte as \xNN.
std::string EscapeBytes(std::string_view text) {
  std::string out;
  for (char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b < 0x7F) {
      out += c;
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(b, absl::kZeroPad2));
    }
  }
  return out;
}

// SAX handler that turns the header into tensor records and metadata,
// checking each value as it arrives. Each callback returns false to stop the
// parse; error() then says why.
class HeaderHandler {
 public:
  HeaderHandler(const SafetensorsLimits& limits, std::vector<StTensorInfo>* tensors,
                std::map<std::string, std::string>* metadata)
      : limits_(limits), tensors_(tensors), metadata_(metadata) {}

  const std::string& error() const { return error_; }

  // --- nlohmann SAX interface ---
  bool null() { return Scalar(Kind::kNull); }
  bool boolean(bool) { return Scalar(Kind::kBool); }
  bool number_integer(json::number_integer_t v) {
    // Only negative numbers (and "-0") arrive here.
    if (v >= 0) return number_unsigned(static_cast<json::number_unsigned_t>(v));
    return Scalar(Kind::kNegative, absl::StrCat(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    uint_value_ = v;
    return Scalar(Kind::kUnsigned, absl::StrCat(v));
  }
  bool number_float(json::number_float_t, const std::string& text) {
    return Scalar(Kind::kFloat, text.substr(0, 40));
  }
  bool string(std::string& v) {
    string_value_ = &v;
    return Scalar(Kind::kString);
  }
  bool binary(json::binary_t&) { return Scalar(Kind::kOther); }  // not produced by text JSON
  bool start_object(std::size_t) { return Open(Kind::kObject); }
  bool start_array(std::size_t) { return Open(Kind::kArray); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(std::string& k) { return Key(k); }
  bool parse_error(std::size_t, const std::string&, const json::exception& ex) {
    // what() is "[json.exception.parse_error.101] parse error at line 1, ...";
    // keep the part after the tag, escaped and bounded.
    absl::string_view what = ex.what();
    if (size_t tag_end = what.find("] "); tag_end != absl::string_view::npos) {
      what.remove_prefix(tag_end + 2);
    }
    error_ = absl::StrCat("header is not valid JSON: ",
                          EscapeBytes(std::string_view(what.data(),
                                                       std::min<size_t>(what.size(), 300))));
    return false;
  }

 private:
  enum class Kind { kNull, kBool, kNegative, kUnsigned, kFloat, kString, kObject, kArray, kOther };
  enum class Field { kDType, kShape, kOffsets, kIgnored };

  static absl::string_view KindName(Kind k) {
    switch (k) {
      case Kind::kNull: return "null";
      case Kind::kBool: return "a boolean";
      case Kind::kNegative: return "a negative number";
      case Kind::kUnsigned: return "an unsigned integer";
      case Kind::kFloat: return "a non-integer number";
      case Kind::kString: return "a string";
      case Kind::kObject: return "an object";
      case Kind::kArray: return "an array";
      case Kind::kOther: return "binary data";
    }
    return "an unknown value";
  }

  bool Fail(std::string message) {
    error_ = std::move(message);
    return false;
  }
  std::string Tensor() const { return absl::StrCat("tensor ", Quote(entry_), ": "); }
  absl::string_view FieldName() const {
    return field_ == Field::kShape ? "shape" : field_ == Field::kOffsets ? "data_offsets" : "dtype";
  }

  // A value, or the start of a container, at the current position (depth_ =
  // containers open around it).
  bool Value(Kind kind, const std::string& text) {
    if (skip_depth_ > 0) return true;  // inside a field the format does not define
    switch (depth_) {
      case 0:
        if (kind != Kind::kObject) {
          return Fail(absl::StrCat("header is ", KindName(kind), ", not a JSON object"));
        }
        return true;
      case 1:  // the value of a top-level key
        if (kind == Kind::kObject) {
          seen_fields_ = 0;
          dtype_ = StDType::kU8;
          shape_.clear();
          offsets_.clear();
          return true;
        }
        if (in_metadata_) {
          return Fail(
              absl::StrCat("__metadata__ is ", KindName(kind), ", not an object of strings"));
        }
        return Fail(absl::StrCat(Tensor(), "entry is ", KindName(kind), ", not a JSON object"));
      case 2:  // the value of a key inside an entry
        if (in_metadata_) {
          if (kind != Kind::kString) {
            return Fail(absl::StrCat("__metadata__ value for key ", Quote(meta_key_), " is ",
                                     KindName(kind), ", not a string"));
          }
          (*metadata_)[meta_key_] = std::move(*string_value_);
          return true;
        }
        switch (field_) {
          case Field::kIgnored:
            if (kind == Kind::kObject || kind == Kind::kArray) skip_depth_ = 1;
            return true;
          case Field::kDType:
            if (kind != Kind::kString) {
              return Fail(absl::StrCat(Tensor(), "dtype is ", KindName(kind), ", not a string"));
            }
            if (!ParseStDType(*string_value_, &dtype_)) {
              return Fail(absl::StrCat(Tensor(), "unknown dtype ", Quote(*string_value_)));
            }
            return true;
          case Field::kShape:
          case Field::kOffsets:
            if (kind != Kind::kArray) {
              return Fail(absl::StrCat(Tensor(), FieldName(), " is ", KindName(kind),
                                       ", not an array"));
            }
            return true;
        }
        return true;
      case 3: {  // an element of shape or data_offsets
        const size_t index = field_ == Field::kShape ? shape_.size() : offsets_.size();
        const std::string where = absl::StrCat(Tensor(), FieldName(), "[", index, "] is ");
        if (kind != Kind::kUnsigned) {
          return Fail(absl::StrCat(where, KindName(kind), text.empty() ? "" : " ", text,
                                   ", not a non-negative integer"));
        }
        if (field_ == Field::kShape) {
          if (uint_value_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            return Fail(absl::StrCat(where, uint_value_, ", larger than 2^63-1"));
          }
          shape_.push_back(static_cast<int64_t>(uint_value_));
        } else {
          if (offsets_.size() == 2) {
            return Fail(absl::StrCat(Tensor(), "data_offsets has more than 2 entries"));
          }
          offsets_.push_back(uint_value_);
        }
        return true;
      }
      default:
        // Deeper values only exist inside shape or data_offsets.
        return Fail(absl::StrCat(Tensor(), FieldName(), " holds nested ", KindName(kind)));
    }
  }

  bool Scalar(Kind kind, const std::string& text = {}) { return Value(kind, text); }

  bool Open(Kind kind) {
    if (skip_depth_ > 0) {
      ++skip_depth_;
    } else if (!Value(kind, {})) {  // may start skipping (skip_depth_ = 1)
      return false;
    }
    ++depth_;
    return true;
  }

  bool Close() {
    --depth_;
    if (skip_depth_ > 0) {
      --skip_depth_;
      return true;
    }
    switch (depth_) {
      case 1:
        if (in_metadata_) {
          in_metadata_ = false;
          return true;
        }
        return FinishTensor();
      case 2:
        if (field_ == Field::kOffsets && offsets_.size() != 2) {
          return Fail(absl::StrCat(Tensor(), "data_offsets has ", offsets_.size(),
                                   " entries, not 2 ([begin, end])"));
        }
        return true;
      default:
        return true;
    }
  }

  bool Key(const std::string& k) {
    if (skip_depth_ > 0) return true;
    if (depth_ == 1) {  // a tensor name or __metadata__
      if (!top_keys_.insert(k).second) {
        if (k == kMetadataKey) return Fail("duplicate key '__metadata__'");
        return Fail(absl::StrCat("duplicate tensor name ", Quote(k)));
      }
      in_metadata_ = k == kMetadataKey;
      if (!in_metadata_) {
        if (tensors_->size() + 1 > limits_.max_tensors) {
          return Fail(absl::StrCat("more than ", limits_.max_tensors,
                                   " tensors (the limit); the next one is ", Quote(k)));
        }
        entry_ = k;
      }
      return true;
    }
    if (depth_ == 2) {  // a key inside an entry
      if (in_metadata_) {
        if (metadata_->count(k) != 0) {
          return Fail(absl::StrCat("__metadata__ has duplicate key ", Quote(k)));
        }
        meta_key_ = k;
        return true;
      }
      field_ = k == "dtype" ? Field::kDType
               : k == "shape" ? Field::kShape
               : k == "data_offsets" ? Field::kOffsets
                                     : Field::kIgnored;
      if (field_ != Field::kIgnored) {
        const unsigned bit = 1u << static_cast<int>(field_);
        if (seen_fields_ & bit) return Fail(absl::StrCat(Tensor(), "duplicate key ", Quote(k)));
        seen_fields_ |= bit;
      }
      return true;
    }
    // Objects deeper than an entry are rejected in Value() unless skipped.
    return true;
  }

  bool FinishTensor() {
    for (Field f : {Field::kDType, Field::kShape, Field::kOffsets}) {
      if (!(seen_fields_ & (1u << static_cast<int>(f)))) {
        field_ = f;
        return Fail(absl::StrCat(Tensor(), "missing \"", FieldName(), "\""));
      }
    }
    const uint64_t begin = offsets_[0], end = offsets_[1];
    if (end < begin) {
      return Fail(absl::StrCat(Tensor(), "data_offsets [", begin, ", ", end,
                               "] end before they begin"));
    }
    int64_t numel = 0;
    if (!Numel(shape_, &numel)) {
      return Fail(absl::StrCat(Tensor(), "shape ", ShapeString(shape_),
                               " has more than 2^63-1 elements"));
    }
    uint64_t bytes = 0;
    std::string why;
    if (!ByteSize(dtype_, numel, &bytes, &why)) {
      return Fail(absl::StrCat(Tensor(), DTypeName(dtype_), " ", ShapeString(shape_), " ", why));
    }
    if (end - begin != bytes) {
      return Fail(absl::StrCat(Tensor(), "data_offsets ", RangeString(begin, end), " hold ",
                               end - begin, " bytes but ", DTypeName(dtype_), " ",
                               ShapeString(shape_), " needs ", bytes));
    }
    tensors_->push_back(StTensorInfo{entry_, dtype_, shape_, begin, end});
    return true;
  }

  const SafetensorsLimits& limits_;
  std::vector<StTensorInfo>* tensors_;
  std::map<std::string, std::string>* metadata_;
  std::string error_;

  int depth_ = 0;       // containers open
  int skip_depth_ = 0;  // > 0 inside the value of an ignored entry field
  std::unordered_set<std::string> top_keys_;
  bool in_metadata_ = false;
  std::string meta_key_;
  // The entry being read.
  std::string entry_;
  Field field_ = Field::kIgnored;
  unsigned seen_fields_ = 0;
  StDType dtype_ = StDType::kU8;
  std::vector<int64_t> shape_;
  std::vector<uint64_t> offsets_;
  // The scalar being delivered.
  uint64_t uint_value_ = 0;
  std::string* string_value_ = nullptr;
};

}  // namespace

absl::string_view DTypeName(StDType dtype) { return Sv(StDTypeName(dtype)); }

std::string Quote(std::string_view name) {
  constexpr size_t kMax = 200;
  std::string s = IsValidUtf8(name) ? absl::Utf8SafeCHexEscape(Sv(name.substr(0, kMax)))
                                    : EscapeBytes(name.substr(0, kMax));
  if (name.size() > kMax) {
    // Do not end inside a multi-byte UTF-8 sequence.
    while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();
    if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
    absl::StrAppend(&s, "...");
  }
  return absl::StrCat("'", s, "'");
}

std::string RangeString(uint64_t begin, uint64_t end) {
  return absl::StrCat("[", begin, ", ", end, ")");
}

bool ByteSize(StDType dtype, int64_t numel, uint64_t* bytes, std::string* why) {
  uint64_t bits = 0;
  if (numel < 0 ||
      __builtin_mul_overflow(static_cast<uint64_t>(numel),
                             static_cast<uint64_t>(StDTypeBits(dtype)), &bits)) {
    *why = "overflows a 64-bit byte count";
    return false;
  }
  if (bits % 8 != 0) {
    *why = absl::StrCat("is ", bits, " bits, not a whole number of bytes");
    return false;
  }
  *bytes = bits / 8;
  return true;
}

bool Numel(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return false;
  }
  *out = n;
  return true;
}

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c == 0xE0) { n = 2; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) n = 2;
    else if (c == 0xED) { n = 2; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) n = 2;
    else if (c == 0xF0) { n = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) n = 3;
    else if (c == 0xF4) { n = 3; hi = 0x8F; }
    else return false;
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return false;
    }
    i += n + 1;
  }
  return true;
}

std::string ParseHeader(std::string_view text, const SafetensorsLimits& limits, std::vector<StTensorInfo>* tensors,
                        std::map<std::string, std::string>* metadata) {
  HeaderHandler handler(limits, tensors, metadata);
  const bool parsed = json::sax_parse(text.data(), text.data() + text.size(), &handler, json::input_format_t::json,
                                      /*strict=*/true, /*ignore_comments=*/false);
  if (parsed && handler.error().empty()) return "";
  return handler.error().empty() ? "header is not valid JSON" : handler.error();
}

}  // namespace adapterd::model::safetensors_internal
