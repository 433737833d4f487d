"""lora_nb.core.analysis."""
