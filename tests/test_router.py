"""Routes on a switch matrix: break-before-make order, and the forbidden routes refused before
any relay moves."""

from __future__ import annotations

import pytest

from drivers.instrument import InstrumentError
from drivers.router import Crosspoint, RouteError, RouteMap, Router
from drivers.switch import Keithley707B
from drivers.transport import scripted

# A small bench: smu1.a sources input x1 through the matrix; node b is held by a bench supply
# wired directly; smu2.a probes, smu3.a nudges.
CROSSPOINTS = {
    "1A01": Crosspoint("smu1.a", "x1"),
    "1B01": Crosspoint("smu2.a", "x1"),
    "1B02": Crosspoint("smu2.a", "h1"),
    "1B03": Crosspoint("smu2.a", "h2"),
    "1B04": Crosspoint("smu2.a", "y"),
    "1C02": Crosspoint("smu3.a", "h1"),
    "1C04": Crosspoint("smu3.a", "y"),
    "1C05": Crosspoint("smu3.a", "b"),
}
ROUTES = {
    "source x1": ["1A01"],
    "probe x1": ["1B01"],
    "probe h1": ["1B02"],
    "probe h2": ["1B03"],
    "probe y": ["1B04"],
    "nudge h1": ["1C02"],
    "nudge y": ["1C04"],
    "nudge b": ["1C05"],
    "probe h1 and h2": ["1B02", "1B03"],
}
DRIVEN = {"x1": "source x1", "b": None}


def route_map() -> RouteMap:
    return RouteMap(ROUTES, CROSSPOINTS, DRIVEN)


def router(exchange: list[tuple[str, str | None]], wait: bool = False) -> Router:
    return Router(Keithley707B(scripted(exchange), "matrix"), route_map(), wait)


def test_connect_closes_the_routes_crosspoints():
    r = router([('channel.close("1A01")', None), ('channel.close("1C04")', None)])
    r.connect("source x1")
    r.connect("nudge y")
    assert r.connected == ["source x1", "nudge y"]
    r.matrix.transport.assert_done()


def test_moving_an_smu_is_break_before_make():
    r = router(
        [
            ('channel.close("1B02")', None),
            ('channel.open("1B02")', None),  # the probe leaves h1 ...
            ('channel.close("1B03")', None),  # ... before it touches h2
        ]
    )
    r.connect("probe h1")
    r.connect("probe h2")
    assert r.connected == ["probe h2"]
    r.matrix.transport.assert_done()


def test_select_opens_everything_first_then_closes():
    r = router(
        [
            ('channel.close("1A01,1B02,1C04")', None),
            ('channel.open("1B02,1C04")', None),
            ('channel.close("1B04,1C02")', None),
        ]
    )
    r.select(["source x1", "probe h1", "nudge y"])
    r.select(["source x1", "probe y", "nudge h1"])
    assert r.connected == ["source x1", "probe y", "nudge h1"]
    r.matrix.transport.assert_done()


def test_with_wait_every_change_ends_with_opc():
    r = router(
        [
            ('channel.close("1B02")', None),
            ("*OPC?", "1"),
            ('channel.open("1B02")', None),
            ('channel.close("1B03")', None),
            ("*OPC?", "1"),
            ('channel.open("allslots")', None),
            ("*OPC?", "1"),
        ],
        wait=True,
    )
    r.connect("probe h1")
    r.connect("probe h2")
    r.connect("probe h2")  # nothing moves: nothing to wait for
    r.disconnect_all()
    r.matrix.transport.assert_done()


def test_disconnect_and_disconnect_all():
    r = router(
        [
            ('channel.close("1A01,1B02")', None),
            ('channel.open("1B02")', None),
            ('channel.open("allslots")', None),
        ]
    )
    r.select(["source x1", "probe h1"])
    r.disconnect("probe h1")
    assert r.connected == ["source x1"]
    r.disconnect_all()
    assert r.connected == []
    r.matrix.transport.assert_done()


def test_connecting_a_connected_route_moves_nothing():
    r = router([('channel.close("1B02")', None)])
    r.connect("probe h1")
    r.connect("probe h1")
    r.matrix.transport.assert_done()


