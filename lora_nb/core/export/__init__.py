"""Shipping an adapter out of the notebook, one ``formats.Format`` per way: a script folder that ``accelerate launch``
continues (``script``), a merged transformers folder (``merged``: W + ΔW computed aside), GGUF files for llama.cpp /
Ollama (the whole model, ``gguf_model``, with its tensors' ``layout`` and its tokenizer's ``vocab``; or the adapter
alone as a GGUF LoRA, ``gguf_lora``); every input checked before anything is written (``inputs``, into a
``request.Job``), every folder written through the one atomic writer, how much of ΔW each export keeps
(``survival``), and a pre-flight of what a runtime would reject (``preflight``). ``api.export`` / ``api.check`` are
the entry points."""
