#include "bytelevel_bpe.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <queue>
#include <stdexcept>

#include "encode_common.h"
#include "unicode_tables.h"

namespace mipt {

namespace {

using unicode::Class;

const std::vector<uint8_t>& class_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<uint8_t> t(0x110000, unicode::kOther);
    for (const auto& r : unicode::kRanges)
      for (uint32_t cp = r.first; cp <= r.last; ++cp) t[cp] = r.cls;
    return t;
  }();
  return table;
}

// The code points of a UTF-8 string (valid: it comes from Python str), read in place by byte position: ASCII by one
// table load, a multi-byte character decoded where it is met. No decoded copy of the text is made.
struct Utf8 {
  const uint8_t* u;
  size_t n;
  const uint8_t* table;  // class_table()

  static size_t char_len(uint8_t c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }
  uint32_t cp(size_t pos, size_t& len) const {
    const uint8_t* p = u + pos;
    if (p[0] < 0x80) return len = 1, p[0];
    if (p[0] < 0xE0) return len = 2, ((p[0] & 0x1f) << 6) | (p[1] & 0x3f);
    if (p[0] < 0xF0) return len = 3, ((p[0] & 0x0f) << 12) | ((p[1] & 0x3f) << 6) | (p[2] & 0x3f);
    return len = 4, ((p[0] & 0x07) << 18) | ((p[1] & 0x3f) << 12) | ((p[2] & 0x3f) << 6) | (p[3] & 0x3f);
  }
  uint32_t cp(size_t pos) const {
    size_t len;
    return cp(pos, len);
  }
  Class cls(size_t pos, size_t& len) const {
    if (u[pos] < 0x80) return len = 1, static_cast<Class>(table[u[pos]]);
    return static_cast<Class>(table[cp(pos, len)]);
  }
  Class cls(size_t pos) const {
    size_t len;
    return cls(pos, len);
  }
  // neither whitespace nor a letter nor a number: the regex's [^\s\p{L}\p{N}]
  static bool other(Class c) { return c != unicode::kSpace && c != unicode::kLetter && c != unicode::kNumber; }
};

// True when the text holds a code point unassigned in our tables (ASCII skipped 8 bytes at a time).
bool has_unassigned(std::string_view s) {
  const auto& table = class_table();
  const auto* u = reinterpret_cast<const uint8_t*>(s.data());
  const size_t size = s.size();
  Utf8 text{u, size, table.data()};
  for (size_t i = 0; i < size;) {
    if (i + 8 <= size) {
      uint64_t w;
      std::memcpy(&w, u + i, 8);
      if (!(w & 0x8080808080808080ull)) {
        i += 8;
        continue;
      }
    }
    if (u[i] < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    if (table[text.cp(i, len)] == unicode::kUnassigned) return true;
    i += len;
  }
  return false;
}

// The letter a contraction's character folds to under the regex's case-insensitive match ('ſ' folds to 's').
char fold(uint32_t cp) {
  if (cp == 0x17F) return 's';
  if (cp < 128) return static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
  return 0;
}

inline bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }


}  // namespace

const char* unicode_version() { return unicode::kVersion; }

ByteLevelBPE::ByteLevelBPE(const std::vector<std::pair<std::string, int>>& vocab,
                           const std::vector<std::pair<std::string, std::string>>& merges, int pattern,
                           bool ignore_merges, const std::vector<std::string>& added_tokens)
    : tiktoken_rule_(merges.empty()), pattern_(pattern), ignore_merges_(ignore_merges || merges.empty()),
      added_tokens_(added_tokens) {
  if (pattern != kLlama3 && pattern != kCl100kPossessive && pattern != kGpt2) throw std::invalid_argument("unknown pre-tokenizer pattern");
  class_table();  // build once, before any thread needs it
  int max_id = -1;
  for (const auto& [bytes, id] : vocab) max_id = std::max(max_id, id);
  token_bytes_.resize(max_id + 1);
  for (const auto& [bytes, id] : vocab) token_bytes_[id] = bytes;
  for (const auto& [bytes, id] : vocab) ids_.emplace(token_bytes_[id], id);
  for (int b = 0; b < 256; ++b) {
    auto it = ids_.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
    if (it == ids_.end() && tiktoken_rule_)
      throw std::invalid_argument("unsupported: the vocabulary lacks single-byte token " + std::to_string(b));
    // tokenizers' BPE (no unk token, no byte fallback: the caller checks) skips a character it has no token for
    byte_ids_[b] = it == ids_.end() ? -1 : it->second;
  }
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    auto l = ids_.find(left), r = ids_.find(right), m = ids_.find(left + right);
    if (l == ids_.end() || r == ids_.end() || m == ids_.end())
      throw std::invalid_argument("unsupported: merge " + std::to_string(rank) + " refers to a token not in the vocabulary");
    merges_.emplace((static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second),
                    std::make_pair(static_cast<int>(rank), m->second));
  }
  for (const auto& t : added_tokens_)
    if (!t.empty() && !added_first_byte_[static_cast<uint8_t>(t[0])]) {
      added_first_byte_[static_cast<uint8_t>(t[0])] = true;
      added_first_bytes_.push_back(t[0]);
    }
}

