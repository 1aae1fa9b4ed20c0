"""JAX's persistent compilation cache for the NumPyro samplers: a model compiled once is loaded from disk by later
runs (of the same spec, SBC replicates in other processes, benchmarks) instead of being compiled again.

For small models compilation is most of a run (eight schools: about 3 s of compiling, 0.5 s of sampling), so
this is what makes repeated runs fast, as PyTensor's compile directory does for PyMC.
"""

import os

__all__ = ["CACHE_VARIABLE", "enable_compilation_cache"]

CACHE_VARIABLE = "PPGEN_JAX_CACHE"


def enable_compilation_cache() -> str | None:
    """Point JAX's persistent compilation cache at a folder, unless the user set one up already.

    The folder is ``$PPGEN_JAX_CACHE``, by default ``ppgen/jax`` in ``$XDG_CACHE_HOME`` (else ``~/.cache``);
    ``PPGEN_JAX_CACHE=""`` turns the cache off. JAX keys entries by program, backend and version. JAX keeps only
    compilations that took over a second by default; ppgen's cache keeps every one, since the small programs around
    a sampler (initialization, posterior predictive, log-likelihood) add up to most of a second per run.

    Returns:
        The folder in use, or None when the cache is off.
    """
    import jax

    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return configured
    folder = os.environ.get(CACHE_VARIABLE)
    if folder == "":
        return None
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "ppgen", "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
