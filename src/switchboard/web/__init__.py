"""The web chat page's files (``static/``), served at / by ``switchboard serve --http``
(server/http.py): plain HTML, CSS and JavaScript modules, no build step."""
