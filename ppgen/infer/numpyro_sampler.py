"""NumPyro's NUTS or HMC, compiled once and run for many data sets: the one NumPyro runner of ppgen, behind
``ppgen run`` (``ppgen.infer.methods``) and SBC's replicates (``ppgen.calibration``).

``numpyro.infer.MCMC.run`` recompiles its sampling loop on every call (NumPyro 0.22, even with
``jit_model_args=True``): seconds a fit, which would dominate SBC's hundreds of small fits. ``NumpyroSampler``
keeps NumPyro's kernel and runs its ``sample`` step in a loop jitted once, with the model's data as traced
arguments. It draws what ``MCMC`` draws: chain keys ``jax.random.split(PRNGKey(seed), C)`` (one chain: the key
itself), the kernel initialized outside the loop, as ``MCMC`` does.

Chains (``chain_method``): "sequential" one after another, "vectorized" in one program (``vmap``) or
"parallel" on one JAX device each (``pmap``); ``numpyro_chain_method`` resolves "auto". On the CPU, ppgen asks
JAX for a device per core before JAX starts (``request_cpu_devices``).

Chains run in ``SEGMENTS`` calls of one compiled length, so that Python regains control between them: a Ctrl-C
stops the chains at the end of the segment after the running one, and ``SamplingInterrupted`` carries the draws
made so far. Parallel chains are each initialized as a sequential chain is, outside any trace (so that the
kernel, which keeps the model's transforms, holds no tracer), then run their segments under ``pmap`` with the
arrays the model closes over passed in (``_parallel_segment`` says why).

Mass matrix (``mass``): NumPyro adapts a diagonal or a dense one in warmup; "auto" picks dense where the
posterior's curvature at a starting point says it pays (``prefers_dense``), decided afresh for each data
set, so a sampler compiles its loop at most twice (diag and dense) however many data sets it runs.

NUTS: Hoffman & Gelman 2014, arXiv 1111.4246; HMC: Neal 2011, arXiv 1206.1901.
"""

import contextlib
import dataclasses
import functools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.infer.compile_cache import enable_compilation_cache
from ppgen.infer.draws import Draws, interruption, join_chains, stop_on_interrupt
from ppgen.infer.posterior_settings import MCMCSettings
from ppgen.progress import numpyro_progress_log, progress_mode

__all__ = [
    "NumpyroSampler",
    "numpyro_mcmc",
    "numpyro_kernel",
    "numpyro_chain_method",
    "request_cpu_devices",
    "prefers_dense",
]

SEGMENTS = 20  # pieces of a chain's warmup and draws: Ctrl-C stops the chains at the end of one
HESSIAN_POINTS = 4  # where mass = "auto" reads the posterior's curvature: the first chain's start and 3 more

# HMCState fields kept per draw (the step size is fixed once warmup ends: it is read from the last state).
_FIELDS = ("diverging", "accept_prob", "num_steps", "potential_energy", "energy")


