"""The /admin API (FastAPI), one module per job: the app and its error shapes (app), who the caller
is (auth), what every router shares (common), and the routes: me, keys, org, grouped (/report by
any dimension), reports (the named reports, generated from billing/catalog.py), quotas, prices,
plan, usage, audit."""
