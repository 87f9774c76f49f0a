"""The /admin API (FastAPI), one module per job: the app and its error shapes (app), who the caller
is (auth), what every router shares (common), and the routes: me, keys, org, report, quotas,
prices, plan, usage, audit. The named reports are still in server/admin_reports.py."""
