"""The virtual bench: instrument emulators that speak the real command sets over sockets and
answer from one emulated circuit."""