bool ByteLevelBPE::holds_added_token(std::string_view text) const {
  if (added_tokens_.empty()) return false;
  auto at = [&](size_t i) {
    for (const auto& t : added_tokens_)
      if (!t.empty() && text.compare(i, t.size(), t) == 0) return true;
    return false;
  };
  if (added_first_bytes_.size() <= 2) {  // the usual case ('<' of "<|...|>", "<s>"): memchr, vectorized
    for (const char first : added_first_bytes_) {
      const char* p = text.data();
      const char* end = p + text.size();
      while ((p = static_cast<const char*>(std::memchr(p, first, end - p))) != nullptr) {
        if (at(p - text.data())) return true;
        ++p;
      }
    }
    return false;
  }
  for (size_t i = 0; i < text.size(); ++i)
    if (added_first_byte_[static_cast<uint8_t>(text[i])] && at(i)) return true;
  return false;
}

// GPT-2's pre-tokenization regex (the ByteLevel pre-tokenizer's with use_regex, GPT-2/GPT-NeoX/SmolLM2), leftmost-first:
//   's|'t|'re|'ve|'m|'ll|'d (case-sensitive) | ' '?\p{L}+ | ' '?\p{N}+ | ' '?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
// Positions are byte offsets; a "character" is a code point.
template <typename Fn>
void split_gpt2(const Utf8& t, Fn& emit) {
  const size_t n = t.n;
  size_t i = 0;
  while (i < n) {
    size_t end = i, len0;
    const uint32_t c0 = t.cp(i, len0);
    const size_t i1 = i + len0;
    if (c0 == '\'' && i1 < n) {
      size_t len1;
      const uint32_t a = t.cp(i1, len1);
      const size_t i2 = i1 + len1;
      const uint32_t b = i2 < n ? t.cp(i2) : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') end = i2;
      else if ((a == 'r' || a == 'v') && b == 'e') end = i2 + 1;
      else if (a == 'l' && b == 'l') end = i2 + 1;
    }
    if (end == i) {
      // ' '? then a run of one class: letters, numbers, or neither-whitespace-letter-nor-number
      const size_t j = (c0 == ' ' && i1 < n) ? i1 : i;
      size_t len;
      const Class cj = t.cls(j, len);
      if (cj != unicode::kSpace) {
        end = j + len;
        if (cj == unicode::kLetter || cj == unicode::kNumber) {
          while (end < n && t.cls(end, len) == cj) end += len;
        } else {
          while (end < n && Utf8::other(t.cls(end, len))) end += len;
        }
      } else {  // whitespace: c0 itself is whitespace here (a space followed by whitespace, or another one)
        // \s+(?!\S) leaves the run's last character to the word after it, unless the text ends with the run; a
        // single whitespace character is \s+
        size_t run = i, last = i, count = 0;
        while (run < n && t.cls(run, len) == unicode::kSpace) last = run, run += len, ++count;
        end = run == n ? n : count >= 2 ? last : i1;
      }
    }
    emit(i, end);
    i = end;
  }
}

