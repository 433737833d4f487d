"""The model's outputs with the adapter on and off: ``compare`` (generations, class probabilities or output
differences, side by side) and ``generation`` (greedy or seeded sampling with the KV cache, pieces of the text)."""
