"""The numerical twin: the circuit's DC equilibrium by Newton on the nodal equations.

Same devices as ngspice (ideal sources, VCVS/CCCS, resistors, ngspice's level-1 diode with GMIN),
solved to machine precision. Nodes driven by a voltage source or a VCVS are eliminated, so the
unknowns are only the free nodes: V = T·u + c. The residual is Kirchhoff's current law at every
free node, where the CCCS of an amplifier adds backward_gain × (current the VCVS delivers).
"""

from __future__ import annotations

import numpy as np

from hil.interface import ConvergenceError, Identity, State, settle_each
from hil.network import Network
from sim.devices import DEFAULT_GMIN, DiodeAtTemperature

MAX_ITERATIONS = 200
CONVERGED_STEP = 1e-9  # V
MAX_STEP = 1e6  # V: a Newton step this large means the circuit has no sensible equilibrium
# Current into the + terminal of a clamp's offset sources: the high diode's current flows in, the
# low diode's flows out.
_CLAMP_SIGN = np.array([1.0, -1.0])


class TwinBackend:
    """`Backend` implemented by the numerical twin."""

    def __init__(self, network: Network, gmin: float = DEFAULT_GMIN) -> None:
        self.network = network
        self.diode = DiodeAtTemperature.at(network.diode_model, network.temperature, gmin)
        nodes = network.nodes
        self._index = {n: i for i, n in enumerate(nodes)}
        n = len(nodes)
        idx = self._index
        self._src_nodes = np.array([idx[s.node] for s in network.sources], dtype=int)
        self._amp_in = np.array([idx[a.node_in] for a in network.amplifiers], dtype=int)
        self._amp_out = np.array([idx[a.node_out] for a in network.amplifiers], dtype=int)
        driven = set(self._src_nodes.tolist()) | set(self._amp_out.tolist())
        if set(self._amp_in.tolist()) & set(self._amp_out.tolist()):
            raise ValueError("the twin does not chain amplifiers output-to-input directly")
        self._free = np.array([i for i in range(n) if i not in driven], dtype=int)
        self._free_pos = {int(node): k for k, node in enumerate(self._free)}
        nf = len(self._free)
        # Incidence of the conductances: Gn = incᵀ·diag(|g|)·inc + loads.
        a_idx, b_idx = network.edge_endpoints
        self._inc = np.zeros((len(network.conductances), n))
        self._inc[np.arange(len(a_idx)), a_idx] = 1.0
        self._inc[np.arange(len(b_idx)), b_idx] -= 1.0
        # Clamp diodes: vd = Dv·V + dv0; the high diode conducts node → v_high, the low one
        # v_low → node.
        nc = len(network.clamps)
        self._dv = np.zeros((2 * nc, n))
        self._dv0 = np.zeros(2 * nc)
        for k, c in enumerate(network.clamps):
            self._dv[2 * k, idx[c.node]] = 1.0
            self._dv0[2 * k] = -c.v_high
            self._dv[2 * k + 1, idx[c.node]] = -1.0
            self._dv0[2 * k + 1] = c.v_low
        self._loads = np.zeros(n)
        for load in network.loads:
            self._loads[idx[load.node]] += load.conductance
        self._n, self._nf = n, nf
        self._g = np.zeros(len(network.conductances))
        self._gains_key: bytes | None = None
        self._signs_key: bytes | None = None
        # Warm starts: the last equilibrium per sample's inputs. Weights change little between
        # visits, so Newton starts a few steps from the answer.
        self._warm: dict[bytes, np.ndarray] = {}
        self.program(np.full(len(network.conductances), 1e-3))

    # ------------------------------------------------------------------ interface
    def program(self, conductances: np.ndarray) -> np.ndarray:
        g = np.array(conductances, dtype=float)
        if g.shape != self._g.shape or not np.all(np.isfinite(g)) or np.any(g == 0):
            raise ValueError("conductances must be finite, non-zero, one per edge")
        net = self.network
        self._g = g
        signs = (g < 0).tobytes()
        if signs != self._signs_key:  # sources and amplifiers change only when a weight changes sign
            self._signs_key = signs
            self._src_sign, _ = net.sign_multipliers(g)
            gain, back = net.amplifier_gains(g)
            key = np.concatenate([gain, back]).tobytes()
            if key != self._gains_key:
                self._gains_key = key
                self._gain, self._back = gain, back
                self._amplifier_maps()
        self._mag = np.abs(g)
        # M·Gn·T with Gn = incᵀ·diag(|g|)·inc + diag(loads), without forming Gn.
        self._a = (self._p * self._mag) @ self._q + self._a_loads
        return g

    def _leaving(self, v: np.ndarray) -> np.ndarray:
        """Current from each node into its conductances and loads."""
        return self._inc.T @ (self._mag * (self._inc @ v)) + self._loads * v

    def _amplifier_maps(self) -> None:
        n, nf = self._n, self._nf
        # V = T u + c: free nodes are u, VCVS outputs follow their input.
        t = np.zeros((n, nf))
        t[self._free, np.arange(nf)] = 1.0
        # KCL rows at free nodes, with each CCCS adding backward_gain × (VCVS current).
        m = np.zeros((nf, n))
        m[np.arange(nf), self._free] = 1.0
        for k, (i, o) in enumerate(zip(self._amp_in, self._amp_out, strict=True)):
            if int(i) in self._free_pos:
                t[o, self._free_pos[int(i)]] = self._gain[k]
                m[self._free_pos[int(i)], o] -= self._back[k]
        self._t, self._m = t, m
        self._b = m @ self._dv.T
        self._c = self._dv @ t
        self._p = m @ self._inc.T
        self._q = self._inc @ t
        self._a_loads = (m * self._loads) @ t

    def settle(self, inputs: np.ndarray, nudge_currents: dict[str, float] | None = None) -> State:
        net = self.network
        values = net.source_values(inputs) * self._src_sign
        n = self._n
        c = np.zeros(n)
        c[self._src_nodes] = values
        for k, (i, o) in enumerate(zip(self._amp_in, self._amp_out, strict=True)):
            if int(i) not in self._free_pos:
                c[o] = self._gain[k] * c[i]
        inj = np.zeros(n)
        for node, current in (nudge_currents or {}).items():
            inj[self._index[node]] += current
        r0 = self._m @ (self._leaving(c) - inj)
        d0 = self._dv @ c + self._dv0
        key = np.asarray(inputs, dtype=float).tobytes()
        u = self._solve(r0, d0, warm=self._warm.get(key))
        if not nudge_currents:
            if len(self._warm) > 4096:
                self._warm.clear()
            self._warm[key] = u
        v = self._t @ u + c
        return self._state(v, inj)

    def settle_batch(self, inputs: np.ndarray, nudges: np.ndarray | None = None) -> State:
        return settle_each(self, inputs, nudges)

    def safe_state(self) -> None:
        self._warm.clear()

    def close(self) -> None:
        self._warm.clear()

    def solver_state(self) -> dict[str, np.ndarray]:
        """The warm starts: each sample's inputs and the free-node voltages Newton last found."""
        keys = list(self._warm)
        inputs = np.array([np.frombuffer(k, dtype=float) for k in keys]).reshape(len(keys), -1)
        found = np.array([self._warm[k] for k in keys]).reshape(len(keys), self._nf)
        return {"warm_inputs": inputs, "warm_free_voltages": found}

    def restore_solver_state(self, state: dict[str, np.ndarray]) -> None:
        self._warm = {
            np.ascontiguousarray(x, dtype=float).tobytes(): np.array(u, dtype=float)
            for x, u in zip(state.get("warm_inputs", ()), state.get("warm_free_voltages", ()), strict=True)
        }

    def identity(self) -> Identity:
        return Identity(
            kind="numeric",
            description="numerical twin: Newton on the nodal equations, ngspice 39 device models",
        )

    # ------------------------------------------------------------------ solver
    def _solve(self, r0: np.ndarray, d0: np.ndarray, warm: np.ndarray | None) -> np.ndarray:
        """Newton from the warm start, else from ngspice's cold start, else by source stepping."""
        if warm is not None:
            u = self._newton(r0, d0, warm, self._c @ warm + d0, consistent=True)
            if u is not None:
                return u
        u = self._newton(r0, d0, np.zeros(self._nf), np.full(len(d0), self.diode.vcrit), consistent=False)
        if u is not None:
            return u
        u = self._gmin_stepping(r0, d0)
        if u is not None:
            return u
        return self._source_stepping(r0, d0)

    def _newton(
        self,
        r0: np.ndarray,
        d0: np.ndarray,
        u: np.ndarray,
        vd_at: np.ndarray,
        consistent: bool,
        shunt: float = 0.0,
    ) -> np.ndarray | None:
        """SPICE's Newton: each diode is linearised at a (limited) junction voltage, and the linear
        system gives the next node voltages. `shunt` ties every free node to ground (gmin
        stepping). None when it does not converge."""
        diode = self.diode
        a, b, cmat = (self._a + shunt * np.eye(self._nf) if shunt else self._a), self._b, self._c
        for _ in range(MAX_ITERATIONS):
            cd, gd = diode.current(vd_at)
            try:
                u_new = np.linalg.solve(a + (b * gd) @ cmat, -(r0 + b @ (cd + gd * (d0 - vd_at))))
            except np.linalg.LinAlgError as exc:
                raise ConvergenceError(
                    "singular nodal matrix: the circuit has no unique equilibrium (amplifier feedback of "
                    "exactly unity?)"
                ) from exc
            step = float(abs(u_new - u).max()) if self._nf else 0.0
            u = u_new
            if not step < MAX_STEP:  # also catches NaN
                return None
            # After a full Newton step s the error is about s²/(2·vte): 1e-17 V for s = 1 nV.
            if consistent and step <= CONVERGED_STEP:
                return u
            vd = cmat @ u + d0
            vd_at = diode.limit(vd, vd_at)
            consistent = vd_at is vd
        return None

    def _gmin_stepping(self, r0: np.ndarray, d0: np.ndarray) -> np.ndarray | None:
        """As ngspice does: a large conductance from every free node to ground makes the circuit
        easy; it is lowered step by step (bigger steps after successes, smaller after failures),
        each solve warm started from the last, then removed."""
        scale = float(np.max(np.abs(np.diag(self._a)), initial=1.0))
        shunt = 100.0 * scale
        u = self._newton(r0, d0, np.zeros(self._nf), np.full(len(d0), self.diode.vcrit), False, shunt)
        factor = 10.0
        while u is not None and shunt > 0.0:
            lower = shunt / factor if shunt / factor > 1e-14 * scale else 0.0
            found = self._newton(r0, d0, u, self._c @ u + d0, True, lower)
            if found is not None:
                u, shunt, factor = found, lower, min(factor * 3.0, 1e3)
            else:
                factor = np.sqrt(factor)
                if factor < 1.001:
                    return None
        return u

    def _source_stepping(self, r0: np.ndarray, d0: np.ndarray) -> np.ndarray:
        """Every source (inputs, clamp offsets, nudges) scaled from 0 to full, each step warm
        started from the last; a step that fails is halved. At 0 the answer is all zeros."""
        u = np.zeros(self._nf)
        done, step = 0.0, 0.1
        while done < 1.0:
            scale = min(1.0, done + step)
            found = self._newton(scale * r0, scale * d0, u, self._c @ u + scale * d0, consistent=True)
            if found is None:
                step /= 2
                if step < 1e-6:
                    break
                continue
            u, done, step = found, scale, min(2 * step, 0.25)
        if done < 1.0:
            raise ConvergenceError(
                f"Newton did not converge ({MAX_ITERATIONS} iterations; warm, cold, gmin and source "
                f"stepping to {done:.0%}): the circuit may have no equilibrium at these conductances"
            )
        return u

    def _state(self, v: np.ndarray, inj: np.ndarray) -> State:
        vd = self._dv @ v + self._dv0
        cd, _ = self.diode.current(vd)
        leaving = self._leaving(v) + self._dv.T @ cd - inj
        amp_current = -leaving[self._amp_out]  # into the VCVS's + terminal
        total = leaving.copy()
        # A CCCS sinks backward_gain × I(E) from its input node.
        np.add.at(total, self._amp_in, self._back * amp_current)
        src_current = -total[self._src_nodes]
        clamp = cd.reshape(-1, 2) * _CLAMP_SIGN
        return State(v, src_current, clamp, amp_current)