// The pre-tokenization regex, alternative by alternative, leftmost-first as the regex engines match it:
//   's|'t|'re|'ve|'m|'ll|'d (case-insensitive) | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3} | ' '?[^\s\p{L}\p{N}]+[\r\n]*
//   | (\s++$ in the possessive cl100k variant) | \s*[\r\n]+ | \s+(?!\S) | \s+
// Calls emit(begin byte, end byte) per piece; returns false (nothing emitted) if the text has an unassigned
// code point.
template <typename Fn>
bool ByteLevelBPE::split(std::string_view text, Fn emit) const {
  if (has_unassigned(text)) return false;
  const Utf8 t{reinterpret_cast<const uint8_t*>(text.data()), text.size(), class_table().data()};
  if (pattern_ == kGpt2) {
    split_gpt2(t, emit);
    return true;
  }
  const size_t n = t.n;
  const uint8_t* u = t.u;
  auto crlf_at = [&](size_t k) { return u[k] == '\r' || u[k] == '\n'; };  // ASCII: never inside a multi-byte character
  size_t i = 0;
  while (i < n) {
    size_t end = i, len0, len;
    const uint32_t cpi = t.cp(i, len0);
    const Class c = static_cast<Class>(t.table[cpi]);
    const size_t i1 = i + len0;
    if (cpi == '\'' && i1 < n) {  // contractions
      size_t len1;
      const char a = fold(t.cp(i1, len1));
      const size_t i2 = i1 + len1;
      const char b = i2 < n ? fold(t.cp(i2)) : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd') end = i2;
      else if ((a == 'r' || a == 'v') && b == 'e') end = i2 + 1;  // 'e' and 'l' fold from ASCII only: one byte
      else if (a == 'l' && b == 'l') end = i2 + 1;
    }
    if (end == i) {  // letters, with at most one leading non-letter, non-number, non-CR/LF character
      size_t j = i;
      if (c != unicode::kLetter && c != unicode::kNumber && !is_crlf(cpi) && i1 < n && t.cls(i1) == unicode::kLetter) j = i1;
      if (j == i1 || c == unicode::kLetter) {
        end = j;
        while (end < n && t.cls(end, len) == unicode::kLetter) end += len;
      }
    }
    if (end == i && c == unicode::kNumber) {  // 1 to 3 numbers
      end = i1;
      for (int count = 1; end < n && count < 3 && t.cls(end, len) == unicode::kNumber; ++count) end += len;
    }
    if (end == i) {  // punctuation and symbols, with an optional leading space and trailing CR/LFs
      const size_t j = (cpi == ' ' && i1 < n && Utf8::other(t.cls(i1))) ? i1 : i;
      if (j == i1 || Utf8::other(c)) {
        end = j;
        while (end < n && Utf8::other(t.cls(end, len))) end += len;
        while (end < n && crlf_at(end)) ++end;
      }
    }
    if (end == i && c == unicode::kSpace) {  // whitespace
      size_t run = i, last = i, count = 0, last_crlf = SIZE_MAX;
      while (run < n && t.cls(run, len) == unicode::kSpace) {
        if (crlf_at(run)) last_crlf = run;
        last = run, run += len, ++count;
      }
      if (pattern_ == kCl100kPossessive && run == n) end = n;  // \s++$
      else if (last_crlf != SIZE_MAX) end = last_crlf + 1;    // \s*[\r\n]+
      else if (run == n) end = n;                               // \s+(?!\S) at the end
      else if (count >= 2) end = last;                          // \s+(?!\S): leave one space for the next word
      else end = i1;                                            // \s+
    }
    if (end == i) end = i1;  // unreachable: every class is covered above; kept so the loop always advances
    emit(i, end);
    i = end;
  }
  return true;
}

std::vector<std::string> ByteLevelBPE::pretokenize(std::string_view text) const {
  std::vector<std::string> pieces;
  if (!split(text, [&](uint32_t b, uint32_t e) { pieces.emplace_back(text.substr(b, e - b)); }))
    throw std::invalid_argument("text holds a code point unassigned in Unicode " + std::string(unicode::kVersion));
  return pieces;
}

