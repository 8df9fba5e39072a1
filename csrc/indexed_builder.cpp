#include "indexed_builder.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <type_traits>

namespace mipt {

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderSize = 34;
constexpr size_t kBufferBytes = 4 << 20;

[[noreturn]] void fail_errno(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

std::string lengths_side_path(const std::string& bin_path) { return bin_path + ".lengths.part"; }
std::string documents_side_path(const std::string& bin_path) { return bin_path + ".documents.part"; }

// Reads a file in chunks and hands each chunk to `fn(data, nbytes)`.
template <typename Fn>
void read_range(const std::string& path, uint64_t offset, uint64_t nbytes, Fn fn) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("cannot open", path);
  std::vector<char> buffer(kBufferBytes);
  while (nbytes > 0) {
    // Fill whole chunks so callers always see a multiple of their element size.
    size_t want = nbytes < buffer.size() ? static_cast<size_t>(nbytes) : buffer.size();
    size_t have = 0;
    while (have < want) {
      ssize_t got = ::pread(fd, buffer.data() + have, want - have, static_cast<off_t>(offset + have));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        ::close(fd);
        if (got == 0) throw std::runtime_error("unexpected end of file in " + path);
        fail_errno("cannot read", path);
      }
      have += static_cast<size_t>(got);
    }
    fn(buffer.data(), want);
    offset += want;
    nbytes -= want;
  }
  ::close(fd);
}

uint64_t file_size(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_errno("cannot open", path);
  off_t size = ::lseek(fd, 0, SEEK_END);
  ::close(fd);
  if (size < 0) fail_errno("cannot seek", path);
  return static_cast<uint64_t>(size);
}

}  // namespace

uint8_t optimal_dtype_code(int64_t vocab_size) { return vocab_size < 65500 ? kUInt16 : kInt32; }

int itemsize_of(uint8_t code) {
  switch (code) {
    case kUInt8: case kInt8: return 1;
    case kInt16: case kUInt16: return 2;
    case kInt32: return 4;
    case kInt64: return 8;
    default: throw std::invalid_argument("dtype code " + std::to_string(code) + " is not an integer token dtype");
  }
}

// ---------------------------------------------------------------------------------------------- OutputFile

void OutputFile::open(const std::string& path) {
  path_ = path;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail_errno("cannot create", path);
  buffer_.resize(kBufferBytes);
  used_ = 0;
  written_ = 0;
}

void OutputFile::flush() {
  size_t done = 0;
  while (done < used_) {
    ssize_t n = ::write(fd_, buffer_.data() + done, used_ - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("cannot write", path_);
    }
    done += n;
  }
  used_ = 0;
}

void OutputFile::write(const void* data, size_t nbytes) {
  const char* p = static_cast<const char*>(data);
  written_ += nbytes;
  if (used_ + nbytes > buffer_.size()) {
    flush();
    if (nbytes >= buffer_.size()) {  // large writes bypass the buffer
      size_t done = 0;
      while (done < nbytes) {
        ssize_t n = ::write(fd_, p + done, nbytes - done);
        if (n < 0) {
          if (errno == EINTR) continue;
          fail_errno("cannot write", path_);
        }
        done += n;
      }
      return;
    }
  }
  std::memcpy(buffer_.data() + used_, p, nbytes);
  used_ += nbytes;
}

void OutputFile::append_file_range(const std::string& src_path, uint64_t offset, uint64_t nbytes) {
  flush();
  written_ += nbytes;
  int src = ::open(src_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src < 0) fail_errno("cannot open", src_path);
  loff_t in_off = static_cast<loff_t>(offset);
  uint64_t left = nbytes;
  // copy_file_range lets the kernel (or the filesystem, by reflink) move the bytes without a user-space copy.
  while (left > 0) {
    ssize_t n = ::copy_file_range(src, &in_off, fd_, nullptr, left, 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(src);
      fail_errno("cannot copy from", src_path);
    }
    if (n == 0) break;
    left -= n;
  }
  ::close(src);
  if (left > 0) {  // fallback: plain read + write
    read_range(src_path, static_cast<uint64_t>(in_off), left, [&](const char* d, size_t k) {
      written_ -= k;  // write() counts it again
      write(d, k);
    });
    flush();
  }
}

