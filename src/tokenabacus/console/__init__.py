"""The web console: pages served by the gateway at /console, reading the /admin API."""
