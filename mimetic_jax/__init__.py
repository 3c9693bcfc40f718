"""mimetic_jax: placeholder during set-up."""
