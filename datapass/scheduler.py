"""The scheduler: every periodic job of every domain in one JOBS table, and the process
that runs them (`flask datapass scheduler`, or `python app.py` in development)."""
