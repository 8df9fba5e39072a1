// Streaming writer and native merger for Megatron's MMIDIDX v1 indexed datasets (.bin + .idx).
//
// Format (little-endian, packed; megatron/core/datasets/indexed_dataset.py):
//   .idx: "MMIDIDX\0\0" | u64 version=1 | u8 dtype code | u64 N sequences | u64 D+1 document indices
//         | int32[N] sequence lengths | int64[N] byte pointers into .bin | int64[D+1] document indices (0..N)
//   .bin: the raw tokens of every sequence, concatenated, in the dtype of the code.
//
// Why not Megatron's IndexedDatasetBuilder: it keeps every length and document index in Python lists and
// builds the pointers in a Python loop at finalize, which is what runs multi-hundred-GB preprocessing jobs out
// of memory. Here lengths and document boundaries stream to side files next to the .bin while tokens are
// appended, and finalize streams them into the .idx computing pointers on the fly: memory stays O(buffer)
// however many documents there are. The bytes written are identical to Megatron's for the same tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mipt {

// Megatron's DType codes.
enum DTypeCode : uint8_t {
  kUInt8 = 1, kInt8 = 2, kInt16 = 3, kInt32 = 4, kInt64 = 5, kFloat64 = 6, kFloat32 = 7, kUInt16 = 8
};

// uint16 when the vocabulary is below 65500, else int32 (DType.optimal_dtype in megatron-core).
uint8_t optimal_dtype_code(int64_t vocab_size);
int itemsize_of(uint8_t dtype_code);  // throws for codes that are not integer token types

// An append-only file with its own buffer, so raw-fd copies (copy_file_range) can be interleaved safely.
class OutputFile {
 public:
  OutputFile() = default;
  void open(const std::string& path);
  void write(const void* data, size_t nbytes);
  void flush();
  void append_file_range(const std::string& src_path, uint64_t offset, uint64_t nbytes);
  void close();
  ~OutputFile();
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
  std::vector<char> buffer_;
  size_t used_ = 0;
  uint64_t written_ = 0;
};

struct IndexHeader {
  uint8_t dtype_code;
  uint64_t sequence_count;
  uint64_t document_count;  // number of document indices = documents + 1
};

IndexHeader read_index_header(const std::string& idx_path);

class IndexedBuilder {
 public:
  IndexedBuilder(const std::string& bin_path, uint8_t dtype_code);
  ~IndexedBuilder();

  // Appends a batch. `lengths[i]` is the token count of sequence i; `tokens` holds them back to back.
  // Without `sequences_per_document` every sequence is one document and a length of 0 is an empty document
  // (no sequence, a repeated document index: what Megatron's preprocess_data.py writes for an empty text).
  // With it, document d owns the next sequences_per_document[d] sequences.
  template <typename T>
  void add_batch(const T* tokens, size_t num_tokens, const int64_t* lengths, size_t num_lengths,
                 const int64_t* sequences_per_document, size_t num_documents);

  // Appends a whole existing dataset (its .bin copied natively, its index shifted), like add_index.
  void add_index(const std::string& path_prefix);

  // Writes the .idx and closes everything. The builder is unusable afterwards.
  void finalize(const std::string& idx_path);

  // Removes the .bin and side files of an unfinished build.
  void abort();

  uint64_t sequence_count() const { return sequence_count_; }
  uint64_t document_count() const { return document_count_; }
  uint64_t token_count() const { return token_count_; }
  uint8_t dtype_code() const { return dtype_code_; }

 private:
  void append_sequence_length(int64_t length);
  void end_document();
  template <typename Out, typename T>
  void write_tokens(const T* tokens, size_t n);

  std::string bin_path_;
  uint8_t dtype_code_;
  int itemsize_;
  OutputFile bin_, lengths_, documents_;
  std::vector<char> convert_buffer_;
  uint64_t sequence_count_ = 0;
  uint64_t document_count_ = 0;  // documents, without the leading 0 index
  uint64_t token_count_ = 0;
  bool finished_ = false;
};

}  // namespace mipt
