#include "sp_bpe.h"

#include "encode_common.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <queue>
#include <sstream>
#include <stdexcept>

namespace mipt {

namespace {

// Runs of <unk> in out[first:] become one <unk>, as sentencepiece emits them without byte fallback.
void merge_unk_runs(std::vector<int32_t>& out, size_t first, int unk_id) {
  size_t k = first;
  for (size_t i = first; i < out.size(); ++i) {
    if (out[i] == unk_id && k > first && out[k - 1] == unk_id) continue;
    out[k++] = out[i];
  }
  out.resize(k);
}


// ------------------------------------------------------------------------------------ protobuf wire format

struct Reader {
  const uint8_t* p;
  const uint8_t* end;

  bool done() const { return p >= end; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p >= end) throw std::invalid_argument("truncated sentencepiece model (varint)");
      uint8_t b = *p++;
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw std::invalid_argument("bad varint in sentencepiece model");
  }
  std::string_view bytes() {
    uint64_t n = varint();
    if (static_cast<uint64_t>(end - p) < n) throw std::invalid_argument("truncated sentencepiece model (bytes)");
    std::string_view s(reinterpret_cast<const char*>(p), n);
    p += n;
    return s;
  }
  float fixed32f() {
    if (end - p < 4) throw std::invalid_argument("truncated sentencepiece model (fixed32)");
    float f;
    std::memcpy(&f, p, 4);
    p += 4;
    return f;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: p += 8; break;
      case 2: bytes(); break;
      case 5: p += 4; break;
      default: throw std::invalid_argument("unsupported protobuf wire type in sentencepiece model");
    }
  }
};

Reader reader_of(std::string_view s) {
  auto* b = reinterpret_cast<const uint8_t*>(s.data());
  return Reader{b, b + s.size()};
}

// Calls fn(field_number, wire_type, reader) for each field of a message.
template <typename Fn>
void for_each_field(std::string_view message, Fn fn) {
  Reader r = reader_of(message);
  while (!r.done()) {
    uint64_t key = r.varint();
    fn(static_cast<int>(key >> 3), static_cast<int>(key & 7), r);
  }
}

// ------------------------------------------------------------------------------------ UTF-8

// sentencepiece's character length rule (string_util::OneCharLen): by the lead byte only.
inline size_t one_char_len(const char* s) {
  return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(static_cast<uint8_t>(*s) & 0xFF) >> 4];
}

inline uint32_t decode_char(const char* s, size_t len) {
  const auto* u = reinterpret_cast<const uint8_t*>(s);
  switch (len) {
    case 1: return u[0];
    case 2: return ((u[0] & 0x1f) << 6) | (u[1] & 0x3f);
    case 3: return ((u[0] & 0x0f) << 12) | ((u[1] & 0x3f) << 6) | (u[2] & 0x3f);
    default: return ((u[0] & 0x07) << 18) | ((u[1] & 0x3f) << 12) | ((u[2] & 0x3f) << 6) | (u[3] & 0x3f);
  }
}