def test_two_smu_outputs_on_one_node_are_refused_before_any_relay_moves():
    r = router([('channel.close("1B02")', None)])
    r.connect("probe h1")
    with pytest.raises(RouteError) as caught:
        r.connect("nudge h1")  # smu3.a onto h1 while smu2.a sits there
    message = str(caught.value)
    assert "'nudge h1'" in message and "smu2.a and smu3.a" in message and "node h1" in message
    assert "1B02" in message and "1C02" in message and "\n" not in message
    assert r.connected == ["probe h1"]
    r.matrix.transport.assert_done()  # nothing sent after the refusal


def test_an_smu_onto_a_source_node_is_refused():
    r = router([])
    with pytest.raises(
        RouteError, match=r"'probe x1' would connect smu2\.a onto node x1, which a source drives"
    ):
        r.connect("probe x1")
    with pytest.raises(RouteError, match=r"'nudge b' would connect smu3\.a onto node b.*1C05"):
        r.connect("nudge b")
    r.matrix.transport.assert_done()


def test_a_source_may_use_its_own_route():
    r = router([('channel.close("1A01")', None)])
    r.connect("source x1")
    r.matrix.transport.assert_done()


def test_one_smu_on_two_nodes_is_refused():
    r = router([])
    with pytest.raises(
        RouteError, match=r"'probe h1 and h2' would connect smu2\.a to nodes h1 and h2 at once"
    ):
        r.connect("probe h1 and h2")
    with pytest.raises(RouteError, match=r"smu2\.a to nodes h1 and y"):
        r.select(["probe h1", "probe y"])
    r.matrix.transport.assert_done()


def test_unknown_route_is_refused():
    r = router([])
    with pytest.raises(RouteError, match=r"no route 'probe z' in the route map \(known: "):
        r.connect("probe z")
    r.matrix.transport.assert_done()


def test_validate_at_config_time_touches_no_instrument():
    routes = route_map()
    routes.validate(["source x1", "probe h1", "nudge y"], together=True)
    routes.validate(["probe h1", "nudge h1"])  # each safe alone ...
    with pytest.raises(RouteError, match="two SMU outputs on one node"):
        routes.validate(["probe h1", "nudge h1"], together=True)  # ... not together
    for bad in ("probe x1", "nudge b", "probe h1 and h2", "missing"):
        with pytest.raises(RouteError):
            routes.validate([bad])


def test_route_map_refuses_undescribed_crosspoints():
    with pytest.raises(RouteError, match=r"route 'probe q' uses crosspoints 1D09 that the crosspoint map"):
        RouteMap({**ROUTES, "probe q": ["1D09"]}, CROSSPOINTS, DRIVEN)
    with pytest.raises(RouteError, match="driven through route 'nowhere'"):
        RouteMap(ROUTES, CROSSPOINTS, {"x1": "nowhere"})
    with pytest.raises(RouteError, match="no crosspoints"):
        RouteMap({"empty": []}, CROSSPOINTS)


class _StuckOnce:
    """A matrix whose next close fails (a relay driver error), then works again."""

    def __init__(self) -> None:
        self.closed: set[str] = set()
        self.fail_close = False

    def close_channels(self, channels: list[str]) -> None:
        if self.fail_close:
            self.fail_close = False
            raise InstrumentError("matrix reports 1115: relay drive failure")
        self.closed.update(channels)

    def open_channels(self, channels: list[str]) -> None:
        self.closed.difference_update(channels)

    def open_all(self) -> None:
        self.closed.clear()

    def closed_channels(self) -> set[str]:
        return set(self.closed)

    def wait_complete(self) -> None:
        pass


def test_a_failed_close_leaves_the_router_claiming_only_what_is_closed_and_a_retry_closes_it():
    matrix = _StuckOnce()
    r = Router(matrix, route_map())
    r.select(["source x1", "probe h1"])
    matrix.fail_close = True
    with pytest.raises(InstrumentError, match="relay drive failure"):
        r.connect("probe h2")  # the probe left h1, then its relay to h2 failed
    assert r.connected == ["source x1"] and matrix.closed == {"1A01"}
    r.connect("probe h2")
    assert r.connected == ["source x1", "probe h2"] and matrix.closed == {"1A01", "1B03"}


def test_a_source_may_hold_its_own_node_with_every_other_route_that_is_safe():
    """The largest safe set: each SMU on one node, no node with two SMUs, sources only on their own."""
    everything = ["source x1", "probe h2", "nudge y"]
    r = router([('channel.close("1A01,1B03,1C04")', None)])
    r.select(everything)
    assert r.connected == everything
    r.matrix.transport.assert_done()
