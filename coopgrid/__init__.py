"""coopgrid: cooperative grid computing for AI work units.

Central training publishes content-addressed models; untrusted workers pull
independent work units, run them and sign their results; an Ethereum contract
anchors what needs public trust. See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
