'use client';
// The signed-in frame: checks the session (GET /api/auth/me), shows the navigation and
// sends the browser to sign-in whenever the gateway refuses the session - at first load
// or later, when it expires or is ended elsewhere.
import Link from 'next/link';
import { usePathname, useRouter } from 'next/navigation';
import { useCallback, useEffect, useRef, useState, type ReactNode } from 'react';
import { api, ApiError, onUnauthorized, type Me } from '@/lib/api';
import { ErrorState, Loading } from './ui';

const NAV = [
  { href: '/', label: 'Overview' },
  { href: '/jobs', label: 'Jobs' },
  { href: '/workers', label: 'Workers' },
  { href: '/billing', label: 'Billing' },
  { href: '/artifacts', label: 'Artifacts' },
  { href: '/settings/api-keys', label: 'Settings · API keys' },
];

function isActive(pathname: string, href: string): boolean {
  return href === '/' ? pathname === '/' : pathname === href || pathname.startsWith(`${href}/`);
}

export function Shell({ children }: { children: ReactNode }) {
  const router = useRouter();
  const pathname = usePathname();
  const [me, setMe] = useState<Me | null>(null);
  const [error, setError] = useState<unknown>(undefined);
  const [tick, setTick] = useState(0);
  const hadSession = useRef(false);
  const leaving = useRef(false);

  const toSignIn = useCallback(
    (expired: boolean) => {
      if (leaving.current) return;
      leaving.current = true;
      const q = new URLSearchParams({ next: pathname });
      if (expired) q.set('expired', '1');
      router.replace(`/sign-in?${q}`);
    },
    [pathname, router],
  );

  useEffect(() => onUnauthorized(() => toSignIn(hadSession.current)), [toSignIn]);

  useEffect(() => {
    const ctl = new AbortController();
    api
      .me(ctl.signal)
      .then((m) => {
        hadSession.current = true;
        setMe(m);
        setError(undefined);
      })
      .catch((e) => {
        if (ctl.signal.aborted) return;
        if (!(e instanceof ApiError && e.unauthenticated)) setError(e);
      });
    return () => ctl.abort();
  }, [tick]);

  const signOut = async () => {
    leaving.current = true;
    try {
      await api.logout();
    } catch {
      /* the cookie is cleared by the gateway; a failed call still leaves the page */
    }
    router.replace('/sign-in');
  };

  if (!me) {
    return (
      <div className="center-page">
        {error ? (
          <ErrorState error={error} what="your session" onRetry={() => setTick((t) => t + 1)} />
        ) : (
          <Loading what="Checking your session" />
        )}
      </div>
    );
  }

  return (
    <div className="layout">
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <nav className="sidebar" aria-label="Main">
        <div className="brand">
          <span className="brand-mark" aria-hidden="true">
            ◆
          </span>{' '}
          Nexa Forge
        </div>
        <ul>
          {NAV.map((n) => (
            <li key={n.href}>
              <Link href={n.href} aria-current={isActive(pathname, n.href) ? 'page' : undefined}>
                {n.label}
              </Link>
            </li>
          ))}
        </ul>
        <div className="sidebar-foot">
          <div className="muted small" title={me.user_id}>
            {me.email}
          </div>
          <button type="button" className="btn btn-small" onClick={signOut}>
            Sign out
          </button>
        </div>
      </nav>
      <main id="main" className="content" tabIndex={-1}>
        {children}
      </main>
    </div>
  );
}
