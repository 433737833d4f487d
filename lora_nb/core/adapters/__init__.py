"""lora_nb.core.adapters."""
