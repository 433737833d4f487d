"""lora_nb.core.training."""
