"""Demo data: a realistic month of gateway traffic written through the real ledger path
(``traffic``: the generator benchmarks/reports.py shares; ``story``: the demo's organization and
events; ``seed``: `tokenabacus demo seed`)."""
