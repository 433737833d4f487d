"""Shipping an adapter out of the notebook: a merged transformers folder, GGUF files for llama.cpp / Ollama
(the whole model, or the adapter alone as a GGUF LoRA), how much of ΔW each export keeps, and a pre-flight of
what a runtime would reject. ``api.export`` / ``api.check`` are the entry points."""
