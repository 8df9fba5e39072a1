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

// A fast hash of a short byte string (8 bytes at a time, multiply-xorshift mixing); never 0 (0 marks a free slot).
inline uint64_t unit_hash(std::string_view s) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t h = 0x243F6A8885A308D3ull ^ (s.size() * kMul);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  if (i < s.size()) {
    uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * kMul;
    h ^= h >> 29;
  }
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return h | 1;
}

// a[0, n) == b[0, n), for the short keys of the cache: overlapping word loads, no call.
inline bool same_bytes(const char* a, const char* b, size_t n) {
  auto load8 = [](const char* p) { uint64_t w; std::memcpy(&w, p, 8); return w; };
  auto load4 = [](const char* p) { uint32_t w; std::memcpy(&w, p, 4); return w; };
  if (n >= 8) {
    if (n > 16) return std::memcmp(a, b, n) == 0;
    return load8(a) == load8(b) && load8(a + n - 8) == load8(b + n - 8);
  }
  if (n >= 4) return load4(a) == load4(b) && load4(a + n - 4) == load4(b + n - 4);
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// The per-thread cache of unit (word/pre-token) -> ids: open addressing over one slot array, keys and ids kept in
// two arenas (no allocation per entry, one cache line per probe). Bounded: when it holds kMaxEntries units it is
// emptied and refilled (memory stays bounded on any corpus: about 40 MB per thread at most).
class UnitCache {
 public:
  static constexpr size_t kMaxUnit = 64;          // bytes; longer units are rare and not kept
  static constexpr size_t kMaxEntries = 1 << 19;  // units

  // The cached ids of `unit` (hash h), or nullptr.
  const int32_t* find(std::string_view unit, uint64_t h, uint32_t& count) const {
    if (slots_.empty()) return nullptr;
    const size_t mask = slots_.size() - 1;
    for (size_t at = h & mask;; at = (at + 1) & mask) {
      const Slot& s = slots_[at];
      if (s.hash == 0) return nullptr;
      if (s.hash == h && s.key_len == unit.size() && same_bytes(keys_.data() + s.key_at, unit.data(), unit.size())) {
        count = s.id_count;
        return ids_.data() + s.ids_at;
      }
    }
  }

  void insert(std::string_view unit, uint64_t h, const int32_t* ids, size_t count) {
    if (count > 0xFFFF) return;
    if (entries_ >= kMaxEntries) clear();
    if ((entries_ + 1) * 2 > slots_.size()) grow();
    const size_t mask = slots_.size() - 1;
    size_t at = h & mask;
    while (slots_[at].hash != 0) at = (at + 1) & mask;
    slots_[at] = {h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(ids_.size()),
                  static_cast<uint16_t>(unit.size()), static_cast<uint16_t>(count)};
    keys_.append(unit.data(), unit.size());
    ids_.insert(ids_.end(), ids, ids + count);
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
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_at = 0, ids_at = 0;
    uint16_t key_len = 0, id_count = 0;
  };

  void grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 4096 : old.size() * 2, Slot{});
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.hash == 0) continue;
      size_t at = s.hash & mask;
      while (slots_[at].hash != 0) at = (at + 1) & mask;
      slots_[at] = s;
    }
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t entries_ = 0;
};

// Appends the ids of `unit`, from the cache when it was seen before; encode(unit, ids) computes them.
template <typename Encode>
inline void encode_cached(UnitCache& cache, std::string_view unit, Encode encode, std::vector<int32_t>& out) {
  if (unit.size() > UnitCache::kMaxUnit) return encode(unit, out);
  const uint64_t h = unit_hash(unit);
  uint32_t count = 0;
  if (const int32_t* ids = cache.find(unit, h, count)) {
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
