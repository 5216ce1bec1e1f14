"""The ceiling for the ingest benchmark: a bare Flask endpoint under the same gunicorn settings.

It parses the form and answers `<Response/>`, and does nothing else: no signature,
no database. `gunicorn "bench.bare_app:create_app()"`.
"""

from flask import Flask, Response, request

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/twilio/sms")
    def inbound_sms():
        request.form.get("MessageSid")
        return Response(EMPTY_TWIML, mimetype="text/xml")

    return app
