"""Simulated backends: ngspice (PySpice shared mode) and the numerical twin."""
