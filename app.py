"""Entry point. ``flask --app app …`` uses ``app``; ``python app.py`` serves for development
with the scheduler running in the same process (production runs it as its own process:
``flask --app app datapass scheduler``)."""

import os

from datapass import create_app

app = create_app()

if __name__ == "__main__":
    import signal
    import sys

    from datapass import scheduler

    # SIGTERM ends the dev server like Ctrl-C does, through the exit handlers (the
    # introspection calls not yet counted are written then).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    scheduler.start_background(app)
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "5000")),
        debug=False,
        use_reloader=False,
    )
