"""How much memory a run may take: the RAM available now, and byte counts in words."""

import os

__all__ = ["BUDGET_FRACTION", "available_memory", "memory_budget", "format_bytes", "format_count"]

BUDGET_FRACTION = 0.5  # what may be planned of the available memory: the libraries and copies need the rest


def available_memory() -> int | None:
    """Bytes of RAM available to new allocations now (Linux's MemAvailable, else free pages); None where the
    system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no such sysconf name on this system
        return None


def memory_budget() -> int | None:
    """Bytes that one planned allocation may take: BUDGET_FRACTION of the available memory (None: unknown)."""
    available = available_memory()
    return None if available is None else int(available * BUDGET_FRACTION)


def format_count(count: int) -> str:
    """``100_000_000`` -> "100,000,000"; from 10^15 on, the power of ten ("10^308")."""
    return f"{int(count):,}" if count < 10**15 else f"10^{len(str(int(count))) - 1}"


def format_bytes(count: int) -> str:
    """``3_400_000_000`` -> "3.4 GB"; from 10^18 on, the power of ten ("10^309 bytes")."""
    if count >= 10**18:
        return f"{format_count(count)} bytes"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"
