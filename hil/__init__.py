"""eqprop-hil: Equilibrium Propagation on physical resistive networks, computer in the loop."""

__version__ = "0.1.0"
