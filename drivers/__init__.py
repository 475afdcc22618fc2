"""Hardware abstraction: transports, instrument drivers (SMUs, switch matrices, the pot bridge and
its firmware), the table of instrument models, bench configs and the bench backend that composes
them into the one interface. Imports the method (the `hil` root) only."""