constexpr char kSpace[] = "\xe2\x96\x81";  // U+2581, sentencepiece's escaped whitespace

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::invalid_argument("cannot open sentencepiece model " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

SpModelProto parse_sp_model(const std::string& data) {
  SpModelProto m;
  for_each_field(data, [&](int field, int wire, Reader& r) {
    if (field == 1 && wire == 2) {  // repeated SentencePiece pieces
      SpPiece piece;
      for_each_field(r.bytes(), [&](int f, int w, Reader& pr) {
        if (f == 1 && w == 2) piece.piece = std::string(pr.bytes());
        else if (f == 2 && w == 5) piece.score = pr.fixed32f();
        else if (f == 3 && w == 0) piece.type = static_cast<int>(pr.varint());
        else pr.skip(w);
      });
      m.pieces.push_back(std::move(piece));
    } else if (field == 2 && wire == 2) {  // TrainerSpec
      for_each_field(r.bytes(), [&](int f, int w, Reader& tr) {
        if (f == 3 && w == 0) m.model_type = static_cast<int>(tr.varint());
        else if (f == 24 && w == 0) m.treat_whitespace_as_suffix = tr.varint() != 0;
        else if (f == 35 && w == 0) m.byte_fallback = tr.varint() != 0;
        else if (f == 40 && w == 0) m.unk_id = static_cast<int>(tr.varint());
        else tr.skip(w);
      });
    } else if (field == 3 && wire == 2) {  // NormalizerSpec
      for_each_field(r.bytes(), [&](int f, int w, Reader& nr) {
        if (f == 1 && w == 2) m.normalizer_name = std::string(nr.bytes());
        else if (f == 2 && w == 2) m.precompiled_charsmap = std::string(nr.bytes());
        else if (f == 3 && w == 0) m.add_dummy_prefix = nr.varint() != 0;
        else if (f == 4 && w == 0) m.remove_extra_whitespaces = nr.varint() != 0;
        else if (f == 5 && w == 0) m.escape_whitespaces = nr.varint() != 0;
        else nr.skip(w);
      });
    } else {
      r.skip(wire);
    }
  });
  return m;
}

SentencePieceBPE::SentencePieceBPE(const std::string& model_path) {
  SpModelProto m = parse_sp_model(read_file(model_path));
  auto unsupported = [](const std::string& why) { throw std::invalid_argument("unsupported: " + why); };
  if (m.model_type != 2) unsupported("model type is not BPE (unigram and other models use the library)");
  if (!m.precompiled_charsmap.empty() || (m.normalizer_name != "identity" && !m.normalizer_name.empty()))
    unsupported("normalizer '" + m.normalizer_name + "' (only the identity normalizer is implemented natively)");
  if (m.remove_extra_whitespaces) unsupported("remove_extra_whitespaces=true");
  if (!m.escape_whitespaces) unsupported("escape_whitespaces=false");
  if (m.treat_whitespace_as_suffix) unsupported("treat_whitespace_as_suffix=true");

  pieces_ = std::move(m.pieces);
  byte_fallback_ = m.byte_fallback;
  add_dummy_prefix_ = m.add_dummy_prefix;
  unk_id_ = -1;
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const SpPiece& p = pieces_[i];
    const int id = static_cast<int>(i);
    switch (p.type) {
      case 1: mergeable_.emplace(p.piece, id); break;
      case 2: unk_id_ = id; break;
      case 3: break;  // control symbols (<s>, </s>) never come from text
      case 4:
        user_defined_.emplace(p.piece, id);
        longest_user_defined_ = std::max(longest_user_defined_, p.piece.size());
        break;
      case 5: unsupported("the model has UNUSED pieces (re-segmentation is not implemented natively)");
      case 6: {
        unsigned value = 0;
        if (p.piece.size() == 6 && std::sscanf(p.piece.c_str(), "<0x%2X>", &value) == 1 && value < 256)
          byte_ids_[value] = id;
        break;
      }
      default: unsupported("piece type " + std::to_string(p.type));
    }
  }
  if (unk_id_ < 0) unsupported("no <unk> piece");
  if (byte_fallback_)
    for (int b = 0; b < 256; ++b)
      if (byte_ids_[b] < 0) unsupported("byte_fallback without all 256 byte pieces");
  // Character pairs that occur inside some mergeable piece: only between such pairs can a merge cross.
  for (const auto& [piece, id] : mergeable_) {
    uint32_t prev = 0;
    bool has_prev = false;
    for (size_t i = 0; i < piece.size();) {
      size_t len = std::min(one_char_len(piece.data() + i), piece.size() - i);
      uint32_t cp = decode_char(piece.data() + i, len);
      if (has_prev) {
        spanned_pairs_.insert((static_cast<uint64_t>(prev) << 32) | cp);
        const int a = small_index(prev), b = small_index(cp);
        if (a >= 0 && b >= 0) small_spanned_[a * kSmall + b] = true;
      }
      prev = cp;
      has_prev = true;
      i += len;
    }
  }
}

bool SentencePieceBPE::can_split_rare(uint32_t prev, uint32_t next) const {
  return spanned_pairs_.find((static_cast<uint64_t>(prev) << 32) | next) == spanned_pairs_.end();
}

size_t SentencePieceBPE::match_user_defined(std::string_view rest) const {
  for (size_t n = std::min(longest_user_defined_, rest.size()); n > 0; --n)
    if (user_defined_.count(rest.substr(0, n))) return n;
  return 0;
}

