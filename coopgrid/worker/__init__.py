"""The worker: pull work units, run them, sign the results, submit.

A worker imports :mod:`coopgrid.protocol`, :mod:`coopgrid.identity` and the
task types, never coordinator or store code.
"""
