'use client';
// Sign in and sign up. Sign-up creates the account and then signs in, which sets the
// nf_session cookie; new users land on Settings -> API keys, where onboarding starts.
import Link from 'next/link';
import { useRouter, useSearchParams } from 'next/navigation';
import { useState, type FormEvent } from 'react';
import { api, ApiError } from '@/lib/api';
import { InlineError } from './ui';

const ALREADY_REGISTERED =
  'Could not sign in with this e-mail and password. If you already have an account, sign in instead.';

function safeNext(next: string | null): string {
  // only paths of this site (no //host or scheme): an open redirect otherwise
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/sign-') ? next : '/';
}

export function AuthForm({ mode }: { mode: 'sign-in' | 'sign-up' }) {
  const router = useRouter();
  const params = useSearchParams();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const signUp = mode === 'sign-up';

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      if (signUp) await api.register(email, password);
      await api.login(email, password).catch((err: unknown) => {
        // sign-up answers the same for an e-mail that has an account (it does not say
        // which e-mails have one); signing in then fails unless the password is the owner's
        if (signUp && err instanceof ApiError && err.status === 401)
          throw new ApiError(401, err.code, ALREADY_REGISTERED, err.method, err.path, undefined, err.requestId);
        throw err;
      });
      router.replace(signUp ? '/settings/api-keys?welcome=1' : safeNext(params.get('next')));
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  return (
    <div className="auth-page">
      <form className="auth-card" onSubmit={submit} aria-labelledby="auth-title">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true">
            ◆
          </span>{' '}
          Nexa Forge
        </div>
        <h1 id="auth-title">{signUp ? 'Create your account' : 'Sign in'}</h1>
        {!signUp && params.get('expired') ? (
          <p className="notice" role="status">
            Your session has ended. Sign in again to continue.
          </p>
        ) : null}
        <label>
          E-mail
          <input
            type="email"
            name="email"
            autoComplete="email"
            required
            maxLength={254}
            value={email}
            onChange={(e) => setEmail(e.target.value)}
            autoFocus
          />
        </label>
        <label>
          Password
          <input
            type="password"
            name="password"
            autoComplete={signUp ? 'new-password' : 'current-password'}
            required
            minLength={signUp ? 10 : undefined}
            maxLength={1024}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            aria-describedby={signUp ? 'password-hint' : undefined}
          />
        </label>
        {signUp ? (
          <span className="hint" id="password-hint">
            At least 10 characters, not your e-mail address.
          </span>
        ) : null}
        <InlineError error={error} />
        <button type="submit" className="btn btn-primary" disabled={busy}>
          {busy ? 'Please wait…' : signUp ? 'Create account' : 'Sign in'}
        </button>
        <p className="muted small">
          {signUp ? (
            <>
              Already have an account? <Link href="/sign-in">Sign in</Link>
            </>
          ) : (
            <>
              New to Nexa Forge? <Link href="/sign-up">Create an account</Link>
            </>
          )}
        </p>
      </form>
    </div>
  );
}
