"""Training for the embedded default model: `python -m generator.training.autoencoder` then `.denoiser`."""