class NumpyroSampler:
    """NumPyro NUTS or HMC on ``model(**model_kwargs)``, compiled on the first call and reused by later calls whose
    ``model_kwargs`` have the same shapes (they are traced, so they must not set shapes: close ``model`` over
    what does, e.g. ``functools.partial(model, N=10)``). ``fingerprint``, a digest of the model and of the data it
    is closed over, lets mass = "auto" remember its choice across processes (``ppgen.infer.remembered``)."""

    def __init__(self, model: Callable, settings: MCMCSettings, fingerprint: str | None = None):
        import jax

        self.model, self.settings, self.fingerprint = model, settings, fingerprint
        # (chain method, dense) -> kernel (a vectorized one keeps its vmapped step)
        self._kernels: dict[tuple[str, bool], object] = {}
        self._segment = jax.jit(self._run_segment, static_argnums=(4, 5, 6))
        self._programs: dict[tuple, Any] = {}  # parallel chains' init and segment: _parallel_states, _parallel_segment
        self._lifted = jax.pmap(_lifted, in_axes=(None, None, 0, 0, None, None), static_broadcasted_argnums=0)
        self._hessian = jax.jit(self._hessian_at)
        self._dense: bool | None = None  # "auto"'s choice, made on the first data set

    def kernel(self, chain_method: str = "sequential", dense: bool = False):
        """The NumPyro kernel that runs chains as ``chain_method`` says, with a dense or diagonal mass matrix (built
        on first use)."""
        if (chain_method, dense) not in self._kernels:
            self._kernels[chain_method, dense] = numpyro_kernel(self.model, self.settings, dense)
        return self._kernels[chain_method, dense]

    def dense_mass(self, seed: int, model_kwargs: Mapping | None = None) -> bool:
        """Whether the chains adapt a dense mass matrix: ``settings.mass``, or for "auto" ``prefers_dense`` of the
        potential energy's Hessian at the point the init strategy draws with the first chain's key (continuous
        models only; with discrete latent sites, diag). "auto" decides on the first call, and later calls (SBC's
        replicates, data sets of one model) keep its choice: deciding takes about a second. With a
        ``fingerprint``, a later process with the same model, data and settings reads the choice back."""
        if self.settings.mass != "auto":
            return self.settings.mass == "dense"
        if self._dense is None:
            decide = functools.partial(self._prefers_dense, seed, model_kwargs)
            if self.fingerprint is None:
                self._dense = decide()
            else:
                from ppgen.infer.remembered import data_digest, remembered

                settings = self.settings
                parts = ("mass", self.fingerprint, data_digest(dict(model_kwargs or {})), settings.init_strategy)
                counts = (settings.num_warmup, settings.num_chains, seed)
                self._dense = bool(remembered((*parts, *map(str, counts)), decide))
        return self._dense

    def _prefers_dense(self, seed: int, model_kwargs: Mapping | None) -> bool:
        from numpyro.infer.util import initialize_model

        window = _mass_window(self.settings.num_warmup)
        if window < 8:  # warmup too short to estimate even a 2 x 2 covariance: no need to look
            return False
        kwargs = dict(model_kwargs or {})
        init = _init_strategy(self.settings)
        info = initialize_model(self._keys(seed)[0], self.model, init_strategy=init, model_kwargs=kwargs)
        sites = info.model_trace.values()
        if any(
            site["type"] == "sample" and not site["is_observed"] and site["fn"].support.is_discrete for site in sites
        ):
            return False
        dimension = sum(np.size(value) for value in info.param_info.z.values())
        if dimension < 2 or 4 * dimension > window:  # one dimension: dense is diagonal; see prefers_dense
            return False
        hessians = np.asarray(self._hessian(info.param_info.z, kwargs, self._keys(seed)[0]))
        return prefers_dense(hessians, window)

    def _keys(self, seed: int):
        """The chains' keys [chain, 2], as ``MCMC`` splits them."""
        import jax

        key = jax.random.PRNGKey(seed)
        return jax.random.split(key, self.settings.num_chains) if self.settings.num_chains > 1 else key[None]

    def _hessian_at(self, point: dict, kwargs: dict, key):
        """The potential energy's Hessians [HESSIAN_POINTS, d, d]: at ``point`` {site: unconstrained value} and at
        points drawn uniformly in (-2, 2) with ``key``, each by central differences of its gradient (cheaper to
        compile than ``jax.hessian``: on the ODE posteriors of models/posteriordb, 20 s rather than 90-105 s)."""
        import jax
        from jax.flatten_util import ravel_pytree
        from numpyro.infer.util import potential_energy

        flat, unravel = ravel_pytree(point)
        others = jax.random.uniform(key, (HESSIAN_POINTS - 1, len(flat)), flat.dtype, -2.0, 2.0)
        gradient = jax.vmap(jax.grad(lambda x: potential_energy(self.model, (), kwargs, unravel(x))))

        def hessian(x):
            steps = 1e-5 * (1 + jax.numpy.abs(x))
            shifts = jax.numpy.diag(steps)
            rows = (gradient(x + shifts) - gradient(x - shifts)) / (2 * steps[:, None])
            return (rows + rows.T) / 2

        return jax.lax.map(hessian, jax.numpy.concatenate([flat[None], others]))

    def __call__(
        self,
        seed: int,
        model_kwargs: Mapping | None = None,
        chain_method: str = "sequential",
        progress: bool | None = False,
    ) -> Draws:
        """Draws [chain, draw, ...] of the latent sites with per-draw statistics, the chains run as ``chain_method``
        says ("sequential", "vectorized" or "parallel"; see ``numpyro_chain_method``); ``progress``: True a bar per
        chain, None a bar on a terminal and progress lines otherwise (``ppgen.progress``), False nothing.

        Ctrl-C stops the chains at the end of their current segment (``SEGMENTS`` per chain) and raises
        ``SamplingInterrupted`` with the draws so far; a second Ctrl-C interrupts at once."""
        import jax

        enable_compilation_cache()
        kwargs = dict(model_kwargs or {})
        settings = self.settings
        keys = self._keys(seed)
        bar = _progress_bar(settings, 1 if chain_method == "vectorized" else len(keys), progress)
        started = time.perf_counter()
        method = chain_method if len(keys) > 1 else "sequential"
        dense = self.dense_mass(seed, kwargs)
        starts = self._starts(seed, kwargs)
        first_use = (method, dense) not in self._kernels
        kernel = self.kernel(method, dense)
        num_warmup = settings.num_warmup
        with (
            _x64_in_host_callbacks() if bar is not None else contextlib.nullcontext(),
            stop_on_interrupt(
                "parallel chains finish before they stop"
                if method == "parallel"
                else "stopping the chains, keeping their draws so far"
            ) as stop,
        ):
            if method == "parallel":
                if first_use:  # the kernel learns its step from one init outside any trace, so it holds no tracers
                    kernel.init(keys[0], num_warmup, _chain(starts, 0), (), kwargs)
                states = self._parallel_states(keys, starts, kwargs, dense)
                first = self._started(jax.tree.map(lambda value: value[0], states), kwargs, kernel)
                carry, buffers = jax.tree.map(lambda value: np.stack([value] * len(keys)), first)
                carry = (states, carry[1])
                segment = self._parallel_segment(carry, buffers, kwargs, kernel, bar)
                runs = [self._segments(segment, carry, buffers, kwargs, kernel, False, bar, stop)]
            elif method == "vectorized":
                # NumPyro's init with batched keys vmaps the kernel's step each time it is called: the cached
                # kernel is initialised once, later runs start from a fresh kernel's (identical) initial state.
                starter = kernel if first_use else numpyro_kernel(self.model, settings, dense)
                state = starter.init(keys, num_warmup, starts, (), kwargs)
                carry, buffers = self._started(state, kwargs, kernel, batched=True)
                run = self._segments(self._segment, carry, buffers, kwargs, kernel, True, bar, stop)
                runs = [(run[0], jax.tree.map(lambda value: jax.numpy.swapaxes(value, 0, 1), run[1]), run[2])]
            else:
                runs = []
                for chain, key in enumerate(keys):
                    carry, buffers = self._initialized(key, _chain(starts, chain), kwargs, kernel)
                    run = self._segments(self._segment, carry, buffers, kwargs, kernel, False, bar, stop)
                    runs.append((run[0], jax.tree.map(lambda value: value[None], run[1]), run[2]))
                    if stop.is_set():
                        break
            runs = jax.device_get([(buffers, carry[0].adapt_state.step_size, done) for carry, buffers, done in runs])
        choices = {"mass": "dense" if dense else "diag"}
        draws = [self._draws(buffers, step_size, done, started, choices) for buffers, step_size, done in runs]
        done = [done for _, _, done in runs]
        complete = [d for d, steps in zip(draws, done) if steps == num_warmup + settings.num_samples]
        seconds = time.perf_counter() - started
        if sum(len(d.sample_stats["acceptance_rate"]) for d in complete) == len(keys):
            return join_chains(complete, seconds)
        raise interruption(draws, done, num_warmup, settings.num_samples, len(keys), seconds)

    def _segments(self, segment, carry, buffers, kwargs: dict, kernel, batched: bool, bar, stop: threading.Event):
        """(carry, buffers, steps done): ``segment`` run over warmup and draws, ``SEGMENTS`` pieces of one compiled
        length (the last one padded with steps past the end, which it skips), each queued while the one before runs;
        once ``stop`` is set, the chains stop at the end of the piece after the running one."""
        import jax

        total = self.settings.num_warmup + self.settings.num_samples
        length = -(-total // SEGMENTS)
        running = None
        for begin in range(0, total, length):
            # queued behind the running segment, so that the chains do not wait for Python between segments
            carry, buffers = segment(carry, buffers, kwargs, np.arange(begin, begin + length), kernel, batched, bar)
            if running is not None:
                jax.block_until_ready(running)  # Python waits here, where a Ctrl-C is seen
            running = carry
            if stop.is_set():
                return carry, buffers, min(begin + length, total)
        return carry, buffers, total

    def _draws(self, buffers, step_size, done: int, started: float, choices: dict) -> Draws:
        """Draws [chain, draw, ...] from buffers ([chain, num_samples, ...] of which ``done`` - num_warmup hold
        draws, and the warmup's leapfrog steps [chain, num_warmup])."""
        (posterior, fields), warmup_steps = buffers
        kept = max(0, done - self.settings.num_warmup)
        posterior, fields = ({name: value[:, :kept] for name, value in group.items()} for group in (posterior, fields))
        gradients = int(np.sum(warmup_steps[:, :done]) + np.sum(fields["num_steps"]))
        seconds = time.perf_counter() - started
        return Draws(posterior, self._statistics(fields, step_size), seconds, choices, gradients=gradients)

    def _parallel_segment(self, carry, buffers, kwargs: dict, kernel, bar) -> Callable:
        """``_run_segment`` for chains on a device each (carry and buffers [chain, ...]), with the arrays that the
        model closes over (its data) passed in as arguments: JAX 0.10.2's ``pmap`` compiles them in as extra inputs
        that its later calls omit ("Computation compiled for 39 inputs but called with 36" on posteriordb's
        earnings), so the step is traced once, for one chain, and its constants lifted out."""
        import jax

        one_chain = jax.tree.map(lambda value: jax.ShapeDtypeStruct(value.shape[1:], value.dtype), (carry, buffers))
        avals = jax.tree.map(lambda value: jax.ShapeDtypeStruct(np.shape(value), value.dtype), kwargs)
        key = (kernel, bar, jax.tree.structure((one_chain, avals)), *jax.tree.leaves((one_chain, avals)))
        if key not in self._programs:  # traced once, as a jit would be (tracing costs a fit 0.3 s)
            length = -(-(self.settings.num_warmup + self.settings.num_samples) // SEGMENTS)
            segment = functools.partial(self._run_segment, kernel=kernel, batched=False, bar=bar)
            traced, shapes = jax.make_jaxpr(segment, return_shape=True)(*one_chain, kwargs, np.arange(length))
            program = _Program(str(traced.jaxpr), traced.jaxpr, jax.tree.structure(shapes))
            self._programs[key] = program, traced.consts
        program, consts = self._programs[key]
        return lambda carry, buffers, kwargs, indices, *static: self._lifted(
            program, consts, carry, buffers, kwargs, indices
        )

    def _parallel_states(self, keys, starts: dict | None, kwargs: dict, dense: bool):
        """The initial states [chain, ...] of chains started with ``keys`` at ``starts``, in one compiled call
        (traced once per sampler and mass matrix, where initializing chains one by one runs NumPyro's init op by op
        each time). Each chain is initialized by a kernel of its own, made inside the trace and dropped with it."""
        import jax

        key = ("init", dense, starts is None)
        if key not in self._programs:

            def init(chain_key, start, kwargs):
                fresh = numpyro_kernel(self.model, self.settings, dense)
                return fresh.init(chain_key, self.settings.num_warmup, start, (), kwargs)

            self._programs[key] = jax.jit(jax.vmap(init, in_axes=(0, None if starts is None else 0, None)))
        return self._programs[key](keys, starts, kwargs)

    def _initialized(self, key, start, kwargs: dict, kernel):
        """The carry and empty buffers of a chain started with ``key`` at ``start`` (None: where the kernel's init
        strategy says)."""
        return self._started(kernel.init(key, self.settings.num_warmup, start, (), kwargs), kwargs, kernel)

    def _starts(self, seed: int, kwargs: dict) -> dict | None:
        """The chains' unconstrained starting points {site: [chain, ...]} for init_strategy "pathfinder": distinct
        draws of multi-path Pathfinder (``ppgen.infer.pathfinder``, its default settings and ``seed``), in the
        posterior's bulk, so that warmup need not travel there; None for the other strategies (the kernel's)."""
        if self.settings.init_strategy != "pathfinder":
            return None
        from ppgen.infer.pathfinder import pathfinder
        from ppgen.infer.posterior_settings import PathfinderSettings

        settings = PathfinderSettings(num_samples=self.settings.num_chains, seed=seed)
        return pathfinder(self.model, kwargs, settings, replace=False).unconstrained

    def _started(self, state, kwargs: dict, kernel, batched: bool = False):
        """(carry (state, chain), buffers ((constrained draws {site: [draw, ...]}, fields {name: [draw]}), the
        warmup's leapfrog steps [num_warmup])) at ``state``, the buffers zero; with ``batched``, a chain axis after
        the draw axis."""
        import jax

        shapes = jax.eval_shape(functools.partial(self._kept, kwargs=kwargs, kernel=kernel, batched=batched), state)
        num_samples = self.settings.num_samples
        buffers = jax.tree.map(lambda shape: jax.numpy.zeros((num_samples, *shape.shape), shape.dtype), shapes)
        steps = jax.numpy.zeros((self.settings.num_warmup, *np.shape(state.num_steps)), state.num_steps.dtype)
        return (state, jax.numpy.asarray(-1)), (buffers, steps)

    def _kept(self, state, kwargs: dict, kernel, batched: bool):
        """What a draw keeps of ``state``: its constrained sites and the per-draw fields."""
        import jax

        postprocess = kernel.postprocess_fn((), kwargs)
        if batched:
            postprocess = jax.vmap(postprocess)
        return postprocess(state.z), {name: getattr(state, name) for name in _FIELDS}

    def _run_segment(self, carry, buffers, kwargs: dict, indices, kernel, batched: bool = False, bar=None):
        """(carry, buffers) after the kernel's steps ``indices`` (of warmup, then draws) from ``carry``; a step at
        or past num_warmup writes its draw into its slot of the buffers, a step past the end is skipped.

        Warmup and draws run in one loop, so that the kernel is traced and compiled once (two loops took a fresh
        run 0.2 s longer); the segments cut it into pieces of one length, compiled once too."""
        import jax

        settings = self.settings
        total = settings.num_warmup + settings.num_samples

        def step(carry, index):
            if bar is None:
                state, chain = carry
                return kernel.sample(state, (), kwargs), chain
            return bar(lambda i, state: kernel.sample(state, (), kwargs))(index, carry)

        def record(both, index):
            carry, (buffers, warmup_steps) = both
            carry = jax.lax.cond(index < total, step, lambda carry, index: carry, carry, index)
            slot = index - settings.num_warmup
            buffers = jax.lax.cond(
                (slot >= 0) & (index < total),
                lambda buffers: jax.tree.map(
                    lambda buffer, value: buffer.at[slot].set(value),
                    buffers,
                    self._kept(carry[0], kwargs, kernel, batched),
                ),
                lambda buffers: buffers,
                buffers,
            )
            warmup_steps = warmup_steps.at[index].set(carry[0].num_steps, mode="drop")  # from num_warmup on: dropped
            return (carry, (buffers, warmup_steps)), None

        (carry, buffers), _ = jax.lax.scan(record, (carry, buffers), indices)
        return carry, buffers

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


def _progress_bar(settings: MCMCSettings, num_chains: int, progress: bool | None):
    """NumPyro's bar decorator for loop bodies ``(index, (state, chain))``: ``num_chains`` bars, "Running chain c"
    (vectorized chains share one); progress lines instead where ``ppgen.progress`` says so (stderr not a
    terminal); None for no progress."""
    mode = progress_mode(progress)
    if mode is None:
        return None
    total = settings.num_warmup + settings.num_samples
    if mode == "log":
        return numpyro_progress_log(total, num_chains, settings.num_warmup, max(1, total // 20))
    from numpyro.util import progress_bar_factory

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


def numpyro_kernel(model: Callable, settings: MCMCSettings, dense: bool | None = None):
    """NumPyro's NUTS or HMC for ``model`` with ``settings``, with a dense mass matrix when ``dense`` (default:
    when ``settings`` say "dense"; ``NumpyroSampler.dense_mass`` resolves "auto")."""
    from numpyro.infer import HMC, NUTS

    dense = settings.mass == "dense" if dense is None else dense
    init = _init_strategy(settings)
    options = dict(target_accept_prob=settings.target_accept_prob, dense_mass=dense, init_strategy=init)
    if settings.method == "nuts":
        return NUTS(model, max_tree_depth=settings.max_tree_depth, **options)
    # trajectory_length=None, or NumPyro fixes the step size to 2 pi / num_steps instead of adapting it
    return HMC(model, num_steps=settings.num_steps, trajectory_length=None, **options)


def _init_strategy(settings: MCMCSettings):
    from ppgen.models.initialization import numpyro_init_strategy

    return numpyro_init_strategy(settings.init_strategy)


def _mass_window(num_warmup: int) -> int:
    """Warmup draws of NumPyro's last mass-matrix window (0 when ``num_warmup`` is too short for one)."""
    from numpyro.infer.hmc_util import build_adaptation_schedule

    windows = build_adaptation_schedule(num_warmup)
    return windows[-2].end - windows[-2].start + 1 if len(windows) > 2 else 0


def _chain(starts: dict | None, chain: int) -> dict | None:
    """One chain's starting point of ``starts`` {site: [chain, ...]} (None: the init strategy's)."""
    return None if starts is None else {site: value[chain] for site, value in starts.items()}


@dataclasses.dataclass(frozen=True)
class _Program:
    """A jaxpr without its constants and the tree of its results; equal to another of the same text, so that a
    later run of the same model finds its compiled program."""

    text: str
    jaxpr: object = dataclasses.field(compare=False)
    out: object = dataclasses.field(compare=False)


def _lifted(program: _Program, consts: list, *args):
    """``program`` run on ``args`` with ``consts``."""
    import jax
    from jax.extend.core import ClosedJaxpr, jaxpr_as_fun

    results = jaxpr_as_fun(ClosedJaxpr(program.jaxpr, consts))(*jax.tree.leaves(args))
    return jax.tree.unflatten(program.out, results)


def prefers_dense(hessians: np.ndarray, window: int) -> bool:
    """Whether a dense mass matrix pays for a posterior whose potential energy has Hessians ``hessians`` [p, d, d]
    (or one, [d, d]; unconstrained) at p points where chains may start, when warmup estimates its covariance from
    ``window`` draws. Every point must say so: kappa below is the smallest over them.

    A diagonal mass matrix leaves the posterior's correlations: NUTS then needs about sqrt(kappa) leapfrog steps a
    draw, kappa the condition number of the correlation matrix; for a Gaussian, that of the Hessian scaled to a
    unit diagonal, D^-1/2 H D^-1/2 (both (1 + |r|) / (1 - |r|) in two dimensions of correlation r; singular values,
    so a Hessian that is not positive definite away from the mode still shows its couplings). A dense one
    removes them, but its estimate from n = ``window`` draws of d dimensions leaves a condition number of about
    ((1 + sqrt(d/n)) / (1 - sqrt(d/n)))^2 (Marchenko-Pastur). Dense is chosen only when it should cut the leapfrog
    steps tenfold: kappa at least 100 times that, and d <= n / 4 (beyond, the estimate is poor and the Hessian dear).
    The bar is high, and every point must clear it, because the Hessian is read where chains start, not at the
    posterior: ARMA(1,1) of posteriordb showed kappa 12 at one start and 4400 at another, and there a dense matrix
    adapted from 500 warmup draws let a chain wander into the non-invertible mode, where diag did not.
    """
    hessians = np.reshape(hessians, (-1, *np.shape(hessians)[-2:]))
    dimension = hessians.shape[-1]
    curvature = np.abs(np.diagonal(hessians, axis1=-2, axis2=-1))
    if dimension < 2 or 4 * dimension > window or not np.all(np.isfinite(hessians)) or np.any(curvature == 0):
        return False
    ratio = np.sqrt(dimension / window)
    noise = ((1 + ratio) / (1 - ratio)) ** 2
    scaled = hessians / np.sqrt(curvature[:, :, None] * curvature[:, None, :])
    return bool(np.linalg.cond(scaled).min() >= 100 * noise)
