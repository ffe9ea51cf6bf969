import { Router } from 'express';
import { z } from 'zod';
import { HttpError } from '../../services/kit/http-error.ts';
import { hashPassword, verifyPassword } from '../../services/kit/password.ts';
import { parseInput } from '../../services/kit/validate.ts';
import { userId, type ApiContext } from './context.ts';

export interface UserRow {
  id: number;
  email: string;
  password_hash: string;
  display_name: string | null;
  created_at: Date;
  updated_at: Date;
}

/** The user as every API answers it (never the hash). */
export function userJson(row: UserRow) {
  return { id: row.id, email: row.email, displayName: row.display_name, createdAt: row.created_at };
}

/** Signs a session token for a user; the monolith signs HS256, the auth service RS256. */
export type IssueToken = (user: { id: number; email: string }) => Promise<{ token: string; expiresIn: number }>;

const email = z.string().trim().toLowerCase().email('expected an email address').max(254);
const password = z.string().min(8, 'expected at least 8 characters').max(200, 'expected at most 200 characters');

const RegisterBody = z.object({ email, password, displayName: z.string().trim().min(1).max(100).optional() });
const LoginBody = z.object({ email, password: z.string().min(1, 'required').max(200) });
const ChangePasswordBody = z.object({ currentPassword: z.string().min(1, 'required').max(200), newPassword: password });

/** /api/auth: register, login, me, change-password. */
export function createAuthRouter(ctx: ApiContext & { issueToken: IssueToken; passwordCost?: { N: number; r: number; p: number } }): Router {
  const router = Router();
  const users = () => ctx.db<UserRow>(ctx.tables.users);

  const session = async (row: UserRow) => {
    const { token, expiresIn } = await ctx.issueToken({ id: row.id, email: row.email });
    return { token, tokenType: 'Bearer', expiresIn, user: userJson(row) };
  };

  router.post('/register', async (req, res) => {
    const body = parseInput(RegisterBody, req.body);
    const passwordHash = await hashPassword(body.password, ctx.passwordCost);
    const [row] = await users()
      .insert({ email: body.email, password_hash: passwordHash, display_name: body.displayName ?? null })
      .onConflict('email')
      .ignore()
      .returning('*');
    if (!row) throw new HttpError(`an account with the email ${body.email} already exists; log in instead`, 'CONFLICT');
    res.status(201).json(await session(row));
  });

  router.post('/login', async (req, res) => {
    const body = parseInput(LoginBody, req.body);
    const row = await users().where({ email: body.email }).first();
    // SECURITY: one answer for an unknown email and a wrong password, so logins do not reveal accounts.
    if (!row || !(await verifyPassword(body.password, row.password_hash))) {
      throw new HttpError('the email or the password is wrong', 'UNAUTHENTICATED');
    }
    res.json(await session(row));
  });

  router.get('/me', ctx.requireUser, async (req, res) => {
    const row = await users().where({ id: userId(req) }).first();
    if (!row) throw new HttpError('the account of this token no longer exists', 'UNAUTHENTICATED');
    res.json({ user: userJson(row) });
  });

  router.post('/change-password', ctx.requireUser, async (req, res) => {
    const body = parseInput(ChangePasswordBody, req.body);
    const row = await users().where({ id: userId(req) }).first();
    if (!row) throw new HttpError('the account of this token no longer exists', 'UNAUTHENTICATED');
    if (!(await verifyPassword(body.currentPassword, row.password_hash))) {
      throw new HttpError('the current password is wrong', 'FORBIDDEN');
    }
    const passwordHash = await hashPassword(body.newPassword, ctx.passwordCost);
    await users().where({ id: row.id }).update({ password_hash: passwordHash, updated_at: ctx.db.fn.now() });
    res.status(204).end();
  });

  return router;
}
