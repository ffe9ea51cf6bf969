"""The notes service, written apart from the monolith, with a database of its own.

It takes over /api/notes: the same answers as app.py, on its own `notes` table (made here with a
plain `serial` key, as its team's migrations would; `strangler sync start notes --fix-sequences`
moves its ids above the monolith's). It checks the monolith's tokens itself (HS256, `sub`, no
`iss`) and answers its health check at /status with 204.

    DATABASE_URL=postgres://... JWT_SECRET_KEY=... PORT=5002 python3 notes_service.py
"""
import os

import jwt
import psycopg2.extras
import psycopg2.pool
from flask import Flask, jsonify, request

SCHEMA = """
CREATE TABLE IF NOT EXISTS notes (
  id serial PRIMARY KEY,
  account_id integer NOT NULL,
  title text NOT NULL,
  body text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notes_account ON notes (account_id, id);
"""

SECRET = os.environ["JWT_SECRET_KEY"]
pool = psycopg2.pool.ThreadedConnectionPool(1, 16, os.environ["DATABASE_URL"], options="-c timezone=UTC")
app = Flask(__name__)


def query(sql, args=(), one=False):
    conn = pool.getconn()
    try:
        with conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            rows = cur.fetchall() if cur.description else []
        return (rows[0] if rows else None) if one else rows
    finally:
        pool.putconn(conn)


def account_of(req):
    header = req.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(header[7:], SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return int(claims["sub"]) if claims.get("type") == "access" else None


def as_json(row):
    return {"id": row["id"], "accountId": row["account_id"], "title": row["title"], "body": row["body"], "createdAt": row["created_at"].isoformat()}


@app.get("/status")
def status():
    query("SELECT 1")
    return "", 204


@app.route("/api/notes", methods=["GET", "POST"])
def notes():
    account = account_of(request)
    if account is None:
        return jsonify(msg="Missing or invalid token"), 401
    if request.method == "GET":
        return jsonify(notes=[as_json(r) for r in query("SELECT * FROM notes WHERE account_id = %s ORDER BY id DESC LIMIT 50", (account,))])
    data = request.get_json(silent=True) or {}
    if not data.get("title"):
        return jsonify(msg="title is required"), 400
    row = query("INSERT INTO notes (account_id, title, body) VALUES (%s, %s, %s) RETURNING *", (account, data["title"], data.get("body", "")), one=True)
    return jsonify(as_json(row)), 201


@app.get("/api/notes/<int:note_id>")
def note(note_id):
    account = account_of(request)
    if account is None:
        return jsonify(msg="Missing or invalid token"), 401
    row = query("SELECT * FROM notes WHERE id = %s AND account_id = %s", (note_id, account), one=True)
    return (jsonify(as_json(row)), 200) if row else (jsonify(msg="note not found"), 404)


if __name__ == "__main__":
    query(SCHEMA)
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5002")), threaded=True)
