"""What an adapter learned and what it does, grouped as training is: ``shortrun`` (short training runs from the
same start on bare copies: vs full fine-tuning, the learning-rate sweep, placement, and the directions their updates
share), ``learned`` (reading the adapter: weights, spectra, intruders, interference between adapters, spectra over a
run, the rank advisor) and ``outputs`` (the model's outputs with the adapter on and off: compare, generation).
The factor algebra these read lives beside the adapters (``core.adapters.factors``); the loss mask beside the
training data (``core.training.data.loss_mask``)."""
