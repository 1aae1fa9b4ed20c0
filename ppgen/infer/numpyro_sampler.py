"""NumPyro's NUTS or HMC, compiled once and run for many data sets: the one NumPyro runner of ppgen, behind
``ppgen run`` (``ppgen.infer.methods``) and SBC's replicates (``ppgen.calibration``).

``numpyro.infer.MCMC.run`` recompiles its sampling loop on every call (NumPyro 0.22, even with
``jit_model_args=True``): seconds a fit, which would dominate SBC's hundreds of small fits. ``NumpyroSampler``
keeps NumPyro's kernel and runs its ``sample`` step in a loop jitted once, with the model's data as traced
arguments. It draws what ``MCMC`` draws: chain keys ``jax.random.split(PRNGKey(seed), C)`` (one chain: the key
itself), the kernel initialized outside the loop (inside ``jax.pmap`` for parallel chains), as ``MCMC`` does.

Chains (``chain_method``): "sequential" one after another, "vectorized" in one program (``vmap``) or
"parallel" on one JAX device each (``pmap``); ``numpyro_chain_method`` resolves "auto". On the CPU, ppgen asks
JAX for a device per core before JAX starts (``request_cpu_devices``).

NUTS: Hoffman & Gelman 2014, arXiv 1111.4246; HMC: Neal 2011, arXiv 1206.1901.
"""

import contextlib
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

from ppgen.errors import SpecError
from ppgen.infer.compile_cache import enable_compilation_cache
from ppgen.infer.draws import Draws
from ppgen.infer.posterior_settings import MCMCSettings

__all__ = ["NumpyroSampler", "numpyro_mcmc", "numpyro_kernel", "numpyro_chain_method", "request_cpu_devices"]

# HMCState fields kept per draw (the step size is fixed once warmup ends: it is read from the last state).
_FIELDS = ("diverging", "accept_prob", "num_steps", "potential_energy", "energy")


