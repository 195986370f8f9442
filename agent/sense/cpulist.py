"""The kernel's CPU list format ("0-3,8,10-11") and hex masks ("ff,00000f0f"),
and the wider CPU list syntax the kernel accepts in boot parameters
(`isolcpus=`, `nohz_full=`, `rcu_nocbs=`, `irqaffinity=`)."""

from __future__ import annotations

from collections.abc import Iterable

from hosttune.agent.sense.errors import ParseError


def parse_cpulist(text: str, *, source: str = "cpulist") -> tuple[int, ...]:
    """"0-3,8" -> (0, 1, 2, 3, 8). Empty text is the empty set (a memoryless or
    CPU-less NUMA node prints an empty line)."""
    text = text.strip()
    if not text:
        return ()
    cpus: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        try:
            if "-" in part:
                lo_text, hi_text = part.split("-", 1)
                # "0-31:2/4" (group syntax) is only accepted on input by some
                # kernels; the kernel never prints it, so it is an error here.
                lo, hi = int(lo_text), int(hi_text)
                if lo < 0 or hi < lo:
                    raise ValueError
                cpus.update(range(lo, hi + 1))
            else:
                value = int(part)
                if value < 0:
                    raise ValueError
                cpus.add(value)
        except ValueError:
            raise ParseError(source, f"bad CPU list element {part!r} in {text[:60]!r}") from None
    return tuple(sorted(cpus))


def parse_kernel_cpulist(text: str, *, last_cpu: int | None,
                         source: str = "cpulist") -> tuple[int, ...]:
    """A CPU list as bitmap_parselist() reads a boot parameter: ranges and
    commas, "N" for the last CPU (`last_cpu`, nr_cpu_ids - 1), "all", and the
    group form "0-15:2/4" (from each group of 4, the first 2: 0,1,4,5,...).
    Documentation/admin-guide/kernel-parameters.rst, "cpu lists"."""
    text = text.strip()
    if not text:
        return ()

    def number(word: str) -> int:
        if word == "N":
            if last_cpu is None:
                raise ValueError
            return last_cpu
        if not word.isdigit():
            raise ValueError
        return int(word)

    if text.lower() == "all":
        if last_cpu is None:
            raise ParseError(source, "'all' needs to know the host's CPUs")
        return tuple(range(last_cpu + 1))
    cpus: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        try:
            span, colon, group = part.partition(":")
            lo_text, dash, hi_text = span.partition("-")
            lo = number(lo_text)
            hi = number(hi_text) if dash else lo
            if hi < lo:
                raise ValueError
            used, size = 1, 1
            if colon:
                used_text, slash, size_text = group.partition("/")
                if not (dash and slash):
                    raise ValueError
                used, size = number(used_text), number(size_text)
                if size == 0 or used == 0 or used > size:
                    raise ValueError
            cpus.update(c for c in range(lo, hi + 1) if (c - lo) % size < used)
        except ValueError:
            raise ParseError(source, f"bad CPU list element {part!r} in {text[:60]!r}") from None
    return tuple(sorted(cpus))


def format_cpulist(cpus: Iterable[int]) -> str:
    """(0, 1, 2, 3, 8) -> "0-3,8"."""
    ordered = sorted(set(cpus))
    if not ordered:
        return ""
    ranges: list[str] = []
    start = prev = ordered[0]
    for cpu in ordered[1:]:
        if cpu == prev + 1:
            prev = cpu
            continue
        ranges.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = cpu
    ranges.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(ranges)


def parse_cpumask(text: str, *, source: str = "cpumask") -> tuple[int, ...]:
    """"00000000,0000000f" -> (0, 1, 2, 3): comma-separated 32-bit hex words,
    most significant first, as in /proc/irq/N/smp_affinity and local_cpus."""
    words = text.strip().split(",")
    try:
        value = 0
        for word in words:
            value = (value << 32) | int(word or "0", 16)
    except ValueError:
        raise ParseError(source, f"bad CPU mask {text[:60]!r}") from None
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)
