"""Run many conversions in one process (one interpreter start-up for a test): argv[1] is a JSON list of
["import", HF_DIR, SAVE_DIR, TP, MAKE_VOCAB_SIZE_DIVISIBLE_BY] or
["export", LOAD_DIR, HF_DIR, MODEL_FILE or null, TOKENIZER_DIR or null]."""

import json
import sys

from megatron_ipt.convert.hf_checkpoint import export_hf, import_hf

if __name__ == "__main__":  # dist_checkpointing's save spawns a Manager process that re-imports this file
    for job in json.loads(sys.argv[1]):
        if job[0] == "import":
            import_hf(job[1], job[2], tensor_model_parallel_size=job[3], make_vocab_size_divisible_by=job[4])
        else:
            export_hf(job[1], job[2], model_file=job[3], tokenizer_dir=job[4])