class NumpyroSampler:
    """NumPyro NUTS or HMC on ``model(**model_kwargs)``, compiled on the first call and reused by later calls whose
    ``model_kwargs`` have the same shapes (they are traced, so they must not set shapes: close ``model`` over
    what does, e.g. ``functools.partial(model, N=10)``)."""

    def __init__(self, model: Callable, settings: MCMCSettings):
        import jax

        self.model, self.settings = model, settings
        self._kernels: dict[str, object] = {}  # chain method -> kernel (a vectorized one keeps its vmapped step)
        self._compiled = jax.jit(self._chain, static_argnames=("kernel", "batched", "bar"))
        self._parallel = jax.pmap(self._initialized_chain, in_axes=(0, None), static_broadcasted_argnums=(2, 3))

    def kernel(self, chain_method: str = "sequential"):
        """The NumPyro kernel that runs chains as ``chain_method`` says (built on first use)."""
        if chain_method not in self._kernels:
            self._kernels[chain_method] = numpyro_kernel(self.model, self.settings)
        return self._kernels[chain_method]

    def __call__(
        self, seed: int, model_kwargs: Mapping | None = None, chain_method: str = "sequential", progress: bool = False
    ) -> Draws:
        """Draws [chain, draw, ...] of the latent sites with per-draw statistics, the chains run as ``chain_method``
        says ("sequential", "vectorized" or "parallel"; see ``numpyro_chain_method``); ``progress`` shows a bar
        per chain."""
        import jax

        enable_compilation_cache()
        kwargs = dict(model_kwargs or {})
        settings = self.settings
        key = jax.random.PRNGKey(seed)
        keys = jax.random.split(key, settings.num_chains) if settings.num_chains > 1 else key[None]
        bar = _progress_bar(settings, 1 if chain_method == "vectorized" else len(keys)) if progress else None
        started = time.perf_counter()
        method = chain_method if len(keys) > 1 else "sequential"
        first_use = method not in self._kernels
        kernel = self.kernel(method)
        num_warmup = settings.num_warmup
        with _x64_in_host_callbacks() if progress else contextlib.nullcontext():
            if chain_method == "parallel" and len(keys) > 1:
                outputs = self._parallel(keys, kwargs, kernel, bar)
            elif chain_method == "vectorized" and len(keys) > 1:
                # NumPyro's init with batched keys vmaps the kernel's step each time it is called: the cached
                # kernel is initialised once, later runs start from a fresh kernel's (identical) initial state.
                starter = kernel if first_use else numpyro_kernel(self.model, settings)
                state = starter.init(keys, num_warmup, None, (), kwargs)
                outputs = self._compiled(state, kwargs, kernel=kernel, batched=True, bar=bar)
            else:
                chains = [
                    self._compiled(kernel.init(k, num_warmup, None, (), kwargs), kwargs, kernel=kernel, bar=bar)
                    for k in keys
                ]
                outputs = jax.tree.map(lambda *values: jax.numpy.stack(values), *chains)
            posterior, fields, step_size = jax.device_get(outputs)  # one transfer, which waits for the chains
        return Draws(posterior, self._statistics(fields, step_size), time.perf_counter() - started)

    def _initialized_chain(self, key, kwargs: dict, kernel, bar=None):
        state = kernel.init(key, self.settings.num_warmup, None, (), kwargs)
        return self._chain(state, kwargs, kernel=kernel, bar=bar)

    def _chain(self, state, kwargs: dict, kernel, batched: bool = False, bar=None):
        """(constrained draws {site: [draw, ...]}, fields {name: [draw]}, final step size) after num_warmup steps
        from ``state``; with ``batched``, a leading chain axis on each (draws [chain, draw, ...])."""
        import jax

        postprocess = kernel.postprocess_fn((), kwargs)
        if batched:
            postprocess = jax.vmap(postprocess)

        def step(carry, index):
            state, chain = carry
            if bar is None:
                return (kernel.sample(state, (), kwargs), chain), None
            state, chain = bar(lambda i, state: kernel.sample(state, (), kwargs))(index, (state, chain))
            return (state, chain), None

        def kept(state):
            return postprocess(state.z), {name: getattr(state, name) for name in _FIELDS}

        # One loop over warmup and draws, so that the kernel is traced and compiled once (two loops took a
        # fresh run 0.2 s longer); a draw is written into its slot of preallocated buffers once warmup ends.
        settings = self.settings
        shapes = jax.eval_shape(kept, state)
        buffers = jax.tree.map(lambda shape: jax.numpy.zeros((settings.num_samples, *shape.shape), shape.dtype), shapes)

        def record(carry, index):
            (state, chain), buffers = carry
            (state, chain), _ = step((state, chain), index)
            slot = index - settings.num_warmup
            buffers = jax.lax.cond(
                slot >= 0,
                lambda buffers: jax.tree.map(lambda buffer, value: buffer.at[slot].set(value), buffers, kept(state)),
                lambda buffers: buffers,
                buffers,
            )
            return ((state, chain), buffers), None

        chain = jax.numpy.asarray(-1)
        total = settings.num_warmup + settings.num_samples
        (carry, (posterior, fields)), _ = jax.lax.scan(record, ((state, chain), buffers), np.arange(total))
        if batched:  # [draw, chain, ...] -> [chain, draw, ...]
            posterior, fields = jax.tree.map(lambda value: jax.numpy.swapaxes(value, 0, 1), (posterior, fields))
        return posterior, fields, carry[0].adapt_state.step_size

    def _statistics(self, fields: dict, step_size) -> dict[str, np.ndarray]:
        """Per-draw statistics [chain, draw] named as ArviZ names them."""
        num_chains, num_samples = fields["accept_prob"].shape
        stats = {
            "diverging": np.asarray(fields["diverging"]).astype(bool),
            "acceptance_rate": fields["accept_prob"],
            "step_size": np.repeat(np.reshape(step_size, (num_chains, 1)), num_samples, axis=1),
            "n_steps": fields["num_steps"],
            "lp": -fields["potential_energy"],
            "energy": fields["energy"],  # the Hamiltonian, for E-BFMI (ppgen.evaluate.checks.bfmi)
        }
        if self.settings.method == "nuts":
            stats["tree_depth"] = np.floor(np.log2(fields["num_steps"])).astype(np.int64) + 1
        return stats


def numpyro_mcmc(model: Callable, model_kwargs: Mapping, settings: MCMCSettings, progress: bool = False) -> Draws:
    """Run NumPyro's NUTS or HMC once on ``model(**model_kwargs)`` (the arguments held fixed), the chains as
    ``numpyro_chain_method(settings)`` says."""
    chain_method = numpyro_chain_method(settings)
    sampler = NumpyroSampler(functools.partial(model, **model_kwargs), settings)
    return sampler(settings.seed, chain_method=chain_method, progress=progress)