void SentencePieceBPE::encode_unit(std::string_view unit, std::vector<int32_t>& out) const {
  struct Symbol {
    int prev, next;
    uint32_t begin, len;
  };
  struct Pair {
    float score;
    int left, right;
    uint32_t size;
  };
  // sentencepiece's order: highest score first; on ties, the leftmost pair.
  auto lower = [](const Pair& a, const Pair& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::vector<Symbol> symbols;
  for (uint32_t i = 0; i < unit.size();) {
    uint32_t len = static_cast<uint32_t>(std::min(one_char_len(unit.data() + i), unit.size() - i));
    int index = static_cast<int>(symbols.size());
    symbols.push_back({index - 1, index + 1, i, len});
    i += len;
  }
  symbols.back().next = -1;
  std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
  auto maybe_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const uint32_t size = symbols[left].len + symbols[right].len;
    auto it = mergeable_.find(unit.substr(symbols[left].begin, size));
    if (it == mergeable_.end()) return;
    agenda.push({pieces_[it->second].score, left, right, size});
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!agenda.empty()) {
    Pair top = agenda.top();
    agenda.pop();
    Symbol& l = symbols[top.left];
    Symbol& r = symbols[top.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;  // stale
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.left;
    r.len = 0;
    maybe_add(l.prev, top.left);
    maybe_add(top.left, l.next);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) {
    std::string_view piece = unit.substr(symbols[i].begin, symbols[i].len);
    auto it = mergeable_.find(piece);
    if (it != mergeable_.end()) {
      out.push_back(it->second);
    } else if (byte_fallback_) {
      for (char c : piece) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    } else {
      out.push_back(unk_id_);  // runs of <unk> are merged per text, as sentencepiece does
    }
  }
}

void SentencePieceBPE::encode_one(std::string_view text, Cache& cache, std::string& normalized,
                                  std::vector<int32_t>& out) const {
  if (text.empty()) return;
  if (longest_user_defined_ == 0) return encode_one_fused(text, cache, normalized, out);
  // Spaces escaped as ▁ (3 bytes), written into a buffer sized for the worst case (no growth checks per byte).
  normalized.resize(3 * text.size() + 3);
  char* w = normalized.data();
  if (add_dummy_prefix_) std::memcpy(w, kSpace, 3), w += 3;
  for (char c : text) {
    if (c == ' ') std::memcpy(w, kSpace, 3), w += 3;
    else *w++ = c;
  }
  normalized.resize(static_cast<size_t>(w - normalized.data()));
  const size_t first = out.size();
  auto flush = [&](size_t begin, size_t end) {
    if (begin >= end) return;
    encode_cached(cache, std::string_view(normalized.data() + begin, end - begin),
                  [this](std::string_view u, std::vector<int32_t>& ids) { encode_unit(u, ids); }, out);
  };
  std::string_view all(normalized);
  size_t unit_begin = 0;
  bool has_prev = false;
  uint32_t prev = 0;
  for (size_t pos = 0; pos < all.size();) {
    if (longest_user_defined_ > 0) {
      if (size_t n = match_user_defined(all.substr(pos))) {  // frozen: never merges with its neighbours
        flush(unit_begin, pos);
        out.push_back(user_defined_.at(all.substr(pos, n)));
        pos += n;
        unit_begin = pos;
        has_prev = false;
        continue;
      }
    }
    size_t len;
    uint32_t cp;
    if (static_cast<uint8_t>(all[pos]) < 0x80) {
      len = 1, cp = static_cast<uint8_t>(all[pos]);
    } else {
      len = std::min(one_char_len(all.data() + pos), all.size() - pos);
      cp = decode_char(all.data() + pos, len);
    }
    if (has_prev && can_split(prev, cp)) {
      flush(unit_begin, pos);
      unit_begin = pos;
    }
    prev = cp;
    has_prev = true;
    pos += len;
  }
  flush(unit_begin, all.size());
  if (!byte_fallback_) merge_unk_runs(out, first, unk_id_);  // as sentencepiece does without byte fallback
}

// encode_one without user-defined symbols, in one pass: each byte of the text is escaped into `normalized` and the
// unit boundary before it decided as it is written (the same pairs as encode_one's second pass: ASCII and ▁ by
// the table, a multi-byte character decoded first), so the text is read once and nothing is decoded twice.
void SentencePieceBPE::encode_one_fused(std::string_view text, Cache& cache, std::string& normalized,
                                        std::vector<int32_t>& out) const {
  normalized.resize(3 * text.size() + 3 + 4);  // the worst case (+ the 4-byte stores' slack): views stay valid
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "kSpaceWord is stored as little-endian bytes");
  constexpr uint32_t kSpaceWord = 0xe2 | (0x96 << 8) | (0x81 << 16);  // ▁'s UTF-8 bytes, as a little-endian word
  char* const base = normalized.data();
  char* w = base;
  const size_t first = out.size();
  auto encode = [this](std::string_view u, std::vector<int32_t>& ids) { encode_unit(u, ids); };
  const char* unit_begin = base;
  auto flush = [&]() {
    if (unit_begin < w) encode_cached(cache, std::string_view(unit_begin, w - unit_begin), encode, out);
    unit_begin = w;
  };
  const uint8_t* table = small_spanned_.data();
  // prev: the previous character; prev_small its small_index (-1: none in the table); has_prev false at the start
  bool has_prev = false;
  uint32_t prev = 0;
  int prev_small = -1;
  if (add_dummy_prefix_) {
    std::memcpy(w, kSpace, 3), w += 3;
    has_prev = true, prev = 0x2581, prev_small = 128;
  }
  const char* p = text.data();
  const char* const end = p + text.size();
  while (p < end) {
    if (prev_small >= 0 && static_cast<uint8_t>(*p) < 0x80) {
      // a run of ASCII after a table character: one table load per byte, the escape written branch-free (4
      // bytes stored from a word, the length added)
      int prev_idx = prev_small;
      do {
        const uint8_t c = static_cast<uint8_t>(*p);
        const int small = c == ' ' ? 128 : c;
        if (!table[prev_idx * kSmall + small]) flush();
        const uint32_t bytes = c == ' ' ? kSpaceWord : c;
        std::memcpy(w, &bytes, 4);
        w += c == ' ' ? 3 : 1;
        prev_idx = small;
        ++p;
      } while (p < end && static_cast<uint8_t>(*p) < 0x80);
      prev_small = prev_idx;
      prev = prev_idx == 128 ? 0x2581 : static_cast<uint32_t>(prev_idx);
      continue;
    }
    const uint8_t c = static_cast<uint8_t>(*p);
    if (c < 0x80) {
      const int small = c == ' ' ? 128 : c;
      if (has_prev && (prev_small >= 0 ? !table[prev_small * kSmall + small]
                                       : can_split_rare(prev, c == ' ' ? 0x2581 : c)))
        flush();
      if (c == ' ') std::memcpy(w, kSpace, 3), w += 3;
      else *w++ = static_cast<char>(c);
      prev = c == ' ' ? 0x2581 : c;
      prev_small = small;
      has_prev = true;
      ++p;
      continue;
    }
    const size_t len = std::min(one_char_len(p), static_cast<size_t>(end - p));
    const uint32_t cp = decode_char(p, len);
    if (has_prev && can_split(prev, cp)) flush();
    std::memcpy(w, p, len), w += len;
    prev = cp;
    prev_small = small_index(cp);
    has_prev = true;
    p += len;
  }
  flush();
  normalized.resize(static_cast<size_t>(w - base));  // shrinking: no reallocation
  if (!byte_fallback_) merge_unk_runs(out, first, unk_id_);  // as sentencepiece does without byte fallback
}

void SentencePieceBPE::encode_batch(const std::vector<std::string_view>& texts, int num_threads, int64_t append_id,
                                    std::vector<int32_t>& tokens, std::vector<int64_t>& lengths) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t threads = batch_threads(texts.size(), num_threads);
  if (caches_.size() < threads) caches_.resize(threads);
  std::vector<std::string> normalized(threads);
  encode_in_threads(
      texts.size(), threads,
      [&](size_t t, size_t i, std::vector<int32_t>& out, std::vector<int64_t>& lens) {
        const size_t before = out.size();
        encode_one(texts[i], caches_[t], normalized[t], out);
        if (append_id >= 0 && out.size() > before) out.push_back(static_cast<int32_t>(append_id));
        lens.push_back(static_cast<int64_t>(out.size() - before));
      },
      tokens, lengths);
}

}  // namespace mipt
