"""Many trainings or many β: sweeps, gradient checks against finite differences, reports and
the live view of a training. Built on the method (the hil root) and opens backends through it."""
