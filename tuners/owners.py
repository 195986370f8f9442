"""Which knobs someone else owns: the administrator (configuration files, the
kernel command line) or a peer tuning daemon (tuned, irqbalance, numad).
hosttune reports these and does not fight them.

The sense layer reads the facts in their own words (a sysctl.d line, a kernel
parameter, a tuned option, a running irqbalance); each knob family says which
of its knobs they stand for (the `owned_by_*` and `tuned_knobs` hooks of
tuners.base.Tuner). Look one knob up with sense.ownership.owner_of: it matches
the patterns too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hosttune.agent.sense.bootparams import kernel_params
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import Owner
from hosttune.agent.sense.peers import PeerReport, peer_report
from hosttune.tuners.base import Tuner
from hosttune.tuners.registry import bind_tuners


@dataclass
class PeerOwners:
    """Knob (or pattern) -> the peer daemon that owns it, in the order found."""

    owned: dict[str, Owner] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # tuned re-applies the sysctl.d files after its own settings (the default)
    tuned_reapplies_sysctl: bool = True


def peer_knobs(report: PeerReport, tuners: dict[str, Tuner]) -> dict[str, Owner]:
    """What the peer daemons of `report` own, as knobs."""
    owned: dict[str, Owner] = {}
    for option in report.tuned:
        for tuner in tuners.values():
            for knob in tuner.tuned_knobs(option.plugin, option.option, option.devices):
                owned[knob] = Owner("peer", option.where, option.said)
    for tuner in tuners.values():
        owned.update(tuner.owned_by_daemons(report))
    return owned


def peer_owners(host: Host, tuners: dict[str, Tuner] | None = None) -> PeerOwners:
    tuners = bind_tuners(host) if tuners is None else tuners
    report = peer_report(host)
    return PeerOwners(peer_knobs(report, tuners), report.notes, report.tuned_reapplies_sysctl)


def owners_report(host: Host, tuners: dict[str, Tuner] | None = None
                  ) -> tuple[dict[str, Owner], list[str]]:
    """`owners(host)` and notes on what could not be read (a malformed tuned
    profile, a peer daemon that runs without a profile, ...)."""
    tuners = bind_tuners(host) if tuners is None else tuners
    peers = peer_owners(host, tuners)
    files: dict[str, Owner] = {}
    for tuner in tuners.values():
        files.update(tuner.owned_by_files())
    owned: dict[str, Owner] = {}
    # The one applied last is the one reported for a knob both set.
    order = [peers.owned, files] if peers.tuned_reapplies_sysctl else [files, peers.owned]
    for part in order:
        for knob, owner in part.items():
            if owner.kind == "excluded" and knob in owned and owned[knob].kind != "excluded":
                continue  # an exclusion only keeps its own kind's patterns off
            owned.pop(knob, None)
            owned[knob] = owner
    params = kernel_params(host)
    for tuner in tuners.values():
        owned.update(tuner.owned_by_cmdline(params))
    return owned, peers.notes


def owners(host: Host, tuners: dict[str, Tuner] | None = None) -> dict[str, Owner]:
    """Every knob name (or fnmatch pattern of knob names) the administrator
    or a peer daemon owns."""
    return owners_report(host, tuners)[0]