def _progress_bar(settings: MCMCSettings, num_chains: int):
    """NumPyro's bar decorator for loop bodies ``(index, (state, chain))``: ``num_chains`` bars, "Running chain c"
    (vectorized chains share one)."""
    from numpyro.util import progress_bar_factory

    total = settings.num_warmup + settings.num_samples
    return progress_bar_factory(total, num_chains, max(1, total // 20))


@contextlib.contextmanager
def _x64_in_host_callbacks():
    """Let JAX's own threads see this thread's x64 setting while the chains run.

    NumPyro's progress bar returns Python ints from host callbacks, and JAX converts them on the thread that
    runs the callback. A caller's ``jax.enable_x64`` block holds in its own thread only, so with parallel
    chains the ints become int32 where the program wants int64, and the run fails. While the chains run, the
    process-wide flag is set to this thread's value; afterwards it is put back.
    """
    import jax

    wanted = bool(jax.config.jax_enable_x64)
    seen = []  # a fresh thread sees the process-wide flag, not this thread's enable_x64 block
    reader = threading.Thread(target=lambda: seen.append(bool(jax.config.jax_enable_x64)))
    reader.start()
    reader.join()
    if seen[0] == wanted:
        yield
        return
    jax.config.update("jax_enable_x64", wanted)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", seen[0])


def numpyro_chain_method(settings: MCMCSettings) -> str:
    """How NumPyro runs the chains: "sequential", "vectorized" or "parallel" (``jax.pmap``, a device each).

    Whatever the method, JAX is first asked for a CPU device per core (``request_cpu_devices``), which it grants
    only before its first computation, so that a later run in this process can still have parallel chains.
    "auto" is "parallel" when JAX has a device per chain, else "vectorized"; one chain is "sequential". An
    explicit "parallel" without enough devices is a SpecError rather than NumPyro's fall-back to sequential.
    """
    devices = request_cpu_devices(settings.num_chains)
    if settings.num_chains == 1:
        return "sequential"
    if settings.chain_method in ("sequential", "vectorized"):
        return settings.chain_method
    if devices >= settings.num_chains:
        return "parallel"
    if settings.chain_method == "auto":
        return "vectorized"
    raise SpecError(
        f"inference.chain_method = 'parallel' needs a JAX device per chain ({settings.num_chains}), but JAX started"
        f" with {devices} before ppgen could ask for more: set XLA_FLAGS=--xla_force_host_platform_device_count="
        f"{settings.num_chains} before starting Python, or use chain_method = 'auto' or 'vectorized'"
    )


def request_cpu_devices(count: int) -> int:
    """Ask JAX for max(count, CPU cores) CPU devices, which it grants only before its backend starts (its first
    computation), and return how many devices it has (``jax.local_device_count()``, starting it).

    A device count in the XLA_FLAGS environment variable (``numpyro.set_host_device_count``) is left as it is.
    """
    import jax

    wanted = max(count, os.cpu_count() or 1)
    forced = re.search(r"--xla_force_host_platform_device_count=\S+", os.environ.get("XLA_FLAGS", ""))
    granted = getattr(jax.config, "jax_num_cpu_devices", None)
    if not forced and granted is None:  # an older JAX, without that option, reads XLA_FLAGS when it starts
        from numpyro.util import set_host_device_count

        set_host_device_count(wanted)
    elif not forced and granted < wanted:
        try:
            jax.config.update("jax_num_cpu_devices", wanted)
        except RuntimeError:  # JAX has started: it keeps the devices it has
            pass
    return jax.local_device_count()


def numpyro_kernel(model: Callable, settings: MCMCSettings):
    """NumPyro's NUTS or HMC for ``model`` with ``settings``."""
    from numpyro.infer import HMC, NUTS, init_to_median, init_to_sample, init_to_uniform

    init = {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[settings.init_strategy]
    options = dict(target_accept_prob=settings.target_accept_prob, dense_mass=settings.dense_mass, init_strategy=init)
    if settings.method == "nuts":
        return NUTS(model, max_tree_depth=settings.max_tree_depth, **options)
    # trajectory_length=None, or NumPyro fixes the step size to 2 pi / num_steps instead of adapting it
    return HMC(model, num_steps=settings.num_steps, trajectory_length=None, **options)
