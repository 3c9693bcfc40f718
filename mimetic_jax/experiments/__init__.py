"""The experiment harness: reference models, tasks, the training loop and the ``mimetic-jax`` command.

Not part of the library: ``import mimetic_jax`` loads none of it, and its packages (optax,
scikit-learn, matplotlib, tqdm, mnist1d) come with the ``experiments`` extra::

    pip install "mimetic_jax[experiments]"

* :mod:`mimetic_jax.experiments.models`: a ViT, ConvMixer/ConvNeXt and Mamba-1/2 language
  models in Flax linen, the models the schemes are tested and benchmarked on;
* :mod:`mimetic_jax.experiments.tasks`: offline data sets (scikit-learn's digits, MNIST-1D)
  and synthetic recall tasks (copying, MQAR);
* :mod:`mimetic_jax.experiments.training`: one vmapped AdamW loop that trains many models
  (seeds, inits) at once (needs optax);
* :mod:`mimetic_jax.experiments.cli` (with :mod:`~mimetic_jax.experiments.cli_ssm`): the
  ``mimetic-jax compare`` command, also ``python -m mimetic_jax``.

This package's ``__init__`` imports nothing; import the module you need.
"""
