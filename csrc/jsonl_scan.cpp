// See jsonl_scan.h. Accepted here: exactly the lines that are valid RFC 8259 JSON (which orjson and `json` both
// parse to the same value), kept within limits where the two parsers differ (nesting deeper than 32, numbers
// with many digits), whose top level is an object holding the key once, written without escapes, with a string
// value free of lone surrogates. Every other line is kLineOther: the Python path decides what it is.
#include "jsonl_scan.h"

#include <cstddef>
#include <cstring>

namespace mipt {
namespace {

constexpr int kMaxDepth = 32;
constexpr int kMaxDigits = 18;

struct Table {
  // 1: a byte a string may hold as is (ASCII, not '"', '\\' or a control character)
  uint8_t plain[256] = {};
  Table() {
    for (int c = 0x20; c < 0x80; ++c) plain[c] = 1;
    plain['"'] = plain['\\'] = 0;
  }
};
const Table kTable;

inline bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

inline void skip_ws(const uint8_t*& p, const uint8_t* e) {
  while (p < e && is_ws(*p)) ++p;
}

inline int hex(uint8_t c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

inline bool read_u16(const uint8_t* p, const uint8_t* e, uint32_t& v) {
  if (e - p < 4) return false;
  v = 0;
  for (int i = 0; i < 4; ++i) {
    const int h = hex(p[i]);
    if (h < 0) return false;
    v = v * 16 + static_cast<uint32_t>(h);
  }
  return true;
}

inline void put_utf8(uint32_t cp, char*& w) {
  char b[4];
  size_t n;
  if (cp < 0x80) {
    b[0] = static_cast<char>(cp);
    n = 1;
  } else if (cp < 0x800) {
    b[0] = static_cast<char>(0xC0 | (cp >> 6));
    b[1] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    b[0] = static_cast<char>(0xE0 | (cp >> 12));
    b[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[2] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    b[0] = static_cast<char>(0xF0 | (cp >> 18));
    b[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    b[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    b[3] = static_cast<char>(0x80 | (cp & 0x3F));
    n = 4;
  }
  std::memcpy(w, b, 4);  // room: an escape of 6 bytes (12 for a pair) writes 4 at most
  w += n;
}

inline bool cont(uint8_t c) { return (c & 0xC0) == 0x80; }

// The length of the well-formed UTF-8 sequence at p (lead byte >= 0x80), or 0 (Unicode's table 3-7: no overlong
// forms, no surrogates, nothing past U+10FFFF).
inline int utf8_length(const uint8_t* p, const uint8_t* e) {
  const uint8_t c = p[0];
  const ptrdiff_t left = e - p;
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(p[1]) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(p[1]) || !cont(p[2])) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;
    if (c == 0xED && p[1] > 0x9F) return 0;
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3])) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;
    if (c == 0xF4 && p[1] > 0x8F) return 0;
    return 4;
  }
  return 0;
}

constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;

// The high bit of each of the 8 bytes of `x` (little-endian) that is not plain (>= 0x80, '"', '\\' or below 0x20).
// A borrow can mark a plain byte too, but only one above (after) a marked one: the lowest mark is always exact.
inline uint64_t special_bytes(uint64_t x) {
  const uint64_t quote = x ^ (kOnes * '"'), backslash = x ^ (kOnes * '\\');
  return (((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash) | (x - kOnes * 0x20) | x) & kHighs;
}

// p: just after the opening quote. On success p is just after the closing quote; `out` (if any) gets the value's
// UTF-8 at `w` (kKeep; never more bytes than the raw string's) and `escaped` says whether the raw string held a
// backslash.
template <bool kKeep>
bool scan_string(const uint8_t*& p, const uint8_t* e, char*& w, bool& escaped) {
  escaped = false;
  while (true) {
    const uint8_t* run = p;
    while (e - p >= 8) {  // 8 bytes at a time, to the first byte that is not plain
      uint64_t x;
      std::memcpy(&x, p, 8);
      const uint64_t marks = special_bytes(x);
      if (marks != 0) {
        p += __builtin_ctzll(marks) / 8;
        break;
      }
      p += 8;
    }
    while (p < e && kTable.plain[*p]) ++p;
    if (kKeep) {
      std::memcpy(w, run, p - run);
      w += p - run;
    }
    if (p >= e) return false;
    const uint8_t c = *p;
    if (c == '"') {
      ++p;
      return true;
    }
    if (c == '\\') {
      escaped = true;
      if (e - p < 2) return false;
      const uint8_t x = p[1];
      char plain = 0;
      switch (x) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
          uint32_t v;
          if (!read_u16(p + 2, e, v)) return false;
          p += 6;
          if (v >= 0xDC00 && v <= 0xDFFF) return false;  // a lone low surrogate
          if (v >= 0xD800 && v <= 0xDBFF) {
            uint32_t low;
            if (e - p < 2 || p[0] != '\\' || p[1] != 'u' || !read_u16(p + 2, e, low)) return false;
            if (low < 0xDC00 || low > 0xDFFF) return false;  // a lone high surrogate
            p += 6;
            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
          }
          if (kKeep) put_utf8(v, w);
          continue;
        }
        default:
          return false;
      }
      if (kKeep) *w++ = plain;
      p += 2;
      continue;
    }
    if (c < 0x80) return false;  // a control character
    const int n = utf8_length(p, e);
    if (n == 0) return false;
    if (kKeep) {
      std::memcpy(w, p, n);
      w += n;
    }
    p += n;
  }
}