void OutputFile::close() {
  if (fd_ < 0) return;
  flush();
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) fail_errno("cannot close", path_);
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

// ---------------------------------------------------------------------------------------------- header

IndexHeader read_index_header(const std::string& idx_path) {
  IndexHeader h{};
  char raw[kHeaderSize];
  read_range(idx_path, 0, kHeaderSize, [&](const char* d, size_t k) { std::memcpy(raw, d, k); });
  if (std::memcmp(raw, kMagic, sizeof(kMagic)) != 0) {
    throw std::runtime_error(idx_path + ": not a Megatron MMIDIDX index (bad magic)");
  }
  uint64_t version;
  std::memcpy(&version, raw + 9, 8);
  if (version != kVersion) {
    throw std::runtime_error(idx_path + ": unsupported index version " + std::to_string(version));
  }
  h.dtype_code = static_cast<uint8_t>(raw[17]);
  std::memcpy(&h.sequence_count, raw + 18, 8);
  std::memcpy(&h.document_count, raw + 26, 8);
  return h;
}

// ---------------------------------------------------------------------------------------------- builder

IndexedBuilder::IndexedBuilder(const std::string& bin_path, uint8_t dtype_code)
    : bin_path_(bin_path), dtype_code_(dtype_code), itemsize_(itemsize_of(dtype_code)) {
  bin_.open(bin_path);
  lengths_.open(lengths_side_path(bin_path));
  documents_.open(documents_side_path(bin_path));
}

IndexedBuilder::~IndexedBuilder() {
  if (!finished_) {
    try {
      abort();
    } catch (...) {
    }
  }
}

void IndexedBuilder::append_sequence_length(int64_t length) {
  if (length < 0 || length > std::numeric_limits<int32_t>::max()) {
    throw std::invalid_argument("sequence length " + std::to_string(length) + " does not fit the int32 index");
  }
  int32_t l = static_cast<int32_t>(length);
  lengths_.write(&l, sizeof(l));
  ++sequence_count_;
}

void IndexedBuilder::end_document() {
  int64_t index = static_cast<int64_t>(sequence_count_);
  documents_.write(&index, sizeof(index));
  ++document_count_;
}

template <typename Out, typename T>
void IndexedBuilder::write_tokens(const T* tokens, size_t n) {
  // Check every id first, so a rejected batch leaves nothing behind in the .bin: the smallest and the largest id
  // (a loop the compiler vectorizes), then, only when one of them does not fit, the first id that does not.
  bool all_fit = true;
  if (n > 0) {
    T lo = tokens[0], hi = tokens[0];
    for (size_t i = 1; i < n; ++i) {
      lo = std::min(lo, tokens[i]);
      hi = std::max(hi, tokens[i]);
    }
    if constexpr (std::is_signed_v<T>) {
      all_fit = static_cast<int64_t>(lo) >= static_cast<int64_t>(std::numeric_limits<Out>::min()) &&
                static_cast<int64_t>(hi) <= static_cast<int64_t>(std::numeric_limits<Out>::max());
    } else {
      all_fit = static_cast<uint64_t>(hi) <= static_cast<uint64_t>(std::numeric_limits<Out>::max());
    }
  }
  for (size_t i = 0; i < n && !all_fit; ++i) {
    T v = tokens[i];
    bool fits;
    if constexpr (std::is_signed_v<T>) {
      fits = static_cast<int64_t>(v) >= static_cast<int64_t>(std::numeric_limits<Out>::min()) &&
             static_cast<int64_t>(v) <= static_cast<int64_t>(std::numeric_limits<Out>::max());
    } else {
      fits = static_cast<uint64_t>(v) <= static_cast<uint64_t>(std::numeric_limits<Out>::max());
    }
    if (!fits) {
      throw std::invalid_argument("token id " + std::to_string(static_cast<int64_t>(v)) +
                                  " does not fit the dataset dtype (code " + std::to_string(dtype_code_) +
                                  "); is the vocabulary size right?");
    }
  }
  if constexpr (std::is_same_v<Out, T>) {
    bin_.write(tokens, n * sizeof(T));
  } else {
    constexpr size_t kChunk = (1 << 20) / sizeof(Out);
    convert_buffer_.resize(kChunk * sizeof(Out));
    Out* out = reinterpret_cast<Out*>(convert_buffer_.data());
    for (size_t start = 0; start < n; start += kChunk) {
      size_t count = std::min(kChunk, n - start);
      for (size_t i = 0; i < count; ++i) out[i] = static_cast<Out>(tokens[start + i]);
      bin_.write(out, count * sizeof(Out));
    }
  }
}

