"""Raw texts (JSONL) -> instruction-response collections (reference §3, §9). See megatron_ipt/synthesis."""
import argparse

from tqdm import tqdm

from megatron_ipt.synthesis.engines import build_engine
from megatron_ipt.synthesis.runner import run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", required=True, help="JSONL file, glob or directory")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--text-key", default="text")
    ap.add_argument("--engine", default="rules", choices=["rules"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--num-shards", type=int, default=1)
    ap.add_argument("--shard-index", type=int, default=0)
    ap.add_argument("--part-size", type=int, default=1000)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    engine = build_engine(a.engine, model=a.model, temperature=a.temperature, max_new_tokens=a.max_new_tokens)
    with tqdm(unit="text", desc="synthesize") as bar:
        s = run(a.input, a.output_dir, engine, a.rounds, a.text_key, a.max_model_len, a.max_new_tokens,
                a.num_shards, a.shard_index, a.part_size, a.resume, progress=bar.update)
    n = max(s["texts"], 1)
    print(f"texts: {s['texts']} (skipped as done: {s['skipped_texts']}) | pairs/text: {s['pairs'] / n:.2f} | "
          f"free-form: {s['free-form']} options: {s['options']} cot: {s['cot']} | failures: {s['failures']} | "
          f"{s['texts'] / max(s['seconds'], 1e-9):.1f} texts/s")


if __name__ == "__main__":
    main()
