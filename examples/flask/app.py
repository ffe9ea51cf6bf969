"""A small Flask monolith: accounts and their notes, one PostgreSQL database.

It is what a migration engineer brings, not part of the toolkit: its own schema (created here at
start, as its own migrations would), Flask-JWT-Extended-style access tokens (HS256, the account id
in `sub` as a string, `type`, `jti`, `fresh`, no `iss`), and no /health endpoint (its index page
answers 200). strangler moves /api/notes to notes_service.py without changing a line here.

    DATABASE_URL=postgres://... JWT_SECRET_KEY=... PORT=5001 python3 app.py
"""
import datetime
import hashlib
import os
import secrets
import uuid

import jwt
import psycopg2
import psycopg2.extras
import psycopg2.pool
from flask import Flask, jsonify, request

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
  id serial PRIMARY KEY,
  email text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS notes (
  id serial PRIMARY KEY,
  account_id integer NOT NULL REFERENCES accounts (id),
  title text NOT NULL,
  body text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
"""

SECRET = os.environ["JWT_SECRET_KEY"]
TOKEN_TTL = datetime.timedelta(minutes=int(os.environ.get("JWT_ACCESS_TOKEN_MINUTES", "60")))
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


def hash_password(password, salt=None):
    salt = salt or secrets.token_hex(8)
    return salt + "$" + hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10_000).hex()


def access_token(account_id):
    """As flask_jwt_extended.create_access_token(identity=str(id)) makes them: no iss, no aud."""
    now = datetime.datetime.now(datetime.timezone.utc)
    claims = {"fresh": False, "iat": now, "jti": str(uuid.uuid4()), "type": "access", "sub": str(account_id), "nbf": now, "exp": now + TOKEN_TTL}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def current_account():
    """The account id of a valid bearer token, or None (as @jwt_required() checks it)."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    try:
        claims = jwt.decode(header[7:], SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]})
    except jwt.PyJWTError:
        return None
    return int(claims["sub"]) if claims.get("type") == "access" else None


def note_json(row):
    return {"id": row["id"], "accountId": row["account_id"], "title": row["title"], "body": row["body"], "createdAt": row["created_at"].isoformat()}


@app.get("/")
def index():
    return "notes monolith\n"


@app.post("/api/auth/register")
def register():
    data = request.get_json(silent=True) or {}
    if not data.get("email") or len(data.get("password", "")) < 8:
        return jsonify(msg="email and a password of 8 characters or more are required"), 400
    try:
        row = query("INSERT INTO accounts (email, password_hash) VALUES (%s, %s) RETURNING id", (data["email"].lower(), hash_password(data["password"])), one=True)
    except psycopg2.errors.UniqueViolation:
        return jsonify(msg="email already registered"), 409
    return jsonify(id=row["id"], access_token=access_token(row["id"])), 201


@app.post("/api/auth/login")
def login():
    data = request.get_json(silent=True) or {}
    row = query("SELECT id, password_hash FROM accounts WHERE email = %s", ((data.get("email") or "").lower(),), one=True)
    if not row or hash_password(data.get("password", ""), row["password_hash"].split("$")[0]) != row["password_hash"]:
        return jsonify(msg="Bad email or password"), 401
    return jsonify(access_token=access_token(row["id"]))


@app.get("/api/notes")
def list_notes():
    account = current_account()
    if account is None:
        return jsonify(msg="Missing or invalid token"), 401
    rows = query("SELECT * FROM notes WHERE account_id = %s ORDER BY id DESC LIMIT 50", (account,))
    return jsonify(notes=[note_json(r) for r in rows])


@app.post("/api/notes")
def create_note():
    account = current_account()
    if account is None:
        return jsonify(msg="Missing or invalid token"), 401
    data = request.get_json(silent=True) or {}
    if not data.get("title"):
        return jsonify(msg="title is required"), 400
    row = query("INSERT INTO notes (account_id, title, body) VALUES (%s, %s, %s) RETURNING *", (account, data["title"], data.get("body", "")), one=True)
    return jsonify(note_json(row)), 201


@app.get("/api/notes/<int:note_id>")
def get_note(note_id):
    account = current_account()
    if account is None:
        return jsonify(msg="Missing or invalid token"), 401
    row = query("SELECT * FROM notes WHERE id = %s AND account_id = %s", (note_id, account), one=True)
    return (jsonify(note_json(row)), 200) if row else (jsonify(msg="note not found"), 404)


if __name__ == "__main__":
    query(SCHEMA)
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5001")), threaded=True)