template <typename T>
void IndexedBuilder::add_batch(const T* tokens, size_t num_tokens, const int64_t* lengths, size_t num_lengths,
                               const int64_t* sequences_per_document, size_t num_documents) {
  if (finished_) throw std::logic_error("builder already finalized");
  uint64_t total = 0;
  for (size_t i = 0; i < num_lengths; ++i) {
    if (lengths[i] < 0) throw std::invalid_argument("negative sequence length");
    total += static_cast<uint64_t>(lengths[i]);
  }
  if (total != num_tokens) {
    throw std::invalid_argument("lengths sum to " + std::to_string(total) + " but the batch holds " +
                                std::to_string(num_tokens) + " tokens");
  }
  if (sequences_per_document != nullptr) {
    uint64_t owned = 0;
    for (size_t d = 0; d < num_documents; ++d) {
      if (sequences_per_document[d] < 0) throw std::invalid_argument("negative sequences_per_document");
      owned += static_cast<uint64_t>(sequences_per_document[d]);
    }
    if (owned != num_lengths) {
      throw std::invalid_argument("sequences_per_document sums to " + std::to_string(owned) + " but there are " +
                                  std::to_string(num_lengths) + " sequences");
    }
  }
  switch (dtype_code_) {
    case kUInt16: write_tokens<uint16_t>(tokens, num_tokens); break;
    case kInt32: write_tokens<int32_t>(tokens, num_tokens); break;
    case kInt64: write_tokens<int64_t>(tokens, num_tokens); break;
    case kUInt8: write_tokens<uint8_t>(tokens, num_tokens); break;
    case kInt8: write_tokens<int8_t>(tokens, num_tokens); break;
    case kInt16: write_tokens<int16_t>(tokens, num_tokens); break;
    default: throw std::invalid_argument("unsupported dtype code");
  }
  token_count_ += num_tokens;
  if (sequences_per_document == nullptr) {
    for (size_t i = 0; i < num_lengths; ++i) {
      if (lengths[i] > 0) append_sequence_length(lengths[i]);
      end_document();
    }
  } else {
    size_t s = 0;
    for (size_t d = 0; d < num_documents; ++d) {
      for (int64_t k = 0; k < sequences_per_document[d]; ++k) append_sequence_length(lengths[s++]);
      end_document();
    }
  }
}

