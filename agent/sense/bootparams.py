"""The kernel command line split into parameters as the kernel splits it
(lib/cmdline.c next_arg): on spaces, except inside double quotes, which are
dropped (`param="a b"` is `param=a b`); everything after a bare `--` goes to
init and is not a kernel parameter."""

from __future__ import annotations

from hosttune.agent.sense.host import Host


def split_params(text: str) -> list[str]:
    params: list[str] = []
    word: list[str] = []
    quoted = False
    started = False
    for char in text:
        if char == '"':
            quoted = not quoted
            started = True
            continue
        if char.isspace() and not quoted:
            if started:
                params.append("".join(word))
            word, started = [], False
            continue
        word.append(char)
        started = True
    if started:
        params.append("".join(word))
    if "--" in params:
        params = params[: params.index("--")]
    return params


def kernel_params(host: Host) -> list[str]:
    """The parameters of /proc/cmdline, in order (empty when it is absent)."""
    return split_params(host.cmdline())
