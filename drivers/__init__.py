"""Hardware abstraction: transports, instrument drivers and the bench backend (to come)."""
