"""The input layer every stage uses: input expansion and decompression (`inputs`), the one JSONL line parser and
the bad-line counter (`jsonl`), atomic writers (`atomic`) and the tools' error exit (`cli`)."""
