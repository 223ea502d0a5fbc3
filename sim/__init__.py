"""The simulated magnonic ring and the virtual SCPI bench.

Knows nothing about drivers or training: `sim` never imports `instruments` or
`labpgt`.
"""
