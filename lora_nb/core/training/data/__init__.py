"""Training data: the forms a user passes turned into batches and a loss (``batches``), chat conversations and
prompt/completion pairs with the loss on the answers (``chat``), and where a run is in its data (``position``)."""
