"""Training data: the forms a user passes (``forms``: training and eval data of one form) turned into batches and
a loss (``batches``), chat conversations and prompt/completion pairs with the loss on the answers (``chat``), where a
run is in its data (``position``), the loss mask shown token by token with its checks (``loss_mask``), and what token
batches cost: batches of similar length (``grouping``), a batch run in pieces of similar length (``pieces``) and the
LM head applied only where labels count (``head_loss``)."""
