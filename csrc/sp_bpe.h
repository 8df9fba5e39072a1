// Native encoder for SentencePiece BPE models (Llama-2 / Mistral / InstructLM family), id-exact with the
// sentencepiece library for the models it accepts; anything else is refused with a reason, and the caller
// falls back to the library.
//
// The algorithm is sentencepiece's: normalize (dummy prefix, spaces escaped to U+2581), split into characters
// (user-defined symbols as frozen units), merge the adjacent pair whose merged piece has the highest score
// (ties: leftmost) until no pair is in the vocabulary, then map pieces to ids with byte fallback (or merged
// runs of <unk>). Speed comes from caching: the text is cut into units at character boundaries that no
// vocabulary piece spans (derived from the vocabulary at load time, so it is exact by construction: no merge
// can cross such a boundary), and the ids of each repeated unit are looked up instead of recomputed.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "encode_common.h"

namespace mipt {

struct SpPiece {
  std::string piece;
  float score = 0;
  int type = 1;  // 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE
};

struct SpModelProto {
  std::vector<SpPiece> pieces;
  int model_type = 1;  // 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  int unk_id = 0;
  std::string normalizer_name;
  std::string precompiled_charsmap;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Parses a sentencepiece ModelProto (protobuf wire format) without a protobuf dependency.
SpModelProto parse_sp_model(const std::string& bytes);

class SentencePieceBPE {
 public:
  // Throws std::invalid_argument("unsupported: ...") for models this encoder does not reproduce exactly.
  explicit SentencePieceBPE(const std::string& model_path);

  // Encodes texts (UTF-8) in `num_threads` threads. Appends one token list per text to `tokens`/`lengths`;
  // `append_id` >= 0 ends every non-empty text with that id.
  void encode_batch(const std::vector<std::string_view>& texts, int num_threads, int64_t append_id,
                    std::vector<int32_t>& tokens, std::vector<int64_t>& lengths);

  int vocab_size() const { return static_cast<int>(pieces_.size()); }

 private:
  using Cache = UnitCache;
  void encode_one(std::string_view text, Cache& cache, std::string& normalized, std::vector<int32_t>& out) const;
  void encode_one_fused(std::string_view text, Cache& cache, std::string& normalized, std::vector<int32_t>& out) const;
  void encode_unit(std::string_view unit, std::vector<int32_t>& out) const;
  size_t match_user_defined(std::string_view rest) const;
  bool can_split(uint32_t prev, uint32_t next) const {
    const int a = small_index(prev), b = small_index(next);
    if (a >= 0 && b >= 0) return !small_spanned_[a * kSmall + b];  // ASCII and ▁: most of real text, no hashing
    return can_split_rare(prev, next);
  }
  bool can_split_rare(uint32_t prev, uint32_t next) const;

  std::vector<SpPiece> pieces_;
  std::unordered_map<std::string_view, int> mergeable_;      // NORMAL pieces: the merge vocabulary
  std::unordered_map<std::string_view, int> user_defined_;   // frozen, matched longest-first
  size_t longest_user_defined_ = 0;
  std::unordered_set<uint64_t> spanned_pairs_;  // (codepoint a, codepoint b) adjacent inside some piece
  // The same for the characters of most text, as a table: ASCII (0-127) and ▁ (128).
  static constexpr int kSmall = 129;
  static int small_index(uint32_t cp) { return cp < 128 ? static_cast<int>(cp) : cp == 0x2581 ? 128 : -1; }
  std::vector<uint8_t> small_spanned_ = std::vector<uint8_t>(kSmall * kSmall, 0);
  int byte_ids_[256];
  bool byte_fallback_;
  bool add_dummy_prefix_;
  int unk_id_;
  std::vector<Cache> caches_;  // one per thread, kept across calls
  std::mutex mutex_;           // one batch at a time per encoder (caches are per thread slot)
};

}  // namespace mipt
