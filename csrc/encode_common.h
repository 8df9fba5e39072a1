// Shared by the native encoders: batches over threads, and the per-thread cache of unit (word/piece) ids.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <thread>
#include <vector>

namespace mipt {

// Threads worth starting for n texts (at least 64 texts each: thread start-up is not free).
inline size_t batch_threads(size_t n, int num_threads) {
  return std::max<size_t>(1, std::min<size_t>(std::max(num_threads, 1), (n + 63) / 64));
}

// Calls encode(thread, text index, tokens, lengths) for every text, slice by slice, then appends each thread's
// tokens and lengths to the outputs in text order.
template <typename Encode>
void encode_in_threads(size_t n, size_t threads, Encode encode, std::vector<int32_t>& tokens, std::vector<int64_t>& lengths) {
  std::vector<std::vector<int32_t>> part_tokens(threads);
  std::vector<std::vector<int64_t>> part_lengths(threads);
  auto work = [&](size_t t) {
    for (size_t i = n * t / threads; i < n * (t + 1) / threads; ++i) encode(t, i, part_tokens[t], part_lengths[t]);
  };
  if (threads == 1) {  // straight into the outputs: no copy
    for (size_t i = 0; i < n; ++i) encode(0, i, tokens, lengths);
    return;
  } else {
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t) pool.emplace_back(work, t);
    for (auto& th : pool) th.join();
  }
  for (size_t t = 0; t < threads; ++t) {
    tokens.insert(tokens.end(), part_tokens[t].begin(), part_tokens[t].end());
    lengths.insert(lengths.end(), part_lengths[t].begin(), part_lengths[t].end());
  }
}

inline uint64_t load8(const char* p) {
  uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}
