"""Routes: the lab's words on top of a switch matrix.

A route is a named set of crosspoints (e.g. `"smu2 -> h1": ["1B03"]`); each crosspoint joins one
SMU channel (the matrix row it is wired to) to one network node (the column). The router connects
and disconnects routes break-before-make, and refuses, before any relay moves, a set of routes
that would
- put two SMU outputs on one node,
- put an SMU on a node that a source drives, unless the route is that source's own route,
- put one SMU channel on two nodes at once.

`RouteMap.validate` runs the same checks on the config alone, before any instrument is touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from drivers.roles import SwitchMatrix


class RouteError(ValueError):
    """A route that does not exist, is not described, or would short something."""


@dataclass(frozen=True)
class Crosspoint:
    """One relay of the matrix: it joins SMU channel `smu` (row) to network node `node` (column)."""

    smu: str
    node: str


@dataclass(frozen=True)
class RouteMap:
    """Routes by name, what each crosspoint joins, and the nodes driven by sources.

    `driven` maps each source-driven node to the route through which its own source reaches it
    (None when the source is wired directly, so no route may reach that node).
    """

    routes: Mapping[str, Sequence[str]]
    crosspoints: Mapping[str, Crosspoint]
    driven: Mapping[str, str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for route, names in self.routes.items():
            if not names:
                raise RouteError(f"route {route!r} has no crosspoints")
            missing = [name for name in names if name not in self.crosspoints]
            if missing:
                raise RouteError(
                    f"route {route!r} uses crosspoints {', '.join(missing)} that the crosspoint map "
                    "does not describe (which SMU channel and node each joins)"
                )
        for node, through in self.driven.items():
            if through is not None and through not in self.routes:
                raise RouteError(
                    f"node {node!r} is driven through route {through!r}, which is not in the route map"
                )

    def crosspoints_of(self, route: str) -> list[str]:
        if route not in self.routes:
            known = ", ".join(sorted(self.routes)) or "none"
            raise RouteError(f"no route {route!r} in the route map (known: {known})")
        return list(self.routes[route])

    def check(self, routes: Iterable[str]) -> None:
        """Refuse a set of routes connected together if it would short anything."""
        active = list(dict.fromkeys(routes))
        on_node: dict[str, dict[str, tuple[str, str]]] = {}  # node -> smu -> (route, crosspoint)
        on_smu: dict[str, dict[str, tuple[str, str]]] = {}  # smu -> node -> (route, crosspoint)
        for route in active:
            for name in self.crosspoints_of(route):
                point = self.crosspoints[name]
                if point.node in self.driven and self.driven[point.node] != route:
                    raise RouteError(
                        f"route {route!r} would connect {point.smu} onto node {point.node}, which a source "
                        f"drives (crosspoint {name})"
                    )
                on_node.setdefault(point.node, {}).setdefault(point.smu, (route, name))
                on_smu.setdefault(point.smu, {}).setdefault(point.node, (route, name))
        for node, smus in on_node.items():
            if len(smus) > 1:
                joined = " and ".join(smus)
                via = ", ".join(f"{name} ({route!r})" for route, name in smus.values())
                raise RouteError(
                    f"route {_blame(smus)!r} would connect {joined} to node {node}: two SMU outputs on one "
                    f"node (crosspoints {via})"
                )
        for smu, nodes in on_smu.items():
            if len(nodes) > 1:
                joined = " and ".join(nodes)
                via = ", ".join(f"{name} ({route!r})" for route, name in nodes.values())
                route = _blame(nodes)
                raise RouteError(
                    f"route {route!r} would connect {smu} to nodes {joined} at once (crosspoints {via})"
                )

    def validate(self, routes: Iterable[str], together: bool = False) -> None:
        """Config-time check: every route exists and is safe on its own (and, with `together`,
        all of them at once)."""
        names = list(routes)
        for route in names:
            self.check([route])
        if together:
            self.check(names)

    def smus_of(self, route: str) -> set[str]:
        return {self.crosspoints[name].smu for name in self.crosspoints_of(route)}


def _blame(found: Mapping[str, tuple[str, str]]) -> str:
    """The route that completes a forbidden pair: the last one added."""
    return list(found.values())[-1][0]


class Router:
    """Connects routes on a `SwitchMatrix`, break-before-make, after the forbidden-route check."""

    def __init__(self, matrix: SwitchMatrix, route_map: RouteMap, wait: bool = True) -> None:
        self.matrix = matrix
        self.map = route_map
        # the next reading comes from an SMU, which does not wait for the matrix: with `wait`,
        # every change ends with the matrix's `*OPC?`
        self.wait = wait
        self.connected: list[str] = []

    def validate(self, routes: Iterable[str], together: bool = False) -> None:
        self.map.validate(routes, together)

    def connect(self, route: str) -> None:
        """Connect `route`; a route already connected that uses one of its SMU channels is
        disconnected first (the SMU moves), so the move is break-before-make."""
        smus = self.map.smus_of(route)
        kept = [r for r in self.connected if r != route and not (self.map.smus_of(r) & smus)]
        self.select([*kept, route])

    def disconnect(self, route: str) -> None:
        self.map.crosspoints_of(route)
        self.select([r for r in self.connected if r != route])

    def disconnect_all(self) -> None:
        self.matrix.open_all()
        self.connected = []
        if self.wait:
            self.matrix.wait_complete()

    def select(self, routes: Iterable[str]) -> None:
        """Make exactly `routes` connected: check the whole set, open what must open, then close
        what must close."""
        target = list(dict.fromkeys(routes))
        self.map.check(target)
        now = self._crosspoints(self.connected)
        wanted = self._crosspoints(target)
        to_open = [name for name in now if name not in wanted]
        to_close = [name for name in wanted if name not in now]
        if to_open:
            self.matrix.open_channels(to_open)
            self.connected = [r for r in self.connected if not set(self.map.routes[r]) & set(to_open)]
        if to_close:
            self.matrix.close_channels(to_close)
        self.connected = target
        if self.wait and (to_open or to_close):
            self.matrix.wait_complete()

    def _crosspoints(self, routes: Iterable[str]) -> list[str]:
        names: dict[str, None] = {}
        for route in routes:
            names.update(dict.fromkeys(self.map.crosspoints_of(route)))
        return list(names)
