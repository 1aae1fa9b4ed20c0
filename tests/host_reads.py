"""Counting host round trips in tests: reads of tensor values by Python, on any device.

On a GPU, reading a tensor back to Python (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.cpu()``)
waits for the device, and ``torch.tensor(value, device=...)`` copies from the host and waits too. A
``TorchFunctionMode`` sees these calls on the CPU as well, so a test can require that their number does not grow
with the number of loop iterations (training steps, sampler steps, evaluation chunks).
"""

import collections

from torch.overrides import TorchFunctionMode

_READS = {"item", "__float__", "__bool__", "__int__", "__index__", "tolist", "numpy", "cpu"}


class HostRoundTrips(TorchFunctionMode):
    """Counts reads of tensor values by the host, and tensors made from host values on a named device."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _READS or (name == "tensor" and kwargs.get("device") is not None):
            self.calls[name] += 1
        return func(*args, **kwargs)


def round_trips(run, *args, **kwargs) -> collections.Counter:
    """The round trips of run(*args, **kwargs), by kind."""
    with HostRoundTrips() as spy:
        run(*args, **kwargs)
    return spy.calls