inline uint32_t load4(const char* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// 64x64 -> 128-bit multiply, folded (wyhash's mixing step).
inline uint64_t mum(uint64_t a, uint64_t b) {
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

constexpr uint64_t kHash0 = 0xa0761d6478bd642full, kHash1 = 0xe7037ed1a0b428dbull, kHash2 = 0x8ebc6af09c88c6e3ull;

// The bytes of a unit of at most 16 bytes as two words, zero past its end, without a branch on its length: 16 bytes
// are read at once when they lie in one page (the read past the unit stays inside that page, so it cannot fault),
// else (rarely: 15 of 4096 start addresses) copied.
inline void load_short(const char* p, size_t n, uint64_t& lo, uint64_t& hi) {
  if ((reinterpret_cast<uintptr_t>(p) & 4095) <= 4096 - 16) {
    lo = load8(p), hi = load8(p + 8);
    const unsigned bits = static_cast<unsigned>(n) * 8;
    lo &= bits >= 64 ? ~0ull : (1ull << bits) - 1;
    hi &= bits <= 64 ? 0 : bits >= 128 ? ~0ull : (1ull << (bits - 64)) - 1;
  } else {
    char buf[16] = {};
    std::memcpy(buf, p, n);
    lo = load8(buf), hi = load8(buf + 8);
  }
}

// The hash of a unit of at most 16 bytes (lo, hi from load_short).
inline uint64_t short_hash(uint64_t lo, uint64_t hi, size_t n) { return mum(lo ^ kHash1, hi ^ (kHash2 + n)); }

// A fast hash of a unit: short ones (most) as above, longer ones 16 bytes a step.
inline uint64_t unit_hash(std::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  uint64_t a, b;
  if (n <= 16) {
    load_short(p, n, a, b);
    return short_hash(a, b, n);
  }
  uint64_t seed = kHash0 ^ n;
  for (size_t i = 0; i + 16 < n; i += 16) seed = mum(load8(p + i) ^ kHash1, load8(p + i + 8) ^ seed);
  a = load8(p + n - 16), b = load8(p + n - 8);
  return mum(kHash1 ^ n, mum(a ^ kHash1, b ^ seed) ^ kHash2);
}

// a[0, n) == b[0, n), for the short keys of the cache: overlapping word loads, no call.
inline bool same_bytes(const char* a, const char* b, size_t n) {
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    return load8(a) == load8(b) && load8(a + n - 8) == load8(b + n - 8);
  }
  if (n >= 4) return load4(a) == load4(b) && load4(a + n - 4) == load4(b + n - 4);
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// The per-thread cache of unit (word/pre-token) -> ids: open addressing over one array of 32-byte slots (two a cache
// line). A slot holds a unit of at most 16 bytes itself, and up to two of its ids, so the common probe touches one
// cache line; longer units and longer id lists go to two arenas (no allocation per entry). Bounded: when it holds
// kMaxEntries units, or its arenas kMaxArenaBytes, it is emptied and refilled (memory stays bounded on any corpus:
// at most 32 MB of slots + 32 MB of arenas, per thread).
class UnitCache {
 public:
  static constexpr size_t kMaxUnit = 256;         // bytes; longer units are rare and not kept
  static constexpr size_t kMaxEntries = 1 << 19;  // units
  static constexpr size_t kMaxArenaBytes = 32 << 20;  // long keys + long id lists

  // The cached ids of `unit` (hash h), or nullptr. The pointer is valid until the next insert.
  const int32_t* find(std::string_view unit, uint64_t h, uint32_t& count) const {
    if (slots_.empty()) return nullptr;
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = tag_of(h);
    const size_t n = unit.size();
    for (size_t at = h & mask;; at = (at + 1) & mask) {
      const Slot& s = slots_[at];
      if (s.tag == 0) return nullptr;
      if (s.tag == tag && s.key_len == n &&
          same_bytes(n <= kInlineKey ? s.key : keys_.data() + s.ids[1], unit.data(), n)) {
        count = s.count;
        return inline_ids(s) ? s.ids : ids_.data() + s.ids[0];
      }
    }
  }

  // find() for a unit of at most 16 bytes (lo, hi from load_short): the key compared as two words.
  const int32_t* find_short(uint64_t lo, uint64_t hi, size_t n, uint64_t h, uint32_t& count) const {
    if (slots_.empty()) return nullptr;
    const size_t mask = slots_.size() - 1;
    const uint32_t tag = tag_of(h);
    for (size_t at = h & mask;; at = (at + 1) & mask) {
      const Slot& s = slots_[at];
      if (s.tag == 0) return nullptr;
      if (s.tag == tag && s.key_len == n && load8(s.key) == lo && load8(s.key + 8) == hi) {
        count = s.count;
        return s.count <= 2 ? s.ids : ids_.data() + s.ids[0];
      }
    }
  }

  void insert(std::string_view unit, uint64_t h, const int32_t* ids, size_t count) {
    if (count > 0xFFFF || unit.size() > kMaxUnit) return;
    if (entries_ >= kMaxEntries || keys_.size() + ids_.size() * sizeof(int32_t) >= kMaxArenaBytes) clear();
    if ((entries_ + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    size_t at = h & mask;
    while (slots_[at].tag != 0) at = (at + 1) & mask;
    Slot& s = slots_[at];
    s = Slot{};
    s.tag = tag_of(h);
    s.key_len = static_cast<uint16_t>(unit.size());
    s.count = static_cast<uint16_t>(count);
    if (unit.size() <= kInlineKey) {
      std::memcpy(s.key, unit.data(), unit.size());
    } else {
      s.ids[1] = static_cast<int32_t>(keys_.size());
      keys_.append(unit.data(), unit.size());
    }
    if (inline_ids(s)) {
      std::memcpy(s.ids, ids, count * sizeof(int32_t));
    } else {
      s.ids[0] = static_cast<int32_t>(ids_.size());
      ids_.insert(ids_.end(), ids, ids + count);
    }
    ++entries_;
  }

  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    entries_ = 0;
  }

  size_t size() const { return entries_; }
  std::vector<int32_t> scratch;  // the ids of a unit being encoded

 private:
  static constexpr size_t kInlineKey = 16;
  // ids[0..1]: the ids themselves when the key is inline and there are at most two; else ids[0] is the offset of
  // the ids in ids_, and ids[1] (free then: a long key's ids are never inline) the offset of a long key in keys_.
  struct alignas(32) Slot {
    char key[kInlineKey] = {};
    uint32_t tag = 0;  // 0: a free slot
    uint16_t key_len = 0, count = 0;
    int32_t ids[2] = {0, 0};
  };
  static_assert(sizeof(Slot) == 32, "two slots a cache line");
  static bool inline_ids(const Slot& s) { return s.key_len <= kInlineKey && s.count <= 2; }
  static uint32_t tag_of(uint64_t h) { return static_cast<uint32_t>(h >> 32) | 1; }

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 4096 : old.size() * 2, Slot{});
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.tag == 0) continue;
      size_t at = hash_of_slot(s) & mask;
      while (slots_[at].tag != 0) at = (at + 1) & mask;
      slots_[at] = s;
    }
  }
  uint64_t hash_of_slot(const Slot& s) const {
    if (s.key_len <= kInlineKey) return short_hash(load8(s.key), load8(s.key + 8), s.key_len);  // zero-padded
    return unit_hash(std::string_view(keys_.data() + s.ids[1], s.key_len));
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t entries_ = 0;
};

// Appends the ids of `unit`, from the cache when it was seen before; encode(unit, ids) computes them.
template <typename Encode>
inline void encode_cached(UnitCache& cache, std::string_view unit, Encode encode, std::vector<int32_t>& out) {
  const size_t n = unit.size();
  uint64_t h;
  uint32_t count = 0;
  const int32_t* ids;
  if (n <= 16) {
    uint64_t lo, hi;
    load_short(unit.data(), n, lo, hi);
    h = short_hash(lo, hi, n);
    ids = cache.find_short(lo, hi, n, h, count);
  } else {
    if (n > UnitCache::kMaxUnit) return encode(unit, out);
    h = unit_hash(unit);
    ids = cache.find(unit, h, count);
  }
  if (ids) {
    if (count == 1) out.push_back(*ids);  // most units are one token
    else out.insert(out.end(), ids, ids + count);
    return;
  }
  cache.scratch.clear();
  encode(unit, cache.scratch);
  cache.insert(unit, h, cache.scratch.data(), cache.scratch.size());
  out.insert(out.end(), cache.scratch.begin(), cache.scratch.end());
}

}  // namespace mipt