inline int digits(const uint8_t*& p, const uint8_t* e) {
  const uint8_t* s = p;
  while (p < e && *p >= '0' && *p <= '9') ++p;
  return static_cast<int>(p - s);
}

bool scan_number(const uint8_t*& p, const uint8_t* e) {
  if (*p == '-') ++p;
  if (p >= e) return false;
  if (*p == '0') {
    ++p;
  } else {
    const int n = digits(p, e);
    if (n == 0 || n > kMaxDigits) return false;
  }
  if (p < e && *p == '.') {
    ++p;
    const int n = digits(p, e);
    if (n == 0 || n > kMaxDigits) return false;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    ++p;
    if (p < e && (*p == '+' || *p == '-')) ++p;
    const int n = digits(p, e);
    if (n == 0 || n > 3) return false;
  }
  return true;
}

inline bool literal(const uint8_t*& p, const uint8_t* e, const char* word, size_t n) {
  if (static_cast<size_t>(e - p) < n || std::memcmp(p, word, n) != 0) return false;
  p += n;
  return true;
}

// Any JSON value at p (whitespace skipped); nothing kept.
bool skip_value(const uint8_t*& p, const uint8_t* e, int depth) {
  if (p >= e) return false;
  bool escaped;
  char* none = nullptr;
  switch (*p) {
    case '"':
      ++p;
      return scan_string<false>(p, e, none, escaped);
    case 't':
      return literal(p, e, "true", 4);
    case 'f':
      return literal(p, e, "false", 5);
    case 'n':
      return literal(p, e, "null", 4);
    case '{':
    case '[': {
      if (depth >= kMaxDepth) return false;
      const bool object = *p == '{';
      const uint8_t close = object ? '}' : ']';
      ++p;
      skip_ws(p, e);
      if (p < e && *p == close) {
        ++p;
        return true;
      }
      while (true) {
        if (object) {
          if (p >= e || *p != '"') return false;
          ++p;
          if (!scan_string<false>(p, e, none, escaped)) return false;
          skip_ws(p, e);
          if (p >= e || *p != ':') return false;
          ++p;
          skip_ws(p, e);
        }
        if (!skip_value(p, e, depth + 1)) return false;
        skip_ws(p, e);
        if (p >= e) return false;
        if (*p == ',') {
          ++p;
          skip_ws(p, e);
          continue;
        }
        if (*p != close) return false;
        ++p;
        return true;
      }
    }
    default:
      if (*p == '-' || (*p >= '0' && *p <= '9')) return scan_number(p, e);
      return false;
  }
}

// One line: true when it is a document, its text written at `w` (moved past it).
bool scan_line(const uint8_t* p, const uint8_t* e, std::string_view key, char*& w) {
  bool found = false, escaped;
  char* none = nullptr;
  char* const start = w;
  skip_ws(p, e);
  if (p >= e || *p != '{') return false;
  ++p;
  skip_ws(p, e);
  if (p < e && *p == '}') return false;  // no key at all
  while (true) {
    if (p >= e || *p != '"') return false;
    const uint8_t* name = ++p;
    if (!scan_string<false>(p, e, none, escaped) || escaped) return false;  // an escaped name might spell the key
    const bool is_key = static_cast<size_t>(p - 1 - name) == key.size() && std::memcmp(name, key.data(), key.size()) == 0;
    skip_ws(p, e);
    if (p >= e || *p != ':') return false;
    ++p;
    skip_ws(p, e);
    if (is_key) {
      if (found || p >= e || *p != '"') return false;  // a repeated key, or a value that is not a string
      ++p;
      if (!scan_string<true>(p, e, w, escaped)) return false;
      found = true;
    } else if (!skip_value(p, e, 1)) {
      return false;
    }
    skip_ws(p, e);
    if (p >= e) return false;
    if (*p == ',') {
      ++p;
      skip_ws(p, e);
      continue;
    }
    if (*p != '}') return false;
    ++p;
    break;
  }
  skip_ws(p, e);
  if (p != e || !found) {
    w = start;
    return false;
  }
  return true;
}

inline bool blank(const uint8_t* p, const uint8_t* e) {
  for (; p < e; ++p) {
    const uint8_t c = *p;
    if (!(c == ' ' || (c >= '\t' && c <= '\r'))) return false;  // bytes.isspace(): space, \t \n \v \f \r
  }
  return true;
}

}  // namespace

size_t scan_jsonl(std::string_view chunk, std::string_view key, char* const text, JsonlScan& out) {
  const auto* begin = reinterpret_cast<const uint8_t*>(chunk.data());
  const auto* end = begin + chunk.size();
  char* w = text;
  for (const uint8_t* p = begin; p < end;) {
    const auto* nl = static_cast<const uint8_t*>(std::memchr(p, '\n', end - p));
    const uint8_t* line_end = nl != nullptr ? nl + 1 : end;
    LineKind kind;
    char* const text_start = w;
    if (blank(p, line_end)) {
      kind = kLineBlank;
    } else if (scan_line(p, line_end, key, w)) {
      kind = kLineDocument;
      out.text_ends.push_back(static_cast<int64_t>(w - text));
    } else {
      w = text_start;
      kind = kLineOther;
    }
    out.kinds.push_back(kind);
    out.line_ends.push_back(static_cast<int64_t>(line_end - begin));
    p = line_end;
  }
  return static_cast<size_t>(w - text);
}

}  // namespace mipt
