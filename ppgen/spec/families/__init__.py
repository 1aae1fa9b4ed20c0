"""The ``[model]`` tables of the families trained without an ELBO or with discrete latents: autoregressive
densities, energy-based and score-based models, mixtures and GANs; one module per family."""