void ByteLevelBPE::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (ignore_merges_) {
    auto it = ids_.find(piece);
    if (it != ids_.end()) return out.push_back(it->second);
  }
  const size_t n = piece.size();
  if (tiktoken_rule_) {
    // tiktoken: repeatedly merge the adjacent pair whose concatenation has the lowest rank (leftmost on ties).
    std::vector<size_t> starts(n + 1);
    for (size_t i = 0; i <= n; ++i) starts[i] = i;
    auto rank_at = [&](size_t k) -> int {  // rank of parts k and k+1 joined
      if (k + 2 >= starts.size()) return INT_MAX;
      auto it = ids_.find(piece.substr(starts[k], starts[k + 2] - starts[k]));
      return it == ids_.end() ? INT_MAX : it->second;
    };
    std::vector<int> ranks(n + 1, INT_MAX);
    for (size_t k = 0; k + 1 < starts.size(); ++k) ranks[k] = rank_at(k);
    while (starts.size() > 2) {
      size_t best = 0;
      for (size_t k = 1; k + 2 < starts.size(); ++k)
        if (ranks[k] < ranks[best]) best = k;
      if (ranks[best] == INT_MAX) break;
      starts.erase(starts.begin() + best + 1);
      ranks.erase(ranks.begin() + best + 1);
      ranks[best] = rank_at(best);
      if (best > 0) ranks[best - 1] = rank_at(best - 1);
    }
    for (size_t k = 0; k + 1 < starts.size(); ++k) out.push_back(ids_.at(piece.substr(starts[k], starts[k + 1] - starts[k])));
    return;
  }
  // tokenizers: a queue of mergeable pairs by (merge rank, position); an entry is stale when the pair at its
  // position no longer merges into the same token.
  struct Symbol {
    int id, prev, next;
    bool alive;
  };
  struct Merge {
    int rank, pos, new_id;
    bool operator<(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> symbols;
  symbols.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const int id = byte_ids_[static_cast<uint8_t>(piece[i])];
    if (id < 0) continue;  // a byte with no token: dropped, as tokenizers drops it
    const int at = static_cast<int>(symbols.size());
    symbols.push_back({id, at - 1, at + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;
  const size_t count = symbols.size();
  std::priority_queue<Merge> queue;
  auto lookup = [&](int left, int right) -> const std::pair<int, int>* {
    auto it = merges_.find((static_cast<uint64_t>(symbols[left].id) << 32) | static_cast<uint32_t>(symbols[right].id));
    return it == merges_.end() ? nullptr : &it->second;
  };
  auto push = [&](int left) {
    if (left < 0 || symbols[left].next < 0) return;
    if (auto m = lookup(left, symbols[left].next)) queue.push({m->first, left, m->second});
  };
  for (size_t i = 0; i + 1 < count; ++i) push(static_cast<int>(i));
  while (!queue.empty()) {
    Merge top = queue.top();
    queue.pop();
    Symbol& s = symbols[top.pos];
    if (!s.alive || s.next < 0) continue;
    auto m = lookup(top.pos, s.next);
    if (m == nullptr || m->second != top.new_id) continue;
    Symbol& r = symbols[s.next];
    s.id = top.new_id;
    r.alive = false;
    s.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = top.pos;
    push(s.prev);
    push(top.pos);
  }
  for (int i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

bool ByteLevelBPE::encode_one(std::string_view text, Cache& cache, std::vector<int32_t>& out) const {
  if (holds_added_token(text)) return false;
  const size_t first = out.size();
  bool ok = split(text, [&](uint32_t b, uint32_t e) {
    encode_cached(cache, text.substr(b, e - b), [this](std::string_view p, std::vector<int32_t>& ids) { encode_piece(p, ids); }, out);
  });
  if (!ok) out.resize(first);
  return ok;
}

void ByteLevelBPE::encode_batch(const std::vector<std::string_view>& texts, int num_threads, int64_t append_id,
                                std::vector<int32_t>& tokens, std::vector<int64_t>& lengths) {
  std::lock_guard<std::mutex> lock(mutex_);
  const size_t threads = batch_threads(texts.size(), num_threads);
  if (caches_.size() < threads) caches_.resize(threads);
  encode_in_threads(
      texts.size(), threads,
      [&](size_t t, size_t i, std::vector<int32_t>& out, std::vector<int64_t>& lens) {
        const size_t before = out.size();
        out.insert(out.end(), prefix_.begin(), prefix_.end());
        if (!encode_one(texts[i], caches_[t], out)) {
          out.resize(before);
          lens.push_back(-1);  // the caller encodes this text with the library
          return;
        }
        out.insert(out.end(), suffix_.begin(), suffix_.end());
        if (append_id >= 0 && out.size() > before) out.push_back(static_cast<int32_t>(append_id));
        lens.push_back(static_cast<int64_t>(out.size() - before));
      },
      tokens, lengths);
}

}  // namespace mipt