void IndexedBuilder::add_index(const std::string& path_prefix) {
  if (finished_) throw std::logic_error("builder already finalized");
  const std::string idx_path = path_prefix + ".idx";
  const std::string bin_path = path_prefix + ".bin";
  IndexHeader h = read_index_header(idx_path);
  if (h.dtype_code != dtype_code_) {
    throw std::invalid_argument(idx_path + ": dtype code " + std::to_string(h.dtype_code) +
                                " differs from the output's " + std::to_string(dtype_code_));
  }
  const uint64_t n = h.sequence_count;
  const uint64_t expected = kHeaderSize + 12 * n + 8 * h.document_count;
  const uint64_t idx_size = file_size(idx_path);
  if (h.document_count < 1 || idx_size < expected) {
    throw std::runtime_error(idx_path + ": truncated index (" + std::to_string(idx_size) + " bytes, expected " +
                             std::to_string(expected) + ")");
  }
  // Lengths: copy as they are, and sum them to know how many .bin bytes belong to this dataset.
  uint64_t tokens = 0;
  read_range(idx_path, kHeaderSize, 4 * n, [&](const char* d, size_t k) {
    lengths_.write(d, k);
    const int32_t* l = reinterpret_cast<const int32_t*>(d);
    for (size_t i = 0; i < k / 4; ++i) tokens += static_cast<uint64_t>(l[i]);
  });
  // Document indices: drop the leading 0, shift the rest by the sequences already written.
  const int64_t shift = static_cast<int64_t>(sequence_count_);
  uint64_t skipped = 0;
  read_range(idx_path, kHeaderSize + 12 * n, 8 * h.document_count, [&](const char* d, size_t k) {
    const int64_t* idx = reinterpret_cast<const int64_t*>(d);
    for (size_t i = 0; i < k / 8; ++i) {
      if (skipped++ == 0) continue;
      int64_t shifted = idx[i] + shift;
      documents_.write(&shifted, sizeof(shifted));
    }
  });
  const uint64_t bin_bytes = tokens * static_cast<uint64_t>(itemsize_);
  if (file_size(bin_path) != bin_bytes) {
    throw std::runtime_error(bin_path + ": size does not match its index (" + std::to_string(bin_bytes) +
                             " bytes expected)");
  }
  bin_.append_file_range(bin_path, 0, bin_bytes);
  sequence_count_ += n;
  document_count_ += h.document_count - 1;
  token_count_ += tokens;
}

void IndexedBuilder::finalize(const std::string& idx_path) {
  if (finished_) throw std::logic_error("builder already finalized");
  bin_.close();
  lengths_.close();
  documents_.close();

  OutputFile idx;
  idx.open(idx_path);
  idx.write(kMagic, sizeof(kMagic));
  idx.write(&kVersion, 8);
  idx.write(&dtype_code_, 1);
  idx.write(&sequence_count_, 8);
  uint64_t document_indices = document_count_ + 1;
  idx.write(&document_indices, 8);

  const std::string lengths_path = lengths_side_path(bin_path_);
  idx.append_file_range(lengths_path, 0, 4 * sequence_count_);
  // Pointers are byte offsets: a running sum of lengths times the item size.
  int64_t pointer = 0;
  std::vector<int64_t> pointers;
  read_range(lengths_path, 0, 4 * sequence_count_, [&](const char* d, size_t k) {
    const int32_t* l = reinterpret_cast<const int32_t*>(d);
    pointers.resize(k / 4);
    for (size_t i = 0; i < k / 4; ++i) {
      pointers[i] = pointer;
      pointer += static_cast<int64_t>(l[i]) * itemsize_;
    }
    idx.write(pointers.data(), pointers.size() * 8);
  });
  const int64_t zero = 0;
  idx.write(&zero, 8);
  idx.append_file_range(documents_side_path(bin_path_), 0, 8 * document_count_);
  idx.close();
  std::remove(lengths_path.c_str());
  std::remove(documents_side_path(bin_path_).c_str());
  finished_ = true;
}

void IndexedBuilder::abort() {
  finished_ = true;
  bin_.close();
  lengths_.close();
  documents_.close();
  std::remove(bin_path_.c_str());
  std::remove(lengths_side_path(bin_path_).c_str());
  std::remove(documents_side_path(bin_path_).c_str());
}

template void IndexedBuilder::add_batch<int32_t>(const int32_t*, size_t, const int64_t*, size_t, const int64_t*, size_t);
template void IndexedBuilder::add_batch<int64_t>(const int64_t*, size_t, const int64_t*, size_t, const int64_t*, size_t);
template void IndexedBuilder::add_batch<uint16_t>(const uint16_t*, size_t, const int64_t*, size_t, const int64_t*, size_t);
template void IndexedBuilder::add_batch<uint32_t>(const uint32_t*, size_t, const int64_t*, size_t, const int64_t*, size_t);

}  // namespace mipt
