"""Firmware for the bench's own hardware (the pot bridge), kept with the drivers that talk to it."""
