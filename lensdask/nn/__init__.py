"""Neural network: the ResNet-18 lens classifier (Keras 3, imported lazily by its functions)."""
